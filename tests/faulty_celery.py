"""The project's Celery app with one fault to inject: the worker dies of an error on request.

`celery -A tests.faulty_celery worker`, with INKWAVE_TEST_CRASH_FILE naming a file: once the
file exists, a callback in the worker's event loop raises, as kombu's did when Redis went
away, and the worker stops with "Unrecoverable error" and EX_FAILURE.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from celery import bootsteps

from inkwave.celery import app

__all__ = ["app"]


class InjectedFault(RuntimeError):
    pass


class CrashOnRequest(bootsteps.StartStopStep):
    def start(self, c: Any) -> None:
        trigger = Path(os.environ["INKWAVE_TEST_CRASH_FILE"])

        def check() -> None:
            if trigger.exists():
                # Timer errors are only logged; a callback of the loop itself is fatal.
                c.hub.call_soon(self._crash)

        self.tref = c.timer.call_repeatedly(0.1, check)

    def stop(self, c: Any) -> None:
        self.tref.cancel()

    def _crash(self) -> None:
        raise InjectedFault("injected fault in the worker's event loop")


app.steps["consumer"].add(CrashOnRequest)
