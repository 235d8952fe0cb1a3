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

It also tells a stop that was asked for (SIGTERM, SIGINT) from an exit on an error, so the
last metrics flush marks the process stopped only in the first case (inkwave.shutdown).

And a process that stops tells its WebSocket clients so, with 1012 (service restart), before
its consumers are cancelled: a client then reconnects after a random delay and resumes
(docs/protocol.md), rather than finding its socket dead.
"""

from __future__ import annotations

import asyncio
from typing import Any

from daphne.cli import CommandLineInterface
from daphne.server import Server
from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol
from twisted.internet import defer

from inkwave import shutdown

# Codes RFC 6455 reserves for the server's own conditions, sent as they are.
SERVICE_RESTART = 1012
SERVER_CLOSE_CODES = frozenset({1011, SERVICE_RESTART, 1013})


class InkwaveWebSocketProtocol(WebSocketProtocol):
    def serverClose(self, code: int | None = None) -> None:
        if code in SERVER_CLOSE_CODES:
            self.sendCloseFrame(code=code, isReply=False)
        else:
            super().serverClose(code)


class InkwaveServer(Server):
    # daphne's run() makes the factory; the protocol it builds is swapped as it is set.
    @property
    def ws_factory(self) -> WebSocketFactory:
        return self._ws_factory

    @ws_factory.setter
    def ws_factory(self, factory: WebSocketFactory) -> None:
        factory.protocol = InkwaveWebSocketProtocol
        self._ws_factory = factory

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
