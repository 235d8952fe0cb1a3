from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from orders.models import Venue, VenueAccessToken


def venue_room_url(venue_id: int, raw_token: str) -> str:
    """The room's WebSocket URL on PUBLIC_URL (ws:// for http://, wss:// for https://)."""
    base = "ws" + settings.PUBLIC_URL.removeprefix("http")
    return f"{base}/ws/venues/{venue_id}/?{urlencode({'token': raw_token})}"


class Command(BaseCommand):
    help = "Issue an access token for a venue's room (printed once; stored hashed)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("venue", help="The venue's id or slug.")
        parser.add_argument("--name", required=True, help="What will hold the token.")
        parser.add_argument(
            "--token-only", action="store_true", help="Print only the token (for scripts)."
        )

    def handle(self, *args: Any, venue: str, name: str, **options: Any) -> None:
        lookup = {"pk": int(venue)} if venue.isdigit() else {"slug": venue}
        found = Venue.objects.filter(**lookup).first()
        if found is None:
            raise CommandError(f"No venue with id or slug {venue!r}.")
        if not name.strip():
            raise CommandError("--name must not be empty.")
        if not found.is_active:
            self.stderr.write(
                f"Warning: {found.name} is not active; its room refuses every connection "
                "(4404) until it is activated again."
            )
        _, raw = VenueAccessToken.issue(found, name.strip())
        if options["token_only"]:
            self.stdout.write(raw)
            return
        self.stdout.write(
            f"Token for {found.name} (venue {found.pk}), {name.strip()!r}; shown once, "
            "stored only as a hash:\n"
            f"  {raw}\n"
            "Its screens connect to:\n"
            f"  {venue_room_url(found.pk, raw)}"
        )
