"""The database health endpoint's figures: reachability, query latency, unapplied migrations,
and the size of each table that retention prunes."""

from __future__ import annotations

import time

from django.db import DEFAULT_DB_ALIAS, close_old_connections, connections, models
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone
from typing_extensions import TypedDict  # pydantic describes it for the OpenAPI document

from inkwave import retention
from monitoring.health import CheckFailed, DatabaseCheck, Status, ThreadedCheck, run_checks

# Loading the migration graph reads every migration file; do it at most this often.
MIGRATIONS_CACHE_SECONDS = 60.0
_migrations_cache: tuple[float, list[str]] | None = None


class TableSize(TypedDict):
    table: str
    model: str
    # PostgreSQL: the planner's estimate (pg_class.reltuples; null until the table was first
    # vacuumed or analysed, 0 while it is empty); SQLite: an exact count.
    rows: int | None
    rowsEstimated: bool
    # Table, indexes and TOAST on PostgreSQL; null on SQLite (one file for everything).
    sizeBytes: int | None


class DatabaseHealth(TypedDict):
    status: str
    connected: bool
    vendor: str
    latencyMs: float | None
    unappliedMigrations: int
    unappliedMigrationNames: list[str]
    # The tables that retention prunes; null when they could not be read in time.
    tables: list[TableSize] | None
    error: str | None
    timestamp: str


def table_sizes(
    tables: list[type[models.Model]] | None = None, alias: str = DEFAULT_DB_ALIAS
) -> list[TableSize]:
    """Rows and bytes of each table (by default those with a registered prune), in one query."""
    if tables is None:
        tables = [prune.model for prune in retention.registered()]
    connection = connections[alias]
    names = {model._meta.db_table: model._meta.label for model in tables}
    if connection.vendor == "postgresql":
        # reltuples is -1 until the table is first vacuumed or analysed; an empty heap has
        # no rows, whatever the statistics say.
        sql = (
            "SELECT c.relname, CASE WHEN pg_relation_size(c.oid) = 0 THEN 0 "
            "ELSE c.reltuples::bigint END, pg_total_relation_size(c.oid) "
            "FROM pg_class c WHERE c.relkind IN ('r', 'p') AND c.relname = ANY(%s) "
            "AND pg_table_is_visible(c.oid)"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, [sorted(names)])
            found = {name: (rows if rows >= 0 else None, size) for name, rows, size in cursor}
        estimated = True
    else:
        existing = sorted(set(names) & set(connection.introspection.table_names()))
        found = {}
        if existing:
            quote = connection.ops.quote_name
            # Table names of our own models, quoted: nothing here comes from a request.
            sql = " UNION ALL ".join(
                f"SELECT %s, COUNT(*) FROM {quote(name)}"  # noqa: S608
                for name in existing
            )
            with connection.cursor() as cursor:
                cursor.execute(sql, existing)
                found = {name: (rows, None) for name, rows in cursor}
        estimated = False
    return [
        {
            "table": table,
            "model": label,
            "rows": found[table][0] if table in found else None,
            "rowsEstimated": estimated,
            "sizeBytes": found[table][1] if table in found else None,
        }
        for table, label in sorted(names.items(), key=lambda item: item[1])
    ]


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


class TableSizesCheck(ThreadedCheck):
    """Reads the sizes under the checks' timeout; its status changes no verdict."""

    name = "table_sizes"

    def __init__(self) -> None:
        self.sizes: list[TableSize] | None = None

    def run_blocking(self) -> Status:
        close_old_connections()
        try:
            self.sizes = table_sizes()
        except Exception as exc:
            raise CheckFailed(f"{type(exc).__name__}: {exc}") from exc
        finally:
            connections[DEFAULT_DB_ALIAS].close()
        return Status.HEALTHY


async def database_health() -> DatabaseHealth:
    migrations, sizes = MigrationsCheck(), TableSizesCheck()
    reachability, migration_result, _ = await run_checks([DatabaseCheck(), migrations, sizes])
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
        "tables": sizes.sizes,
        # Authenticated staff only: the reason helps whoever is on call.
        "error": reachability.reason or migration_result.reason or None,
        "timestamp": timezone.now().isoformat(),
    }
