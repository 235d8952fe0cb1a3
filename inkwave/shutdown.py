"""Whether this process was asked to stop, rather than dying of an error.

A process's last metrics flush marks it stopped only when its stop was intended (SIGTERM,
SIGINT, a Celery warm shutdown). One that exits on an error stays un-stopped, so "Process
stopped reporting" fires for it and a supervisor's restart shows as its replacement.

The web server (twisted) and Celery beat install their own SIGTERM/SIGINT handlers;
`watch_signals`, called once they have, chains onto them: it notes the request, then does
exactly what they did.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

_requested = threading.Event()
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def request() -> None:
    _requested.set()


def requested() -> bool:
    return _requested.is_set()


def watch_signals() -> None:
    """Note SIGTERM and SIGINT as stop requests, keeping the handlers already installed."""
    if threading.current_thread() is not threading.main_thread():
        return  # only the main thread may set handlers (beat embedded in a worker: -B)
    for signum in STOP_SIGNALS:
        signal.signal(signum, _noting(signal.getsignal(signum)))


def _noting(previous: Any) -> Any:
    def handler(signum: int, frame: FrameType | None) -> Any:
        request()
        if callable(previous):
            return previous(signum, frame)
        if previous == signal.SIG_IGN:
            return None
        raise SystemExit(128 + signum)  # SIG_DFL: exit as that signal would, cleanly

    return handler
