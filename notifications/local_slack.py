"""A local Slack stand-in for tests, benchmarks and demos: an HTTP server on 127.0.0.1 (or
another local address it is given: a bench bridge's, for processes in network namespaces) that
speaks the Slack Web API (chat.postMessage, chat.update, users.info), the incoming-webhook
protocol and the response_url of clicks and slash commands (posts to /actions/...),
records what it accepts, and can be told to fail the way Slack fails.

    with SlackServer() as slack:
        slack.fail_next(Reply.rate_limited(retry_after=30), Reply.error("invalid_auth"))
        ... settings.SLACK_API_URL = slack.api_url
        slack.posts  # what arrived, in order

It lives here, next to the real transport (notifications/slack.py), so that tests/ and bench/
share one copy without bench importing from tests/. No production code path imports it
(tests/test_layout.py checks): it is a tool for trying the system without Slack, not part of it.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

TOKEN = "xoxb-test-token"  # noqa: S105 (the stand-in's fixed bot token, not a secret)


@dataclass(frozen=True)
class Reply:
    kind: str  # ok, rate_limited, error, status, hang, drop
    value: Any = None

    @classmethod
    def ok(cls) -> Reply:
        return cls("ok")

    @classmethod
    def rate_limited(cls, retry_after: int) -> Reply:
        return cls("rate_limited", retry_after)

    @classmethod
    def error(cls, code: str) -> Reply:
        return cls("error", code)

    @classmethod
    def status(cls, code: int) -> Reply:
        return cls("status", code)

    @classmethod
    def hang(cls, seconds: float) -> Reply:
        return cls("hang", seconds)

    @classmethod
    def drop(cls) -> Reply:
        """Close the connection without answering: Slack is down."""
        return cls("drop")


@dataclass
class Post:
    path: str
    body: dict[str, Any]
    at: float
    ts: str = ""


@dataclass
class SlackState:
    script: deque[Reply] = field(default_factory=deque)
    posts: list[Post] = field(default_factory=list)
    down: bool = False
    always: Reply | None = None  # the answer to every request not scripted (None: ok)
    lock: threading.Lock = field(default_factory=threading.Lock)
    counter: int = 0
    request_started: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    # The workspace's members, as users.info answers them (by member id).
    users: dict[str, dict[str, Any]] = field(default_factory=dict)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode()
        self._serve(self.path, self._parse(raw))

    def do_GET(self) -> None:
        # users.info is a GET with its arguments in the query string (slack_sdk sends it so).
        parts = urlsplit(self.path)
        self._serve(parts.path, {k: v[0] for k, v in parse_qs(parts.query).items()})

    def _serve(self, path: str, body: dict[str, Any]) -> None:
        state = self.server.state
        state.request_started.set()
        with state.lock:
            reply = (
                Reply("drop")
                if state.down
                else (state.script.popleft() if state.script else state.always or Reply.ok())
            )
        if reply.kind == "drop":
            self.close_connection = True
            self.connection.close()
            return
        if reply.kind == "hang":
            state.release.wait(reply.value)
            if self._client_gone():
                return  # the sender died before the answer: nothing was posted
            reply = Reply.ok()
        # Incoming webhooks, and the response_url of a click or a command: the URL is the
        # credential, no token is sent.
        webhook = path.startswith(("/services/", "/actions/", "/commands/"))
        if not webhook and self.headers.get("Authorization") != f"Bearer {TOKEN}":
            reply = Reply.error("invalid_auth")
        if reply.kind == "ok":
            with state.lock:
                state.counter += 1
                ts = f"{1700000000 + state.counter}.{state.counter:06d}"
                state.posts.append(Post(path, body, time.time(), ts))
                member = state.users.get(body.get("user", ""))
            if webhook:
                self._send(200, "ok", "text/plain")
            elif path.endswith("/users.info"):
                found = {"ok": True, "user": member} if member else None
                self._send(200, json.dumps(found or {"ok": False, "error": "user_not_found"}))
            else:
                channel = body.get("channel", "")
                self._send(
                    200, json.dumps({"ok": True, "channel": channel, "ts": body.get("ts", ts)})
                )
        elif reply.kind == "rate_limited":
            if webhook:
                self._send(429, "rate_limited", "text/plain", {"Retry-After": str(reply.value)})
            else:
                self._send(
                    429,
                    json.dumps({"ok": False, "error": "ratelimited"}),
                    headers={"Retry-After": str(reply.value)},
                )
        elif reply.kind == "error":
            if webhook:
                self._send(404, reply.value, "text/plain")
            else:
                self._send(200, json.dumps({"ok": False, "error": reply.value}))
        elif reply.kind == "status":
            self._send(reply.value, "<html>upstream failure</html>", "text/html")

    def _client_gone(self) -> bool:
        self.connection.setblocking(False)
        try:
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True
        finally:
            self.connection.setblocking(True)

    def _parse(self, raw: str) -> dict[str, Any]:
        if self.headers.get("Content-Type", "").startswith("application/json"):
            return json.loads(raw or "{}")
        return {key: values[0] for key, values in parse_qs(raw).items()}

    def _send(
        self,
        status: int,
        text: str,
        content_type: str = "application/json; charset=utf-8",
        headers: dict[str, str] | None = None,
    ) -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: SlackState


class SlackServer:
    """Serves from `__enter__` to `__exit__`, on `host`:`port` (0: one the kernel picks)."""

    def __init__(self, port: int = 0, host: str = "127.0.0.1") -> None:
        self.host = host
        self._server = _Server((host, port), _Handler)
        self._server.state = SlackState()
        self._thread = threading.Thread(
            # shutdown() waits up to one poll: 0.5 s by default, a second of every test's
            # teardown with two servers.
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
        )

    @property
    def state(self) -> SlackState:
        return self._server.state

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}/api/"

    def webhook_url(self, name: str = "T000/B000/hooksecret") -> str:
        return f"http://{self.host}:{self.port}/services/{name}"

    def response_url(self, name: str = "T000/1234/respondsecret") -> str:
        """Where a click's or a command's answer goes (Slack's hooks.slack.com/actions/...)."""
        return f"http://{self.host}:{self.port}/actions/{name}"

    @property
    def posts(self) -> list[Post]:
        with self.state.lock:
            return list(self.state.posts)

    def posts_from(self, start: int) -> list[Post]:
        """The posts after the first `start` (a reader that remembers how many it has seen)."""
        with self.state.lock:
            return self.state.posts[start:]

    def count(self) -> int:
        with self.state.lock:
            return len(self.state.posts)

    def add_member(
        self,
        member_id: str,
        email: str,
        *,
        confirmed: bool = True,
        is_bot: bool = False,
        deleted: bool = False,
        guest: bool = False,
    ) -> None:
        """A workspace member, as users.info describes one (with the users:read.email scope)."""
        with self.state.lock:
            self.state.users[member_id] = {
                "id": member_id,
                "team_id": "T000",
                "name": email.partition("@")[0],
                "deleted": deleted,
                "is_bot": is_bot,
                "is_app_user": False,
                "is_restricted": guest,
                "is_ultra_restricted": False,
                "is_email_confirmed": confirmed,
                "profile": {"email": email, "real_name": email.partition("@")[0]},
            }

    def lookups(self) -> list[str]:
        """The member ids users.info was asked about, in order."""
        return [p.body.get("user", "") for p in self.posts if p.path.endswith("/users.info")]

    def fail_next(self, *replies: Reply) -> None:
        with self.state.lock:
            self.state.script.extend(replies)

    def answer_all(self, reply: Reply | None) -> None:
        """From now on, answer every request not scripted with `reply` (None: as Slack does)."""
        with self.state.lock:
            self.state.always = reply

    def go_down(self) -> None:
        self.state.down = True

    def come_back(self) -> None:
        self.state.down = False

    def __enter__(self) -> SlackServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.state.release.set()
        self._server.shutdown()
        self._server.server_close()
