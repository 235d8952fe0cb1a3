"""The per-process WebSocket monitor: every event is counted in memory, in O(1), with no I/O.

Counters are cumulative since the process started and are never reset. The flusher thread
reads a snapshot every METRICS_FLUSH_SECONDS and writes the difference from the previous
snapshot as one sample row, so a failed write loses nothing: the next delta includes it.
Readers on another thread only copy ints and dicts, which the GIL makes atomic; the event
loop, the only writer, takes no lock.

Only get_monitor() reads Django settings, lazily; the rest is plain Python.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from monitoring.histogram import Histogram, HistogramSnapshot

# What the service failed to do. Every other kind (a refusal, a malformed or oversized frame,
# a flood, a revoked grant) is the client's doing: anyone on the internet can produce those,
# so they are counted apart and never move the service's error rate. A kind not listed here
# is a service failure, so that a new failure mode is not hidden by default.
SERVICE_ERROR_KINDS = frozenset(
    {
        "internal_error",
        "admission_failed",
        "channel_layer_unavailable",
        "group_discard_failed",
        "room_inbox_full",
    }
)
CLIENT_ERROR_KINDS = frozenset(
    {
        "unauthenticated",
        "forbidden",
        "not_found",
        "refused",
        "origin_rejected",
        "access_revoked",
        "invalid_json",
        "invalid_message",
        "unknown_type",
        "frame_too_large",
        "binary_not_supported",
        "rate_limited",
    }
)


def is_client_error(kind: str) -> bool:
    return kind in CLIENT_ERROR_KINDS


@dataclass(frozen=True, slots=True)
class MonitorSnapshot:
    taken_at: float  # wall clock, seconds
    connections: int
    disconnections: int
    rejected_connections: int
    messages_sent: int
    messages_received: int
    errors: int  # the service's failures
    client_errors: int  # refusals and clients' protocol errors
    resumes: int  # reconnected clients caught up (or told to reload)
    events_replayed: int  # events sent again to them from the record
    resyncs: int  # resumes that could not be served from the record: told to reload
    errors_by_type: dict[str, int]
    active_connections: int
    rooms: dict[str, int]
    delivery: HistogramSnapshot
    round_trip: HistogramSnapshot

    @classmethod
    def empty(cls, taken_at: float) -> MonitorSnapshot:
        return cls(
            taken_at, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, {}, 0, {}, HistogramSnapshot.empty(),
            HistogramSnapshot.empty(),
        )  # fmt: skip


@dataclass(slots=True)
class WebSocketMonitor:
    started_at: float = field(default_factory=time.time)
    connections: int = 0
    disconnections: int = 0
    rejected_connections: int = 0
    messages_sent: int = 0
    messages_received: int = 0
    errors: int = 0
    client_errors: int = 0
    resumes: int = 0
    events_replayed: int = 0
    resyncs: int = 0
    errors_by_type: dict[str, int] = field(default_factory=dict)
    active_connections: int = 0
    rooms: dict[str, int] = field(default_factory=dict)
    delivery: Histogram = field(default_factory=Histogram)
    round_trip: Histogram = field(default_factory=Histogram)

    enabled = True

    def track_connection(self, room: str) -> None:
        self.connections += 1
        self.active_connections += 1
        self.rooms[room] = self.rooms.get(room, 0) + 1

    def track_disconnection(self, room: str) -> None:
        self.disconnections += 1
        self.active_connections -= 1
        members = self.rooms.get(room, 0) - 1
        if members > 0:
            self.rooms[room] = members
        else:
            self.rooms.pop(room, None)

    def track_rejection(self, reason: str) -> None:
        """A connection refused before it joined a room: the client's error or the service's."""
        self.rejected_connections += 1
        self.track_error(reason)

    def track_message_received(self) -> None:
        self.messages_received += 1

    def track_message_sent(self, count: int = 1) -> None:
        self.messages_sent += count

    def track_error(self, kind: str) -> None:
        if kind in CLIENT_ERROR_KINDS:
            self.client_errors += 1
        else:
            self.errors += 1
        self.errors_by_type[kind] = self.errors_by_type.get(kind, 0) + 1

    def track_resume(self, replayed: int, *, resynced: bool, asked: bool = True) -> None:
        """A client's resume (`asked`), or a gap in a live stream the server filled itself."""
        if asked:
            self.resumes += 1
        self.events_replayed += replayed
        if resynced:
            self.resyncs += 1

    def track_delivery_latency(self, milliseconds: float) -> None:
        self.delivery.observe(milliseconds)

    def track_round_trip(self, milliseconds: float) -> None:
        self.round_trip.observe(milliseconds)

    def snapshot(self) -> MonitorSnapshot:
        return MonitorSnapshot(
            taken_at=time.time(),
            connections=self.connections,
            disconnections=self.disconnections,
            rejected_connections=self.rejected_connections,
            messages_sent=self.messages_sent,
            messages_received=self.messages_received,
            errors=self.errors,
            client_errors=self.client_errors,
            resumes=self.resumes,
            events_replayed=self.events_replayed,
            resyncs=self.resyncs,
            errors_by_type=self.errors_by_type.copy(),
            active_connections=self.active_connections,
            rooms=self.rooms.copy(),
            delivery=self.delivery.snapshot(),
            round_trip=self.round_trip.snapshot(),
        )


class DisabledMonitor(WebSocketMonitor):
    """MONITORING_ENABLED=false: the same interface, counting nothing (for benchmarks)."""

    enabled = False

    def track_connection(self, room: str) -> None:
        pass

    def track_disconnection(self, room: str) -> None:
        pass

    def track_rejection(self, reason: str) -> None:
        pass

    def track_message_received(self) -> None:
        pass

    def track_message_sent(self, count: int = 1) -> None:
        pass

    def track_error(self, kind: str) -> None:
        pass

    def track_resume(self, replayed: int, *, resynced: bool, asked: bool = True) -> None:
        pass

    def track_delivery_latency(self, milliseconds: float) -> None:
        pass

    def track_round_trip(self, milliseconds: float) -> None:
        pass


_monitor: WebSocketMonitor | None = None


def get_monitor() -> WebSocketMonitor:
    """This process's monitor, created on first use according to MONITORING_ENABLED."""
    global _monitor
    if _monitor is None:
        from django.conf import settings

        _monitor = WebSocketMonitor() if settings.MONITORING_ENABLED else DisabledMonitor()
    return _monitor


def reset_monitor() -> WebSocketMonitor:
    """Start counting afresh (tests, and a forked process that must not inherit counts)."""
    global _monitor
    _monitor = None
    return get_monitor()
