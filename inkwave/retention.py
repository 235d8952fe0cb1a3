"""Retention: every append-only table has a prune, and prunes delete in bounded batches.

A prune deletes the rows of one table that are past their retention and that no floor
keeps (an open incident's timeline, an undelivered message), at most `max_batches`
statements of `batch_size` rows per run, each batch in a short transaction of its own: beat
never holds long locks, and a backlog is worked off over several runs.

Each app registers its prunes at start-up (in its AppConfig.ready); `manage.py prune` and the
database health endpoint read the registry, so no app imports another to learn its tables.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import structlog
from django.db import models, transaction

logger = structlog.get_logger(__name__)

BATCH_SIZE = 1000
MAX_BATCHES = 100


class PruneFunction(Protocol):
    def __call__(
        self, now: datetime | None = None, *, dry_run: bool = False, max_batches: int = ...
    ) -> int:
        """Delete what is due (or, dry, count it); return the rows of its own table."""
        ...


@dataclass(frozen=True, slots=True)
class Prune:
    model: type[models.Model]
    run: PruneFunction
    # The setting that holds the retention, for what `manage.py prune` prints.
    setting: str

    @property
    def label(self) -> str:
        return self.model._meta.label


_registry: dict[str, Prune] = {}


def register(model: type[models.Model], run: PruneFunction, setting: str) -> None:
    """Called from an AppConfig.ready; registering a table again replaces its entry."""
    prune = Prune(model, run, setting)
    _registry[prune.label] = prune


def registered() -> list[Prune]:
    """In the order they were registered (INSTALLED_APPS order, then each app's own)."""
    return list(_registry.values())


def run_each(prunes: Iterable[tuple[str, PruneFunction]], now: datetime) -> dict[str, int]:
    """One beat run over an app's tables: a table whose prune fails is logged, and the
    others are pruned all the same (the failed one is tried again next run)."""
    deleted: dict[str, int] = {}
    for name, prune in prunes:
        try:
            deleted[name] = prune(now)
        except Exception:
            logger.exception("prune_failed", table=name)
    logger.info("tables_pruned", **deleted)
    return deleted


# Given a batch of ids (and the ids this run already deleted), the ones that may go: for a
# floor that a filter cannot express (a row is kept while a kept row refers to it).
Selector = Callable[[list[int], set[int]], list[int]]


def delete_in_batches(
    eligible: models.QuerySet[Any],
    *,
    dry_run: bool = False,
    batch_size: int | None = None,
    max_batches: int = MAX_BATCHES,
    newest_first: bool = False,
    select: Selector | None = None,
) -> int:
    """Delete the rows of `eligible` (past retention, the floor's filters applied) batch by
    batch; return how many were deleted or, dry, would be.

    Each batch reads up to `batch_size` ids past a cursor, so rows that stay (a dry run, a
    row `select` keeps) are not read again in this run. Newest first suits a table whose
    rows refer to older ones: the referring row is decided before the row it refers to.
    """
    batch_size = batch_size or BATCH_SIZE
    done, gone = 0, set[int]()
    cursor: int | None = None
    for _ in range(max_batches):
        page = eligible
        if cursor is not None:
            page = page.filter(pk__lt=cursor) if newest_first else page.filter(pk__gt=cursor)
        ids = list(
            page.order_by("-pk" if newest_first else "pk").values_list("pk", flat=True)[:batch_size]
        )
        if not ids:
            break
        cursor = ids[-1]
        chosen = select(ids, gone) if select is not None else ids
        if chosen and not dry_run:
            chosen = _delete(eligible, chosen, select, gone)
        done += len(chosen)
        gone.update(chosen)
        if len(ids) < batch_size:
            break
    return done


def _delete(
    eligible: models.QuerySet[Any], ids: list[int], select: Selector | None, gone: set[int]
) -> list[int]:
    """Delete what is still due of `ids`; return the ids deleted."""
    model = eligible.model
    with transaction.atomic():
        # Locked, then checked again: a row that changed since it was read (re-queued, now
        # referred to by an open incident or a new reply) is left alone.
        locked = list(
            eligible.filter(pk__in=ids).select_for_update(of=("self",)).values_list("pk", flat=True)
        )
        if select is not None and locked:
            locked = select(locked, gone)
        if locked:
            model._base_manager.filter(pk__in=locked).delete()
    return locked
