"""A local OpenAI-compatible chat server for tests: scripted replies, streamed as SSE, and faults.

Each request to /v1/chat/completions takes the next scripted `Reply` (the last one repeats), so a
test can say "a 429, then a 500, then an answer" and check what the real `openai` client made of it.
Like OpenAI's reasoning models, it can refuse requests that carry `max_tokens` or `temperature`.
It listens on 127.0.0.1 only and stops promptly, even while a slow reply is waiting.
"""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CONTEXT_LENGTH_ERROR = {
    "error": {
        "message": "This model's maximum context length is 2048 tokens. However, your messages resulted in "
        "3000 tokens. Please reduce the length of the messages.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }
}
# What OpenAI's reasoning models answer to options they do not take.
UNSUPPORTED_OPTION_ERRORS = {
    "max_tokens": {"error": {
        "message": "Unsupported parameter: 'max_tokens' is not supported with this model. "
        "Use 'max_completion_tokens' instead.",
        "type": "invalid_request_error", "param": "max_tokens", "code": "unsupported_parameter",
    }},
    "temperature": {"error": {
        "message": "Unsupported value: 'temperature' does not support 0 with this model. "
        "Only the default (1) value is supported.",
        "type": "invalid_request_error", "param": "temperature", "code": "unsupported_value",
    }},
}


@dataclass(frozen=True)
class Reply:
    """One scripted answer: `text` streamed word by word, or a raw `body` with `status` and `headers`."""

    text: str = ""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    delay: float = 0.0  # seconds to wait before answering
    stall: float = 0.0  # seconds to wait halfway through the body
    pace: float = 0.0  # seconds between streamed words, like a model writing

    @classmethod
    def rate_limited(cls, retry_after: str) -> Reply:
        error = {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}
        return cls(status=429, headers={"Retry-After": retry_after}, body=json.dumps(error).encode())

    @classmethod
    def server_error(cls) -> Reply:
        return cls(status=500, body=b'{"error": {"message": "internal error", "type": "server_error"}}')

    @classmethod
    def context_length(cls) -> Reply:
        return cls(status=400, body=json.dumps(CONTEXT_LENGTH_ERROR).encode())

    @classmethod
    def unsupported(cls, option: str) -> Reply:
        return cls(status=400, body=json.dumps(UNSUPPORTED_OPTION_ERRORS[option]).encode())

    @classmethod
    def empty(cls) -> Reply:
        return cls(body=b"", headers={"Content-Type": "text/event-stream"})

    @classmethod
    def malformed(cls) -> Reply:
        return cls(body=b'data: {"choices": [{"delta": {"content": "Hel\n\n', headers={"Content-Type": "text/event-stream"})

    @classmethod
    def slow(cls, seconds: float) -> Reply:
        return cls(text="late", delay=seconds)

    @classmethod
    def stalled(cls, seconds: float) -> Reply:
        return cls(text="a reply that stops in the middle", stall=seconds)


class FakeOpenAI:
    """Context manager: `with FakeOpenAI([Reply("Hi [1].")]) as fake: OpenAI(base_url=fake.base_url, ...)`.

    A request carrying an option named in `refuse` ("max_tokens", "temperature") gets OpenAI's 400
    for it and takes no scripted reply.
    """

    def __init__(self, replies: list[Reply], *, refuse: tuple[str, ...] = ()) -> None:
        if not replies:
            raise ValueError("script at least one reply")
        unknown = set(refuse) - set(UNSUPPORTED_OPTION_ERRORS)
        if unknown:
            raise ValueError(f"cannot refuse {', '.join(sorted(unknown))}")
        self._replies = list(replies)
        self._refuse = refuse
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self.requests: list[dict] = []  # JSON bodies received, in order
        self.headers: list[dict[str, str]] = []  # names lower-cased
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        # A short poll interval: shutdown() waits for it, once per test.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}/v1"

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _next(self, request: dict, headers: dict[str, str]) -> Reply:
        with self._lock:
            self.requests.append(request)
            self.headers.append(headers)
            refused = [option for option in self._refuse if option in request]
            if refused:
                return Reply.unsupported(refused[0])
            return self._replies.pop(0) if len(self._replies) > 1 else self._replies[0]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                if self.path != "/v1/chat/completions":
                    self.send_error(404)
                    return
                length = int(self.headers.get("Content-Length", "0"))
                request = json.loads(self.rfile.read(length))
                reply = fake._next(request, {k.lower(): v for k, v in self.headers.items()})
                if reply.delay and fake._closing.wait(reply.delay):
                    return
                events = [reply.body] if reply.body is not None else _sse(reply.text, request.get("model", ""))
                body = b"".join(events)
                self.send_response(reply.status)
                headers = {"Content-Type": "text/event-stream" if reply.body is None else "application/json"}
                for name, value in {**headers, **reply.headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                # Paced: one event at a time. Stalled: half the body, a wait, the rest.
                half = len(body) // 2
                pieces = events if reply.pace else [body[:half], body[half:]] if reply.stall else [body]
                pause = reply.pace or reply.stall
                try:
                    for n, piece in enumerate(pieces):
                        if n and fake._closing.wait(pause):
                            return
                        self.wfile.write(piece)
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test); nothing to clean up

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep test output quiet

        return Handler


def _sse(text: str, model: str) -> list[bytes]:
    """The answer's events as OpenAI streams them: a role chunk, one chunk per word, a finish chunk, [DONE]."""
    words = text.split(" ")
    deltas = [{"role": "assistant", "content": ""}] + [
        {"content": w if i == 0 else " " + w} for i, w in enumerate(words)
    ]
    events = [_chunk(model, delta, None) for delta in deltas] + [_chunk(model, {}, "stop")]
    return [f"data: {json.dumps(e)}\n\n".encode() for e in events] + [b"data: [DONE]\n\n"]


def _chunk(model: str, delta: dict, finish: str | None) -> dict:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def closed_port() -> int:
    """A loopback port with nothing listening, for 'connection refused'."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
