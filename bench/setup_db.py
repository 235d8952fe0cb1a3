"""Creates the benchmark's venue and device token; prints {"venue": id, "token": raw} as JSON.

Run with the server's environment (INKWAVE_VAR_DIR, DATABASE_URL) after `manage.py migrate`.
`python -m bench.setup_db N` creates N venues, one token each, and prints a line for each.
`python -m bench.setup_db --session` also signs in a member of the venue and adds the session's
cookie ({"cookie": "sessionid=..."}), for handshakes that authenticate as a browser does.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orders.models import Venue


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inkwave.settings")
    import django

    django.setup()
    from orders.models import Venue, VenueAccessToken

    args = sys.argv[1:]
    session = "--session" in args
    numbers = [a for a in args if a != "--session"]
    count = int(numbers[0]) if numbers else 1
    for _ in range(count):
        suffix = secrets.token_hex(4)
        venue = Venue.objects.create(name=f"Bench venue {suffix}", slug=f"bench-{suffix}")
        _, raw = VenueAccessToken.issue(venue, "Benchmark client")
        created: dict[str, object] = {"venue": venue.pk, "token": raw}
        if session:
            created["cookie"] = signed_in_member(venue, suffix)
        print(json.dumps(created), flush=True)


def signed_in_member(venue: Venue, suffix: str) -> str:
    """A Cookie header value: the session of a new member of `venue`, signed in."""
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.test import Client

    user = get_user_model().objects.create_user(f"bench-{suffix}", password=None)
    venue.members.add(user)
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.session.session_key}"


if __name__ == "__main__":
    main()
