from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from monitoring.notices import deployment


class Command(BaseCommand):
    help = "Post a deployment notification (routed to #operations by default)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--release", required=True, help="What was deployed, e.g. 1.4.2.")
        parser.add_argument("--environment", default="production")
        parser.add_argument("--note", default="", help="A line for the reader.")

    def handle(self, *args: Any, release: str, environment: str, note: str, **options: Any) -> None:
        if not release.strip():
            raise CommandError("--release must not be empty.")
        rows = deployment(release.strip(), environment.strip(), note.strip())
        self.stdout.write(f"queued {len(rows)} notification(s)")
