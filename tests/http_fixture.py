"""A real HTTP server on 127.0.0.1 with scripted routes, so tests that fetch never reach the internet.

    def test_page(http_server):
        http_server.add("/story", "<html>...</html>")
        http_server.add_redirect("/old", "/story")
        page = Fetcher().run(http_server.url("/old"))

Routes: fixed bytes (`add`), a file (`add_file`), a redirect, a bare status, a large body generated
while it is sent (`add_generated`), a body that trickles for ever (`add_trickle`) and a request that is
never answered (`add_never_answer`). Unknown paths give 404. Every slow route gives up by itself
once the server stops or after `max_hold_seconds`, so no test can hang on it.
"""

from __future__ import annotations

import mimetypes
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

_Responder = Callable[[BaseHTTPRequestHandler], None]


class LocalHTTPServer:
    """A threaded HTTP/1.0 server on an ephemeral port; use as a context manager or start()/stop()."""

    def __init__(self, *, max_hold_seconds: float = 20.0) -> None:
        if max_hold_seconds <= 0:
            raise ValueError("max_hold_seconds must be positive")
        self.max_hold_seconds = max_hold_seconds
        self.requests: list[str] = []  # the paths asked for, in order
        self.request_times: list[float] = []  # and when (time.monotonic())
        self.request_headers: list[dict[str, str]] = []  # and their headers
        self._routes: dict[str, _Responder] = {}
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> LocalHTTPServer:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> LocalHTTPServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the server is not started")
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    # -- routes ----------------------------------------------------------------------------
    def add(
        self,
        path: str,
        body: bytes | str = b"",
        *,
        status: int = 200,
        content_type: str | None = "text/html; charset=utf-8",
        headers: dict[str, str] | None = None,
        delay: float = 0.0,
    ) -> None:
        """Serve fixed bytes (str is sent as UTF-8), after `delay` seconds."""
        data = body.encode("utf-8") if isinstance(body, str) else body

        def respond(handler: BaseHTTPRequestHandler) -> None:
            if delay:
                self._stopping.wait(min(delay, self.max_hold_seconds))
            handler.send_response(status)
            if content_type:
                handler.send_header("Content-Type", content_type)
            for name, value in (headers or {}).items():
                handler.send_header(name, value)
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)

        self._routes[path] = respond

    def add_file(self, path: str, file: str | Path, *, content_type: str | None = None) -> None:
        """Serve a file's bytes, with a Content-Type guessed from its name unless given."""
        file = Path(file)
        guessed = content_type or mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        self.add(path, file.read_bytes(), content_type=guessed)

    def add_redirect(self, path: str, location: str, *, status: int = 302) -> None:
        self.add(path, b"", status=status, content_type=None, headers={"Location": location})

    def add_status(self, path: str, status: int) -> None:
        self.add(path, f"status {status}", status=status, content_type="text/plain")

    def add_generated(
        self,
        path: str,
        size: int,
        *,
        content_type: str = "text/html; charset=utf-8",
        send_length: bool = True,
        unit: bytes = b"<p>news news news news news news news.</p>\n",
    ) -> None:
        """Serve `size` bytes made while sending (nothing that large is held or stored); stops early
        when the client hangs up. Without `send_length` the body ends when the connection closes."""

        def respond(handler: BaseHTTPRequestHandler) -> None:
            handler.send_response(200)
            handler.send_header("Content-Type", content_type)
            if send_length:
                handler.send_header("Content-Length", str(size))
            handler.end_headers()
            block = unit * (65_536 // len(unit) + 1)
            sent = 0
            try:
                while sent < size and not self._stopping.is_set():
                    piece = block[: size - sent]
                    handler.wfile.write(piece)
                    sent += len(piece)
            except OSError:
                return  # the client stopped reading, as it should past its limit

        self._routes[path] = respond

    def add_trickle(self, path: str, *, interval: float = 0.05, piece: bytes = b"<p>slow</p>\n") -> None:
        """Send headers, then a few bytes every `interval` seconds until the client or server gives up."""

        def respond(handler: BaseHTTPRequestHandler) -> None:
            handler.send_response(200)
            handler.send_header("Content-Type", "text/html; charset=utf-8")
            handler.end_headers()
            give_up = time.monotonic() + self.max_hold_seconds
            try:
                while not self._stopping.wait(interval) and time.monotonic() < give_up:
                    handler.wfile.write(piece)
                    handler.wfile.flush()
            except OSError:
                return

        self._routes[path] = respond

    def add_never_answer(self, path: str) -> None:
        """Read the request and send nothing until the server stops (or max_hold_seconds pass)."""

        def respond(handler: BaseHTTPRequestHandler) -> None:
            self._stopping.wait(self.max_hold_seconds)
            handler.close_connection = True

        self._routes[path] = respond

    # -- internals -------------------------------------------------------------------------
    def _respond(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path
        self.requests.append(path)
        self.request_times.append(time.monotonic())
        self.request_headers.append(dict(handler.headers.items()))
        responder = self._routes.get(path) or self._routes.get(path.split("?", 1)[0])
        if responder is None:
            handler.send_error(404, "Not Found")
            return
        responder(handler)


def _handler_class(server: LocalHTTPServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_GET(self) -> None:  # noqa: N802 - the name http.server dispatches to
            server._respond(self)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass  # keep test output clean

    return Handler


@pytest.fixture
def http_server() -> Iterator[LocalHTTPServer]:
    """A started LocalHTTPServer, stopped after the test."""
    with LocalHTTPServer() as server:
        yield server
