"""Benchmark: one periodic access re-check of a process's room connections (orders/watch.py).

    .venv/bin/python bench/access_recheck.py [--connections 5000] [--runs 5]

Half the connections hold device tokens, half are signed-in users (a third of them staff, the
rest members of their venue), over 50 venues. Prints the time and the number of queries of
one re-check of them all, which each web process runs every WS_ACCESS_RECHECK_SECONDS.
Uses its own database, inkwave_bench_access, on the local PostgreSQL (dropped first).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orders.access import Grant

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import ensure_database, migrate  # noqa: E402

DATABASE = "inkwave_bench_access"


def make_grants(connections: int) -> list[Grant]:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import User
    from django.test import Client

    from orders.access import Grant
    from orders.models import Venue, VenueAccessToken

    venues = [Venue.objects.create(name=f"Venue {i}", slug=f"venue-{i}") for i in range(50)]
    grants = []
    for i in range(connections // 2):
        token, _ = VenueAccessToken.issue(venues[i % 50], f"Screen {i}")
        grants.append(Grant(token.venue_id, token_id=token.pk))
    users: list[User] = get_user_model().objects.bulk_create(
        User(username=f"user-{i}", is_staff=i % 3 == 0) for i in range(connections // 10)
    )
    for user in users:
        venue = venues[user.pk % 50]
        venue.members.add(user)
        for _ in range(5):  # five browser tabs each, one session each
            client = Client()
            client.force_login(user)
            key = client.session.session_key
            grants.append(Grant(venue.pk, user_id=user.pk, session_key=key))
    return grants


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="inkwave.settings",
        DATABASE_URL=ensure_database(DATABASE, fresh=True),
        INKWAVE_VAR_DIR=str(ROOT / "var" / "bench-access"),
        LOG_LEVEL="error",
    )
    env.pop("REDIS_URL", None)
    os.environ.update(env)
    migrate(env)

    import django

    django.setup()
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from orders.access import _lapsed_grants

    grants = make_grants(args.connections)
    timings = []
    for _ in range(args.runs):
        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            lapsed = _lapsed_grants(grants)
            timings.append(time.perf_counter() - started)
    assert not lapsed, "every grant holds"
    median_ms, max_ms = statistics.median(timings) * 1000, max(timings) * 1000
    print(
        f"re-check of {len(grants)} connections: median {median_ms:.1f} ms, "
        f"max {max_ms:.1f} ms over {args.runs} runs; {len(queries)} queries"
    )


if __name__ == "__main__":
    main()
