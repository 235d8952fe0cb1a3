"""Writing one worker's HTTP interval: a RequestSample per route, and the slow queries and
requests, in one transaction. A flush that fails leaves its counts to the next one (they are
cumulative) and puts its slow records back."""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from datetime import UTC, datetime

from django.db import transaction
from django.db.models import F
from django.db.models.functions import Greatest

from monitoring.histogram import add_buckets
from monitoring.models import RequestSample, RouteTotals, SlowQuery, SlowRequest, SlowStatement
from monitoring.requests import (
    RequestMonitor,
    RequestSnapshot,
    RouteSnapshot,
    SlowQueryRecord,
    route_deltas,
)


def _at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


def fingerprint(statement: str) -> str:
    return hashlib.sha256(statement.encode()).hexdigest()


class RequestRecorder:
    def __init__(self, monitor: RequestMonitor, worker_name: str, started_at: float) -> None:
        self.monitor = monitor
        self.worker_name = worker_name
        self.previous: dict[str, RouteSnapshot] = {}
        self.previous_at = started_at

    def flush(self, worker_id: int, now: float) -> int:
        """Writes the interval up to `now`; returns the number of routes that saw requests."""
        snapshot = self.monitor.snapshot()
        deltas = route_deltas(snapshot.routes, self.previous)
        try:
            with transaction.atomic():
                RequestSample.objects.bulk_create(
                    self._sample(worker_id, route, delta, now) for route, delta in deltas.items()
                )
                self._record_slow(snapshot)
                add_to_route_totals(deltas, Counter(q.route for q in snapshot.slow_queries))
        except Exception:
            self.monitor.put_back(snapshot)
            raise
        self.previous, self.previous_at = snapshot.routes, now
        return len(deltas)

    def _sample(
        self, worker_id: int, route: str, delta: RouteSnapshot, now: float
    ) -> RequestSample:
        duration = delta.duration
        return RequestSample(
            worker_id=worker_id,
            recorded_at=_at(now),
            interval_seconds=max(0.0, now - self.previous_at),
            route=route[:300],
            requests=delta.requests,
            client_errors=delta.client_errors,
            server_errors=delta.server_errors,
            duration_sum_ms=duration.total,
            duration_buckets=list(duration.counts),
            duration_min_ms=duration.low,
            duration_max_ms=duration.high,
            queries=delta.queries,
            query_ms=delta.query_ms,
            response_bytes=delta.response_bytes,
            memory_growth_bytes=delta.memory_growth_bytes,
        )

    def _record_slow(self, snapshot: RequestSnapshot) -> None:
        for query in snapshot.slow_queries:
            self._record_query(query)
        SlowRequest.objects.bulk_create(
            SlowRequest(
                recorded_at=_at(r.at),
                route=r.route[:300],
                method=r.method[:16],
                status=r.status,
                duration_ms=r.duration_ms,
                queries=r.queries,
                query_ms=r.query_ms,
                request_id=r.request_id,
                worker=self.worker_name,
            )
            for r in snapshot.slow_requests
        )

    def _record_query(self, query: SlowQueryRecord) -> None:
        at = _at(query.at)
        statement, _ = SlowStatement.objects.get_or_create(
            fingerprint=fingerprint(query.statement),
            defaults={"statement": query.statement, "first_seen_at": at, "last_seen_at": at},
        )
        SlowStatement.objects.filter(pk=statement.pk).update(
            occurrences=F("occurrences") + 1,
            total_ms=F("total_ms") + query.duration_ms,
            max_ms=Greatest(F("max_ms"), query.duration_ms),
            last_seen_at=Greatest(F("last_seen_at"), at),
            last_route=query.route[:300],
        )
        SlowQuery.objects.create(
            statement=statement,
            recorded_at=at,
            duration_ms=query.duration_ms,
            route=query.route[:300],
            request_id=query.request_id,
            worker=self.worker_name,
        )


_ROUTE_TOTALS = [
    "requests",
    "client_errors",
    "server_errors",
    "duration_sum_ms",
    "duration_buckets",
    "slow_queries",
]


def add_to_route_totals(deltas: dict[str, RouteSnapshot], slow_queries: Counter[str]) -> None:
    """Adds an interval to each route's running totals, in the caller's transaction.

    Three queries whatever the number of routes: missing rows are inserted, every row is
    locked, summed in Python (histogram buckets cannot be added with F()) and written back.
    Rows are taken in route order, so two processes flushing the same routes never deadlock.
    """
    # Keys longer than the column are cut, as RequestSample's are: they add to one row.
    intervals: dict[str, list[RouteSnapshot]] = defaultdict(list)
    for route, delta in deltas.items():
        intervals[route[:300]].append(delta)
    slow: Counter[str] = Counter()
    for route, count in slow_queries.items():
        slow[route[:300]] += count
    routes = sorted(intervals.keys() | slow.keys())
    if not routes:
        return
    RouteTotals.objects.bulk_create(
        [RouteTotals(route=route) for route in routes], ignore_conflicts=True
    )
    rows = list(RouteTotals.objects.select_for_update().filter(route__in=routes).order_by("route"))
    for row in rows:
        for delta in intervals.get(row.route, ()):
            _add_interval(row, delta)
        row.slow_queries += slow[row.route]
    RouteTotals.objects.bulk_update(rows, _ROUTE_TOTALS)


def _add_interval(row: RouteTotals, delta: RouteSnapshot) -> None:
    row.requests += delta.requests
    row.client_errors += delta.client_errors
    row.server_errors += delta.server_errors
    row.duration_sum_ms += delta.duration.total
    row.duration_buckets = add_buckets([row.duration_buckets, delta.duration.counts])
