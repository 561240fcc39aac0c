"""The outbound URL guard (issue 5, item 8): hostile URLs are refused at validation and at connect time,
redirects and DNS answers included; timeouts and a size cap bound every call.

Nothing here connects anywhere but the local receiver on 127.0.0.1: refused URLs fail before any
socket is opened, and host names are answered by a fake resolver (``fake_dns``).
"""

from __future__ import annotations

import ipaddress
import socket
import time

import pytest

from taskengine_site import outbound
from taskengine_site.errors import DomainError
from tests.callbacks import support

# The shared fixtures (tests/security has no conftest of this part's own).
receiver = support.receiver
allow_loopback = support.allow_loopback

HOSTILE = [
    # loopback, in every spelling
    "http://127.0.0.1/",
    "http://127.0.0.1:6379/",
    "http://127.1.2.3/",
    "http://[::1]/",
    "http://[0:0:0:0:0:0:0:1]/",
    "http://localhost/",
    "http://LOCALHOST./",
    "http://app.localhost/",
    # decimal, octal, hex and short IPv4 forms
    "http://2130706433/",
    "http://017700000001/",
    "http://0x7f000001/",
    "http://0177.0.0.1/",
    "http://0x7f.0.0.1/",
    "http://127.1/",
    "http://127.0.1/",
    "http://0/",
    "http://10.0.0.010/",
    # private ranges
    "http://10.0.0.1/",
    "http://172.16.0.1/",
    "http://172.31.255.255/",
    "http://192.168.1.1/",
    "http://[fc00::1]/",
    "http://[fd12:3456::1]/",
    "http://[fec0::1]/",
    # link-local and cloud metadata
    "http://169.254.169.254/latest/meta-data/",
    "http://169.254.170.2/v2/credentials",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://100.100.100.200/latest/meta-data/",
    "http://169.254.1.1/",
    "http://[fe80::1]/",
    "http://[fe80::1%25eth0]/",
    # unspecified, broadcast, multicast, reserved, shared (CGNAT), documentation
    "http://0.0.0.0/",
    "http://[::]/",
    "http://255.255.255.255/",
    "http://224.0.0.1/",
    "http://[ff02::1]/",
    "http://240.0.0.1/",
    "http://100.64.0.1/",
    "http://198.18.0.1/",
    "http://192.0.2.1/",
    # IPv4 embedded in IPv6: mapped, compatible, 6to4, NAT64, Teredo
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[::ffff:10.0.0.1]/",
    "http://[::127.0.0.1]/",
    "http://[2002:7f00:1::]/",
    "http://[2002:a9fe:a9fe::1]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://[2001:0:4136:e378:8000:63bf:f5ff:fffe]/",
    # userinfo tricks and parser confusion
    "http://example.com@127.0.0.1/",
    "http://user:pass@example.com/",
    "http://example.com:80@169.254.169.254/",
    "http://127.0.0.1\\@example.com/",
    "http://127.0.0.1 /",
    "http://exa\nmple.com/",
    "http://127。0。0。1/",
    "http:///etc/passwd",
    "http://[::1/",
    "http://example.com:0/",
    "http://example.com:99999/",
    # schemes other than http(s)
    "file:///etc/passwd",
    "ftp://example.com/",
    "gopher://127.0.0.1:6379/_INFO",
    "dict://127.0.0.1:11211/stat",
    "ldap://example.com/",
    "javascript:alert(1)",
    "data:text/plain,hello",
    "//example.com/",
    "example.com/path",
    "",
]


def test_the_corpus_is_large_and_distinct():
    assert len(HOSTILE) >= 40
    assert len(set(HOSTILE)) == len(HOSTILE)


@pytest.mark.parametrize("url", HOSTILE)
def test_every_hostile_url_is_refused_at_validation(url, settings):
    settings.TASKENGINE_ALLOW_PRIVATE_URLS = False
    with pytest.raises(DomainError) as excinfo:
        outbound.validate_url(url, what="rest_endpoints")
    assert excinfo.value.message.startswith("rest_endpoints: url not allowed: ")


@pytest.mark.parametrize("url", HOSTILE)
def test_every_hostile_url_is_refused_by_request_without_connecting(url, settings, monkeypatch):
    settings.TASKENGINE_ALLOW_PRIVATE_URLS = False

    def no_connect(*args, **kwargs):
        raise AssertionError(f"a socket was opened for {url!r}")

    monkeypatch.setattr(socket.socket, "connect", no_connect)
    with pytest.raises(outbound.UrlRefused):
        outbound.request("GET", url, timeout=(0.5, 0.5))


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/",
        "http://[::ffff:169.254.169.254]/",
        "http://metadata.google.internal/",
        "http://0.0.0.0:8000/",
        "http://224.0.0.1/",
        "http://2130706433/",
        "http://user@127.0.0.1/",
        "file:///etc/passwd",
    ],
)
def test_metadata_unspecified_multicast_and_syntax_tricks_stay_refused_with_the_flag(url, settings):
    settings.TASKENGINE_ALLOW_PRIVATE_URLS = True
    with pytest.raises(outbound.UrlRefused):
        outbound.validate_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/callback",
        "http://example.com:8080/a/b?token=x#frag",
        "https://93.184.215.14/",
        "https://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]/",
        "https://bücher.example/",
        "HTTPS://Example.COM/",
    ],
)
def test_ordinary_public_urls_pass_validation(url, settings):
    settings.TASKENGINE_ALLOW_PRIVATE_URLS = False
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
