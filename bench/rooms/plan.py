"""What one run of the venue-room benchmark measures: its command line and its plan."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from bench.common import ROOT

RESULTS_DIR = ROOT / "bench" / "results"
VARIANTS = ("monitored", "unmonitored")


@dataclass(frozen=True)
class Plan:
    reps: int
    clients: int
    warmup: float
    duration: float
    echo_connections: tuple[int, ...]
    open_connections: int
    open_rate: float
    members: int
    paced_broadcasts: int
    paced_interval: float
    burst_broadcasts: int
    layers: tuple[str, ...]
    scenarios: tuple[str, ...]
    database: str
    quiet_wait: float
    quick: bool

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Plan:
        quick = bool(args.quick)
        return cls(
            reps=args.reps if args.reps is not None else (1 if quick else 3),
            clients=args.clients,
            warmup=args.warmup if args.warmup is not None else (0.5 if quick else 1.0),
            duration=args.duration if args.duration is not None else (1.5 if quick else 5.0),
            echo_connections=(100, 1000),
            open_connections=1000,
            open_rate=2000.0,
            members=500,
            paced_broadcasts=4 if quick else 16,
            paced_interval=0.5,
            burst_broadcasts=12 if quick else 40,
            layers=tuple(args.layers.split(",")),
            scenarios=tuple(args.scenarios.split(",")),
            database=args.database,
            quiet_wait=args.quiet_wait if args.quiet_wait is not None else (0.0 if quick else 10.0),
            quick=quick,
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark the venue rooms with monitoring on and off (see bench/README.md)."
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 rep, short windows")
    parser.add_argument("--reps", type=int, help="interleaved repetitions (default 3; quick 1)")
    parser.add_argument(
        "--clients", type=int, default=1, help="load-generator processes (default 1)"
    )
    parser.add_argument("--warmup", type=float, help="seconds before measuring (default 1)")
    parser.add_argument("--duration", type=float, help="measured seconds (default 5)")
    parser.add_argument(
        "--layers", default="memory,redis", help="channel layers for the broadcast figures"
    )
    parser.add_argument(
        "--scenarios", default="echo,open,broadcast", help="subset of echo,open,broadcast"
    )
    parser.add_argument(
        "--database",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="sqlite in a temp dir (default) or postgres://postgres@127.0.0.1/inkwave_bench",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        help="seconds to wait for an idle machine before each server run (10; quick: 0)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "latest.json")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, db)")
    args = parser.parse_args(argv)
    if args.reps is not None and not 1 <= args.reps <= 20:
        parser.error("--reps must be between 1 and 20")
    if not 1 <= args.clients <= 4:
        parser.error("--clients must be between 1 and 4")
    if args.duration is not None and not 0.5 <= args.duration <= 60:
        parser.error("--duration must be between 0.5 and 60 seconds")
    if args.quiet_wait is not None and not 0 <= args.quiet_wait <= 120:
        parser.error("--quiet-wait must be between 0 and 120 seconds")
    if args.warmup is not None and not 0 <= args.warmup <= 30:
        parser.error("--warmup must be between 0 and 30 seconds")
    for layer in args.layers.split(","):
        if layer not in ("memory", "redis"):
            parser.error(f"unknown layer {layer!r}")
    for scenario in args.scenarios.split(","):
        if scenario not in ("echo", "open", "broadcast"):
            parser.error(f"unknown scenario {scenario!r}")
    return args
