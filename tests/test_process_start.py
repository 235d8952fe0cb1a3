"""What a process does as it starts, and what merely importing the settings must not do.

Importing the settings writes nothing (a linter or mypy's Django plugin imports them); the
process that starts (manage.py, the ASGI application, a Celery worker or beat) creates the
var directory and the embedded default's secret key. Celery is recognised however it was
started: the `celery` script, or `python -m celery`.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from inkwave.process import runs_celery

ROOT = Path(__file__).resolve().parent.parent


def clean_env(var_dir: Path, **overrides: str) -> dict[str, str]:
    """This machine's environment with nothing configured: no key, no database, no Redis."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DATABASE", "REDIS", "CELERY", "SECRET_KEY", "DJANGO"))
    }
    env.update(INKWAVE_VAR_DIR=str(var_dir), LOG_LEVEL="warning", **overrides)
    return env


def run(command: list[str], env: dict[str, str], umask: int = -1) -> str:
    result = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=90, umask=umask
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def files_under(directory: Path) -> list[str]:
    return sorted(str(path.relative_to(directory)) for path in directory.rglob("*"))


IMPORT_SETTINGS = (
    "import django; django.setup()\n"
    "from django.conf import settings\n"
    "from django.core.exceptions import ImproperlyConfigured\n"
    "assert settings.INSTALLED_APPS\n"
    "try:\n"
    "    settings.SECRET_KEY\n"
    "except ImproperlyConfigured:\n"
    "    print('no key')\n"
)


def test_importing_the_settings_writes_nothing(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = tmp_path / "missing" / "var"
    for var_dir in (empty, missing):
        env = clean_env(var_dir, DJANGO_SETTINGS_MODULE="inkwave.settings")
        out = run([sys.executable, "-c", IMPORT_SETTINGS], env)
        # No key is made up either: Django refuses to sign with none rather than sign with
        # a key that no other process of the deployment has.
        assert out.split() == ["no", "key"]
    assert files_under(empty) == []
    assert files_under(tmp_path) == ["empty"]


def shown_key(env: dict[str, str], umask: int = -1) -> str:
    code = "from django.conf import settings; print(settings.SECRET_KEY)"
    return run([sys.executable, "manage.py", "shell", "-c", code], env, umask).splitlines()[-1]


def test_a_configured_key_is_used_and_no_key_file_is_written(tmp_path: Path) -> None:
    env = clean_env(tmp_path, SECRET_KEY="configured-key-of-this-deployment")
    assert shown_key(env) == "configured-key-of-this-deployment"
    assert files_under(tmp_path) == ["static"]


def test_a_starting_process_makes_a_private_var_dir_and_keeps_its_key_across_restarts(
    tmp_path: Path,
) -> None:
    var_dir = tmp_path / "fresh" / "var"
    env = clean_env(var_dir)
    # A permissive umask must not leave the key or the directory readable by others.
    first = shown_key(env, umask=0)
    assert stat.S_IMODE(var_dir.stat().st_mode) == 0o700
    key_file = var_dir / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert files_under(var_dir) == ["secret_key", "static"]
    key = key_file.read_text().strip()
    assert len(key) >= 50
    assert first == key
    # A restart signs with the same key, so sessions survive it.
    assert shown_key(env) == key


@pytest.mark.parametrize(
    ("argv0", "expected"),
    [
        ("/srv/inkwave/.venv/bin/celery", True),
        ("celery", True),
        ("/usr/lib/python3.11/site-packages/celery/__main__.py", True),
        ("/srv/inkwave/manage.py", False),
        ("/srv/inkwave/.venv/bin/daphne", False),
        ("/usr/lib/python3.11/site-packages/daphne/__main__.py", False),
        ("/srv/inkwave/inkwave/serve.py", False),
        ("-c", False),
        ("", False),
    ],
)
def test_it_tells_a_celery_process_from_its_program(argv0: str, expected: bool) -> None:
    assert runs_celery([argv0, "-A", "inkwave", "worker"]) is expected


def celery_probe(command: list[str], var_dir: Path) -> dict[str, object]:
    # PostgreSQL is named but not connected to: only the settings' choice of a pool is read.
    env = clean_env(var_dir, DATABASE_URL="postgres://inkwave@127.0.0.1:9/inkwave")
    out = run([*command, "-A", "tests.celery_probe", "report"], env)
    (line,) = [line for line in out.splitlines() if line.startswith("probe ")]
    return dict(json.loads(line.removeprefix("probe ")))


@pytest.mark.parametrize(
    "command",
    [[sys.executable, "-m", "celery"], [str(Path(sys.executable).parent / "celery")]],
    ids=["python -m celery", "celery script"],
)
def test_celery_started_either_way_connects_without_a_pool_and_makes_its_var_dir(
    command: list[str], tmp_path: Path
) -> None:
    var_dir = tmp_path / "var"
    assert celery_probe(command, var_dir) == {"pool": None, "keyIsStored": True}
    assert stat.S_IMODE(var_dir.stat().st_mode) == 0o700


def test_a_web_process_connects_through_a_pool(tmp_path: Path) -> None:
    """The other side of the test above: outside Celery, the default pool is there."""
    env = clean_env(
        tmp_path,
        DATABASE_URL="postgres://inkwave@127.0.0.1:9/inkwave",
        DJANGO_SETTINGS_MODULE="inkwave.settings",
    )
    code = "from django.conf import settings; print(settings.DATABASES['default']['OPTIONS'])"
    out = run([sys.executable, "-c", code], env)
    assert "'max_size': 20" in out
