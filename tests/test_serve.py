"""`python -m inkwave.serve`: what it changes of daphne for a reconnect storm (the 1012 close
and the shutdown are tested with real clients in tests/test_system.py)."""

from __future__ import annotations

import asyncio
import base64
import os
import pprint
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import autobahn.websocket.protocol
import pytest
from django.conf import settings

from inkwave.serve import InkwaveServer, LazyPformat, with_backlog
from orders.broadcast import abroadcast_to_venue
from orders.models import Venue
from tests.servers import DaphneServer, ServerGroup


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


def masked_text_frame(text: str) -> bytes:
    """A client's WebSocket text frame (clients must mask), up to 125 bytes."""
    data = text.encode()
    assert len(data) < 126
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    return bytes([0x81, 0x80 | len(data)]) + mask + masked


def open_never_reading(server: DaphneServer, path: str) -> socket.socket:
    """A WebSocket that never reads past its handshake, with a small receive window."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        head += sock.recv(1)  # a byte at a time: nothing past the handshake is read
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


@pytest.mark.system
async def test_a_client_that_never_reads_is_cut_before_its_frames_fill_the_servers_memory(
    servers: ServerGroup, venue: Venue, venue_token: str
) -> None:
    """daphne sends what the application gives it at once, and Twisted keeps what the client
    has not taken in memory, without a bound. A client that never reads is dropped by daphne's
    keepalive ping only while it says nothing itself: one that sends a frame now and then is
    never pinged, and its room's broadcasts piled up in the server for ever (the attacker's
    pass found 2.8 MB a second with 30 such clients at 5 large orders a second)."""
    server = servers.start(WS_MAX_UNSENT_BYTES="262144")
    sock = await asyncio.to_thread(
        open_never_reading, server, f"/ws/venues/{venue.pk}/?token={venue_token}"
    )
    frame = {"item": "x" * 50_000}
    cut = False
    try:
        # 10 MB at most: far more than the limit and the kernel's buffers. A ping every tenth
        # broadcast, within the rate limit (WS_RATE_LIMIT_PER_SECOND): daphne never pings it.
        for sent in range(200):
            await abroadcast_to_venue(venue.pk, "order.placed", frame)
            if sent % 10 == 0:
                try:
                    await asyncio.to_thread(sock.sendall, masked_text_frame('{"type":"ping"}'))
                except OSError:  # reset: the server dropped it
                    cut = True
                    break
            await asyncio.sleep(0.02)
    finally:
        sock.close()
    assert cut


@pytest.mark.parametrize("state", ["STATE_CLOSING", "STATE_CLOSED"])
def test_a_frame_for_a_connection_already_closing_is_not_sent_nor_a_server_failure(
    state: str,
) -> None:
    """A room event sent to a connection whose close had begun (its client left, or sent an
    oversized frame) before the consumer heard: autobahn raised its Disconnected, which the
    consumer took for its own failure (1011, an internal error that moved the service's error
    rate: the soak's attacker raised *Elevated error rate*). Now it is ConnectionClosing, which
    the consumer takes for what it is: a frame not sent, and not counted as sent."""
    from autobahn.exception import Disconnected
    from daphne.ws_protocol import WebSocketProtocol

    from inkwave.lib.sockets import ConnectionClosing
    from inkwave.serve import InkwaveWebSocketProtocol

    protocol = InkwaveWebSocketProtocol()
    protocol.state = getattr(protocol, state)
    protocol.client_addr = ["127.0.0.1", 1]
    with pytest.raises(Disconnected):
        WebSocketProtocol.serverSend(protocol, '{"type": "order.placed"}')  # daphne's own
    with pytest.raises(ConnectionClosing):
        protocol.serverSend('{"type": "order.placed"}')


async def test_the_consumer_neither_counts_nor_fails_on_a_frame_for_a_closing_connection(
    venue: Venue, fresh_monitor: Any
) -> None:
    from inkwave.lib.sockets import ConnectionClosing
    from orders.consumers import VenueRoomConsumer
    from orders.protocol import ErrorCode

    consumer = VenueRoomConsumer()
    consumer.monitor = fresh_monitor
    consumer.group = "venue.1"
    consumer.closing = False
    consumer.last_seq = 0

    async def closing(message: dict[str, Any]) -> None:
        raise ConnectionClosing

    consumer.base_send = closing
    await consumer.venue_event({"seq": 1, "frame": "{}", "sent_at": 0.0})
    await consumer.send_error(ErrorCode.INVALID_MESSAGE, "x")
    assert (fresh_monitor.messages_sent, fresh_monitor.errors) == (0, 0)
