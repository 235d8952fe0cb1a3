"""What one run of the outbox benchmark measures: its command line and its plan."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from bench.common import ROOT

RESULTS = ROOT / "bench" / "results" / "outbox.json"


@dataclass(frozen=True)
class Plan:
    quick: bool
    notifications: int  # figures 1 and 2: notifications enqueued, then delivered
    delivery_timeout: float  # figure 2: give up waiting for the Slack server after this long
    order_rate: float  # figure 3, limiter off: orders per second
    order_seconds: float
    limited_rate: float  # figure 3, default limiter (1 message/s per channel)
    limited_seconds: float
    match_timeout: float  # after the last POST, wait this long for the last Slack message
    quiet_wait: float  # before each measured phase, wait up to this long for an idle machine
    concurrency: int = 2

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Plan:
        quick = bool(args.quick)
        return cls(
            quick=quick,
            notifications=args.notifications or (300 if quick else 2000),
            delivery_timeout=45.0 if quick else 150.0,
            order_rate=5.0,
            order_seconds=args.order_seconds or (6.0 if quick else 20.0),
            limited_rate=0.8,
            limited_seconds=6.25 if quick else 15.0,
            match_timeout=10.0 if quick else 20.0,
            quiet_wait=args.quiet_wait if args.quiet_wait is not None else (3.0 if quick else 10.0),
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark the Slack outbox with real services (see bench/OUTBOX.md)."
    )
    parser.add_argument("--quick", action="store_true", help="smoke run, under a minute")
    parser.add_argument(
        "--notifications", type=int, help="notifications to enqueue and deliver (2000; quick 300)"
    )
    parser.add_argument(
        "--order-seconds", type=float, help="length of the 5 orders/s run (20 s; quick 6 s)"
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        help="before each measured phase, wait up to this long for an idle machine (10 s; quick 3)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"default {RESULTS}")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (process logs)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra setting for every process, e.g. --set DATABASE_CONN_MAX_AGE=60 (repeatable)",
    )
    args = parser.parse_args(argv)
    for item in args.set:
        name, sep, _ = item.partition("=")
        if not sep or not name.isidentifier():
            parser.error(f"--set wants NAME=VALUE, not {item!r}")
    if args.notifications is not None and not 10 <= args.notifications <= 10_000:
        parser.error("--notifications must be between 10 and 10000")
    if args.quiet_wait is not None and not 0 <= args.quiet_wait <= 120:
        parser.error("--quiet-wait must be between 0 and 120 seconds")
    if args.order_seconds is not None and not 1 <= args.order_seconds <= 60:
        parser.error("--order-seconds must be between 1 and 60")
    return args
