"""`python -m inkwave.serve`: daphne's command line, with a shutdown that lets consumers leave.

daphne 4.2.3's shutdown reads details["application_instance"] for every connection, but an
HTTP connection upgraded to a WebSocket has none: a KeyError, nothing is cancelled, and the
consumers never leave their rooms' groups (the members would stay for the layer's group
expiry, a day, and be sent every broadcast). This cancels every running consumer, whose
cleanup then runs. Use it wherever `daphne` would be run; it takes the same arguments.

It also lets an application close a WebSocket with 1011 ("the server cannot serve this
now", the venue rooms' close code for a channel layer outage). autobahn's sendClose only
accepts the codes an application may pick (1000, 3000-4999) and raises on 1011, although
RFC 6455 gives it to servers and daphne itself sends it when an application crashes.

It listens with a backlog of WEB_LISTEN_BACKLOG connections (Twisted's default is 50), so
that a reconnect storm is queued rather than dropped.

It also tells a stop that was asked for (SIGTERM, SIGINT) from an exit on an error, so the
last metrics flush marks the process stopped only in the first case (inkwave.shutdown).

Nothing is formatted per WebSocket connection for a log line nobody reads: daphne's access
log keeps its HTTP lines but writes none for WebSocket connects and disconnects (the monitor
counts them; three lines a connection were most of a reconnect storm's log), and autobahn's
debug dump of each connection's options (a pformat() run for every handshake, debug logging
or not) is only formatted when a debug line is really written.

And a process that stops tells its WebSocket clients so, with 1012 (service restart), before
its consumers are cancelled: a client then reconnects after a random delay and resumes
(docs/protocol.md), rather than finding its socket dead.

And a WebSocket client that does not read what it is sent is cut once WS_MAX_UNSENT_BYTES wait
for it. daphne writes each frame at once and Twisted keeps in memory whatever the kernel does
not take, without a bound; daphne's keepalive ping, which would drop a client that stopped
reading, is only sent to one that has said nothing for a while, so a client that sends a
frame now and then but never reads had its room's broadcasts pile up in the process for ever.
A kitchen screen on a stalled network that is cut reconnects and resumes, missing nothing.
"""

from __future__ import annotations

import asyncio
import pprint
from typing import Any

import autobahn.websocket.protocol
import structlog
from daphne.cli import CommandLineInterface
from daphne.server import Server
from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol
from django.conf import settings
from twisted.internet import defer

from inkwave import shutdown
from inkwave.lib.sockets import ConnectionClosing

logger = structlog.get_logger("inkwave.serve")  # run as __main__

# Codes RFC 6455 reserves for the server's own conditions, sent as they are.
SERVICE_RESTART = 1012
SERVER_CLOSE_CODES = frozenset({1011, SERVICE_RESTART, 1013})


class LazyPformat:
    """pprint.pformat(value), worked out only when the log line that holds it is written."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value

    def __str__(self) -> str:
        return pprint.pformat(self.value)


# autobahn's _connectionMade calls pformat(...) for a debug line that txaio drops unless debug
# logging is on; the name it calls is its module's.
autobahn.websocket.protocol.pformat = LazyPformat  # type: ignore[assignment]


def unsent_bytes(transport: Any) -> int:
    """What the transport holds that the kernel has not taken yet: Twisted's FileDescriptor
    buffers (sent up to `offset`, then the writes not joined yet); 0 for a transport without."""
    buffered = len(getattr(transport, "dataBuffer", b"")) - getattr(transport, "offset", 0)
    return buffered + getattr(transport, "_tempDataLen", 0)


class InkwaveWebSocketProtocol(WebSocketProtocol):
    def serverSend(self, content: str | bytes, binary: bool = False) -> None:
        if self.state in (self.STATE_CLOSING, self.STATE_CLOSED):
            # A frame for a connection whose close has begun (the client left, dropped an
            # oversized frame's connection, or a flood was closed) before the application
            # heard: it goes where frames in flight at a close go. autobahn raises its own
            # Disconnected, which the consumer took for a server failure (1011, an internal
            # error that moved the service's error rate: the soak's attacker).
            raise ConnectionClosing
        unsent = unsent_bytes(self.transport)
        if unsent > settings.WS_MAX_UNSENT_BYTES:
            # It cannot read a close frame either: the connection is dropped, as a dead
            # network would drop it, and the application is told it disconnected.
            logger.warning("websocket_unread_dropped", peer=self.client_addr, unsent_bytes=unsent)
            self.dropConnection(abort=True)
            return
        super().serverSend(content, binary)

    def serverClose(self, code: int | None = None) -> None:
        if code in SERVER_CLOSE_CODES:
            self.sendCloseFrame(code=code, isReply=False)
        else:
            super().serverClose(code)


def with_backlog(endpoint: str, backlog: int) -> str:
    """A TCP or Unix endpoint description with a listen backlog, unless it names one."""
    kind = endpoint.split(":", 1)[0]
    if kind not in ("tcp", "tcp6", "unix") or "backlog=" in endpoint:
        return endpoint
    return f"{endpoint}:backlog={backlog}"


class InkwaveServer(Server):
    endpoints: list[str]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The application, loaded by now, set Django up: its settings can be read.
        # Twisted listens with a backlog of 50: when a restarted process's screens all come
        # back within a second, the kernel drops the rest of the SYNs, and those clients
        # wait a second or more for their retransmission.
        self.endpoints = [with_backlog(e, settings.WEB_LISTEN_BACKLOG) for e in self.endpoints]

    # daphne's run() makes the factory; the protocol it builds is swapped as it is set.
    @property
    def ws_factory(self) -> WebSocketFactory:
        return self._ws_factory

    @ws_factory.setter
    def ws_factory(self, factory: WebSocketFactory) -> None:
        factory.protocol = InkwaveWebSocketProtocol
        self._ws_factory = factory

    def log_action(self, protocol: str, action: str, details: dict[str, Any]) -> None:
        if protocol != "websocket":
            super().log_action(protocol, action, details)

    def run(self) -> None:
        from twisted.internet import reactor

        # The reactor installs its signal handlers as it starts; chain onto them once it runs.
        reactor.callWhenRunning(shutdown.watch_signals)  # type: ignore[attr-defined]
        super().run()

    def kill_all_applications(self) -> Any:
        # Runs before the reactor shuts down, which waits for the Deferred returned here:
        # the close frames are written meanwhile.
        for protocol in list(self.connections):
            if isinstance(protocol, WebSocketProtocol) and protocol.state == protocol.STATE_OPEN:
                protocol.serverClose(code=SERVICE_RESTART)
        running = [
            instance
            for details in self.connections.values()
            if (instance := details.get("application_instance")) is not None and not instance.done()
        ]
        for instance in running:
            instance.cancel()
        deferred = defer.Deferred.fromFuture(asyncio.gather(*running, return_exceptions=True))
        deferred.addErrback(lambda _: None)
        return deferred


class InkwaveCommandLine(CommandLineInterface):
    server_class = InkwaveServer


if __name__ == "__main__":
    InkwaveCommandLine.entrypoint()
