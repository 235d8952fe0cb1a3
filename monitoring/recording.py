"""Writing one worker's interval into the database: a sample row and the running totals."""

from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from monitoring.histogram import HistogramSnapshot, add_buckets
from monitoring.models import MetricTotals, WebSocketSample, Worker, WorkerRole
from monitoring.monitor import MonitorSnapshot
from monitoring.system import MemoryUsage, cpu_seconds, memory_usage

logger = structlog.get_logger(__name__)

_COUNTERS = (
    "connections",
    "disconnections",
    "rejected_connections",
    "messages_sent",
    "messages_received",
    "errors",
    "client_errors",
    "resumes",
    "events_replayed",
    "resyncs",
)


@dataclass(slots=True)
class WorkerIdentity:
    role: str = WorkerRole.WEB
    hostname: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    started_at: float = field(default_factory=time.time)
    name: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            # The random part keeps a restarted process with a reused pid apart.
            self.name = f"{self.role}:{self.hostname}:{self.pid}:{uuid.uuid4().hex[:6]}"


def _counter_deltas(current: MonitorSnapshot, previous: MonitorSnapshot) -> dict[str, int]:
    return {name: getattr(current, name) - getattr(previous, name) for name in _COUNTERS}


def _type_deltas(current: dict[str, int], previous: dict[str, int]) -> dict[str, int]:
    return {
        kind: count - previous.get(kind, 0)
        for kind, count in current.items()
        if count != previous.get(kind, 0)
    }


def _worker_defaults(
    now: datetime, stopping: bool, memory: MemoryUsage | None = None
) -> dict[str, Any]:
    memory = memory or memory_usage()
    return {
        "last_seen_at": now,
        "stopped_at": now if stopping else None,
        "memory_rss_bytes": memory.rss_bytes,
        "memory_percent": round(memory.percent, 3),
    }


def _first_report(identity: WorkerIdentity) -> dict[str, Any]:
    return {
        "role": identity.role,
        "hostname": identity.hostname[:255],
        "pid": identity.pid,
        "started_at": datetime.fromtimestamp(identity.started_at, tz=UTC),
    }


def record_heartbeat(identity: WorkerIdentity, *, stopping: bool = False) -> Worker:
    """A process with no WebSocket to count (Celery worker, beat) says it is alive: no sample."""
    now = timezone.now()
    defaults = _worker_defaults(now, stopping)
    with transaction.atomic():
        worker, _ = Worker.objects.update_or_create(
            name=identity.name,
            defaults=defaults,
            create_defaults={**_first_report(identity), **defaults},
        )
        _revive_if_declared_dead(worker, now)
    return worker


def record_sample(
    identity: WorkerIdentity,
    current: MonitorSnapshot,
    previous: MonitorSnapshot,
    *,
    cpu_delta: float = 0.0,
    stopping: bool = False,
) -> WebSocketSample:
    """Store what happened between two snapshots; all or nothing, in one transaction."""
    counts = _counter_deltas(current, previous)
    delivery = current.delivery.minus(previous.delivery)
    round_trip = current.round_trip.minus(previous.round_trip)
    memory = memory_usage()
    recorded_at = datetime.fromtimestamp(current.taken_at, tz=UTC)
    now = timezone.now()

    defaults = _worker_defaults(now, stopping, memory)
    with transaction.atomic():
        worker, _ = Worker.objects.update_or_create(
            name=identity.name,
            defaults=defaults,
            create_defaults={**_first_report(identity), **defaults},
        )
        _revive_if_declared_dead(worker, now)
        sample = WebSocketSample.objects.create(
            worker=worker,
            recorded_at=recorded_at,
            interval_seconds=max(0.0, current.taken_at - previous.taken_at),
            errors_by_type=_type_deltas(current.errors_by_type, previous.errors_by_type),
            delivery_count=delivery.count,
            delivery_sum_ms=delivery.total,
            delivery_buckets=list(delivery.counts),
            delivery_min_ms=delivery.low,
            delivery_max_ms=delivery.high,
            round_trip_count=round_trip.count,
            round_trip_sum_ms=round_trip.total,
            round_trip_buckets=list(round_trip.counts),
            round_trip_min_ms=round_trip.low,
            round_trip_max_ms=round_trip.high,
            cpu_seconds=cpu_delta,
            active_connections=max(0, current.active_connections),
            active_rooms=len(current.rooms),
            rooms=current.rooms,
            memory_rss_bytes=memory.rss_bytes,
            memory_limit_bytes=memory.limit_bytes,
            memory_percent=round(memory.percent, 3),
            **counts,
        )
        Worker.objects.filter(pk=worker.pk).update(last_sample=sample)
        if any(counts.values()) or delivery.count or round_trip.count:
            _add_to_totals(counts, now)
            _add_latency_to_totals(delivery, round_trip)
    return sample


def release_dead_workers(now: datetime | None = None) -> int:
    """Count the open connections of processes found dead as disconnected; returns how many.

    A process killed outright (SIGKILL, OOM, a lost host) never reports its clients leaving,
    so without this its last open connections stay in the totals forever. Dead means silent
    for longer than WORKER_LIVENESS_SECONDS and never stopped. Each process is claimed with
    a conditional UPDATE, so two beats or a retried task count its connections once.
    """
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.WORKER_LIVENESS_SECONDS)
    silent = Worker.objects.filter(
        last_seen_at__lt=cutoff, stopped_at__isnull=True, declared_dead_at__isnull=True
    ).select_related("last_sample")
    released = 0
    for worker in silent:
        lost = worker.last_sample.active_connections if worker.last_sample else 0
        with transaction.atomic():
            # Unchanged since it was read: a report that arrived meanwhile keeps it alive.
            claimed = Worker.objects.filter(
                pk=worker.pk,
                last_seen_at=worker.last_seen_at,
                stopped_at__isnull=True,
                declared_dead_at__isnull=True,
            ).update(declared_dead_at=now, connections_lost=lost)
            if not claimed:
                continue
            if lost:
                _add_to_totals({"disconnections": lost}, now)
        logger.warning(
            "worker_declared_dead",
            worker=worker.name,
            last_seen=worker.last_seen_at.isoformat(),
            connections_lost=lost,
        )
        released += lost
    return released


def _revive_if_declared_dead(worker: Worker, now: datetime) -> None:
    """A process found dead that reports again (it only could not reach the database) is
    alive after all: its connections are open again, so their release is taken back."""
    if worker.declared_dead_at is None:
        return
    revived = Worker.objects.filter(pk=worker.pk, declared_dead_at__isnull=False).update(
        declared_dead_at=None, connections_lost=0
    )
    if revived and worker.connections_lost:
        _add_to_totals({"disconnections": -worker.connections_lost}, now)
    if revived:
        logger.info("worker_reports_again", worker=worker.name, connections=worker.connections_lost)
    worker.declared_dead_at, worker.connections_lost = None, 0


def _add_to_totals(counts: dict[str, int], now: datetime) -> None:
    updated = MetricTotals.objects.filter(pk=MetricTotals.SINGLETON_ID).update(
        **{name: F(name) + value for name, value in counts.items()}
    )
    if not updated:
        # First flush of a new deployment; a concurrent first flush makes get_or_create's
        # insert lose, so increment again after it.
        _, created = MetricTotals.objects.get_or_create(
            pk=MetricTotals.SINGLETON_ID, defaults={"started_at": now, **counts}
        )
        if not created:
            MetricTotals.objects.filter(pk=MetricTotals.SINGLETON_ID).update(
                **{name: F(name) + value for name, value in counts.items()}
            )


def _add_latency_to_totals(delivery: HistogramSnapshot, round_trip: HistogramSnapshot) -> None:
    """Histograms cannot be added with F(): the row is locked, read, summed and written back
    (other processes' flushes wait for this transaction, as they do for the F() update)."""
    if not (delivery.count or round_trip.count):
        return
    totals = MetricTotals.objects.select_for_update().get(pk=MetricTotals.SINGLETON_ID)
    totals.delivery_count += delivery.count
    totals.delivery_sum_ms += delivery.total
    totals.delivery_buckets = add_buckets([totals.delivery_buckets, delivery.counts])
    totals.round_trip_count += round_trip.count
    totals.round_trip_sum_ms += round_trip.total
    totals.round_trip_buckets = add_buckets([totals.round_trip_buckets, round_trip.counts])
    totals.save(update_fields=LATENCY_TOTALS)


LATENCY_TOTALS = [
    "delivery_count",
    "delivery_sum_ms",
    "delivery_buckets",
    "round_trip_count",
    "round_trip_sum_ms",
    "round_trip_buckets",
]


class SampleRecorder:
    """Keeps the last snapshot that reached the database and writes the next delta."""

    def __init__(self, identity: WorkerIdentity, start: MonitorSnapshot) -> None:
        self.identity = identity
        self.previous = start
        self.previous_cpu = cpu_seconds()
        self.carried = MonitorSnapshot.empty(start.taken_at)

    def flush(self, current: MonitorSnapshot, *, stopping: bool = False) -> WebSocketSample:
        cpu_now = cpu_seconds()
        # A snapshot's extremes cover only the time since the one before: those of a flush
        # that failed are carried into this one, as its counts are.
        current = replace(
            current,
            delivery=_widen(current.delivery, self.carried.delivery),
            round_trip=_widen(current.round_trip, self.carried.round_trip),
        )
        try:
            sample = record_sample(
                self.identity,
                current,
                self.previous,
                cpu_delta=cpu_now - self.previous_cpu,
                stopping=stopping,
            )
        except Exception:
            self.carried = current
            raise
        # Only after the write succeeded: a failed flush is folded into the next one.
        self.previous, self.previous_cpu = current, cpu_now
        self.carried = MonitorSnapshot.empty(current.taken_at)
        return sample


def _widen(snapshot: HistogramSnapshot, carried: HistogramSnapshot) -> HistogramSnapshot:
    lows = [v for v in (snapshot.low, carried.low) if v is not None]
    highs = [v for v in (snapshot.high, carried.high) if v is not None]
    return replace(snapshot, low=min(lows, default=None), high=max(highs, default=None))
