from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from notifications.models import Destination
from notifications.testing import send_test_messages


class Command(BaseCommand):
    help = "Send a test message to each enabled Slack destination and report each result."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("names", nargs="*", help="Destinations to test (default: all enabled).")

    def handle(self, *args: Any, names: list[str], **options: Any) -> None:
        destinations = Destination.objects.filter(enabled=True)
        if names:
            destinations = Destination.objects.filter(name__in=names)
            missing = set(names) - set(destinations.values_list("name", flat=True))
            if missing:
                raise CommandError(f"No destination named {', '.join(sorted(missing))}.")
        failures = 0
        for destination, result in send_test_messages(list(destinations)):
            style = self.style.SUCCESS if result.ok else self.style.ERROR
            self.stdout.write(style(f"{destination.name}: {result.detail}"))
            failures += not result.ok
        if failures:
            raise CommandError(f"{failures} destination(s) failed.")
