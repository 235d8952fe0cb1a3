"""The database health endpoint's figures: reachability, query latency, unapplied migrations."""

from __future__ import annotations

import time

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone
from typing_extensions import TypedDict  # pydantic describes it for the OpenAPI document

from monitoring.health import DatabaseCheck, Status, ThreadedCheck, run_checks

# Loading the migration graph reads every migration file; do it at most this often.
MIGRATIONS_CACHE_SECONDS = 60.0
_migrations_cache: tuple[float, list[str]] | None = None


class DatabaseHealth(TypedDict):
    status: str
    connected: bool
    vendor: str
    latencyMs: float | None
    unappliedMigrations: int
    unappliedMigrationNames: list[str]
    error: str | None
    timestamp: str


def unapplied_migrations(alias: str = DEFAULT_DB_ALIAS) -> list[str]:
    global _migrations_cache
    now = time.monotonic()
    if _migrations_cache and now - _migrations_cache[0] < MIGRATIONS_CACHE_SECONDS:
        return _migrations_cache[1]
    connection = connections[alias]
    try:
        executor = MigrationExecutor(connection)
        plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    finally:
        connection.close()
    names = [f"{migration.app_label}.{migration.name}" for migration, _ in plan]
    _migrations_cache = (now, names)
    return names


class MigrationsCheck(ThreadedCheck):
    name = "migrations"

    def __init__(self) -> None:
        self.names: list[str] = []

    def run_blocking(self) -> Status:
        self.names = unapplied_migrations()
        return Status.DEGRADED if self.names else Status.HEALTHY


async def database_health() -> DatabaseHealth:
    migrations = MigrationsCheck()
    reachability, migration_result = await run_checks([DatabaseCheck(), migrations])
    connected = reachability.status == Status.HEALTHY
    if not connected:
        status = Status.UNHEALTHY
    elif migration_result.status != Status.HEALTHY:
        status = Status.DEGRADED
    else:
        status = Status.HEALTHY
    return {
        "status": status.value,
        "connected": connected,
        "vendor": connections[DEFAULT_DB_ALIAS].vendor,
        "latencyMs": reachability.latency_ms if connected else None,
        "unappliedMigrations": len(migrations.names),
        "unappliedMigrationNames": migrations.names,
        # Authenticated staff only: the reason helps whoever is on call.
        "error": reachability.reason or migration_result.reason or None,
        "timestamp": timezone.now().isoformat(),
    }
