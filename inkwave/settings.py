"""Inkwave Ops settings, read from the environment with embedded defaults.

With nothing set the system runs on one machine: SQLite, the in-memory channel layer and
a Celery broker on a SQLite file. DATABASE_URL and REDIS_URL switch to PostgreSQL and
Redis. Every variable is listed in docs/configuration.md (tests/test_docs.py checks it).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from inkwave.env import (
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_list,
    env_secret,
    env_str,
)
from inkwave.logging import build_logging_config
from inkwave.process import runs_celery
from inkwave.sentry import setup_sentry
from inkwave.vardir import BASE_DIR, STATIC_DIR, stored_secret_key, var_dir

# Created, with the secret key below, by the process that starts (inkwave.vardir.prepare),
# never by importing this module.
VAR_DIR = var_dir()

DEBUG = env_bool("DEBUG", False)
# Embedded default: the key prepare() stored in VAR_DIR. Without either, the key is empty
# and Django refuses to sign anything, rather than sign with a key no other process has.
SECRET_KEY = env_secret("SECRET_KEY") or stored_secret_key(VAR_DIR)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
# Where people and devices reach this deployment (printed WebSocket URLs, links in messages).
PUBLIC_URL = env_str("PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/")
if not PUBLIC_URL.startswith(("http://", "https://")):
    raise ImproperlyConfigured("PUBLIC_URL must start with http:// or https://")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "axes",
    "channels",
    "monitoring",
    "notifications",
    "orders",
]

MIDDLEWARE = [
    # Outermost: times everything below, and sees the status the client gets.
    "monitoring.middleware.PerformanceMiddleware",
    # Outermost: every error answer under /api/ leaves as JSON, whoever produced it.
    "inkwave.api_errors.ApiErrorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes requires: it turns a locked-out login into its 429 answer.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "inkwave.urls"
ASGI_APPLICATION = "inkwave.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


# --- Database -------------------------------------------------------------------------


def _database() -> dict[str, Any]:
    url = env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}")
    try:
        config: dict[str, Any] = dict(dj_database_url.parse(url))
    except (ValueError, KeyError) as exc:
        raise ImproperlyConfigured(f"DATABASE_URL cannot be parsed: {exc}") from None
    engine = config.get("ENGINE", "")
    options = config.setdefault("OPTIONS", {})
    if engine == "django.db.backends.postgresql":
        timeout = env_int("DATABASE_CONNECT_TIMEOUT", 3, minimum=1)
        options.setdefault("connect_timeout", timeout)
        # Celery's Django fixup closes connections around every task, which would tear a
        # pool down each time: worker and beat processes connect without one.
        pool_size = env_int("DATABASE_POOL_MAX", 0 if runs_celery() else 20, minimum=0)
        if pool_size:
            # Under ASGI every request may run on its own thread; a pool hands connections
            # out and takes them back instead of opening one per request (or per thread).
            options["pool"] = {"min_size": 1, "max_size": pool_size, "timeout": timeout}
            config["CONN_HEALTH_CHECKS"] = True
        else:
            config["CONN_MAX_AGE"] = env_int("DATABASE_CONN_MAX_AGE", 0, minimum=0)
            config["CONN_HEALTH_CHECKS"] = True
    elif engine == "django.db.backends.sqlite3":
        # WAL lets the web process read while the worker writes; IMMEDIATE avoids the
        # "database is locked" upgrade deadlock between two writers.
        options.setdefault("init_command", "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")
        options.setdefault("transaction_mode", "IMMEDIATE")
        options.setdefault("timeout", 20)
    else:
        raise ImproperlyConfigured(
            "DATABASE_URL must point at PostgreSQL (postgres://...) or SQLite (sqlite:///...)"
        )
    test_name = env_str("DATABASE_TEST_NAME")
    if test_name:
        config["TEST"] = {"NAME": test_name}
    return config


DATABASES = {"default": _database()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTHENTICATION_BACKENDS = [
    # First: refuses any login, right password or not, while the username and address are
    # locked out after too many failures.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / STATIC_DIR
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Serve straight from the apps in a fresh checkout, before anyone ran collectstatic.
WHITENOISE_USE_FINDERS = True


# --- Redis, the channel layer and Celery ------------------------------------------------

REDIS_URL = env_str("REDIS_URL")
if REDIS_URL and not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
    raise ImproperlyConfigured("REDIS_URL must start with redis://, rediss:// or unix://")
CHANNEL_LAYER_PREFIX = env_str("CHANNEL_LAYER_PREFIX", "inkwave")

if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "inkwave.channel_layer.BlockingPoolRedisChannelLayer",
            "CONFIG": {
                "hosts": [
                    {
                        "address": REDIS_URL,
                        # Longer than the layer's 5 s blocking receive: redis-py 8 defaults
                        # to 5 s, which cuts idle receives and crashes idle consumers.
                        "socket_timeout": 15,
                        "max_connections": env_int(
                            "CHANNEL_LAYER_MAX_CONNECTIONS", 200, minimum=10
                        ),
                        "timeout": 10,  # seconds to wait for a free pooled connection
                    }
                ],
                "prefix": CHANNEL_LAYER_PREFIX,
                "capacity": env_int("CHANNEL_LAYER_CAPACITY", 1000, minimum=10),
                "expiry": 60,
                # Every process renews its groups every 30 s (orders/hub.py): a process that
                # died without leaving (SIGKILL, a lost host) drops out of its rooms' groups
                # after this, not after channels-redis' default day of queued broadcasts.
                "group_expiry": env_int(
                    "CHANNEL_LAYER_GROUP_EXPIRY_SECONDS", 300, minimum=2, maximum=86400
                ),
            },
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {"capacity": env_int("CHANNEL_LAYER_CAPACITY", 1000, minimum=10)},
        }
    }

# Riding through a channel layer outage (Redis down or hung). An order request waits this long
# at most for its room broadcast (the event is recorded either way); a room connection waits
# this long at most to join or leave its groups (a join that cannot is closed with 1011); a
# process whose channel layer has not answered for CHANNEL_LAYER_LOST_SECONDS closes its room
# connections with 1011, so their clients reconnect instead of staying open and deaf.
ORDER_BROADCAST_TIMEOUT_SECONDS = env_float(
    "ORDER_BROADCAST_TIMEOUT_SECONDS", 0.5, minimum=0.05, maximum=30
)
CHANNEL_LAYER_TIMEOUT_SECONDS = env_float(
    "CHANNEL_LAYER_TIMEOUT_SECONDS", 3.0, minimum=0.1, maximum=60
)
CHANNEL_LAYER_LOST_SECONDS = env_float("CHANNEL_LAYER_LOST_SECONDS", 5.0, minimum=0.3, maximum=300)

CELERY_BROKER_URL = env_str(
    "CELERY_BROKER_URL", REDIS_URL or f"sqla+sqlite:///{VAR_DIR / 'celery-broker.sqlite3'}"
)
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A worker rides through a broker outage however long it lasts: Celery's default gives up
# after 100 attempts (about 50 minutes at its 30 s ceiling) and exits.
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
# ...and tries again every few seconds, not every 30.
CELERY_WORKER_CONSUMER = "inkwave.worker_consumer:Consumer"
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # A reconnect to a host that is gone fails in seconds, not after the kernel's SYN
        # retries (about two minutes), so the retry loop keeps its cadence.
        "socket_connect_timeout": 5,
        # A hung Redis holds a publish (beat, a task scheduling its wake) this long at most,
        # well above the 1 s of the consumer's BRPOP; keepalive finds a peer that vanished.
        "socket_timeout": 30,
        "socket_keepalive": True,
    }
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")


# --- Monitoring -------------------------------------------------------------------------

MONITORING_ENABLED = env_bool("MONITORING_ENABLED", True)
# A database query or an HTTP request at least this long is recorded with its details.
SLOW_QUERY_MS = env_float("SLOW_QUERY_MS", 1000.0, minimum=1)
SLOW_REQUEST_MS = env_float("SLOW_REQUEST_MS", 2000.0, minimum=1)
# The request header a trusted proxy sets to the request's id (X-Request-ID); empty: every
# request gets a new id, whatever it says, as a client could otherwise pick it.
REQUEST_ID_HEADER = env_str("REQUEST_ID_HEADER", "")
METRICS_FLUSH_SECONDS = env_float("METRICS_FLUSH_SECONDS", 10.0, minimum=0.1, maximum=3600)
# A worker whose last sample is older than this is no longer counted.
WORKER_LIVENESS_SECONDS = env_float(
    "WORKER_LIVENESS_SECONDS", max(3 * METRICS_FLUSH_SECONDS, 5.0), minimum=0.5
)
if WORKER_LIVENESS_SECONDS <= METRICS_FLUSH_SECONDS:
    raise ImproperlyConfigured("WORKER_LIVENESS_SECONDS must be longer than METRICS_FLUSH_SECONDS")
METRICS_RETENTION_DAYS = env_int("METRICS_RETENTION_DAYS", 14, minimum=1)
METRICS_PRUNE_SECONDS = env_int("METRICS_PRUNE_SECONDS", 3600, minimum=1)
# The dashboard's hourly rollups of the samples (its week and month trends): how often beat
# writes the complete hours, and how long they are kept (longer than the samples).
TREND_ROLLUP_SECONDS = env_int("TREND_ROLLUP_SECONDS", 300, minimum=10)
TREND_RETENTION_DAYS = env_int("TREND_RETENTION_DAYS", 400, minimum=90)
# Window of the "recent" figures (error rate, latency percentiles) of the stats endpoints.
STATS_WINDOW_SECONDS = env_int("STATS_WINDOW_SECONDS", 300, minimum=10)
MONITORING_TOKEN = env_secret("MONITORING_TOKEN")
HEALTH_CHECK_TIMEOUT_SECONDS = env_float(
    "HEALTH_CHECK_TIMEOUT_SECONDS", 1.5, minimum=0.05, maximum=30
)
# /health is public: concurrent probes share one run of its checks, and reuse its result this long.
HEALTH_CACHE_SECONDS = env_float("HEALTH_CACHE_SECONDS", 1.0, minimum=0, maximum=60)
# The staff dashboard's live figures: one reading per web process this often, pushed to its sockets.
DASHBOARD_PUSH_SECONDS = env_float("DASHBOARD_PUSH_SECONDS", 3.0, minimum=0.2, maximum=60)
# How soon an open dashboard notices its session ended (signed out, no longer staff).
DASHBOARD_RECHECK_SECONDS = env_float("DASHBOARD_RECHECK_SECONDS", 30.0, minimum=0.2, maximum=600)
# Thresholds past which the WebSocket health endpoints say "degraded" (the spec's alert levels).
WS_DEGRADED_ERROR_RATE = env_float("WS_DEGRADED_ERROR_RATE", 0.05, minimum=0, maximum=1)
WS_DEGRADED_LATENCY_MS = env_float("WS_DEGRADED_LATENCY_MS", 1000.0, minimum=1)
WS_DEGRADED_MEMORY_PERCENT = env_float("WS_DEGRADED_MEMORY_PERCENT", 90.0, minimum=1, maximum=100)


# --- Alerting ---------------------------------------------------------------------------

ALERT_EVALUATION_SECONDS = env_int("ALERT_EVALUATION_SECONDS", 60, minimum=5)
# New incidents for one destination within this long go out as one message.
ALERT_GROUP_WAIT_SECONDS = env_int("ALERT_GROUP_WAIT_SECONDS", 30, minimum=0)
# An incident opening and resolving more than its rule's flap threshold within this long
# is flapping: it notifies once and stays quiet until it settles for as long.
ALERT_FLAP_WINDOW_SECONDS = env_int("ALERT_FLAP_WINDOW_SECONDS", 3600, minimum=60)
# A process that finds the database or Redis down alerts Slack directly, at most this often.
DIRECT_ALERT_INTERVAL_SECONDS = env_int("DIRECT_ALERT_INTERVAL_SECONDS", 900, minimum=10)


# --- Slack notifications --------------------------------------------------------------

SLACK_BOT_TOKEN = env_secret("SLACK_BOT_TOKEN")
SLACK_WEBHOOK_URL = env_secret("SLACK_WEBHOOK_URL")
SLACK_OPERATIONS_CHANNEL_ID = env_str("SLACK_OPERATIONS_CHANNEL_ID")
SLACK_ORDERS_CHANNEL_ID = env_str("SLACK_ORDERS_CHANNEL_ID")
# The app's signing secret (Basic Information → App Credentials): with it and the bot token,
# alert messages carry buttons and /inkwave answers; without it, both are off.
SLACK_SIGNING_SECRET = env_secret("SLACK_SIGNING_SECRET")
# The Web API's base URL: Slack's own, or a proxy (and the tests' local Slack server).
SLACK_API_URL = env_str("SLACK_API_URL", "https://slack.com/api/")
if not SLACK_API_URL.endswith("/"):
    SLACK_API_URL += "/"
SLACK_TIMEOUT_SECONDS = env_int("SLACK_TIMEOUT_SECONDS", 10, minimum=1, maximum=120)
# Slack allows about one message per second per channel; 0 switches the limiter off.
SLACK_MIN_INTERVAL_SECONDS = env_float("SLACK_MIN_INTERVAL_SECONDS", 1.0, minimum=0, maximum=60)
# A notification that still has not reached Slack after this long is given up as failed.
NOTIFICATION_MAX_AGE_SECONDS = env_int("NOTIFICATION_MAX_AGE_SECONDS", 24 * 3600, minimum=60)
NOTIFICATION_RETRY_MAX_SECONDS = env_int("NOTIFICATION_RETRY_MAX_SECONDS", 300, minimum=1)
# While Slack fails a destination, its oldest message (the head of its queue, so the probe)
# is retried at least this often: once one goes through, the backlog follows at once.
NOTIFICATION_PROBE_SECONDS = env_int("NOTIFICATION_PROBE_SECONDS", 10, minimum=1, maximum=300)
# Slack failing a destination for this long is an outage: /health says "degraded", and the
# channel gets a summary of what was delayed once its backlog is delivered.
SLACK_OUTAGE_SECONDS = env_int("SLACK_OUTAGE_SECONDS", 30, minimum=1)
# A notification claimed for longer than this was left by a dead worker and is sent again. A
# claim covers one request to Slack (no retries inside it), so three of its timeouts is safe;
# every second past that, a destination whose worker was killed mid-send waits for nothing
# (the soak's orders channel stood still 2.5 minutes with 120 s and a sweep every 30 s).
NOTIFICATION_LEASE_SECONDS = env_int(
    "NOTIFICATION_LEASE_SECONDS", 3 * SLACK_TIMEOUT_SECONDS, minimum=5
)
if NOTIFICATION_LEASE_SECONDS <= SLACK_TIMEOUT_SECONDS:
    raise ImproperlyConfigured(
        "NOTIFICATION_LEASE_SECONDS must be longer than SLACK_TIMEOUT_SECONDS (a send still "
        "in progress would be sent twice)"
    )
NOTIFICATION_SWEEP_SECONDS = env_int("NOTIFICATION_SWEEP_SECONDS", 10, minimum=1)
# How long a request waits for its notification's drain task to reach the broker; a hung
# broker costs a request this much at most (the publish goes on in the background).
NOTIFICATION_DISPATCH_WAIT_SECONDS = env_float("NOTIFICATION_DISPATCH_WAIT_SECONDS", 0.5, minimum=0)
# At most one "failed order creation" notification per venue this often (all are recorded).
ORDER_FAILURE_NOTIFY_SECONDS = env_int("ORDER_FAILURE_NOTIFY_SECONDS", 300, minimum=0)
# Past this many notifications of one kind (new order, status change, payment issue) from one
# venue within the window, its further events are counted into one summary message; 0: off.
ORDER_NOTIFY_LIMIT = env_int("ORDER_NOTIFY_LIMIT", 10, minimum=0)
ORDER_NOTIFY_WINDOW_SECONDS = env_int("ORDER_NOTIFY_WINDOW_SECONDS", 60, minimum=1, maximum=3600)
# API requests met by a database outage answer 503 with this Retry-After (seconds).
API_RETRY_AFTER_SECONDS = env_int("API_RETRY_AFTER_SECONDS", 5, minimum=1, maximum=300)
HEALTH_UPDATE_SECONDS = env_int("HEALTH_UPDATE_SECONDS", 6 * 3600, minimum=60)
REPORTS_CHECK_SECONDS = env_int("REPORTS_CHECK_SECONDS", 900, minimum=10)


# --- WebSockets -------------------------------------------------------------------------

# The web process's listen queue (inkwave.serve); the kernel caps it at net.core.somaxconn.
WEB_LISTEN_BACKLOG = env_int("WEB_LISTEN_BACKLOG", 1024, minimum=1, maximum=65535)
WS_MAX_MESSAGE_BYTES = env_int("WS_MAX_MESSAGE_BYTES", 64 * 1024, minimum=128)
# A client with more than this waiting to be sent to it is cut (inkwave.serve). A replay of
# ROOM_REPLAY_MAX_EVENTS events of a usual size (1 KB) fits several times over; one of the
# largest orders (28 KB each) to a slow client is cut, and the client resumes where it was.
WS_MAX_UNSENT_BYTES = env_int("WS_MAX_UNSENT_BYTES", 4 * 1024 * 1024, minimum=64 * 1024)
WS_RATE_LIMIT_PER_SECOND = env_float("WS_RATE_LIMIT_PER_SECOND", 20.0, minimum=0.1)
WS_RATE_LIMIT_BURST = env_int("WS_RATE_LIMIT_BURST", 40, minimum=1)
# A reconnecting room client is sent the events it missed when there are at most this many
# and the first of them is at most this old; otherwise it is told to reload (resync).
ROOM_REPLAY_MAX_EVENTS = env_int("ROOM_REPLAY_MAX_EVENTS", 500, minimum=1, maximum=100_000)
ROOM_REPLAY_MAX_AGE_SECONDS = env_int("ROOM_REPLAY_MAX_AGE_SECONDS", 3600, minimum=10)
# A resume frame costs up to ROOM_REPLAY_MAX_EVENTS frames: one per connection this often.
WS_RESUME_INTERVAL_SECONDS = env_float("WS_RESUME_INTERVAL_SECONDS", 5.0, minimum=0.0)
# Each process re-checks every open room connection's grant this often, in a few queries
# whatever the number of connections: the bound on how long an expired (or silently
# deleted) session, or a change made without signals, keeps a connection open.
WS_ACCESS_RECHECK_SECONDS = env_float("WS_ACCESS_RECHECK_SECONDS", 30.0, minimum=0.1)


# --- Retention --------------------------------------------------------------------------
# Each append-only table is pruned by beat, in bounded batches (inkwave/retention.py); what
# an open incident or an undelivered message still needs is kept whatever its age.

# Sent, failed or skipped messages; their delivery attempts go with them.
NOTIFICATION_RETENTION_DAYS = env_int("NOTIFICATION_RETENTION_DAYS", 30, minimum=2)
DELIVERY_ATTEMPT_RETENTION_DAYS = env_int("DELIVERY_ATTEMPT_RETENTION_DAYS", 30, minimum=2)
# Counted from when an incident resolved; the weekly report counts the past two weeks.
INCIDENT_RETENTION_DAYS = env_int("INCIDENT_RETENTION_DAYS", 90, minimum=14)
ORDER_EVENT_RETENTION_DAYS = env_int("ORDER_EVENT_RETENTION_DAYS", 90, minimum=14)
# Venue activity (orders.activity): a quarter hour per row, the baseline reads 8 weeks back.
VENUE_ACTIVITY_RETENTION_DAYS = env_int("VENUE_ACTIVITY_RETENTION_DAYS", 70, minimum=57)
VENUE_ACTIVITY_ROLLUP_SECONDS = env_int("VENUE_ACTIVITY_ROLLUP_SECONDS", 300, minimum=60)
# A venue that just opened is left alone this long (staff switch screens on, first guests sit).
VENUE_WARMUP_MINUTES = env_int("VENUE_WARMUP_MINUTES", 20, minimum=0, maximum=240)
# Claims of sent reports; a week's report is claimed during the week after it.
REPORT_RUN_RETENTION_DAYS = env_int("REPORT_RUN_RETENTION_DAYS", 30, minimum=14)
RETENTION_PRUNE_SECONDS = env_int("RETENTION_PRUNE_SECONDS", 3600, minimum=60)

# --- Public status page -----------------------------------------------------------------
# /status/, /status.json and the badges are answered from one snapshot, reused this long
# (and sent with Cache-Control max-age of the same); 0 computes each answer afresh.
STATUS_CACHE_SECONDS = env_int("STATUS_CACHE_SECONDS", 30, minimum=0)
# How often beat writes finished days' uptime rows (it catches up on days it missed).
STATUS_ROLLUP_SECONDS = env_int("STATUS_ROLLUP_SECONDS", 3600, minimum=60)
# Daily uptime rows and ended maintenance windows are kept this long (the page shows 90).
STATUS_HISTORY_DAYS = env_int("STATUS_HISTORY_DAYS", 400, minimum=90)


# --- Celery beat ------------------------------------------------------------------------

CELERY_BEAT_SCHEDULE = {
    "prune-metric-samples": {
        "task": "monitoring.prune_samples",
        "schedule": float(METRICS_PRUNE_SECONDS),
    },
    # Processes silent past their liveness are found dead: their open connections are
    # counted as disconnected.
    "release-dead-workers": {
        "task": "monitoring.release_dead_workers",
        "schedule": float(WORKER_LIVENESS_SECONDS),
    },
    "sweep-notifications": {
        "task": "notifications.sweep",
        "schedule": float(NOTIFICATION_SWEEP_SECONDS),
    },
    "health-update": {
        "task": "notifications.health_update",
        "schedule": float(HEALTH_UPDATE_SECONDS),
    },
    "evaluate-alert-rules": {
        "task": "monitoring.check_alerts",
        "schedule": float(ALERT_EVALUATION_SECONDS),
    },
    "daily-and-weekly-reports": {
        "task": "notifications.reports",
        "schedule": float(REPORTS_CHECK_SECONDS),
    },
    # Retention: one task per app, each pruning its tables in bounded batches.
    "prune-incidents": {
        "task": "monitoring.prune_incidents",
        "schedule": float(RETENTION_PRUNE_SECONDS),
    },
    "prune-notifications": {
        "task": "notifications.prune",
        "schedule": float(RETENTION_PRUNE_SECONDS),
    },
    "dashboard-trend-rollup": {
        "task": "monitoring.trend_rollup",
        "schedule": float(TREND_ROLLUP_SECONDS),
    },
    "status-daily-uptime": {
        "task": "monitoring.status_rollup",
        "schedule": float(STATUS_ROLLUP_SECONDS),
    },
    "venue-activity-rollup": {
        "task": "orders.activity_rollup",
        "schedule": float(VENUE_ACTIVITY_ROLLUP_SECONDS),
    },
    "prune-order-events": {
        "task": "orders.prune",
        "schedule": float(RETENTION_PRUNE_SECONDS),
    },
}


# --- Logging ----------------------------------------------------------------------------

LOG_LEVEL = env_choice("LOG_LEVEL", "info", ("debug", "info", "warning", "error")).upper()
LOG_FORMAT = env_choice("LOG_FORMAT", "console", ("console", "json"))
LOGGING = build_logging_config(level=LOG_LEVEL, json_format=LOG_FORMAT == "json")
LOGGING_CONFIG = "inkwave.logging.configure"


# --- Error reporting --------------------------------------------------------------------
# Sentry, off unless SENTRY_DSN is set; inkwave/sentry.py says what is reported and what is
# filtered out first. Set up here, as every process (web, worker, beat, manage.py) loads
# these settings before it does any work.

SENTRY_DSN = env_secret("SENTRY_DSN")
SENTRY_ENVIRONMENT = env_str("SENTRY_ENVIRONMENT", "production")
SENTRY_RELEASE = env_str("SENTRY_RELEASE")
SENTRY_TRACES_SAMPLE_RATE = env_float("SENTRY_TRACES_SAMPLE_RATE", 0.0, minimum=0, maximum=1)
setup_sentry(
    SENTRY_DSN,
    environment=SENTRY_ENVIRONMENT,
    release=SENTRY_RELEASE,
    traces_sample_rate=SENTRY_TRACES_SAMPLE_RATE,
)


# --- Security ---------------------------------------------------------------------------

BEHIND_TLS_PROXY = env_bool("BEHIND_TLS_PROXY", False)

if not DEBUG:
    SESSION_COOKIE_HTTPONLY = True
    SECURE_CONTENT_TYPE_NOSNIFF = True

if BEHIND_TLS_PROXY:
    # The proxy terminates TLS and says so in X-Forwarded-Proto (it must overwrite a
    # client's own). Cookies then travel over HTTPS only, and browsers are told to stay on it.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    # Load balancers and container health checks probe these over plain HTTP, directly.
    SECURE_REDIRECT_EXEMPT = [r"^health(/live)?$"]
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 365 * 24 * 3600, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
    if not SECURE_HSTS_PRELOAD:
        # check --deploy asks for preload; asking browsers to hard-code the domain is the
        # domain owner's decision (and hard to undo), so it is off unless they set it.
        SILENCED_SYSTEM_CHECKS = ["security.W021"]

# Admin logins (django-axes): after LOGIN_FAILURE_LIMIT wrong passwords for one username
# from one address, that pair is refused (HTTP 429), even with the right password, for
# LOGIN_LOCKOUT_MINUTES. A success clears the count.
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_LOCKOUT_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "inkwave.security.client_ip"
# Only failures are kept (and expire with the lockout); no table of every successful login.
AXES_DISABLE_ACCESS_LOG = True
