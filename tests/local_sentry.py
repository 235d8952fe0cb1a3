"""A local Sentry for tests: an HTTP server on 127.0.0.1 that speaks Sentry's ingestion
protocol, so sentry-sdk is tested as it runs, transport and compression included, and
nothing leaves the machine.

    with SentryServer() as sentry:
        setup_sentry(sentry.dsn)  # or SENTRY_DSN=sentry.dsn for another process
        ...
        sentry.wait_for_events(1)
        sentry.raw  # every byte that arrived, decompressed

The SDK POSTs envelopes to /api/<project>/envelope/: a JSON header line, then items, each a
JSON header line and a payload (`length` bytes, or up to the next newline), the body
compressed as Content-Encoding says.
"""

from __future__ import annotations

import gzip
import json
import re
import threading
import time
import zlib
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PROJECT_ID = 1
PUBLIC_KEY = "publickey"
_ENVELOPE_PATH = re.compile(rf"^/api/{PROJECT_ID}/envelope/?$")


class BadEnvelopeError(ValueError):
    pass


@dataclass(frozen=True)
class Item:
    headers: dict[str, Any]
    payload: bytes

    @property
    def type(self) -> str:
        return str(self.headers.get("type", ""))

    def json(self) -> dict[str, Any]:
        return dict(json.loads(self.payload))


@dataclass(frozen=True)
class Envelope:
    raw: bytes  # the body, decompressed
    headers: dict[str, Any]
    items: list[Item]


def parse_envelope(body: bytes) -> Envelope:
    header_line, _, rest = body.partition(b"\n")
    headers = json.loads(header_line)
    items = []
    while rest.strip(b"\n"):
        item_line, _, rest = rest.partition(b"\n")
        if not item_line.strip():
            continue
        item_headers = json.loads(item_line)
        length = item_headers.get("length")
        if length is None:
            payload, _, rest = rest.partition(b"\n")
        else:
            if len(rest) < length:
                raise BadEnvelopeError(f"an item says {length} bytes; {len(rest)} are left")
            payload, rest = rest[:length], rest[length:]
        items.append(Item(item_headers, payload))
    return Envelope(body, headers, items)


def decompress(body: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    if encoding == "br":
        import brotli  # only installed where the SDK would use it too

        return bytes(brotli.decompress(body))
    raise BadEnvelopeError(f"unknown Content-Encoding {encoding!r}")


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if not _ENVELOPE_PATH.match(self.path):
            self._answer(404, {"detail": "not an envelope endpoint"})
            return
        if f"sentry_key={PUBLIC_KEY}" not in (self.headers.get("X-Sentry-Auth") or ""):
            self._answer(401, {"detail": "unknown key"})
            return
        try:
            envelope = parse_envelope(decompress(body, self.headers.get("Content-Encoding", "")))
        except (BadEnvelopeError, ValueError, OSError, ImportError) as exc:
            self.server.record_error(f"{type(exc).__name__}: {exc}")
            self._answer(400, {"detail": str(exc)})
            return
        self.server.record(envelope)
        self._answer(200, {"id": envelope.headers.get("event_id")})

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.changed = threading.Condition()
        self.envelopes: list[Envelope] = []
        self.errors: list[str] = []

    def record(self, envelope: Envelope) -> None:
        with self.changed:
            self.envelopes.append(envelope)
            self.changed.notify_all()

    def record_error(self, error: str) -> None:
        with self.changed:
            self.errors.append(error)
            self.changed.notify_all()


class SentryServer:
    def __init__(self) -> None:
        self._server = _Server()
        self._thread = threading.Thread(
            # shutdown() waits up to one poll: 0.5 s by default, a second of every test's
            # teardown with two servers.
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
        )

    @property
    def dsn(self) -> str:
        return f"http://{PUBLIC_KEY}@127.0.0.1:{self._server.server_port}/{PROJECT_ID}"

    @property
    def envelopes(self) -> list[Envelope]:
        with self._server.changed:
            return list(self._server.envelopes)

    @property
    def raw(self) -> bytes:
        """Every envelope that arrived, decompressed, one after the other."""
        return b"\n".join(envelope.raw for envelope in self.envelopes)

    def items(self, kind: str) -> list[dict[str, Any]]:
        """The payloads of the items of one type ("event", "transaction"), in arrival order."""
        return [item.json() for e in self.envelopes for item in e.items if item.type == kind]

    @property
    def events(self) -> list[dict[str, Any]]:
        return self.items("event")

    def wait_for_events(self, count: int, timeout: float = 30.0, kind: str = "event") -> None:
        """Until `count` items of `kind` arrived; fails on an envelope the server refused."""
        deadline = time.monotonic() + timeout
        with self._server.changed:
            while True:
                assert not self._server.errors, f"refused envelopes: {self._server.errors}"
                arrived = sum(item.type == kind for e in self._server.envelopes for item in e.items)
                if arrived >= count:
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{arrived} of {count} {kind} items arrived")
                self._server.changed.wait(left)

    def __enter__(self) -> SentryServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
        assert not self._server.errors, f"refused envelopes: {self._server.errors}"
