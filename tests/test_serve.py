"""`python -m inkwave.serve`: what it changes of daphne for a reconnect storm (the 1012 close
and the shutdown are tested with real clients in tests/test_system.py)."""

from __future__ import annotations

import pprint
import shutil
import subprocess
from pathlib import Path
from typing import Any

import autobahn.websocket.protocol
import pytest
from django.conf import settings

from inkwave.serve import InkwaveServer, LazyPformat, with_backlog
from tests.servers import ServerGroup


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("tcp:port=8000:interface=0.0.0.0", "tcp:port=8000:interface=0.0.0.0:backlog=512"),
        ("unix:/run/inkwave.sock", "unix:/run/inkwave.sock:backlog=512"),
        ("tcp:port=8000:backlog=64", "tcp:port=8000:backlog=64"),  # one given is kept
        ("fd:fileno=3", "fd:fileno=3"),  # a socket someone else listens on
    ],
)
def test_endpoints_listen_with_the_configured_backlog(endpoint: str, expected: str) -> None:
    assert with_backlog(endpoint, 512) == expected


def test_websocket_connections_write_no_access_log_lines_and_requests_do() -> None:
    written: list[tuple[str, str]] = []

    def action_logger(protocol: str, action: str, details: dict[str, Any]) -> None:
        written.append((protocol, action))

    server = InkwaveServer(
        application=None,
        endpoints=["tcp:port=8000:interface=127.0.0.1"],
        action_logger=action_logger,
        signal_handlers=False,
    )
    assert server.endpoints == [
        f"tcp:port=8000:interface=127.0.0.1:backlog={settings.WEB_LISTEN_BACKLOG}"
    ]
    for action in ("connecting", "connected", "disconnected", "rejected"):
        server.log_action("websocket", action, {})
    server.log_action("http", "complete", {})
    assert written == [("http", "complete")]


def test_autobahn_formats_its_debug_dump_only_when_it_is_written() -> None:
    assert autobahn.websocket.protocol.pformat is LazyPformat  # type: ignore[comparison-overlap]
    options = [("openHandshakeTimeout", 5, "WebSocketFactory")]
    assert str(LazyPformat(options)) == pprint.pformat(options)


@pytest.mark.system
@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2) to read the queue")
def test_a_web_process_listens_with_a_deep_queue(servers: ServerGroup, tmp_path: Path) -> None:
    server = servers.start()
    line = subprocess.run(
        ["ss", "-ltnH", f"sport = :{server.port}"], capture_output=True, text=True, check=True
    ).stdout.split()
    somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
    # For a listening socket, ss's Send-Q is the backlog it listens with.
    assert int(line[2]) == min(settings.WEB_LISTEN_BACKLOG, somaxconn)
