from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from orders.models import Venue, VenueAccessToken


class Command(BaseCommand):
    help = "Issue an access token for a venue's room (printed once; stored hashed)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("venue", help="The venue's id or slug.")
        parser.add_argument("--name", required=True, help="What will hold the token.")

    def handle(self, *args: Any, venue: str, name: str, **options: Any) -> None:
        lookup = {"pk": int(venue)} if venue.isdigit() else {"slug": venue}
        found = Venue.objects.filter(**lookup).first()
        if found is None:
            raise CommandError(f"No venue with id or slug {venue!r}.")
        if not name.strip():
            raise CommandError("--name must not be empty.")
        _, raw = VenueAccessToken.issue(found, name.strip())
        self.stdout.write(raw)
