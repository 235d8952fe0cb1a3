"""Prometheus and Alertmanager beside the deployment, as plain child processes on loopback.

Prometheus runs the repository's scrape configuration (deploy/prometheus/prometheus.yml) with
the bench's target, token file and intervals, and its rules file, deploy/prometheus/rules.yml,
unchanged (read in place). Alertmanager routes every alert to a webhook served here, which
records each notification with its arrival time, and inhibits as rules.yml's header says. A
poller reads both APIs every second, so that when an alert fired, resolved, or was inhibited
is known to a second whatever Alertmanager notified.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import json
import shutil
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from bench.common import ROOT, Children, clean_environ, spare_port, wait_until

PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS_DIR / "rules.yml"

# A bench's intervals: a scrape and an evaluation every 5 s (the repository's 15 s would add
# up to 30 s to every time to fire); Alertmanager sends a group 2 s after its first alert and
# any change 5 s after the last notification, and repeats an unchanged group only after an
# hour, so that every notification recorded is news.
SCRAPE_SECONDS = 5
GROUP_WAIT = "2s"
GROUP_INTERVAL = "5s"
REPEAT_INTERVAL = "1h"


def prometheus_config(target: str, token_file: Path, alertmanager: str) -> dict[str, Any]:
    """The repository's prometheus.yml with the bench's target, token, intervals and
    Alertmanager; its rule file by absolute path (the file itself, unchanged)."""
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"].update(
        scrape_interval=f"{SCRAPE_SECONDS}s", evaluation_interval=f"{SCRAPE_SECONDS}s"
    )
    config["rule_files"] = [str(PROMETHEUS_DIR / name) for name in config["rule_files"]]
    (job,) = config["scrape_configs"]
    job["scrape_timeout"] = f"{SCRAPE_SECONDS - 1}s"
    job["authorization"]["credentials_file"] = str(token_file)
    job["static_configs"] = [{"targets": [target]}]
    config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    return config


def header_inhibit_rules() -> list[dict[str, Any]]:
    """The `inhibit_rules:` that rules.yml's header comment gives for Alertmanager."""
    lines = RULES.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "#   inhibit_rules:")
    block = []
    for line in lines[start:]:
        if not line.startswith("#   "):
            break
        block.append(line[4:])
    rules = yaml.safe_load("\n".join(block))["inhibit_rules"]
    assert isinstance(rules, list)
    return rules


def alertmanager_config(webhook: str) -> dict[str, Any]:
    return {
        "route": {
            "receiver": "bench",
            "group_by": ["..."],  # each alert its own group: one arrival time per alert
            "group_wait": GROUP_WAIT,
            "group_interval": GROUP_INTERVAL,
            "repeat_interval": REPEAT_INTERVAL,
        },
        "receivers": [
            {"name": "bench", "webhook_configs": [{"url": webhook, "send_resolved": True}]}
        ],
        "inhibit_rules": header_inhibit_rules(),
    }


@dataclass
class Notice:
    """One alert in one webhook notification."""

    at: float  # arrival
    status: str  # firing / resolved
    labels: dict[str, str]
    starts_at: str
    ends_at: str


@dataclass
class Seen:
    """One poll: Prometheus' alerts (name, labels, state) and Alertmanager's (with whether
    they were inhibited, and by which alerts)."""

    at: float
    prometheus: list[tuple[str, dict[str, str], str]] | None  # None: no answer
    alertmanager: list[tuple[str, dict[str, str], str, list[str]]] | None


class _Receiver(BaseHTTPRequestHandler):
    server: _ReceiverServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        at = time.time()
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        with self.server.lock:
            for alert in body.get("alerts", []):
                self.server.notices.append(
                    Notice(
                        at,
                        alert.get("status", ""),
                        dict(alert.get("labels", {})),
                        alert.get("startsAt", ""),
                        alert.get("endsAt", ""),
                    )
                )
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


class _ReceiverServer(ThreadingHTTPServer):
    daemon_threads = True
    notices: list[Notice]
    lock: threading.Lock


@dataclass
class AlertStack:
    """Prometheus scraping `target_port`'s /metrics with `token`; Alertmanager; the webhook."""

    work: Path
    target_port: int
    token: str
    notices: list[Notice] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    # Alertmanager's fingerprint -> alertname, to name what inhibited an alert.
    names: dict[str, str] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.binaries = {}
        for binary in ("prometheus", "prometheus-alertmanager"):
            path = shutil.which(binary)
            if path is None:
                raise RuntimeError(
                    f"{binary} is not installed (Debian: prometheus and its alertmanager)"
                )
            self.binaries[binary] = path
        self.children = Children(self.work)
        self.prometheus_port = spare_port()
        self.alertmanager_port = spare_port()
        self.receiver = _ReceiverServer(("127.0.0.1", 0), _Receiver)
        self.receiver.notices = self.notices
        self.receiver.lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self.receiver.serve_forever, daemon=True),
            threading.Thread(target=self._poll, daemon=True),
        ]

    def start(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        token_file = self.work / "monitoring-token"
        token_file.write_text(self.token)
        token_file.chmod(0o600)
        webhook = f"http://127.0.0.1:{self.receiver.server_address[1]}/alerts"
        alertmanager = f"127.0.0.1:{self.alertmanager_port}"
        (self.work / "alertmanager.yml").write_text(yaml.safe_dump(alertmanager_config(webhook)))
        (self.work / "prometheus.yml").write_text(
            yaml.safe_dump(
                prometheus_config(f"127.0.0.1:{self.target_port}", token_file, alertmanager)
            )
        )
        self.threads[0].start()
        env = clean_environ(("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"))
        self.children.start(
            "alertmanager",
            [
                self.binaries["prometheus-alertmanager"],
                f"--config.file={self.work / 'alertmanager.yml'}",
                f"--storage.path={self.work / 'alertmanager-data'}",
                f"--web.listen-address={alertmanager}",
                "--cluster.listen-address=",  # no gossip: one instance, loopback only
            ],
            env,
        )
        self.children.start(
            "prometheus",
            [
                self.binaries["prometheus"],
                f"--config.file={self.work / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.work / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{self.prometheus_port}",
                "--storage.tsdb.retention.time=1d",
            ],
            env,
        )
        for name, port in (
            ("alertmanager", self.alertmanager_port),
            ("prometheus", self.prometheus_port),
        ):
            if not wait_until(functools.partial(ready, port), 60, 0.5):
                child = next(c for c in self.children.items if c.name == name)
                raise RuntimeError(f"{name} did not get ready:\n{child.tail()}")
        self.threads[1].start()

    def close(self) -> None:
        self.stop.set()
        if self.threads[1].is_alive():
            self.threads[1].join(10)
        self.children.stop_all()
        self.receiver.shutdown()
        self.receiver.server_close()

    def targets_up(self) -> bool:
        answer = get(self.prometheus_port, "/api/v1/targets")
        active = (answer or {}).get("data", {}).get("activeTargets", [])
        return bool(active) and all(t.get("health") == "up" for t in active)

    def notices_snapshot(self) -> list[Notice]:
        with self.receiver.lock:
            return list(self.notices)

    def _poll(self) -> None:
        while not self.stop.is_set():
            at = time.time()
            prometheus = get(self.prometheus_port, "/api/v1/alerts")
            alertmanager = get(self.alertmanager_port, "/api/v2/alerts")
            self.seen.append(
                Seen(
                    at,
                    None
                    if prometheus is None
                    else [
                        (a["labels"]["alertname"], a["labels"], a["state"])
                        for a in prometheus.get("data", {}).get("alerts", [])
                    ],
                    None if alertmanager is None else self._alertmanager(alertmanager),
                )
            )
            self.stop.wait(max(0.0, at + 1.0 - time.time()))

    def _alertmanager(
        self, alerts: list[dict[str, Any]]
    ) -> list[tuple[str, dict[str, str], str, list[str]]]:
        out = []
        for alert in alerts:
            labels = alert["labels"]
            self.names[alert["fingerprint"]] = labels["alertname"]
            status = alert.get("status", {})
            out.append(
                (
                    labels["alertname"],
                    labels,
                    status.get("state", ""),
                    list(status.get("inhibitedBy") or []),
                )
            )
        return out


def ready(port: int) -> bool:
    return get(port, "/-/ready") is not None


def get(port: int, path: str) -> Any:
    """A JSON answer from a loopback API, or None."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        raw = response.read()
        if response.status != 200:
            return None
        with contextlib.suppress(ValueError):
            return json.loads(raw)
        return {}
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()
