"""Fetch one URL within hard limits: a total deadline, a size cap, checked redirects, an SSRF guard.

Redirects are followed here, one hop at a time, so that every hop is checked against the same
rules as the first URL. With `refuse_private`, each host is resolved once, every address is checked,
and the connection goes to a checked address, so a DNS answer that changes between the check and
the connection (DNS rebinding) cannot reach an internal service.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import ipaddress
import socket
import ssl
import threading
import time
import zlib
from dataclasses import dataclass
from email.message import Message
from typing import Any
from urllib.parse import SplitResult, quote, unquote, urljoin, urlsplit

from index.sources.common import SourceError, format_size

DEFAULT_USER_AGENT = "newsdesk/0.1 (+https://github.com/newsdesk)"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_ACCEPT = (
    "text/html,application/xhtml+xml,application/rss+xml,application/atom+xml,"
    "application/feed+json,application/xml;q=0.9,application/json;q=0.8,text/plain;q=0.8,*/*;q=0.5"
)
_CHUNK = 65_536


class FetchError(SourceError):
    """A URL that could not be fetched; `reason` says why in one line ("HTTP 404")."""


@dataclass(frozen=True)
class FetchLimits:
    timeout_seconds: float = 15.0  # for the whole fetch, redirects included
    max_bytes: int = 5_000_000  # of body, after any gzip decoding
    max_redirects: int = 5
    user_agent: str = DEFAULT_USER_AGENT
    refuse_private: bool = False
    allow_hosts: tuple[str, ...] = ()  # host names exempt from refuse_private

    def __post_init__(self) -> None:
        if not self.timeout_seconds > 0:
            raise ValueError("timeout_seconds must be positive")
        if self.max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        if self.max_redirects < 0:
            raise ValueError("max_redirects cannot be negative")
        if not self.user_agent.strip():
            raise ValueError("user_agent cannot be empty")
        hosts = tuple(host.strip().lower().rstrip(".") for host in self.allow_hosts)
        object.__setattr__(self, "allow_hosts", tuple(host for host in hosts if host))


@dataclass(frozen=True)
class FetchedPage:
    url: str  # as asked for
    final_url: str  # after redirects
    status: int
    body: bytes
    content_type: str  # media type, lower case, without parameters; "" when none was sent
    charset: str | None  # from the Content-Type header


class Fetcher:
    """GET a URL, following redirects, within `FetchLimits`; raises FetchError. Thread-safe."""

    def __init__(self, limits: FetchLimits | None = None) -> None:
        self.limits = limits or FetchLimits()
        self._tls = ssl.create_default_context()

    def run(self, url: str) -> FetchedPage:
        deadline = _Deadline(self.limits.timeout_seconds)
        current = url.strip()
        seen = {current.split("#", 1)[0]}
        for hop in range(self.limits.max_redirects + 1):
            status, headers, body = self._hop(current, deadline)
            location = headers.get("Location")
            if status in _REDIRECTS and location:
                target = urljoin(current, location.strip())
                key = target.split("#", 1)[0]
                if key in seen:
                    raise FetchError("redirect loop")
                if hop == self.limits.max_redirects:
                    raise FetchError("too many redirects")
                seen.add(key)
                current = target
                continue
            if not 200 <= status < 300:
                raise FetchError(f"HTTP {status}")
            content_type = headers.get_content_type() if headers.get("Content-Type") else ""
            return FetchedPage(url, current, status, body, content_type, headers.get_content_charset())
        raise AssertionError("unreachable: the loop returns or raises")

    def _hop(self, url: str, deadline: _Deadline) -> tuple[int, Message, bytes]:
        """One request: (status, headers, body); the body is empty for redirects."""
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("http", "https"):
            raise FetchError("not http(s)")
        host = _ascii_host(parts.hostname)
        try:
            port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        except ValueError:
            raise FetchError("bad port in URL") from None
        addresses = self._addresses(host, port, deadline)
        target = quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
        if parts.query:
            target += "?" + quote(parts.query, safe="/%:@!$&'()*+,;=-._~?")
        connection = self._connection(parts.scheme.lower(), host, port, addresses, deadline.remaining())
        watchdog = threading.Timer(deadline.remaining(), deadline.expire)
        watchdog.daemon = True
        watchdog.start()
        try:
            connection.connect()
            deadline.watch(connection.sock)
            connection.request("GET", target, headers=self._headers(parts))
            response = connection.getresponse()
            if response.status in _REDIRECTS:
                return response.status, response.msg, b""
            body = self._read_body(response, deadline) if 200 <= response.status < 300 else b""
            deadline.check()
            return response.status, response.msg, body
        except FetchError:
            raise
        except TimeoutError:
            raise FetchError(deadline.reason()) from None
        except ssl.SSLCertVerificationError as exc:
            raise FetchError(f"TLS certificate rejected: {exc.verify_message}") from None
        except ssl.SSLError as exc:
            deadline.check()
            raise FetchError(f"TLS error: {exc.reason or exc}") from None
        except ConnectionRefusedError:
            raise FetchError("connection refused") from None
        except (http.client.HTTPException, ConnectionError) as exc:
            deadline.check()  # a connection cut by the watchdog ends in one of these
            raise FetchError(f"bad or incomplete HTTP response ({type(exc).__name__})") from None
        except OSError as exc:
            deadline.check()
            raise FetchError(f"network error: {exc.strerror or exc}") from None
        finally:
            watchdog.cancel()
            connection.close()

    def _headers(self, parts: SplitResult) -> dict[str, str]:
        headers = {
            "User-Agent": self.limits.user_agent,
            "Accept": _ACCEPT,
            "Accept-Encoding": "gzip, deflate",
            "Connection": "close",
        }
        if parts.username is not None:
            # A private feed's `https://user:password@host/...`, as feed readers take it. A redirect
            # to another host drops the userinfo (urljoin), so the password goes nowhere else.
            login = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(login).decode("ascii")
        return headers

    def _addresses(self, host: str, port: int, deadline: _Deadline) -> list[tuple]:
        """The socket addresses to connect to, each one checked when private ones are refused."""
        try:
            literal = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        if literal is not None:
            addresses = [(str(literal), port)]
        else:
            addresses = [info[4] for info in _resolve(host, port, deadline)]
        if self.limits.refuse_private and host not in self.limits.allow_hosts:
            for sockaddr in addresses:
                address = ipaddress.ip_address(sockaddr[0].split("%", 1)[0])
                if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
                    address = address.ipv4_mapped
                if not _is_public(address):
                    raise FetchError(f"refused: private address {address}")
        return addresses

    def _connection(
        self, scheme: str, host: str, port: int, addresses: list[tuple], timeout: float
    ) -> http.client.HTTPConnection:
        if scheme == "https":
            return _PinnedHTTPSConnection(host, port, addresses, timeout, self._tls)
        return _PinnedHTTPConnection(host, port, addresses, timeout)

    def _read_body(self, response: http.client.HTTPResponse, deadline: _Deadline) -> bytes:
        limit = self.limits.max_bytes
        too_large = FetchError(f"page larger than {format_size(limit)}")
        declared = response.getheader("Content-Length", "")
        if declared.isdigit() and int(declared) > limit and not response.getheader("Content-Encoding"):
            raise too_large
        inflater = _inflater(response.getheader("Content-Encoding", ""))
        chunks: list[bytes] = []
        size = 0
        while chunk := response.read1(_CHUNK):
            deadline.check()
            if inflater is not None:
                # max_length bounds what one compressed chunk may expand to (a gzip bomb).
                chunk = inflater.decompress(chunk, limit - size + 1)
                if inflater.unconsumed_tail:
                    raise too_large
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
        return b"".join(chunks)


class _Deadline:
    """The time left for a whole fetch; `expire` cuts the watched connection when it runs out."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds
        self.expired = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    def remaining(self) -> float:
        left = self._end - time.monotonic()
        if left <= 0:
            raise FetchError(self.reason())
        return left

    def reason(self) -> str:
        return f"timed out after {self.seconds:g} s"

    def check(self) -> None:
        if self.expired or time.monotonic() >= self._end:
            raise FetchError(self.reason())

    def watch(self, sock: socket.socket | None) -> None:
        """The socket to cut at expiry (kept here: http.client drops its own reference early)."""
        with self._lock:
            self._sock = sock
        if self.expired:
            self.expire()

    def expire(self) -> None:
        # shutdown() wakes a thread blocked in recv(); socket timeouts alone would let a server
        # that trickles one byte at a time hold the fetch for ever.
        self.expired = True
        with self._lock, contextlib.suppress(OSError):
            if self._sock is not None:
                self._sock.shutdown(socket.SHUT_RDWR)


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection to addresses resolved (and checked) beforehand; Host stays the name."""

    def __init__(self, host: str, port: int, addresses: list[tuple], timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._addresses = addresses

    def connect(self) -> None:
        self.sock = _connect(self._addresses, self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """Like _PinnedHTTPConnection, with the certificate checked against the host name."""

    def __init__(self, host: str, port: int, addresses: list[tuple], timeout: float, tls: ssl.SSLContext) -> None:
        super().__init__(host, port, timeout=timeout, context=tls)
        self._addresses = addresses
        self._tls = tls

    def connect(self) -> None:
        self.sock = self._tls.wrap_socket(_connect(self._addresses, self.timeout), server_hostname=self.host)


def _connect(addresses: list[tuple], timeout: float | None) -> socket.socket:
    error: OSError | None = None
    for sockaddr in addresses:
        family = socket.AF_INET6 if ":" in sockaddr[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
    raise error or OSError("no address to connect to")


def _resolve(host: str, port: int, deadline: _Deadline) -> list[tuple]:
    """getaddrinfo within the deadline (it has no timeout of its own); raises FetchError."""
    outcome: dict[str, object] = {}

    def lookup() -> None:
        try:
            outcome["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=lookup, daemon=True, name=f"resolve {host}")
    worker.start()
    worker.join(deadline.remaining())
    if worker.is_alive():
        raise FetchError(deadline.reason())
    infos = outcome.get("infos")
    if not infos:
        raise FetchError(f"could not resolve host {host}")
    return [info for info in infos if info[0] in (socket.AF_INET, socket.AF_INET6)]  # type: ignore[union-attr]


def _is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """False for loopback, private, link-local (cloud metadata), multicast, reserved and the like."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.sixtofour or (address.teredo[1] if address.teredo else None)
        if embedded is not None and not _is_public(embedded):
            return False
        if address in _NAT64:
            return _is_public(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return address.is_global and not (
        address.is_multicast
        or address.is_reserved
        or address.is_loopback
        or address.is_link_local
        or address.is_unspecified
        or address.is_private
    )


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _ascii_host(host: str | None) -> str:
    if not host:
        raise FetchError("no host in URL")
    host = host.lower().rstrip(".")
    if host.isascii():
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        raise FetchError("bad host name in URL") from None


def _inflater(encoding: str) -> Any:  # a zlib decompress object, whose type zlib does not export
    encoding = encoding.strip().lower()
    if encoding in ("gzip", "x-gzip", "deflate"):
        return zlib.decompressobj(wbits=47)  # 32 + 15: gzip or zlib header, detected
    if encoding in ("", "identity"):
        return None
    raise FetchError(f"unsupported content encoding {encoding!r}")
