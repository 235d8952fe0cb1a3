"""The deployment files say what the README promises; a broken one is only found in production."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
APP_SERVICES = ("migrate", "web-1", "web-2", "worker", "beat")


def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def test_one_image_is_built_once_and_run_by_every_app_service() -> None:
    services = compose()["services"]
    built = [name for name, service in services.items() if "build" in service]
    assert built == ["migrate"]
    images = {services[name]["image"] for name in APP_SERVICES}
    assert images == {"inkwave-ops:local"}
    for name in APP_SERVICES[1:]:
        assert services[name]["pull_policy"] == "never", name


def test_the_balancer_waits_for_healthy_web_processes() -> None:
    services = compose()["services"]
    depends = services["balancer"]["depends_on"]
    assert depends == {
        "web-1": {"condition": "service_healthy"},
        "web-2": {"condition": "service_healthy"},
    }
    for name in ("web-1", "web-2"):
        assert "/health/live" in " ".join(services[name]["healthcheck"]["test"])


def test_every_app_process_gets_the_slack_and_sentry_configuration() -> None:
    services = compose()["services"]
    example = (ROOT / "deploy" / "inkwave.env.example").read_text()
    for variable in (
        "SLACK_BOT_TOKEN",
        "SLACK_WEBHOOK_URL",
        "SLACK_OPERATIONS_CHANNEL_ID",
        "SLACK_ORDERS_CHANNEL_ID",
        "SENTRY_DSN",
        "SENTRY_ENVIRONMENT",
        "SENTRY_RELEASE",
        "SENTRY_TRACES_SAMPLE_RATE",
        "SECRET_KEY",
        "MONITORING_TOKEN",
    ):
        assert f"\n{variable}=" in f"\n{example}", variable
        for name in APP_SERVICES:
            environment = services[name]["environment"]
            assert environment[variable].startswith(f"${{{variable}"), (name, variable)


def test_the_env_file_with_real_secrets_is_never_committed() -> None:
    ignored = (ROOT / ".gitignore").read_text().split()
    assert ".env" in ignored


def test_every_long_running_service_is_restarted_when_it_exits() -> None:
    services = compose()["services"]
    long_running = set(services) - {"migrate"}
    assert long_running == {"postgres", "redis", "web-1", "web-2", "worker", "beat", "balancer"}
    for name in long_running:
        # Whatever the exit code: a worker that dies on an error exits with 1.
        assert services[name].get("restart") in ("always", "unless-stopped"), name
    # The one-shot migration must not loop.
    assert services["migrate"].get("restart", "no") == "no"


def test_the_worker_runs_without_the_broadcasts_nothing_reads() -> None:
    command = compose()["services"]["worker"]["command"]
    for flag in ("--without-gossip", "--without-mingle", "--without-heartbeat"):
        assert flag in command
