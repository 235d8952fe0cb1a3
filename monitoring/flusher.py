"""The background thread that turns the in-memory monitor into sample rows."""

from __future__ import annotations

import atexit
import threading

import structlog
from django.conf import settings
from django.db import close_old_connections

from monitoring.monitor import MonitorSnapshot, WebSocketMonitor, get_monitor
from monitoring.recording import SampleRecorder, WorkerIdentity

logger = structlog.get_logger(__name__)


class SampleFlusher(threading.Thread):
    def __init__(self, monitor: WebSocketMonitor, identity: WorkerIdentity, interval: float):
        super().__init__(name="inkwave-metrics-flusher", daemon=True)
        self.monitor = monitor
        self.interval = interval
        self.recorder = SampleRecorder(identity, MonitorSnapshot.empty(monitor.started_at))
        self._stop_event = threading.Event()
        self._lock = threading.Lock()

    def run(self) -> None:
        # The first sample goes out at once, so a new worker is visible immediately.
        self.flush()
        while not self._stop_event.wait(self.interval):
            self.flush()

    def flush(self, *, stopping: bool = False) -> bool:
        with self._lock:
            close_old_connections()
            try:
                self.recorder.flush(self.monitor.snapshot(), stopping=stopping)
            except Exception:
                # The database may be down; the counts stay in memory for the next flush.
                logger.warning("metrics_flush_failed", exc_info=True)
                return False
            finally:
                close_old_connections()
            return True

    def stop(self) -> None:
        """Final flush at shutdown, marking this worker stopped so it stops counting at once."""
        self._stop_event.set()
        self.flush(stopping=True)


_flusher: SampleFlusher | None = None


def start_flusher(role: str = "web") -> SampleFlusher | None:
    global _flusher
    if _flusher is not None or not settings.MONITORING_ENABLED:
        return _flusher
    _flusher = SampleFlusher(
        get_monitor(), WorkerIdentity(role=role), settings.METRICS_FLUSH_SECONDS
    )
    _flusher.start()
    atexit.register(_flusher.stop)
    logger.info("metrics_flusher_started", worker=_flusher.recorder.identity.name)
    return _flusher
