from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from inkwave.env import env_bool, env_choice, env_float, env_int, env_list, env_secret

ROOT = Path(__file__).resolve().parent.parent


def test_env_bool_accepts_a_fixed_set_of_words_and_rejects_the_rest() -> None:
    for word in ("true", "1", "yes", "on", "TRUE", " On "):
        assert env_bool("X", False, environ={"X": word}) is True, word
    for word in ("false", "0", "no", "off", "False", " OFF "):
        assert env_bool("X", True, environ={"X": word}) is False, word
    assert env_bool("X", True, environ={}) is True
    assert env_bool("X", False, environ={"X": "  "}) is False  # blank: the default
    for word in ("maybe", "2", "y", "n", "enabled", "truee"):
        with pytest.raises(ImproperlyConfigured, match="X must be true or false"):
            env_bool("X", False, environ={"X": word})


def test_env_int_names_the_variable_and_enforces_bounds() -> None:
    assert env_int("N", 5, environ={"N": " 7 "}) == 7
    with pytest.raises(ImproperlyConfigured, match="N must be a whole number"):
        env_int("N", 5, environ={"N": "7.5"})
    with pytest.raises(ImproperlyConfigured, match="N must be at least 1"):
        env_int("N", 5, minimum=1, environ={"N": "0"})


def test_env_float_rejects_nan_and_infinity() -> None:
    assert env_float("F", 1.0, environ={"F": "0.25"}) == 0.25
    for bad in ("nan", "inf", "ten"):
        with pytest.raises(ImproperlyConfigured, match="F must be"):
            env_float("F", 1.0, environ={"F": bad})


def test_env_list_and_choice() -> None:
    assert env_list("L", ["a"], environ={"L": "x, y,,z"}) == ["x", "y", "z"]
    assert env_list("L", ["a"], environ={}) == ["a"]
    assert env_choice("C", "json", ("json", "console"), environ={"C": "CONSOLE"}) == "console"
    with pytest.raises(ImproperlyConfigured, match="C must be one of"):
        env_choice("C", "json", ("json", "console"), environ={"C": "xml"})


def test_env_secret_reads_a_file_and_refuses_both_forms(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("s3cret\n")
    assert env_secret("T", environ={"T_FILE": str(secret)}) == "s3cret"
    assert env_secret("T", environ={"T": "direct"}) == "direct"
    with pytest.raises(ImproperlyConfigured, match="not both"):
        env_secret("T", environ={"T": "a", "T_FILE": str(secret)})
    with pytest.raises(ImproperlyConfigured, match="cannot be read"):
        env_secret("T", environ={"T_FILE": str(tmp_path / "missing")})


def _django_setup(env: dict[str, str], code: str = "") -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE", "REDIS"))}
    clean.update(env, DJANGO_SETTINGS_MODULE="inkwave.settings")
    return subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("METRICS_FLUSH_SECONDS", "often"),
        ("DEBUG", "sure"),
        ("DATABASE_URL", "mysql://root@localhost/x"),
        ("REDIS_URL", "localhost:6379"),
        ("WS_RATE_LIMIT_BURST", "-1"),
        # A lease no longer than one send to Slack would send a slow one twice.
        ("NOTIFICATION_LEASE_SECONDS", "10"),
    ],
)
def test_a_malformed_variable_stops_startup_naming_it(
    name: str, value: str, tmp_path: Path
) -> None:
    result = _django_setup({name: value, "INKWAVE_VAR_DIR": str(tmp_path)})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert name in result.stderr


def test_with_nothing_set_it_runs_on_sqlite_memory_layer_and_a_serverless_broker(
    tmp_path: Path,
) -> None:
    code = (
        "from django.conf import settings as s; "
        "print(s.DATABASES['default']['ENGINE']); "
        "print(s.CHANNEL_LAYERS['default']['BACKEND']); "
        "print(s.CELERY_BROKER_URL)"
    )
    result = _django_setup({"INKWAVE_VAR_DIR": str(tmp_path)}, code)
    assert result.returncode == 0, result.stderr
    engine, layer, broker = result.stdout.split()
    assert engine == "django.db.backends.sqlite3"
    assert layer == "channels.layers.InMemoryChannelLayer"
    assert broker.startswith("sqla+sqlite:///")
    assert str(tmp_path) in broker


def test_database_and_redis_urls_switch_to_the_production_stack(tmp_path: Path) -> None:
    code = (
        "from django.conf import settings as s; "
        "print(s.DATABASES['default']['ENGINE']); "
        "print(s.CHANNEL_LAYERS['default']['BACKEND']); "
        "print(s.CELERY_BROKER_URL)"
    )
    result = _django_setup(
        {
            "INKWAVE_VAR_DIR": str(tmp_path),
            "DATABASE_URL": "postgres://u@db:5432/inkwave",
            "REDIS_URL": "redis://cache:6379/1",
        },
        code,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "django.db.backends.postgresql",
        "inkwave.channel_layer.BlockingPoolRedisChannelLayer",
        "redis://cache:6379/1",
    ]


@pytest.mark.parametrize("debug", ["true", "false"])
def test_each_log_record_is_printed_once(tmp_path: Path, debug: str) -> None:
    result = _django_setup(
        {"DEBUG": debug, "LOG_LEVEL": "info", "INKWAVE_VAR_DIR": str(tmp_path)},
        "import logging; logging.getLogger('django.request').warning('Not Found: /nowhere')",
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("Not Found: /nowhere") == 1, result.stderr
