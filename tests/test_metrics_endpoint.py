"""GET /metrics: the deployment's figures in Prometheus' format, read back with
prometheus-client's own parser; the Prometheus config, rules and dashboard that use them."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import shutil
import subprocess
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.db import DatabaseError
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from websockets.asyncio.client import ClientConnection, connect

from monitoring import pruning
from monitoring.health import CheckFailed, DatabaseCheck
from monitoring.models import AlertRule, Incident, RouteTotals
from monitoring.monitor import MonitorSnapshot, WebSocketMonitor
from monitoring.recording import SampleRecorder, WorkerIdentity
from monitoring.request_recording import RequestRecorder
from monitoring.requests import RequestMonitor, SlowQueryRecord
from monitoring.stats import websocket_stats
from notifications.models import Destination, Notification, NotificationStatus
from orders.broadcast import abroadcast_to_venue
from orders.models import Order, OrderStatus, Venue
from tests.servers import MONITORING_TOKEN, ROOT, DaphneServer, ServerGroup, poll_until

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "metrics-token-for-tests"
PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "inkwave.json"
Samples = dict[str, list[Sample]]


@pytest.fixture(autouse=True)
def monitoring_token(settings: Any) -> None:
    settings.MONITORING_TOKEN = TOKEN


def parse(text: str) -> Samples:
    """Every sample by its name (`_total`, `_bucket`, ... included), via prometheus-client."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def scrape(client: Client) -> Samples:
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    return parse(response.content.decode())


def value(samples: Samples, name: str, **labels: str) -> float:
    found = [s.value for s in samples.get(name, []) if _has(s, labels)]
    assert len(found) == 1, f"{name}{labels}: {found} in {samples.get(name)}"
    return found[0]


def _has(sample: Sample, labels: dict[str, str]) -> bool:
    return all(sample.labels.get(k) == v for k, v in labels.items())


def buckets(samples: Samples, name: str, **labels: str) -> list[tuple[float, float]]:
    """(le, cumulative count) of one histogram, in the order written."""
    return [(float(s.labels["le"]), s.value) for s in samples[f"{name}_bucket"] if _has(s, labels)]


@pytest.fixture
def reported() -> WebSocketMonitor:
    """One web process's interval: three members of a room, frames, errors, latencies."""
    monitor = WebSocketMonitor()
    for _ in range(3):
        monitor.track_connection("venue.7")
    monitor.track_disconnection("venue.7")
    monitor.track_rejection("unauthenticated")
    monitor.track_message_received()
    monitor.track_message_sent(4)
    monitor.track_error("internal")
    for latency in (3.0, 30.0, 700.0):
        monitor.track_delivery_latency(latency)
    monitor.track_round_trip(12.5)
    recorder = SampleRecorder(
        WorkerIdentity(name="web-1"), MonitorSnapshot.empty(monitor.started_at)
    )
    recorder.flush(monitor.snapshot())
    return monitor


def flush_requests(worker_id: int, *requests: tuple[str, int, float]) -> None:
    monitor = RequestMonitor()
    for route, status, duration_ms in requests:
        monitor.track_request(route, status, duration_ms)
    monitor.track_slow_query(SlowQueryRecord(0.0, "SELECT ?", 600.0, "api/v1/orders", "r-1"))
    RequestRecorder(monitor, f"web-{worker_id}", 0.0).flush(worker_id, 1.0)


# --- who may scrape -------------------------------------------------------------------------


def test_a_scrape_needs_the_monitoring_token_or_a_staff_session(
    client: Client, staff_user: Any, plain_user: Any
) -> None:
    anonymous = client.get("/metrics")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "unauthenticated"
    assert "MONITORING_TOKEN" in anonymous.json()["error"]["message"]
    assert anonymous["WWW-Authenticate"] == "Bearer"

    wrong = client.get("/metrics", HTTP_AUTHORIZATION="Bearer not-the-token")
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "invalid_token"

    client.force_login(plain_user)
    assert client.get("/metrics").status_code == 403
    client.force_login(staff_user)
    assert client.get("/metrics").status_code == 200
    assert Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200


# --- the figures ----------------------------------------------------------------------------


def test_websocket_figures_are_the_statistics_endpoints(
    client: Client, reported: WebSocketMonitor
) -> None:
    samples = scrape(client)
    stats = websocket_stats()
    for name, field, expected in [
        ("inkwave_websocket_connections_total", "totalConnections", 3),
        ("inkwave_websocket_disconnections_total", "totalDisconnections", 1),
        ("inkwave_websocket_rejected_connections_total", "totalRejectedConnections", 1),
        ("inkwave_websocket_messages_received_total", "totalMessagesReceived", 1),
        ("inkwave_websocket_messages_sent_total", "totalMessagesSent", 4),
    ]:
        assert value(samples, name) == stats[field] == expected, name  # type: ignore[literal-required]
    errors = "inkwave_websocket_errors_total"
    assert value(samples, errors, kind="service") == stats["totalServiceErrors"] == 1
    assert value(samples, errors, kind="client") == stats["totalClientErrors"] == 1
    assert value(samples, "inkwave_websocket_connections_active", worker="web-1") == 2
    assert value(samples, "inkwave_websocket_rooms_active") == stats["rooms"]["active"] == 1
    assert value(samples, "inkwave_websocket_room_members", room="venue.7") == 2
    assert value(samples, "inkwave_workers_live", role="web") == 1
    assert value(samples, "inkwave_worker_memory_rss_bytes", worker="web-1", role="web") > 0
    ratio = value(samples, "inkwave_worker_memory_usage_ratio", worker="web-1", role="web")
    assert ratio == pytest.approx(stats["workers"][0]["memoryUsage"]["percent"] / 100)


def test_latency_histograms_are_cumulative_in_seconds_and_add_up_to_their_count(
    client: Client, reported: WebSocketMonitor
) -> None:
    samples = scrape(client)
    name = "inkwave_websocket_delivery_latency_seconds"
    cumulative = buckets(samples, name)
    assert [le for le, _ in cumulative] == sorted(le for le, _ in cumulative)
    counts = [count for _, count in cumulative]
    assert counts == sorted(counts)  # never decreasing
    assert cumulative[-1] == (float("inf"), value(samples, f"{name}_count"))
    # 3 ms, 30 ms and 700 ms, by the bucket each falls in first.
    assert dict(cumulative)[0.002] == 0
    assert dict(cumulative)[0.005] == 1
    assert dict(cumulative)[0.05] == 2
    assert dict(cumulative)[1.0] == 3
    assert value(samples, f"{name}_count") == websocket_stats()["latency"]["count"] == 3
    assert value(samples, f"{name}_sum") == pytest.approx(0.733)
    assert value(samples, "inkwave_websocket_round_trip_seconds_count") == 1
    assert value(samples, "inkwave_websocket_round_trip_seconds_sum") == pytest.approx(0.0125)


def test_counters_and_histograms_keep_their_values_when_samples_are_pruned(
    client: Client, reported: WebSocketMonitor
) -> None:
    flush_requests(reported_worker_id(), ("api/v1/orders", 200, 12.0))
    before = counters(scrape(client))
    later = timezone.now() + timedelta(days=400)
    assert pruning.prune_all_samples(later) > 0
    after = counters(scrape(client))
    assert after == before
    assert after["inkwave_websocket_connections_total"] == 3
    assert after['inkwave_http_requests_total{route="api/v1/orders"}'] == 1


def reported_worker_id() -> int:
    from monitoring.models import Worker

    return Worker.objects.get(name="web-1").pk


def counters(samples: Samples) -> dict[str, float]:
    """Every counter and histogram series, named with its labels."""
    return {
        f"{name}{_labels(sample)}": sample.value
        for name, series in samples.items()
        if name.endswith(("_total", "_bucket", "_count", "_sum"))
        for sample in series
    }


def _labels(sample: Sample) -> str:
    if not sample.labels:
        return ""
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items())) + "}"


def test_http_totals_add_every_process_and_flush_by_route(
    client: Client, reported: WebSocketMonitor
) -> None:
    web_1 = reported_worker_id()
    flush_requests(web_1, ("api/v1/orders", 201, 40.0), ("api/v1/orders", 404, 3.0))
    flush_requests(web_1, ("api/v1/orders", 500, 2600.0), ("health", 200, 1.0))
    samples = scrape(client)
    orders = {"route": "api/v1/orders"}
    assert value(samples, "inkwave_http_requests_total", **orders) == 3
    assert value(samples, "inkwave_http_errors_total", **orders, status_class="4xx") == 1
    assert value(samples, "inkwave_http_errors_total", **orders, status_class="5xx") == 1
    assert value(samples, "inkwave_http_requests_total", route="health") == 1
    # Each flush recorded one slow query for the orders route.
    assert value(samples, "inkwave_http_slow_queries_total", **orders) == 2
    name = "inkwave_http_request_duration_seconds"
    cumulative = dict(buckets(samples, name, **orders))
    assert (cumulative[0.005], cumulative[0.05], cumulative[2.5]) == (1, 2, 2)
    assert cumulative[float("inf")] == value(samples, f"{name}_count", **orders) == 3
    assert value(samples, f"{name}_sum", **orders) == pytest.approx(2.643)
    assert RouteTotals.objects.get(route="api/v1/orders").requests == 3


def test_orders_incidents_and_the_outbox_are_counted_by_state(client: Client, venue: Venue) -> None:
    for number, status in enumerate(
        [OrderStatus.PLACED, OrderStatus.PLACED, OrderStatus.READY, OrderStatus.COMPLETED], 1
    ):
        Order.objects.create(
            venue=venue, number=number, table="T1", status=status, currency="GBP", total=10
        )
    old = Order.objects.create(venue=venue, number=9, table="T1", currency="GBP", total=1)
    Order.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=2))
    rule = AlertRule.objects.create(name="r", metric="ws.error_rate", threshold=1)
    now = timezone.now()
    for scope, severity in (("a", "critical"), ("b", "warning"), ("c", "warning")):
        Incident.objects.create(
            rule=rule, scope=scope, title=scope, severity=severity, opened_at=now,
            last_seen_at=now, first_value=2, peak_value=2, last_value=2,
        )  # fmt: skip
    Incident.objects.filter(scope="c").update(status="resolved", resolved_at=now)
    Notification.objects.all().delete()  # the venue's sign-up announcement is not counted here
    destination = Destination.objects.create(name="ops")
    for state, due in [("pending", 600), ("pending", 5), ("sent", 0), ("failed", 0)]:
        Notification.objects.create(
            kind="message", destination=destination, text="x", status=state,
            next_attempt_at=now - timedelta(seconds=due),
        )  # fmt: skip
    # Two days old: a pending row still counts, a sent one has left the 24 hours counted.
    for state in ("pending", "sent"):
        row = Notification.objects.create(
            kind="message", destination=destination, text="x", status=state,
            next_attempt_at=now + timedelta(hours=1),
        )  # fmt: skip
        Notification.objects.filter(pk=row.pk).update(created_at=now - timedelta(days=2))

    samples = scrape(client)
    assert value(samples, "inkwave_recent_orders", status="placed") == 2
    assert value(samples, "inkwave_recent_orders", status="ready") == 1
    assert value(samples, "inkwave_recent_orders", status="completed") == 1
    assert value(samples, "inkwave_recent_orders", status="cancelled") == 0
    assert value(samples, "inkwave_incidents_open", severity="critical") == 1
    assert value(samples, "inkwave_incidents_open", severity="warning") == 1
    assert value(samples, "inkwave_incidents_open", severity="info") == 0
    for state, count in [("pending", 3), ("sent", 1), ("failed", 1), ("sending", 0)]:
        assert value(samples, "inkwave_outbox_notifications", status=state) == count
    assert value(samples, "inkwave_outbox_oldest_pending_age_seconds") >= 600
    assert NotificationStatus.SKIPPED in {
        s.labels["status"] for s in samples["inkwave_outbox_notifications"]
    }


def test_with_the_database_down_the_scrape_says_so_instead_of_failing(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(*args: object) -> None:
        raise DatabaseError("connection refused")

    monkeypatch.setattr("monitoring.views.read_deployment", refused)
    monkeypatch.setattr(DatabaseCheck, "run_blocking", _check_fails)
    samples = scrape(client)
    assert value(samples, "inkwave_dependency_up", dependency="database") == 0
    assert value(samples, "inkwave_dependency_up", dependency="redis") == 1
    assert "inkwave_websocket_connections_total" not in samples


def _check_fails(self: DatabaseCheck) -> None:
    raise CheckFailed("connection refused")


# --- the Prometheus and Grafana files -------------------------------------------------------

METRIC_NAME = re.compile(r"\binkwave_[a-z0-9_]+")


def names_used() -> set[str]:
    rules = (PROMETHEUS / "rules.yml").read_text()
    exprs = [
        t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p.get("targets", [])
    ]
    return set(METRIC_NAME.findall(rules)) | set(METRIC_NAME.findall("\n".join(exprs)))


def test_every_series_the_rules_and_the_dashboard_use_is_exposed(
    client: Client, reported: WebSocketMonitor, venue: Venue
) -> None:
    flush_requests(reported_worker_id(), ("api/v1/orders", 200, 12.0))
    used = names_used()
    assert len(used) >= 25, used  # the files were read
    exposed = set(scrape(client))
    assert used - exposed == set()


def promtool(*args: str, cwd: Path) -> str:
    tool = shutil.which("promtool")
    assert tool, "promtool is missing: scripts/test installs it (ensure_promtool)"
    done = subprocess.run(
        [tool, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_promtool_accepts_the_config_and_the_rules(tmp_path: Path) -> None:
    promtool("check", "config", "--syntax-only", "prometheus.yml", cwd=PROMETHEUS)
    # The full check also reads the token file and the rules: a copy points at a test token.
    config = (PROMETHEUS / "prometheus.yml").read_text()
    assert "credentials_file: /etc/prometheus/inkwave-monitoring-token" in config
    (tmp_path / "token").write_text("a-token\n")
    (tmp_path / "prometheus.yml").write_text(
        config.replace("/etc/prometheus/inkwave-monitoring-token", str(tmp_path / "token"))
    )
    shutil.copy(PROMETHEUS / "rules.yml", tmp_path)
    assert "19 rules found" in promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert "19 rules found" in promtool("check", "rules", "rules.yml", cwd=PROMETHEUS)


def test_the_rules_unit_tests_pass() -> None:
    """rules_test.yml: the HTTP (and WebSocket) error-rate rules fire above their thresholds
    and not at or below them."""
    assert "SUCCESS" in promtool("test", "rules", "rules_test.yml", cwd=PROMETHEUS)


def alertname(rule: str) -> str:
    """A shipped rule's name as rules.yml spells it: "HTTP errors critical" ->
    HTTPErrorsCritical."""
    return "".join(word[0].upper() + word[1:] for word in rule.split())


def _seconds(duration: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([smh])", duration).groups()  # type: ignore[union-attr]
    return int(number) * {"s": 1, "m": 60, "h": 3600}[unit]


def test_the_rules_are_the_shipped_rules() -> None:
    """One alert per shipped rule, with its severity, its pending period as `for` and its clear
    period (the model's default unless the rule sets one) as `keep_firing_for`: without it an
    alert resolves at its first clear evaluation, minutes before the application's incident,
    and fires again as a new alert at the next breach (found by bench/alertmanager.py)."""
    from monitoring.alerting.defaults import DEFAULT_RULES

    rules = {
        rule["alert"]: rule
        for group in _yaml(PROMETHEUS / "rules.yml")["groups"]
        for rule in group["rules"]
    }
    field = {
        name: AlertRule._meta.get_field(name).default  # type: ignore[union-attr]
        for name in ("pending_seconds", "clear_seconds")
    }
    expected = {
        alertname(spec["name"]): (
            spec["severity"],
            spec.get("pending_seconds", field["pending_seconds"]),
            spec.get("clear_seconds", field["clear_seconds"]),
        )
        for spec in DEFAULT_RULES
    }
    found = {
        name: (
            rule["labels"]["severity"],
            _seconds(rule.get("for", "0s")),
            _seconds(rule.get("keep_firing_for", "0s")),
        )
        for name, rule in rules.items()
    }
    assert found == expected


# Alertmanager's matchers: name, operator, quoted value; a regex matches the whole value.
MATCHER = re.compile(r'([a-zA-Z_]\w*)(=~|!~|!=|=)"(.*)"')


def _matches(matchers: list[str], labels: dict[str, str]) -> bool:
    for matcher in matchers:
        name, op, value = MATCHER.fullmatch(matcher.strip()).groups()  # type: ignore[union-attr]
        got = labels.get(name, "")  # a missing label is the empty value
        found = re.fullmatch(value, got) is not None if "~" in op else got == value
        if found == op.startswith("!"):
            return False
    return True


def test_the_alertmanager_inhibitions_are_the_applications() -> None:
    """rules.yml's header gives Alertmanager's inhibit_rules: evaluated as Alertmanager does
    (an `equal` label both alerts lack counts as equal) over every pair of alerts, they hold
    back exactly the pairs the application's inhibitions do. The severity rule alone once held
    back every warning without a `figure` while any critical alert without one fired (a
    process that died, while Redis was down), and nothing held back the database's and
    Redis' dependents (found by bench/alertmanager.py)."""
    from monitoring.alerting.defaults import DEFAULT_RULES, install_defaults
    from monitoring.models import Inhibition

    install_defaults()  # the rules and inhibitions the migrations install
    header = (PROMETHEUS / "rules.yml").read_text().split("\ngroups:")[0]
    block = header[header.index("#   inhibit_rules:") :].splitlines()
    block = [line[4:] for line in itertools.takewhile(lambda line: line.startswith("#   "), block)]
    inhibit_rules = yaml.safe_load("\n".join(block))["inhibit_rules"]
    alerts = {
        rule["alert"]: {"alertname": rule["alert"], **rule["labels"]}
        for group in _yaml(PROMETHEUS / "rules.yml")["groups"]
        for rule in group["rules"]
    }
    held = {
        (source, target)
        for rule in inhibit_rules
        for source, source_labels in alerts.items()
        for target, target_labels in alerts.items()
        if source != target
        and _matches(rule["source_matchers"], source_labels)
        and _matches(rule["target_matchers"], target_labels)
        and all(source_labels.get(n, "") == target_labels.get(n, "") for n in rule.get("equal", []))
    }
    # The venue rules' (orders.anomaly) need the venues' baselines: Prometheus has no
    # translation of them, nor of their inhibitions.
    shipped = {rule["name"] for rule in DEFAULT_RULES}
    expected = {
        (alertname(source), alertname(target))
        for source, target in Inhibition.objects.values_list("source__name", "target__name")
        if source in shipped and target in shipped
    }
    assert len(expected) > 20
    assert held == expected


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


# --- two real web processes -----------------------------------------------------------------

SETTLE_SECONDS = 15.0
FRAME_TIMEOUT = 5.0


async def join(server: DaphneServer, venue_id: int, token: str) -> ClientConnection:
    url = server.ws_url(f"/ws/venues/{venue_id}/?token={token}")
    ws = await connect(url, open_timeout=FRAME_TIMEOUT, ping_interval=None)
    assert (await receive_json(ws))["type"] == "welcome"
    return ws


async def receive_json(ws: ClientConnection) -> dict[str, Any]:
    message = json.loads(await asyncio.wait_for(ws.recv(), FRAME_TIMEOUT))
    assert isinstance(message, dict)
    return message


def scrape_server(server: DaphneServer) -> Samples:
    request = urllib.request.Request(server.base_url + "/metrics")  # noqa: S310 (loopback)
    request.add_header("Authorization", f"Bearer {MONITORING_TOKEN}")
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return parse(response.read().decode())


def view_of_stats(stats: dict[str, Any]) -> dict[str, Any]:
    return {
        "connections": stats["totalConnections"],
        "disconnections": stats["totalDisconnections"],
        "rejected": stats["totalRejectedConnections"],
        "received": stats["totalMessagesReceived"],
        "sent": stats["totalMessagesSent"],
        "service_errors": stats["totalServiceErrors"],
        "client_errors": stats["totalClientErrors"],
        "active": {w["id"]: w["activeConnections"] for w in stats["workers"]},
        "rooms_active": stats["rooms"]["active"],
        "rooms": stats["rooms"]["members"],
        "deliveries": stats["latency"]["count"],
        "round_trips": stats["roundTrip"]["count"],
    }


def view_of_metrics(samples: Samples) -> dict[str, Any]:
    def one(name: str, **labels: str) -> int:
        return int(value(samples, name, **labels))

    def by(name: str, label: str) -> dict[str, int]:
        return {s.labels[label]: int(s.value) for s in samples.get(name, [])}

    return {
        "connections": one("inkwave_websocket_connections_total"),
        "disconnections": one("inkwave_websocket_disconnections_total"),
        "rejected": one("inkwave_websocket_rejected_connections_total"),
        "received": one("inkwave_websocket_messages_received_total"),
        "sent": one("inkwave_websocket_messages_sent_total"),
        "service_errors": one("inkwave_websocket_errors_total", kind="service"),
        "client_errors": one("inkwave_websocket_errors_total", kind="client"),
        "active": by("inkwave_websocket_connections_active", "worker"),
        "rooms_active": one("inkwave_websocket_rooms_active"),
        "rooms": by("inkwave_websocket_room_members", "room"),
        "deliveries": one("inkwave_websocket_delivery_latency_seconds_count"),
        "round_trips": one("inkwave_websocket_round_trip_seconds_count"),
    }


async def settled(server: DaphneServer, done: Any) -> dict[str, Any]:
    stats = await poll_until(lambda: asyncio.to_thread(server.stats), done, SETTLE_SECONDS, 0.1)
    assert done(stats), stats
    return stats


@pytest.mark.system
async def test_two_web_processes_each_answer_for_the_whole_deployment(
    servers: ServerGroup, venue: Venue, venue_token: str
) -> None:
    a, b = servers.start(), servers.start()
    everyone = [await join(a, venue.pk, venue_token) for _ in range(2)]
    everyone += [await join(b, venue.pk, venue_token) for _ in range(3)]
    await everyone[0].send(json.dumps({"type": "ping", "ts": 1, "rttMs": 12.5}))
    assert (await receive_json(everyone[0]))["type"] == "pong"
    await everyone[4].send("not json")
    assert (await receive_json(everyone[4]))["code"] == "invalid_json"
    await abroadcast_to_venue(venue.pk, "order.created", {"order": 1})
    for ws in everyone:
        assert (await receive_json(ws))["event"] == "order.created"

    stats = await settled(
        a,
        lambda s: (
            s["activeConnections"] == 5
            and s["latency"]["count"] == 5
            and s["roundTrip"]["count"] == 1
            and s["totalMessagesReceived"] == 2
            and len(s["workers"]) == 2
        ),
    )
    expected = view_of_stats(stats)
    assert sorted(expected["active"].values()) == [2, 3]
    assert expected["rooms"] == {f"venue.{venue.pk}": 5}
    for server in (a, b):
        assert view_of_metrics(await asyncio.to_thread(scrape_server, server)) == expected
    assert view_of_stats(await asyncio.to_thread(a.stats)) == expected  # nothing moved meanwhile

    # The HTTP requests (the stats polls above) are counted by route once flushed.
    samples = await poll_until(
        lambda: asyncio.to_thread(scrape_server, b),
        lambda s: any(
            x.labels["route"] == "api/v1/monitoring/websocket/stats"
            for x in s.get("inkwave_http_requests_total", [])
        ),
        SETTLE_SECONDS,
        0.2,
    )
    stats_route = {"route": "api/v1/monitoring/websocket/stats"}
    assert value(samples, "inkwave_http_requests_total", **stats_route) >= 1
    assert value(samples, "inkwave_http_request_duration_seconds_count", **stats_route) >= 1
    workers = {s.labels["worker"] for s in samples["inkwave_worker_memory_rss_bytes"]}
    assert workers == set(expected["active"])
    for ws in everyone:
        await ws.close()


@pytest.mark.system
async def test_counters_keep_their_values_when_a_web_process_restarts(
    servers: ServerGroup, venue: Venue, venue_token: str
) -> None:
    a, b = servers.start(), servers.start()
    on_b = [await join(b, venue.pk, venue_token) for _ in range(2)]
    await on_b[0].send(json.dumps({"type": "ping", "ts": 1, "rttMs": 40}))
    assert (await receive_json(on_b[0]))["type"] == "pong"
    for ws in on_b:
        await ws.close()
    await settled(
        a,
        lambda s: (
            s["totalDisconnections"] == 2
            and s["roundTrip"]["count"] == 1
            and s["activeConnections"] == 0
        ),
    )
    before = counters(await asyncio.to_thread(scrape_server, a))
    assert before["inkwave_websocket_connections_total"] == 2

    assert await asyncio.to_thread(b.stop) == 0
    c = servers.start()
    await settled(a, lambda s: {w["pid"] for w in s["workers"]} == {a.pid, c.pid})
    after = counters(await asyncio.to_thread(scrape_server, c))

    websocket = {k: v for k, v in before.items() if k.startswith("inkwave_websocket_")}
    assert {k: after[k] for k in websocket} == websocket
    # HTTP counters went on counting (the polls): never below what they were.
    http = {k: v for k, v in before.items() if k.startswith("inkwave_http_")}
    assert http
    assert all(after[k] >= v for k, v in http.items()), (before, after)
