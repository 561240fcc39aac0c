"""The guarded HTTP client for every request the engine makes on a client's behalf (DESIGN.md §6).

Callbacks, semaphore checks and HTTP steps reach URLs that clients chose, so each of them could be
aimed at the engine's own network (server-side request forgery). Two layers stop that:

- ``validate_url`` checks a URL's syntax at submission time: http(s) only, no credentials, no
  ambiguous numeric host (``2130706433``, ``0177.0.0.1``, ``0x7f.1``, ``127.1``), and a literal IP
  address must be public.
- ``request`` checks at *connect* time: the host name is resolved once, every resolved address must be
  public, and the socket is connected to an address that was checked, so a DNS name that resolves to a
  private address (or changes its answer between a check and the connection) and a redirect to one are
  refused too. Redirects are not followed unless asked for, and then each hop is checked again.

``settings.TASKENGINE_ALLOW_PRIVATE_URLS`` lets loopback, private, link-local and shared (CGNAT)
addresses through, for local development and tests. Cloud metadata endpoints, unspecified, multicast
and reserved addresses, and local-use IPv4/IPv6 translation addresses (whose IPv4 address cannot be
checked) are refused even then: no callback or semaphore legitimately lives there.

Every call has a connect and a read timeout, an overall deadline, and a response size cap; a body
larger than the cap is cut there (``truncated``) and the connection closed.
"""

from __future__ import annotations

import ipaddress
import json as jsonlib
import re
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util import connection as urllib3_connection

from taskengine_site.errors import DomainError
from taskengine_site.inputs import has_control
from taskengine_site.version import VERSION

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_TIMEOUT: tuple[float, float] = (3.05, 10.0)
DEFAULT_MAX_BYTES = 1_048_576
MAX_REDIRECTS = 5
MAX_URL_LENGTH = 2000
USER_AGENT = f"TaskEngine/{VERSION}"

_METADATA = tuple(
    ipaddress.ip_network(net)
    for net in (
        "169.254.169.254/32",  # AWS, GCP, Azure, OpenStack
        "169.254.170.2/32",  # AWS ECS task metadata
        "fd00:ec2::254/128",  # AWS IMDS over IPv6
        "100.100.100.200/32",  # Alibaba Cloud
    )
)
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT (RFC 6598)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# Translation prefixes whose IPv4 address is chosen by a translator on the local network (RFC 8215
# local-use NAT64, where the prefix length and so the position of the IPv4 address is the network's own
# choice; RFC 2765 IPv4-translated): what they reach cannot be checked here, so they are never reached.
_LOCAL_TRANSLATION = (ipaddress.ip_network("64:ff9b:1::/48"), ipaddress.ip_network("::ffff:0:0:0/96"))
_IPV4_COMPAT = ipaddress.ip_network("::/96")
_BLOCKED_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")
_ALWAYS_BLOCKED_NAMES = ("metadata.google.internal", "metadata", "instance-data")
# A label the WHATWG URL parser (and inet_aton) would read as a number: decimal, octal or hex.
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")
_CANONICAL_OCTET = re.compile(r"^(0|[1-9][0-9]{0,2})$")


class UrlRefused(DomainError):
    """The URL, or an address it resolves to, may not be reached from the engine."""

    def __init__(self, reason: str, *, what: str = "url") -> None:
        super().__init__(f"{what}: url not allowed: {reason}")
        self.reason = reason


class OutboundError(Exception):
    """The request could not be completed (DNS failure, refused connection, timeout, TLS error)."""


@dataclass(frozen=True)
class OutboundResponse:
    status_code: int
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    content: bytes = b""
    # True when the body was larger than max_bytes and was cut there.
    truncated: bool = False
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return 200 <= self.status_code < 300

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return jsonlib.loads(self.content)


def _allow_private() -> bool:
    return settings.TASKENGINE_ALLOW_PRIVATE_URLS


def address_refusal(ip: IPAddress, *, allow_private: bool | None = None) -> str | None:
    """Why ``ip`` may not be reached, or None when it may."""
    if allow_private is None:
        allow_private = _allow_private()
    if isinstance(ip, ipaddress.IPv6Address):
        if any(ip in net for net in _LOCAL_TRANSLATION):
            return f"{ip} is a local-use translation address"
        embedded = _embedded_ipv4(ip)
        for kind, v4 in embedded:
            inner = address_refusal(v4, allow_private=allow_private)
            if inner:
                return f"{ip} ({kind}): {inner}"
        if embedded:
            return None
        if ip.scope_id:
            return f"{ip} has a zone index"
    if ip.is_unspecified:
        return f"{ip} is the unspecified address"
    if ip.is_multicast:
        return f"{ip} is a multicast address"
    if any(ip in net for net in _METADATA):
        return f"{ip} is a cloud metadata address"
    if isinstance(ip, ipaddress.IPv4Address) and (
        ip.is_reserved or ip == ipaddress.IPv4Address("255.255.255.255")
    ):
        return f"{ip} is a reserved address"
    if allow_private:
        return None
    if ip.is_loopback:
        return f"{ip} is a loopback address"
    if ip.is_link_local:
        return f"{ip} is a link-local address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return f"{ip} is a site-local address"
    if ip.is_private:
        return f"{ip} is a private address"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED:
        return f"{ip} is a shared (CGNAT) address"
    if ip.is_reserved or not ip.is_global:
        return f"{ip} is not a public address"
    return None


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[tuple[str, ipaddress.IPv4Address]]:
    """The IPv4 addresses an IPv6 address carries (mapped, 6to4, Teredo, NAT64, compatible)."""
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.ipv4_mapped is not None:
        return [("IPv4-mapped form", ip.ipv4_mapped)]
    if ip.sixtofour is not None:
        return [("6to4 form", ip.sixtofour)]
    if ip.teredo is not None:
        server, client = ip.teredo
        return [("Teredo form", server), ("Teredo form", client)]
    if ip in _NAT64:
        return [("NAT64 form", low32)]
    if ip in _IPV4_COMPAT and int(ip) > 1:
        return [("IPv4-compatible form", low32)]
    return []


def _parse_host(host: str) -> IPAddress | None:
    """The IP address a URL host denotes, or None for a DNS name. Refuses ambiguous numeric forms."""
    if host.startswith("["):
        if not host.endswith("]"):
            raise UrlRefused("malformed IPv6 host")
        try:
            return ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise UrlRefused("malformed IPv6 host") from None
    labels = host.split(".")
    if _NUMERIC_LABEL.match(labels[-1]):
        # Browsers and inet_aton read 2130706433, 0177.0.0.1, 0x7f.1 and 127.1 as 127.0.0.1; only the
        # canonical dotted quad is accepted so what is checked is what gets connected to.
        if len(labels) != 4 or not all(
            _CANONICAL_OCTET.match(label) and int(label) <= 255 for label in labels
        ):
            raise UrlRefused(f"ambiguous numeric host {host!r}")
        return ipaddress.IPv4Address(host)
    return None


def _normalise_host(raw: str) -> str:
    try:
        # ASCII names too: the codec refuses an empty or over-long (63+) label, which no lookup could use.
        host = raw.encode("idna").decode("ascii")
    except UnicodeError:
        raise UrlRefused("host is not a valid domain name") from None
    host = host.lower().rstrip(".")
    if not host:
        raise UrlRefused("no host")
    return host


def validate_url(url: str, *, what: str = "url") -> None:
    """Refuse a URL the engine must not call: wrong scheme, credentials, or a non-public literal address.

    Raises ``DomainError("<what>: url not allowed: <reason>")``. Host names are resolved only when the
    request is made (``request``), where the addresses they resolve to are checked.
    """
    try:
        _check_url(url)
    except UrlRefused as exc:
        raise UrlRefused(exc.reason, what=what) from None


def _check_url(url: str) -> tuple[str, str]:
    """Validate ``url``; return its (scheme, host)."""
    if not isinstance(url, str) or not url:
        raise UrlRefused("not a string")
    if len(url) > MAX_URL_LENGTH:
        raise UrlRefused(f"longer than {MAX_URL_LENGTH} characters")
    if has_control(url) or any(ch.isspace() for ch in url) or "\\" in url:
        raise UrlRefused("whitespace, control characters or backslashes")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlRefused(f"malformed URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UrlRefused(f"scheme {scheme or '(none)'!r} is not http or https")
    if "@" in parts.netloc:
        raise UrlRefused("credentials in the URL")
    if port == 0:
        raise UrlRefused("port 0")
    raw_host = parts.hostname or ""
    host = f"[{raw_host}]" if ":" in raw_host else _normalise_host(raw_host)
    if host in _ALWAYS_BLOCKED_NAMES:
        raise UrlRefused(f"{host} is a cloud metadata name")
    if not _allow_private() and (host in _BLOCKED_NAMES or host.endswith(".localhost")):
        raise UrlRefused(f"{host} is a loopback name")
    ip = _parse_host(host)
    if ip is not None:
        reason = address_refusal(ip)
        if reason:
            raise UrlRefused(reason)
    return scheme, host


def resolve_checked(host: str, port: int) -> list[str]:
    """Resolve ``host`` once and return its addresses, refusing if any of them may not be reached.

    Every address is checked, not only the first: a name with one public and one private answer could
    otherwise be aimed at the private one by the connection's fallback.
    """
    host = host.strip("[]")
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[str] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        address = str(sockaddr[0])
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if "%" in address and not _allow_private():
            raise UrlRefused(f"{host} resolves to {address}, which has a zone index")
        reason = address_refusal(ip)
        if reason:
            raise UrlRefused(
                f"{host} resolves to a refused address: {reason}" if ip.compressed != host else reason
            )
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise UrlRefused(f"{host} resolves to no address")
    return addresses


class _GuardedConnectionMixin:
    """Resolves once, checks every address, and connects the socket to a checked address."""

    _dns_host: str
    port: int
    host: str
    timeout: float | None
    source_address: tuple[str, int] | None
    socket_options: Any

    def _new_conn(self) -> socket.socket:
        try:
            addresses = resolve_checked(self._dns_host, self.port)
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc  # type: ignore[arg-type]
        last: OSError | None = None
        for address in addresses:
            try:
                return urllib3_connection.create_connection(
                    (address, self.port),
                    self.timeout,
                    source_address=self.source_address,
                    socket_options=self.socket_options,
                )
            except TimeoutError as exc:
                raise ConnectTimeoutError(
                    self, f"Connection to {self.host} timed out. (connect timeout={self.timeout})"
                ) from exc
            except OSError as exc:
                last = exc
        raise NewConnectionError(self, f"Failed to establish a new connection: {last}")  # type: ignore[arg-type]


class _GuardedHTTPConnection(_GuardedConnectionMixin, HTTPConnection):
    pass


class _GuardedHTTPSConnection(_GuardedConnectionMixin, HTTPSConnection):
    pass


class _GuardedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


class GuardedAdapter(HTTPAdapter):
    """A requests adapter whose connections go through ``resolve_checked``."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _GuardedHTTPConnectionPool,
            "https": _GuardedHTTPSConnectionPool,
        }


def _session() -> requests.Session:
    session = requests.Session()
    # Environment proxies would connect on our behalf, past the address check.
    session.trust_env = False
    adapter = GuardedAdapter(max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def request(
    method: str,
    url: str,
    *,
    json: Any = None,
    data: bytes | str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
    max_bytes: int = DEFAULT_MAX_BYTES,
    allow_redirects: bool = False,
    deadline: float | None = None,
) -> OutboundResponse:
    """Make one guarded HTTP request and return its status, headers and (capped) body.

    Raises ``UrlRefused`` (a ``DomainError``) when the URL or an address it resolves to is not allowed,
    ``OutboundError`` when the request fails (DNS, connection, TLS, timeout). ``deadline`` bounds the
    whole call in seconds (default: connect + read timeout, doubled), so a server dripping its answer
    cannot hold a worker.
    """
    connect_timeout, read_timeout = timeout if isinstance(timeout, tuple) else (timeout, timeout)
    budget = deadline if deadline is not None else 2 * (connect_timeout + read_timeout)
    started = time.monotonic()
    send_headers = {"User-Agent": USER_AGENT}
    send_headers.update(headers or {})
    body: bytes | str | None = data
    if json is not None:
        body = jsonlib.dumps(json, separators=(",", ":"), ensure_ascii=False).encode()
        send_headers.setdefault("Content-Type", "application/json")
    method = method.upper()
    current = url
    with _session() as session:
        for _hop in range(MAX_REDIRECTS + 1):
            _check_url(current)
            try:
                response = session.request(
                    method,
                    current,
                    data=body,
                    headers=send_headers,
                    timeout=(connect_timeout, read_timeout),
                    allow_redirects=False,
                    stream=True,
                )
            except UrlRefused:
                raise
            except requests.RequestException as exc:
                raise OutboundError(_describe(exc)) from exc
            try:
                location = response.headers.get("Location")
                if allow_redirects and response.is_redirect and location:
                    current = urljoin(current, location)
                    if response.status_code == 303 or (
                        response.status_code in (301, 302) and method not in ("GET", "HEAD")
                    ):
                        method, body = "GET", None
                        send_headers.pop("Content-Type", None)
                    continue
                content, truncated = _read_capped(response, max_bytes, started + budget)
                return OutboundResponse(
                    status_code=response.status_code,
                    url=current,
                    headers=dict(response.headers),
                    content=content,
                    truncated=truncated,
                    elapsed=time.monotonic() - started,
                )
            finally:
                response.close()
    raise OutboundError(f"more than {MAX_REDIRECTS} redirects")


def _read_capped(response: requests.Response, max_bytes: int, deadline: float) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in response.iter_content(chunk_size=16_384):
            if time.monotonic() > deadline:
                raise OutboundError("the response took longer than the request's deadline")
            if size + len(chunk) > max_bytes:
                chunks.append(chunk[: max_bytes - size])
                return b"".join(chunks), True
            chunks.append(chunk)
            size += len(chunk)
    except requests.RequestException as exc:
        raise OutboundError(_describe(exc)) from exc
    return b"".join(chunks), False


def _describe(exc: BaseException) -> str:
    """A short reason for a failed request, without the URL's query string (it may hold a token)."""
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS error"
    text = str(exc)
    for marker in ("Name or service not known", "nodename nor servname", "Connection refused", "No route"):
        if marker in text:
            return marker.lower()
    return type(exc).__name__


def redact(url: str) -> str:
    """``url`` without credentials, query or fragment, for logs."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<malformed url>"
    return f"{parts.scheme}://{host}{port}{parts.path}"
