"""The outbound URL guard: hostile URLs are refused at validation and at connect time,
redirects and DNS answers included; timeouts and a size cap bound every call.

Nothing here connects anywhere but the local receiver on 127.0.0.1: refused URLs fail before any
socket is opened, and host names are answered by a fake resolver (``fake_dns``).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import time

import pytest

from taskengine_site import outbound
from taskengine_site.errors import DomainError
from tests.callbacks import support

# The shared fixtures (tests/security has no conftest of this part's own).
receiver = support.receiver
allow_loopback = support.allow_loopback

# Every URL with the rule that refuses it: (url, reason with default settings, reason with
# TASKENGINE_ALLOW_PRIVATE_URLS=true or None when it is then allowed). The reason is the exact text after
# "url not allowed: ", so a URL refused by another rule than its own fails here.
GUARD_TABLE: list[tuple[str, str, str | None]] = [
    ("http://127.0.0.1/", "127.0.0.1 is a loopback address", None),
    ("http://127.0.0.1:6379/", "127.0.0.1 is a loopback address", None),
    ("http://127.1.2.3/", "127.1.2.3 is a loopback address", None),
    ("http://[::1]/", "::1 is a loopback address", None),
    ("http://[0:0:0:0:0:0:0:1]/", "::1 is a loopback address", None),
    ("http://localhost/", "localhost is a loopback name", None),
    ("http://LOCALHOST./", "localhost is a loopback name", None),
    ("http://app.localhost/", "app.localhost is a loopback name", None),
    ("http://2130706433/", "ambiguous numeric host '2130706433'", "ambiguous numeric host '2130706433'"),
    (
        "http://017700000001/",
        "ambiguous numeric host '017700000001'",
        "ambiguous numeric host '017700000001'",
    ),
    ("http://0x7f000001/", "ambiguous numeric host '0x7f000001'", "ambiguous numeric host '0x7f000001'"),
    ("http://0177.0.0.1/", "ambiguous numeric host '0177.0.0.1'", "ambiguous numeric host '0177.0.0.1'"),
    ("http://0x7f.0.0.1/", "ambiguous numeric host '0x7f.0.0.1'", "ambiguous numeric host '0x7f.0.0.1'"),
    ("http://127.1/", "ambiguous numeric host '127.1'", "ambiguous numeric host '127.1'"),
    ("http://127.0.1/", "ambiguous numeric host '127.0.1'", "ambiguous numeric host '127.0.1'"),
    ("http://0/", "ambiguous numeric host '0'", "ambiguous numeric host '0'"),
    ("http://10.0.0.010/", "ambiguous numeric host '10.0.0.010'", "ambiguous numeric host '10.0.0.010'"),
    ("http://10.0.0.1/", "10.0.0.1 is a private address", None),
    ("http://172.16.0.1/", "172.16.0.1 is a private address", None),
    ("http://172.31.255.255/", "172.31.255.255 is a private address", None),
    ("http://192.168.1.1/", "192.168.1.1 is a private address", None),
    ("http://[fc00::1]/", "fc00::1 is a private address", None),
    ("http://[fd12:3456::1]/", "fd12:3456::1 is a private address", None),
    ("http://[fec0::1]/", "fec0::1 is a site-local address", None),
    (
        "http://169.254.169.254/latest/meta-data/",
        "169.254.169.254 is a cloud metadata address",
        "169.254.169.254 is a cloud metadata address",
    ),
    (
        "http://169.254.170.2/v2/credentials",
        "169.254.170.2 is a cloud metadata address",
        "169.254.170.2 is a cloud metadata address",
    ),
    (
        "http://[fd00:ec2::254]/latest/meta-data/",
        "fd00:ec2::254 is a cloud metadata address",
        "fd00:ec2::254 is a cloud metadata address",
    ),
    (
        "http://metadata.google.internal/computeMetadata/v1/",
        "metadata.google.internal is a cloud metadata name",
        "metadata.google.internal is a cloud metadata name",
    ),
    (
        "http://100.100.100.200/latest/meta-data/",
        "100.100.100.200 is a cloud metadata address",
        "100.100.100.200 is a cloud metadata address",
    ),
    ("http://169.254.1.1/", "169.254.1.1 is a link-local address", None),
    ("http://[fe80::1]/", "fe80::1 is a link-local address", None),
    ("http://[fe80::1%25eth0]/", "fe80::1%25eth0 has a zone index", "fe80::1%25eth0 has a zone index"),
    ("http://0.0.0.0/", "0.0.0.0 is the unspecified address", "0.0.0.0 is the unspecified address"),
    ("http://[::]/", ":: is the unspecified address", ":: is the unspecified address"),
    (
        "http://255.255.255.255/",
        "255.255.255.255 is a reserved address",
        "255.255.255.255 is a reserved address",
    ),
    ("http://224.0.0.1/", "224.0.0.1 is a multicast address", "224.0.0.1 is a multicast address"),
    ("http://[ff02::1]/", "ff02::1 is a multicast address", "ff02::1 is a multicast address"),
    ("http://240.0.0.1/", "240.0.0.1 is a reserved address", "240.0.0.1 is a reserved address"),
    ("http://100.64.0.1/", "100.64.0.1 is a shared (CGNAT) address", None),
    ("http://198.18.0.1/", "198.18.0.1 is a private address", None),
    ("http://192.0.2.1/", "192.0.2.1 is a private address", None),
    ("http://[::ffff:127.0.0.1]/", "::ffff:7f00:1 (IPv4-mapped form): 127.0.0.1 is a loopback address", None),
    ("http://[::ffff:7f00:1]/", "::ffff:7f00:1 (IPv4-mapped form): 127.0.0.1 is a loopback address", None),
    (
        "http://[::ffff:169.254.169.254]/",
        "::ffff:a9fe:a9fe (IPv4-mapped form): 169.254.169.254 is a cloud metadata address",
        "::ffff:a9fe:a9fe (IPv4-mapped form): 169.254.169.254 is a cloud metadata address",
    ),
    ("http://[::ffff:10.0.0.1]/", "::ffff:a00:1 (IPv4-mapped form): 10.0.0.1 is a private address", None),
    ("http://[::127.0.0.1]/", "::7f00:1 (IPv4-compatible form): 127.0.0.1 is a loopback address", None),
    ("http://[2002:7f00:1::]/", "2002:7f00:1:: (6to4 form): 127.0.0.1 is a loopback address", None),
    (
        "http://[2002:a9fe:a9fe::1]/",
        "2002:a9fe:a9fe::1 (6to4 form): 169.254.169.254 is a cloud metadata address",
        "2002:a9fe:a9fe::1 (6to4 form): 169.254.169.254 is a cloud metadata address",
    ),
    (
        "http://[64:ff9b::a9fe:a9fe]/",
        "64:ff9b::a9fe:a9fe (NAT64 form): 169.254.169.254 is a cloud metadata address",
        "64:ff9b::a9fe:a9fe (NAT64 form): 169.254.169.254 is a cloud metadata address",
    ),
    (
        "http://[2001:0:4136:e378:8000:63bf:f5ff:fffe]/",
        "2001:0:4136:e378:8000:63bf:f5ff:fffe (Teredo form): 10.0.0.1 is a private address",
        None,
    ),
    ("http://example.com@127.0.0.1/", "credentials in the URL", "credentials in the URL"),
    ("http://user:pass@example.com/", "credentials in the URL", "credentials in the URL"),
    ("http://example.com:80@169.254.169.254/", "credentials in the URL", "credentials in the URL"),
    (
        "http://127.0.0.1\\@example.com/",
        "whitespace, control characters or backslashes",
        "whitespace, control characters or backslashes",
    ),
    (
        "http://127.0.0.1 /",
        "whitespace, control characters or backslashes",
        "whitespace, control characters or backslashes",
    ),
    (
        "http://exa\nmple.com/",
        "whitespace, control characters or backslashes",
        "whitespace, control characters or backslashes",
    ),
    ("http://127。0。0。1/", "127.0.0.1 is a loopback address", None),
    ("http:///etc/passwd", "no host", "no host"),
    ("http://[::1/", "malformed URL (Invalid IPv6 URL)", "malformed URL (Invalid IPv6 URL)"),
    ("http://example.com:0/", "port 0", "port 0"),
    (
        "http://example.com:99999/",
        "malformed URL (Port out of range 0-65535)",
        "malformed URL (Port out of range 0-65535)",
    ),
    ("file:///etc/passwd", "scheme 'file' is not http or https", "scheme 'file' is not http or https"),
    ("ftp://example.com/", "scheme 'ftp' is not http or https", "scheme 'ftp' is not http or https"),
    (
        "gopher://127.0.0.1:6379/_INFO",
        "scheme 'gopher' is not http or https",
        "scheme 'gopher' is not http or https",
    ),
    (
        "dict://127.0.0.1:11211/stat",
        "scheme 'dict' is not http or https",
        "scheme 'dict' is not http or https",
    ),
    ("ldap://example.com/", "scheme 'ldap' is not http or https", "scheme 'ldap' is not http or https"),
    (
        "javascript:alert(1)",
        "scheme 'javascript' is not http or https",
        "scheme 'javascript' is not http or https",
    ),
    ("data:text/plain,hello", "scheme 'data' is not http or https", "scheme 'data' is not http or https"),
    ("//example.com/", "scheme '(none)' is not http or https", "scheme '(none)' is not http or https"),
    ("example.com/path", "scheme '(none)' is not http or https", "scheme '(none)' is not http or https"),
    ("", "not a string", "not a string"),
    ("http://[::2]/", "::2 (IPv4-compatible form): 0.0.0.2 is a private address", None),
    ("http://[::1:2:3:4]/", "::1:2:3:4 is not a public address", None),
    ("http://[64:ff9b:2::1]/", "64:ff9b:2::1 is not a public address", None),
    (
        "http://[64:ff9b:1::a9fe:a9fe]/",
        "64:ff9b:1::a9fe:a9fe is a local-use translation address",
        "64:ff9b:1::a9fe:a9fe is a local-use translation address",
    ),
    (
        "http://[64:ff9b:1::808:808]/",
        "64:ff9b:1::808:808 is a local-use translation address",
        "64:ff9b:1::808:808 is a local-use translation address",
    ),
    (
        "http://[64:ff9b:1:a9fe:a9:fe00::]/",
        "64:ff9b:1:a9fe:a9:fe00:: is a local-use translation address",
        "64:ff9b:1:a9fe:a9:fe00:: is a local-use translation address",
    ),
    (
        "http://[::ffff:0:a9fe:a9fe]/",
        "::ffff:0:a9fe:a9fe is a local-use translation address",
        "::ffff:0:a9fe:a9fe is a local-use translation address",
    ),
    (
        "http://[2001:0:a9fe:a9fe::1]/",
        "2001:0:a9fe:a9fe::1 (Teredo form): 169.254.169.254 is a cloud metadata address",
        "2001:0:a9fe:a9fe::1 (Teredo form): 169.254.169.254 is a cloud metadata address",
    ),
    ("http://1.2.3.256/", "ambiguous numeric host '1.2.3.256'", "ambiguous numeric host '1.2.3.256'"),
    (
        "http://exa\x01mple.com/",
        "whitespace, control characters or backslashes",
        "whitespace, control characters or backslashes",
    ),
    (
        "http://exa\x7fmple.com/",
        "whitespace, control characters or backslashes",
        "whitespace, control characters or backslashes",
    ),
    (
        "http://[::ffff:100.100.100.200]/",
        "::ffff:6464:64c8 (IPv4-mapped form): 100.100.100.200 is a cloud metadata address",
        "::ffff:6464:64c8 (IPv4-mapped form): 100.100.100.200 is a cloud metadata address",
    ),
    (
        "http://[64:ff9b::a9fe:aa02]/",
        "64:ff9b::a9fe:aa02 (NAT64 form): 169.254.170.2 is a cloud metadata address",
        "64:ff9b::a9fe:aa02 (NAT64 form): 169.254.170.2 is a cloud metadata address",
    ),
    (
        "http://[::ffff:240.0.0.1]/",
        "::ffff:f000:1 (IPv4-mapped form): 240.0.0.1 is a reserved address",
        "::ffff:f000:1 (IPv4-mapped form): 240.0.0.1 is a reserved address",
    ),
]
HOSTILE = [url for url, _, _ in GUARD_TABLE]


def test_the_corpus_is_large_and_distinct():
    assert len(HOSTILE) >= 40
    assert len(set(HOSTILE)) == len(HOSTILE)


@pytest.mark.parametrize(("url", "reason"), [(url, reason) for url, reason, _ in GUARD_TABLE])
def test_every_hostile_url_is_refused_at_validation_by_its_rule(url, reason, settings):
    settings.TASKENGINE_ALLOW_PRIVATE_URLS = False
    with pytest.raises(DomainError) as excinfo:
        outbound.validate_url(url, what="rest_endpoints")
    assert excinfo.value.message == f"rest_endpoints: url not allowed: {reason}"
    assert excinfo.value.reason == reason


@pytest.mark.parametrize(("url", "reason"), [(url, reason) for url, _, reason in GUARD_TABLE])
def test_with_private_urls_allowed_each_url_is_decided_by_its_rule(url, reason, settings):
    """Loopback, private, link-local and shared addresses pass; metadata, unspecified, multicast,
    reserved, zone-indexed and local-use translation addresses and the syntax rules still refuse."""
    settings.TASKENGINE_ALLOW_PRIVATE_URLS = True
    if reason is None:
        outbound.validate_url(url)
    else:
        with pytest.raises(outbound.UrlRefused) as excinfo:
            outbound.validate_url(url)
        assert excinfo.value.message == f"url: url not allowed: {reason}"


@pytest.mark.parametrize("url", HOSTILE)
def test_every_hostile_url_is_refused_by_request_without_connecting(url, settings, monkeypatch):
    settings.TASKENGINE_ALLOW_PRIVATE_URLS = False

    def no_connect(*args, **kwargs):
        raise AssertionError(f"a socket was opened for {url!r}")

    monkeypatch.setattr(socket.socket, "connect", no_connect)
    with pytest.raises(outbound.UrlRefused):
        outbound.request("GET", url, timeout=(0.5, 0.5))


def test_a_url_that_is_not_a_string_or_too_long_is_refused(settings):
    settings.TASKENGINE_ALLOW_PRIVATE_URLS = False
    with pytest.raises(outbound.UrlRefused) as excinfo:
        outbound.validate_url(12345)
    assert excinfo.value.reason == "not a string"
    longest = "https://example.com/" + "a" * (outbound.MAX_URL_LENGTH - len("https://example.com/"))
    outbound.validate_url(longest)
    with pytest.raises(outbound.UrlRefused) as excinfo:
        outbound.validate_url(longest + "a")
    assert excinfo.value.reason == "longer than 2000 characters"


def test_private_addresses_are_refused_unless_a_deployer_allows_them():
    """The setting's default, read by settings.py from an environment that does not set it, refuses them."""
    from django.conf import settings as configured

    assert "TASKENGINE_ALLOW_PRIVATE_URLS" not in os.environ
    assert configured.TASKENGINE_ALLOW_PRIVATE_URLS is False
    with pytest.raises(outbound.UrlRefused) as excinfo:
        outbound.validate_url("http://10.0.0.1/")
    assert excinfo.value.reason == "10.0.0.1 is a private address"


def test_an_explicit_allow_private_decides_for_the_embedded_address_too(settings):
    """The IPv4 address inside an IPv6 one is judged with the caller's allow_private, not the setting."""
    settings.TASKENGINE_ALLOW_PRIVATE_URLS = False
    mapped = ipaddress.ip_address("::ffff:10.0.0.1")
    assert outbound.address_refusal(mapped, allow_private=True) is None
    settings.TASKENGINE_ALLOW_PRIVATE_URLS = True
    assert outbound.address_refusal(mapped, allow_private=False) == (
        "::ffff:a00:1 (IPv4-mapped form): 10.0.0.1 is a private address"
    )
    assert outbound.address_refusal(mapped) is None


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/callback",
        "http://example.com:8080/a/b?token=x#frag",
        "https://93.184.215.14/",
        "https://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]/",
        "https://bücher.example/",
        "HTTPS://Example.COM/",
        "https://example.com./",
        # a public address stays public in every form that carries it, and .255 is not a broadcast
        "http://8.8.8.255/",
        "http://1.2.3.255/",
        "http://[::ffff:8.8.8.8]/",
        "http://[::ffff:808:808]/",
        "http://[64:ff9b::8.8.8.8]/",
        "http://[::8.8.8.8]/",
        "http://[2002:808:808::1]/",
        "http://[2001:0:808:808::f7f7:f7f7]/",
    ],
)
@pytest.mark.parametrize("allow_private", [False, True])
def test_ordinary_public_urls_pass_validation(url, allow_private, settings):
    settings.TASKENGINE_ALLOW_PRIVATE_URLS = allow_private
    outbound.validate_url(url)


@pytest.fixture
def fake_dns(monkeypatch):
    """Answers chosen names with chosen addresses; any other name is an error (no real DNS)."""
    answers: dict[str, list[str]] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host in answers:
            results = []
            for address in answers[host]:
                family = socket.AF_INET6 if ":" in address else socket.AF_INET
                sockaddr = (address, port, 0, 0) if family == socket.AF_INET6 else (address, port)
                results.append((family, socket.SOCK_STREAM, 6, "", sockaddr))
            return results
        try:
            ipaddress.ip_address(str(host))
        except ValueError:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers


@pytest.mark.parametrize(
    "addresses",
    [
        ["127.0.0.1"],
        ["10.1.2.3"],
        ["169.254.169.254"],
        ["::1"],
        ["::ffff:192.168.0.1"],
        ["93.184.215.14", "10.0.0.1"],  # one private answer among public ones is enough to refuse
    ],
)
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_name_resolving_to_a_refused_address_is_refused_at_connect_time(
    fake_dns, settings, addresses, scheme
):
    settings.TASKENGINE_ALLOW_PRIVATE_URLS = False
    fake_dns["rebind.test"] = addresses
    outbound.validate_url(f"{scheme}://rebind.test/")  # the name itself looks harmless
    with pytest.raises(outbound.UrlRefused) as excinfo:
        outbound.request("GET", f"{scheme}://rebind.test/", timeout=(0.5, 0.5))
    assert "rebind.test resolves to a refused address" in excinfo.value.message


def test_the_socket_connects_to_the_address_that_was_checked(fake_dns, receiver, settings):
    """Resolved once: the connection goes to the checked address, not to a second DNS answer."""
    settings.TASKENGINE_ALLOW_PRIVATE_URLS = True
    fake_dns["callback.test"] = ["127.0.0.1"]
    answer = outbound.request("GET", f"http://callback.test:{receiver.port}/ping")
    assert answer.status_code == 200
    assert receiver.received("/ping")[0].headers["Host"] == f"callback.test:{receiver.port}"


@pytest.fixture
def only_127_0_0_1(monkeypatch, settings):
    """Loopback is refused except 127.0.0.1 itself, so redirects and DNS answers pointing at other
    refused addresses can be tested against the local receiver."""
    settings.TASKENGINE_ALLOW_PRIVATE_URLS = False
    real = outbound.address_refusal

    def refusal(ip, *, allow_private=None):
        if ip == ipaddress.ip_address("127.0.0.1"):
            return None
        return real(ip, allow_private=allow_private)

    monkeypatch.setattr(outbound, "address_refusal", refusal)
    monkeypatch.setattr(outbound, "_BLOCKED_NAMES", ())


@pytest.mark.parametrize(
    "location",
    [
        "http://127.0.0.2/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://2130706434/",
        "file:///etc/passwd",
        "http://internal.test/",
    ],
)
def test_redirects_to_refused_addresses_are_refused(only_127_0_0_1, fake_dns, receiver, location):
    fake_dns["internal.test"] = ["10.0.0.7"]
    receiver.answer("/redirect", 302, headers={"Location": location})
    with pytest.raises(outbound.UrlRefused):
        outbound.request("GET", receiver.url("/redirect"), allow_redirects=True)
    assert len(receiver.received()) == 1


def test_redirects_are_not_followed_unless_asked(only_127_0_0_1, receiver):
    receiver.answer("/redirect", 302, headers={"Location": "/elsewhere"})
    answer = outbound.request("GET", receiver.url("/redirect"))
    assert answer.status_code == 302
    assert [r.path for r in receiver.received()] == ["/redirect"]
    followed = outbound.request("GET", receiver.url("/redirect"), allow_redirects=True)
    assert followed.status_code == 200
    assert followed.url == receiver.url("/elsewhere")


def test_loopback_is_refused_without_the_flag_and_reached_with_it(receiver, settings):
    settings.TASKENGINE_ALLOW_PRIVATE_URLS = False
    with pytest.raises(outbound.UrlRefused):
        outbound.request("GET", receiver.url("/x"))
    assert receiver.received() == []
    settings.TASKENGINE_ALLOW_PRIVATE_URLS = True
    answer = outbound.request("POST", receiver.url("/x"), json={"a": 1}, headers={"X-Test": "1"})
    assert answer.status_code == 200
    assert answer.text == "ok"
    (got,) = receiver.received("/x")
    assert got.method == "POST"
    assert got.json() == {"a": 1}
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["X-Test"] == "1"
    assert got.headers["User-Agent"].startswith("TaskEngine/")


def test_a_large_response_is_cut_at_the_cap(receiver, allow_loopback):
    receiver.answer("/big", 200, body=b"x" * 500_000)
    answer = outbound.request("GET", receiver.url("/big"), max_bytes=1000)
    assert answer.truncated
    assert answer.content == b"x" * 1000
    small = outbound.request("GET", receiver.url("/big"), max_bytes=1_000_000)
    assert not small.truncated
    assert len(small.content) == 500_000


def test_a_slow_server_times_out(receiver, allow_loopback):
    receiver.answer("/slow", 200, delay=3)
    started = time.monotonic()
    with pytest.raises(outbound.OutboundError) as excinfo:
        outbound.request("GET", receiver.url("/slow"), timeout=(1.0, 0.5))
    assert time.monotonic() - started < 2.5
    assert "timed out" in str(excinfo.value)


def test_a_closed_port_is_an_outbound_error_not_a_crash(allow_loopback):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(outbound.OutboundError):
        outbound.request("GET", f"http://127.0.0.1:{port}/", timeout=(1.0, 1.0))


def test_environment_proxies_are_ignored(receiver, allow_loopback, monkeypatch):
    """A proxy would connect on our behalf, past the address check."""
    monkeypatch.setenv("HTTP_PROXY", "http://10.9.9.9:3128")
    monkeypatch.setenv("http_proxy", "http://10.9.9.9:3128")
    assert outbound.request("GET", receiver.url("/direct"), timeout=(1.0, 1.0)).status_code == 200


def test_redact_drops_credentials_query_and_fragment():
    assert outbound.redact("https://u:p@example.com:8443/cb?token=secret#x") == "https://example.com:8443/cb"


def test_a_name_is_resolved_once_so_a_rebinding_answer_is_never_used(only_127_0_0_1, receiver, monkeypatch):
    """DNS rebinding: the first answer is checked and used; a second lookup would get another one."""
    lookups: list[str] = []

    def getaddrinfo(host, port, *args, **kwargs):
        if host in ("127.0.0.1", "127.0.0.2"):  # a literal address resolves to itself, as in life
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (host, port))]
        lookups.append(host)
        address = "127.0.0.1" if len(lookups) == 1 else "127.0.0.2"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    answer = outbound.request("GET", f"http://rebinding.test:{receiver.port}/once")
    assert answer.status_code == 200
    assert lookups == ["rebinding.test"]


def test_resolved_addresses_are_checked_each_by_its_rule(fake_dns, settings):
    settings.TASKENGINE_ALLOW_PRIVATE_URLS = False
    fake_dns["zone.test"] = ["fe80::1%eth0"]
    fake_dns["twice.test"] = ["93.184.215.14", "93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"]
    fake_dns["none.test"] = []
    with pytest.raises(outbound.UrlRefused) as excinfo:
        outbound.resolve_checked("zone.test", 443)
    assert excinfo.value.reason == "zone.test resolves to fe80::1%eth0, which has a zone index"
    assert (
        excinfo.value.message
        == "url: url not allowed: zone.test resolves to fe80::1%eth0, which has a zone index"
    )
    assert outbound.resolve_checked("twice.test", 443) == [
        "93.184.215.14",
        "2606:2800:21f:cb07:6820:80da:af6b:8b2c",
    ]
    with pytest.raises(outbound.UrlRefused) as excinfo:
        outbound.resolve_checked("none.test", 443)
    assert excinfo.value.reason == "none.test resolves to no address"
    # A literal address is its own answer: the reason names it once, not as a name that resolves.
    with pytest.raises(outbound.UrlRefused) as excinfo:
        outbound.resolve_checked("[::1]", 443)
    assert excinfo.value.reason == "::1 is a loopback address"
    settings.TASKENGINE_ALLOW_PRIVATE_URLS = True
    assert outbound.resolve_checked("zone.test", 443) == ["fe80::1%eth0"]
    assert outbound.resolve_checked("[::1]", 443) == ["::1"]


def test_an_unknown_name_and_a_closed_port_say_what_failed(fake_dns, allow_loopback):
    with pytest.raises(outbound.OutboundError) as excinfo:
        outbound.request("GET", "http://nowhere.test/")
    assert str(excinfo.value) == "name or service not known"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    fake_dns["closed.test"] = ["127.0.0.1", "127.0.0.1"]
    fake_dns["closed.test"] = ["127.0.0.1"]
    with pytest.raises(outbound.OutboundError) as excinfo:
        outbound.request("GET", f"http://closed.test:{port}/", timeout=(1.0, 1.0))
    assert str(excinfo.value) == "connection refused"


def test_the_next_checked_address_is_tried_when_one_refuses_the_connection(
    fake_dns, receiver, allow_loopback
):
    fake_dns["two.test"] = ["127.0.0.2", "127.0.0.1"]  # the receiver listens on 127.0.0.1 only
    answer = outbound.request("GET", f"http://two.test:{receiver.port}/second")
    assert answer.status_code == 200
    assert [r.path for r in receiver.received()] == ["/second"]


def test_the_socket_gets_the_connect_timeout_and_the_socket_options(receiver, allow_loopback, monkeypatch):
    from urllib3.connection import HTTPConnection

    calls = []
    real = outbound.urllib3_connection.create_connection

    def recording(address, timeout, **kwargs):
        calls.append((address, timeout, kwargs))
        return real(address, timeout, **kwargs)

    monkeypatch.setattr(outbound.urllib3_connection, "create_connection", recording)
    assert outbound.request("GET", receiver.url("/t"), timeout=(1.5, 2.0)).status_code == 200
    assert calls == [
        (
            ("127.0.0.1", receiver.port),
            1.5,
            {"source_address": None, "socket_options": HTTPConnection.default_socket_options},
        )
    ]


def test_a_connect_timeout_is_reported_as_one(fake_dns, allow_loopback, monkeypatch):
    def times_out(*args, **kwargs):
        raise TimeoutError("timed out")

    fake_dns["slow.test"] = ["127.0.0.1"]
    monkeypatch.setattr(outbound.urllib3_connection, "create_connection", times_out)
    with pytest.raises(outbound.OutboundError) as excinfo:
        outbound.request("GET", "http://slow.test/", timeout=(1.5, 2.0))
    assert str(excinfo.value) == "timed out"
    connection = outbound._GuardedHTTPConnection("slow.test", 80, timeout=1.5)
    with pytest.raises(outbound.ConnectTimeoutError) as raised:
        connection._new_conn()
    assert raised.value.args == (connection, "Connection to slow.test timed out. (connect timeout=1.5)")


def test_a_name_that_does_not_resolve_is_a_name_resolution_error(fake_dns, allow_loopback):
    connection = outbound._GuardedHTTPConnection("nowhere.test", 80)
    with pytest.raises(outbound.NameResolutionError) as raised:
        connection._new_conn()
    assert raised.value.conn is connection
    assert "Failed to resolve 'nowhere.test' ([Errno -2] Name or service not known)" in str(raised.value)


def test_every_address_refusing_is_a_new_connection_error_naming_the_last_failure(fake_dns, allow_loopback):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    fake_dns["closed.test"] = ["127.0.0.2", "127.0.0.1"]
    connection = outbound._GuardedHTTPConnection("closed.test", port, timeout=1.0)
    with pytest.raises(outbound.NewConnectionError) as raised:
        connection._new_conn()
    assert raised.value.conn is connection
    assert str(raised.value).endswith("Failed to establish a new connection: [Errno 111] Connection refused")


def test_the_request_sends_what_it_was_given(receiver, allow_loopback):
    outbound.request("post", receiver.url("/json"), json={"a": 1, "name": "é"})
    outbound.request("put", receiver.url("/data"), data=b"raw bytes", headers={"Content-Type": "text/plain"})
    outbound.request("GET", receiver.url("/float"), timeout=2.0)
    sent_json, sent_data, sent_float = receiver.received()
    assert (sent_json.method, sent_json.body) == ("POST", '{"a":1,"name":"é"}'.encode())
    assert sent_json.headers["Content-Type"] == "application/json"
    assert (sent_data.method, sent_data.body, sent_data.headers["Content-Type"]) == (
        "PUT",
        b"raw bytes",
        "text/plain",
    )
    assert sent_float.method == "GET"


def test_the_response_carries_status_headers_body_and_url(receiver, allow_loopback):
    receiver.answer("/r", 201, body=b'{"x": [1]}', headers={"X-Answer": "yes"})
    answer = outbound.request("GET", receiver.url("/r"))
    assert (answer.status_code, answer.url, answer.content, answer.truncated) == (
        201,
        receiver.url("/r"),
        b'{"x": [1]}',
        False,
    )
    assert answer.headers["X-Answer"] == "yes"
    assert answer.json() == {"x": [1]}
    assert answer.ok and answer.text == '{"x": [1]}'


class _FrozenClock:
    """outbound's own ``time``, stopped at one instant: deadlines and durations become exact numbers."""

    now = 1000.0

    @classmethod
    def monotonic(cls) -> float:
        return cls.now


def test_the_deadline_defaults_to_twice_the_timeouts_and_elapsed_is_measured(
    receiver, allow_loopback, monkeypatch
):
    deadlines = []

    def read(response, max_bytes, deadline):
        deadlines.append((max_bytes, deadline))
        return b"body", False

    monkeypatch.setattr(outbound, "time", _FrozenClock)
    monkeypatch.setattr(outbound, "_read_capped", read)
    answer = outbound.request("GET", receiver.url("/d"), timeout=(1.0, 2.5), max_bytes=77)
    outbound.request("GET", receiver.url("/d"), timeout=(1.0, 2.5), deadline=5.0)
    outbound.request("GET", receiver.url("/d"), timeout=4.0)
    assert deadlines == [
        (77, 1000.0 + 7.0),
        (outbound.DEFAULT_MAX_BYTES, 1005.0),
        (outbound.DEFAULT_MAX_BYTES, 1016.0),
    ]
    assert (answer.content, answer.elapsed) == (b"body", 0.0)


class _Chunks:
    """A response whose body arrives in the given chunks (or fails with the given exception)."""

    def __init__(self, chunks, error=None):
        self.chunks, self.error = chunks, error

    def iter_content(self, chunk_size):
        yield from self.chunks
        if self.error is not None:
            raise self.error


@pytest.mark.parametrize(
    ("max_bytes", "expected"),
    [
        (3, (b"abc", True)),
        (4, (b"abcd", True)),
        (5, (b"abcde", True)),
        (6, (b"abcdef", False)),  # exactly the cap: all of it, not cut
        (100, (b"abcdef", False)),
    ],
)
def test_the_body_is_cut_exactly_at_the_cap(max_bytes, expected):
    assert outbound._read_capped(_Chunks([b"ab", b"cd", b"ef"]), max_bytes, float("inf")) == expected


def test_reading_past_the_deadline_or_failing_midway_is_an_outbound_error(monkeypatch):
    import requests

    monkeypatch.setattr(outbound, "time", _FrozenClock)
    # At the deadline itself the read is still in time; after it, it is not.
    assert outbound._read_capped(_Chunks([b"ab"]), 10, 1000.0) == (b"ab", False)
    with pytest.raises(outbound.OutboundError) as excinfo:
        outbound._read_capped(_Chunks([b"ab"]), 10, 999.0)
    assert str(excinfo.value) == "the response took longer than the request's deadline"
    with pytest.raises(outbound.OutboundError) as excinfo:
        outbound._read_capped(
            _Chunks([b"ab"], requests.ConnectionError("Connection refused by peer")), 10, 1e9
        )
    assert str(excinfo.value) == "connection refused"


def test_a_large_body_is_not_downloaded_past_the_cap(allow_loopback):
    """The body is streamed: past the cap the connection is closed, and the server cannot finish."""
    import threading

    body_size = 64 * 1024 * 1024  # far more than the socket buffers on both sides hold
    finished: list[bool] = []
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % body_size)
            try:
                chunk = b"x" * 65536
                for _ in range(body_size // len(chunk)):
                    conn.sendall(chunk)
                finished.append(True)
            except OSError:
                finished.append(False)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        answer = outbound.request("GET", f"http://127.0.0.1:{server.getsockname()[1]}/", max_bytes=1000)
        thread.join(timeout=30)
    finally:
        server.close()
    assert (answer.content, answer.truncated) == (b"x" * 1000, True)
    assert finished == [False]


@pytest.mark.parametrize(
    ("exception", "described"),
    [
        ("timeout", "timed out"),
        ("tls", "TLS error"),
        ("[Errno -2] Name or service not known", "name or service not known"),
        ("nodename nor servname provided, or not known", "nodename nor servname"),
        ("[Errno 111] Connection refused", "connection refused"),
        ("[Errno 113] No route to host", "no route"),
        ("something else", "ConnectionError"),
    ],
)
def test_a_failure_is_described_without_the_url(exception, described):
    import requests

    error = {
        "timeout": requests.Timeout("https://h.example/?token=secret read timed out"),
        "tls": requests.exceptions.SSLError("https://h.example/?token=secret bad handshake"),
    }.get(exception) or requests.ConnectionError(f"https://h.example/?token=secret: {exception}")
    assert outbound._describe(error) == described


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("https://u:p@example.com:8443/cb?token=secret#x", "https://example.com:8443/cb"),
        ("https://example.com/cb?token=secret", "https://example.com/cb"),
        ("http://[::1]:8080/x?q=1", "http://[::1]:8080/x"),
        ("http:///x", "http:///x"),
        ("http://[::1/", "<malformed url>"),
    ],
)
def test_redact_keeps_only_scheme_host_port_and_path(url, redacted):
    assert outbound.redact(url) == redacted


@pytest.mark.parametrize(
    ("status", "method", "followed_as", "body_kept"),
    [
        (303, "POST", "GET", False),
        (303, "GET", "GET", False),
        (301, "POST", "GET", False),
        (302, "PUT", "GET", False),
        (302, "GET", "GET", True),  # a GET stays what it was
        (301, "HEAD", "HEAD", True),
        (307, "POST", "POST", True),
        (308, "PUT", "PUT", True),
    ],
)
def test_a_followed_redirect_keeps_or_drops_the_method_and_body(
    receiver, allow_loopback, status, method, followed_as, body_kept
):
    receiver.answer("/from", status, headers={"Location": "/to"})
    answer = outbound.request(method, receiver.url("/from"), json={"a": 1}, allow_redirects=True)
    assert answer.url == receiver.url("/to")
    first, second = receiver.received()
    assert (first.method, first.path, second.method, second.path) == (method, "/from", followed_as, "/to")
    if body_kept:
        assert (second.body, second.headers.get("Content-Type")) == (b'{"a":1}', "application/json")
    else:
        assert (second.body, second.headers.get("Content-Type")) == (b"", None)


def test_five_redirects_are_followed_and_a_sixth_is_refused(receiver, allow_loopback):
    for hop in range(6):
        receiver.answer(f"/hop{hop}", 302, headers={"Location": f"/hop{hop + 1}"})
    receiver.answer("/hop5", 302, headers={"Location": "/end"})
    answer = outbound.request("GET", receiver.url("/hop1"), allow_redirects=True)
    assert (answer.status_code, answer.url) == (200, receiver.url("/end"))
    with pytest.raises(outbound.OutboundError) as excinfo:
        outbound.request("GET", receiver.url("/hop0"), allow_redirects=True)
    assert str(excinfo.value) == "more than 5 redirects"


def test_a_host_that_is_not_a_domain_name_or_a_whole_ipv6_literal_is_refused(settings):
    settings.TASKENGINE_ALLOW_PRIVATE_URLS = True
    with pytest.raises(outbound.UrlRefused) as excinfo:
        outbound.validate_url("http://" + "ü" * 70 + ".example/")  # a label longer than 63 characters
    assert excinfo.value.reason == "host is not a valid domain name"
    # The same for an ASCII name: refused when the URL is checked, not left to fail at the lookup.
    for host in ("a" * 64 + ".example", "a..example"):
        with pytest.raises(outbound.UrlRefused) as excinfo:
            outbound.validate_url(f"http://{host}/")
        assert excinfo.value.reason == "host is not a valid domain name", host
    outbound.validate_url("http://" + "a" * 63 + ".example/")
    # urlsplit refuses these first; the guard does not rely on it.
    for host in ("[::1", "[not-an-address]"):
        with pytest.raises(outbound.UrlRefused) as excinfo:
            outbound._parse_host(host)
        assert excinfo.value.reason == "malformed IPv6 host"
    assert outbound._parse_host("[::1]") == ipaddress.IPv6Address("::1")
    assert outbound._parse_host("example.com") is None


def test_a_see_other_redirect_of_a_request_without_a_body_is_followed(receiver, allow_loopback):
    receiver.answer("/from", 303, headers={"Location": "/to"})
    answer = outbound.request("GET", receiver.url("/from"), allow_redirects=True)
    assert (answer.status_code, answer.url) == (200, receiver.url("/to"))
    assert answer.elapsed > 0
