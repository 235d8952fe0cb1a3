"""Creates the benchmark's venue and device token; prints {"venue": id, "token": raw} as JSON.

Run with the server's environment (INKWAVE_VAR_DIR, DATABASE_URL) after `manage.py migrate`.
`python -m bench.setup_db N` creates N venues, one token each, and prints a line for each.
"""

from __future__ import annotations

import json
import os
import secrets
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inkwave.settings")
    import django

    django.setup()
    from orders.models import Venue, VenueAccessToken

    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    for _ in range(count):
        suffix = secrets.token_hex(4)
        venue = Venue.objects.create(name=f"Bench venue {suffix}", slug=f"bench-{suffix}")
        _, raw = VenueAccessToken.issue(venue, "Benchmark client")
        print(json.dumps({"venue": venue.pk, "token": raw}), flush=True)


if __name__ == "__main__":
    main()
