"""Test settings: the real settings module, on real PostgreSQL and Redis by default.

Everything is read from the environment exactly as in production; this module only fills
in the local services and keeps concurrent test runs apart (their own Redis key prefix
and scratch directory).
"""

from __future__ import annotations

import os
import tempfile
import uuid

# Tests never report to a real Sentry: not this process, nor the servers it starts (they
# inherit its environment). tests/test_sentry.py reports to a local one.
for name in [name for name in os.environ if name.startswith("SENTRY_")]:
    del os.environ[name]

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
os.environ.setdefault("CHANNEL_LAYER_PREFIX", f"inkwave-test-{uuid.uuid4().hex[:8]}")
os.environ.setdefault("INKWAVE_VAR_DIR", tempfile.mkdtemp(prefix="inkwave-test-"))

# pytest-xdist's workers (scripts/test runs two) inherit this environment from the process
# that started them; each gets its own key prefix, scratch directory and Redis database, so
# that one's Celery workers never take the other's tasks nor its claims (pytest-django gives
# each its own test database).
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
if XDIST_WORKER and not os.environ.get("INKWAVE_TEST_WORKER_SETTLED"):
    os.environ["INKWAVE_TEST_WORKER_SETTLED"] = XDIST_WORKER
    index = int(XDIST_WORKER.removeprefix("gw"))
    os.environ["CHANNEL_LAYER_PREFIX"] += f"-{XDIST_WORKER}"
    os.environ["INKWAVE_VAR_DIR"] = tempfile.mkdtemp(prefix=f"inkwave-test-{XDIST_WORKER}-")
    base, _, database = os.environ["REDIS_URL"].rpartition("/")
    if database.isdigit():  # databases 15, 14, ... for the workers, apart from the main run's
        os.environ["REDIS_URL"] = f"{base}/{15 - index % 8}"
os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production")
os.environ.setdefault("LOG_LEVEL", "warning")

from inkwave import vardir  # noqa: E402 (after the environment is settled)

# The test run is a process starting, like manage.py: its scratch directory gets the static
# folder (whitenoise warns without one); the key is set above, so no key file is written.
vardir.prepare()

from inkwave.settings import *  # noqa: E402, F403

# Tasks published by the code under test go nowhere; tests call the task functions directly,
# and the system tests start real workers on a real broker.
CELERY_BROKER_URL = "memory://"

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins in tests
