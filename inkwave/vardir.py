"""The directory of the embedded defaults (INKWAVE_VAR_DIR), and what a process puts in it.

The settings only read from it: importing them writes nothing (a linter, mypy's Django
plugin or a test that imports them must leave no file behind). A process that is going to
serve or work calls `prepare()` as it starts (manage.py, inkwave.asgi, a Celery worker or
beat), which creates the directory and, when no SECRET_KEY is configured, the key the
embedded defaults sign with: one per directory, kept across restarts so sessions survive.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from collections.abc import Mapping
from pathlib import Path

from inkwave.env import env_str

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY_FILE = "secret_key"  # noqa: S105 -- the file's name, not a key
STATIC_DIR = "static"


def var_dir(environ: Mapping[str, str] | None = None) -> Path:
    return Path(env_str("INKWAVE_VAR_DIR", str(BASE_DIR / "var"), environ=environ)).resolve()


def secret_key_configured(environ: Mapping[str, str] | None = None) -> bool:
    # The names the settings' env_secret("SECRET_KEY") reads, spelled out for tests/test_docs.py.
    return bool(
        env_str("SECRET_KEY", environ=environ) or env_str("SECRET_KEY_FILE", environ=environ)
    )


def stored_secret_key(directory: Path) -> str:
    """The key `prepare()` stored in the directory, or "" when there is none (yet)."""
    try:
        return (directory / SECRET_KEY_FILE).read_text().strip()
    except FileNotFoundError:
        return ""


def prepare(environ: Mapping[str, str] | None = None) -> Path:
    """Create the var directory (private: it holds the key, SQLite files and spools), its
    static folder and, unless SECRET_KEY is configured, the stored secret key."""
    directory = var_dir(environ)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    (directory / STATIC_DIR).mkdir(exist_ok=True)
    if not secret_key_configured(environ):
        _create_secret_key(directory / SECRET_KEY_FILE)
    return directory


def _create_secret_key(path: Path) -> None:
    """Write a new key unless one exists. Processes started together (scripts/run starts
    three) race here: the key is written whole to a temporary file and linked into place,
    so the first link wins and nobody reads a partial key."""
    if path.exists():
        return
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".secret_key-")  # mode 0o600
    try:
        with os.fdopen(fd, "w") as file:
            file.write(secrets.token_urlsafe(50))
        with contextlib.suppress(FileExistsError):  # another process linked its key first
            os.link(temporary, path)
    finally:
        os.unlink(temporary)
