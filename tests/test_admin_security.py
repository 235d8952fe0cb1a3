"""The admin's front door: a login throttle, and HTTPS-only behaviour behind the TLS proxy."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.test import Client
from django.test.client import RequestFactory
from django.utils import timezone

from inkwave.security import client_ip

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "right-horse-battery-staple"


@pytest.fixture
def operator(db: Any) -> Any:
    return get_user_model().objects.create_superuser("operator", "op@example.com", PASSWORD)


def log_in(client: Client, password: str, **extra: str) -> int:
    response = client.post(
        "/admin/login/?next=/admin/",
        {"username": "operator", "password": password, "next": "/admin/"},
        **extra,  # type: ignore[arg-type]
    )
    return response.status_code


def logged_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def test_thirty_wrong_passwords_then_the_right_one_is_refused(operator: Any) -> None:
    client = Client()
    statuses = [log_in(client, f"guess-{attempt}") for attempt in range(30)]
    assert statuses[:4] == [200] * 4  # the form again, with its error
    assert set(statuses[4:]) == {429}  # the fifth failure locks the pair out
    assert log_in(client, PASSWORD) == 429
    assert not logged_in(client)


def test_the_lockout_ends_after_its_time_and_is_per_address(operator: Any) -> None:
    attacker = Client(REMOTE_ADDR="198.51.100.7")
    with time_machine.travel(timezone.now(), tick=False) as traveller:
        for attempt in range(5):
            log_in(attacker, f"guess-{attempt}")
        assert log_in(attacker, PASSWORD) == 429
        colleague = Client(REMOTE_ADDR="198.51.100.8")
        assert log_in(colleague, PASSWORD) == 302  # the operator is not locked out everywhere
        assert logged_in(colleague)
        traveller.shift(timedelta(minutes=16))
        assert log_in(attacker, PASSWORD) == 302
        assert logged_in(attacker)


def test_behind_the_proxy_the_address_is_the_one_the_proxy_appended(
    operator: Any, settings: Any
) -> None:
    settings.BEHIND_TLS_PROXY = True
    client = Client()
    proxy = {"HTTP_X_FORWARDED_PROTO": "https"}
    for attempt in range(5):
        # A client forging a new first entry each time still comes from the same address.
        forged = f"10.0.0.{attempt}, 203.0.113.9"
        log_in(client, f"guess-{attempt}", HTTP_X_FORWARDED_FOR=forged, **proxy)
    assert log_in(client, PASSWORD, HTTP_X_FORWARDED_FOR="10.9.9.9, 203.0.113.9", **proxy) == 429
    elsewhere = Client()
    assert log_in(elsewhere, PASSWORD, HTTP_X_FORWARDED_FOR="203.0.113.10", **proxy) == 302


def test_without_the_proxy_a_forwarded_header_is_ignored() -> None:
    request = RequestFactory().get("/", REMOTE_ADDR="192.0.2.1", HTTP_X_FORWARDED_FOR="10.0.0.1")
    assert client_ip(request) == "192.0.2.1"


def production_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE", "REDIS"))}
    env.update(
        DJANGO_SETTINGS_MODULE="inkwave.settings",
        INKWAVE_VAR_DIR=str(tmp_path),
        DEBUG="false",
        BEHIND_TLS_PROXY="true",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="ops.example.com",
        LOG_LEVEL="warning",
    )
    env.update(extra)
    return env


def test_check_deploy_is_clean_with_the_production_settings(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=production_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_behind_tls_cookies_are_secure_hsts_is_sent_and_health_is_not_redirected(
    tmp_path: Path,
) -> None:
    code = """
import django
django.setup()
from django.conf import settings
from django.test import Client
from django.test.utils import setup_test_environment
setup_test_environment()
print(settings.SESSION_COOKIE_SECURE, settings.CSRF_COOKIE_SECURE)
client = Client(SERVER_NAME="ops.example.com")
plain = client.get("/admin/login/")
print(plain.status_code, plain.get("Location"))
tls = client.get("/admin/login/", HTTP_X_FORWARDED_PROTO="https")
print(tls.status_code, tls["Strict-Transport-Security"])
print(client.get("/health/live").status_code)
"""
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=production_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "True True",
        "301 https://ops.example.com/admin/login/",
        "200 max-age=31536000; includeSubDomains",
        "200",
    ]
