"""Creates the benchmark's venue and device token; prints {"venue": id, "token": raw} as JSON.

Run with the server's environment (INKWAVE_VAR_DIR, DATABASE_URL) after `manage.py migrate`.
"""

from __future__ import annotations

import json
import os
import secrets


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inkwave.settings")
    import django

    django.setup()
    from orders.models import Venue, VenueAccessToken

    suffix = secrets.token_hex(4)
    venue = Venue.objects.create(name=f"Bench venue {suffix}", slug=f"bench-{suffix}")
    _, raw = VenueAccessToken.issue(venue, "Benchmark client")
    print(json.dumps({"venue": venue.pk, "token": raw}))


if __name__ == "__main__":
    main()
