"""The per-process HTTP request monitor: every request counted in memory, per route.

A route is the URL pattern that answered (`api/v1/orders/<int:order_id>`), never the raw
path, so ids do not make a series each. Counters are cumulative since the process started;
the flusher writes each interval's difference as RequestSample rows, one per route that saw
traffic, as it does for the WebSocket monitor. Slow queries and slow requests are kept as
records (bounded) until the flusher takes them.

Requests are served on several threads (sync views run on asgiref's), so every update holds
a lock: a few dict and int operations per request.
"""

from __future__ import annotations

import re
import threading
from collections import deque
from dataclasses import dataclass, field

from monitoring.histogram import Histogram, HistogramSnapshot

# Routes beyond this many are counted together: a bug that makes routes from data must not
# make unbounded series.
MAX_ROUTES = 300
OTHER_ROUTE = "(other)"
UNMATCHED_ROUTE = "(unmatched)"
# Health checks and scrapes: counted and exported like any route, but left out of the HTTP
# error-rate and response-time rules. A balancer's probe answers 503 on purpose while a
# dependency is down (which has its own rule), and at night probes can be most of the traffic:
# counted, one probe's 503s would page "HTTP errors critical" for what is not a failed
# request. tests/test_alerting.py checks these are the routes of the probe URLs.
PROBE_ROUTES = (
    "health",
    "health/live",
    "metrics",
    "api/v1/monitoring/websocket/health",
    "api/v1/monitoring/database/health",
)
# Records kept between two flushes at most; the rest are counted as dropped.
MAX_RECORDS = 1000


@dataclass(slots=True)
class RouteCounts:
    requests: int = 0
    client_errors: int = 0  # 4xx
    server_errors: int = 0  # 5xx
    queries: int = 0
    query_ms: float = 0.0
    response_bytes: int = 0
    memory_growth_bytes: int = 0
    duration: Histogram = field(default_factory=Histogram)


@dataclass(frozen=True, slots=True)
class RouteSnapshot:
    requests: int
    client_errors: int
    server_errors: int
    queries: int
    query_ms: float
    response_bytes: int
    memory_growth_bytes: int
    duration: HistogramSnapshot

    @classmethod
    def empty(cls) -> RouteSnapshot:
        return cls(0, 0, 0, 0, 0.0, 0, 0, HistogramSnapshot.empty())

    def minus(self, earlier: RouteSnapshot) -> RouteSnapshot:
        return RouteSnapshot(
            self.requests - earlier.requests,
            self.client_errors - earlier.client_errors,
            self.server_errors - earlier.server_errors,
            self.queries - earlier.queries,
            self.query_ms - earlier.query_ms,
            self.response_bytes - earlier.response_bytes,
            self.memory_growth_bytes - earlier.memory_growth_bytes,
            self.duration.minus(earlier.duration),
        )


@dataclass(frozen=True, slots=True)
class SlowQueryRecord:
    at: float
    statement: str  # normalised: no literal, no parameter value
    duration_ms: float
    route: str
    request_id: str


@dataclass(frozen=True, slots=True)
class SlowRequestRecord:
    at: float
    route: str
    method: str
    status: int
    duration_ms: float
    queries: int
    query_ms: float
    request_id: str


@dataclass(frozen=True, slots=True)
class RequestSnapshot:
    routes: dict[str, RouteSnapshot]
    slow_queries: list[SlowQueryRecord]
    slow_requests: list[SlowRequestRecord]
    dropped_records: int


class RequestMonitor:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._routes: dict[str, RouteCounts] = {}
        self._slow_queries: deque[SlowQueryRecord] = deque(maxlen=MAX_RECORDS)
        self._slow_requests: deque[SlowRequestRecord] = deque(maxlen=MAX_RECORDS)
        self._dropped = 0

    def track_request(
        self,
        route: str,
        status: int,
        duration_ms: float,
        *,
        queries: int = 0,
        query_ms: float = 0.0,
        response_bytes: int = 0,
        memory_growth_bytes: int = 0,
    ) -> None:
        with self._lock:
            counts = self._routes.get(route)
            if counts is None:
                if len(self._routes) >= MAX_ROUTES:
                    route = OTHER_ROUTE
                counts = self._routes.setdefault(route, RouteCounts())
            counts.requests += 1
            if 400 <= status < 500:
                counts.client_errors += 1
            elif status >= 500:
                counts.server_errors += 1
            counts.queries += queries
            counts.query_ms += query_ms
            counts.response_bytes += response_bytes
            counts.memory_growth_bytes += memory_growth_bytes
            counts.duration.observe(duration_ms)

    def track_slow_query(self, record: SlowQueryRecord) -> None:
        with self._lock:
            self._dropped += len(self._slow_queries) == MAX_RECORDS
            self._slow_queries.append(record)

    def track_slow_request(self, record: SlowRequestRecord) -> None:
        with self._lock:
            self._dropped += len(self._slow_requests) == MAX_RECORDS
            self._slow_requests.append(record)

    def snapshot(self) -> RequestSnapshot:
        """Cumulative counts per route; the records since the last snapshot (taken away)."""
        with self._lock:
            routes = {
                route: RouteSnapshot(
                    c.requests,
                    c.client_errors,
                    c.server_errors,
                    c.queries,
                    c.query_ms,
                    c.response_bytes,
                    c.memory_growth_bytes,
                    c.duration.snapshot(),
                )
                for route, c in self._routes.items()
            }
            slow_queries, slow_requests = list(self._slow_queries), list(self._slow_requests)
            self._slow_queries.clear()
            self._slow_requests.clear()
            dropped, self._dropped = self._dropped, 0
        return RequestSnapshot(routes, slow_queries, slow_requests, dropped)

    def put_back(self, snapshot: RequestSnapshot) -> None:
        """Records of a snapshot that could not be written wait for the next flush."""
        with self._lock:
            for query in reversed(snapshot.slow_queries):
                if len(self._slow_queries) < MAX_RECORDS:
                    self._slow_queries.appendleft(query)
            for request in reversed(snapshot.slow_requests):
                if len(self._slow_requests) < MAX_RECORDS:
                    self._slow_requests.appendleft(request)
            self._dropped += snapshot.dropped_records


def route_deltas(
    current: dict[str, RouteSnapshot], previous: dict[str, RouteSnapshot]
) -> dict[str, RouteSnapshot]:
    """Each route's interval: only the routes that saw a request."""
    deltas = {}
    for route, snapshot in current.items():
        delta = snapshot.minus(previous.get(route, RouteSnapshot.empty()))
        if delta.requests:
            deltas[route] = delta
    return deltas


# --- normalising SQL ------------------------------------------------------------------------

_STRING = re.compile(r"'(?:[^']|'')*'")
_NUMBER = re.compile(r"(?<![\w.\"])-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?\b")
_IN_LIST = re.compile(r"\bIN\s*\((?:\s*(?:\?|%s)\s*,)*\s*(?:\?|%s)\s*\)", re.IGNORECASE)
_SPACE = re.compile(r"\s+")


def normalise_sql(sql: str) -> str:
    """The statement with every literal and placeholder made `?`, and an IN list of any
    length made one: the same query with other values is the same statement, and no value
    (a token, an e-mail address) is ever kept."""
    text = _STRING.sub("?", sql)
    text = _NUMBER.sub("?", text)
    text = text.replace("%s", "?")
    text = _IN_LIST.sub("IN (...)", text)
    return _SPACE.sub(" ", text).strip()[:4000]


_request_monitor: RequestMonitor | None = None


def get_request_monitor() -> RequestMonitor:
    global _request_monitor
    if _request_monitor is None:
        _request_monitor = RequestMonitor()
    return _request_monitor


def reset_request_monitor() -> RequestMonitor:
    global _request_monitor
    _request_monitor = None
    return get_request_monitor()
