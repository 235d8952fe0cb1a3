"""The background thread that turns the in-memory monitor into sample rows."""

from __future__ import annotations

import atexit
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from django.conf import settings
from django.db import DatabaseError, close_old_connections

from inkwave import shutdown
from monitoring.health import redis_reachable
from monitoring.models import WorkerRole
from monitoring.monitor import MonitorSnapshot, WebSocketMonitor, get_monitor
from monitoring.recording import SampleRecorder, WorkerIdentity, record_heartbeat
from monitoring.request_recording import RequestRecorder
from monitoring.requests import get_request_monitor
from monitoring.screens import ScreenRecorder

logger = structlog.get_logger(__name__)


def _ignore(*args: object) -> None:
    pass


@dataclass
class FlushHooks:
    """What the sampler tells whoever listens. It knows nothing of alerting: the alerter is
    wired in at start-up (`MonitoringConfig.ready`), so an import never points from the
    sampler up to what reacts to it."""

    # A dependency failed a flush: ("database" | "redis", the error).
    dependency_down: Callable[[str, str], object] = _ignore
    # A flush wrote to the database; the argument says whether Redis answered too.
    flushed: Callable[[bool], object] = _ignore


hooks = FlushHooks()


class SampleFlusher(threading.Thread):
    def __init__(self, monitor: WebSocketMonitor, identity: WorkerIdentity, interval: float):
        super().__init__(name="inkwave-metrics-flusher", daemon=True)
        self.monitor = monitor
        self.interval = interval
        self.recorder = SampleRecorder(identity, MonitorSnapshot.empty(monitor.started_at))
        self.requests = RequestRecorder(get_request_monitor(), identity.name, monitor.started_at)
        self.screens = ScreenRecorder()
        self._stop_event = threading.Event()
        self._lock = threading.Lock()
        self._redis_down = False

    def run(self) -> None:
        # The first sample goes out at once, so a new worker is visible immediately.
        self._flush_safely()
        while not self._stop_event.wait(self.interval):
            self._flush_safely()

    def _flush_safely(self) -> None:
        """Whatever goes wrong in one flush, the thread lives on to try the next."""
        try:
            self.flush()
        except Exception:
            logger.exception("metrics_flush_crashed")

    def flush(self, *, stopping: bool = False) -> bool:
        with self._lock:
            close_old_connections()
            try:
                self._report(stopping)
            except DatabaseError as exc:
                # The counts stay in memory for the next flush; the outage is reported
                # without the database (invariant: an alert must not depend on its subject).
                logger.warning("metrics_flush_failed", exc_info=True)
                _tell(hooks.dependency_down, "database", f"{type(exc).__name__}: {exc}")
                return False
            except Exception:
                logger.warning("metrics_flush_failed", exc_info=True)
                return False
            else:
                self._watch_redis()
                _tell(hooks.flushed, not self._redis_down)
            finally:
                close_old_connections()
            return True

    def _report(self, stopping: bool) -> None:
        identity = self.recorder.identity
        if identity.role == WorkerRole.WEB:
            sample = self.recorder.flush(self.monitor.snapshot(), stopping=stopping)
            self.requests.flush(sample.worker_id, time.time())
            self.screens.flush(sample)
        else:
            # A Celery process serves no WebSocket: a heartbeat, not rows of zeros.
            record_heartbeat(identity, stopping=stopping)

    def _watch_redis(self) -> None:
        if not settings.REDIS_URL:
            return
        if redis_reachable():
            self._redis_down = False
            return
        self._redis_down = True
        _tell(hooks.dependency_down, "redis", "Redis does not answer PING")

    def stop(self, *, intended: bool = True) -> None:
        """Final flush at exit; an intended stop marks the worker stopped so it stops counting
        at once, while a process dying of an error stays un-stopped, so that it is missed."""
        self._stop_event.set()
        self.flush(stopping=intended)


def _tell(hook: Callable[..., object], *args: object) -> None:
    """Whatever a listener does wrong, the flusher lives on."""
    try:
        hook(*args)
    except Exception:
        logger.exception("flush_hook_failed", hook=getattr(hook, "__name__", str(hook)))


_flusher: SampleFlusher | None = None


def start_flusher(role: str = "web") -> SampleFlusher | None:
    global _flusher
    if _flusher is not None or not settings.MONITORING_ENABLED:
        return _flusher
    _flusher = SampleFlusher(
        get_monitor(), WorkerIdentity(role=role), settings.METRICS_FLUSH_SECONDS
    )
    _flusher.start()
    atexit.register(stop_flusher)
    logger.info("metrics_flusher_started", worker=_flusher.recorder.identity.name)
    return _flusher


def stop_flusher() -> None:
    """Final flush, marking this process stopped if it was asked to stop (inkwave.shutdown);
    safe to call twice (signal, then atexit)."""
    global _flusher
    flusher, _flusher = _flusher, None
    if flusher is None:
        return
    intended = shutdown.requested()
    if not intended:
        # An error, or an exit nobody asked for: this process will be missed, not "stopped".
        logger.warning("process_exit_not_requested", worker=flusher.recorder.identity.name)
    flusher.stop(intended=intended)
