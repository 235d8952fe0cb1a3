"""`python -m inkwave.serve`: daphne's command line, with a shutdown that lets consumers leave.

daphne 4.2.3's shutdown reads details["application_instance"] for every connection, but an
HTTP connection upgraded to a WebSocket has none: a KeyError, nothing is cancelled, and the
consumers never leave their rooms' groups (the members would stay for the layer's group
expiry, a day, and be sent every broadcast). This cancels every running consumer, whose
cleanup then runs. Use it wherever `daphne` would be run; it takes the same arguments.

It also tells a stop that was asked for (SIGTERM, SIGINT) from an exit on an error, so the
last metrics flush marks the process stopped only in the first case (inkwave.shutdown).
"""

from __future__ import annotations

import asyncio
from typing import Any

from daphne.cli import CommandLineInterface
from daphne.server import Server
from twisted.internet import defer

from inkwave import shutdown


class InkwaveServer(Server):
    def run(self) -> None:
        from twisted.internet import reactor

        # The reactor installs its signal handlers as it starts; chain onto them once it runs.
        reactor.callWhenRunning(shutdown.watch_signals)  # type: ignore[attr-defined]
        super().run()

    def kill_all_applications(self) -> Any:
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
