from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from inkwave import retention
from monitoring.database import table_sizes


class Command(BaseCommand):
    help = (
        "Prune every append-only table now, as beat does (bounded batches); with --dry-run, "
        "count what would go."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="Count the rows that would go; delete none."
        )
        parser.add_argument(
            "--batches",
            type=int,
            default=retention.MAX_BATCHES,
            help=f"Batches of {retention.BATCH_SIZE} rows per table at most "
            f"(default {retention.MAX_BATCHES}, as beat).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        now, dry_run = timezone.now(), options["dry_run"]
        prunes = retention.registered()
        rows = {size["model"]: size["rows"] for size in table_sizes([p.model for p in prunes])}
        verb = "would delete" if dry_run else "deleted"
        # In registration order: an incident's events are pruned before the incident.
        for prune in prunes:
            count = prune.run(now, dry_run=dry_run, max_batches=options["batches"])
            kept = f"{prune.setting}={getattr(settings, prune.setting)}" if prune.setting else ""
            total = rows.get(prune.label)
            self.stdout.write(
                f"{prune.label}: {verb} {count} of {'?' if total is None else total} rows"
                + (f" ({kept} days)" if kept else "")
            )
