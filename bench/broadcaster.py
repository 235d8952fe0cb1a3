"""Broadcasts to a venue on a fixed timetable: the loop behind POST /bench/broadcast, and a
stand-alone publisher process for the Redis layer.

    python -m bench.broadcaster --venue 1 --n 40 --interval 0.1 --first 1000

runs with the server's environment (REDIS_URL, CHANNEL_LAYER_PREFIX, ...) and prints a JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from typing import Any


async def broadcast_on_timetable(venue: int, count: int, interval: float, first: int) -> dict:
    """Calls abroadcast_to_venue `count` times, the k-th at start + k * interval (0: at once).

    A call that is late is made at once rather than skipped, so the count is always `count`.
    """
    from orders.broadcast import abroadcast_to_venue

    loop = asyncio.get_running_loop()
    started = loop.time()
    late = 0.0
    for k in range(count):
        if interval:
            delay = started + k * interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                late = max(late, -delay)
        await abroadcast_to_venue(venue, "bench", {"i": first + k})
    return {
        "sent": count,
        "seconds": loop.time() - started,
        "max_late_seconds": late,
        "finished_at": time.time(),
    }


async def _publish(args: argparse.Namespace) -> dict[str, Any]:
    from channels.layers import get_channel_layer

    result = await broadcast_on_timetable(args.venue, args.n, args.interval, args.first)
    layer = get_channel_layer()
    close_pools = getattr(layer, "close_pools", None)
    if close_pools is not None:
        await close_pools()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--venue", type=int, required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--interval", type=float, default=0.0)
    parser.add_argument("--first", type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inkwave.settings")
    import django

    django.setup()
    print(json.dumps(asyncio.run(_publish(args))), flush=True)


if __name__ == "__main__":
    main()
