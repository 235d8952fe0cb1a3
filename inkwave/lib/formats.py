"""Money, times and counts as people read them (the specification's formats)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from babel.numbers import format_currency


def local_time(moment: datetime, zone: str = "UTC") -> str:
    """'2024-01-01 12:30 PM' in the venue's time zone, as the specification writes times."""
    return moment.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %I:%M %p")


def utc_time(moment: datetime) -> str:
    return f"{local_time(moment)} UTC"


def money(amount: Decimal, currency: str) -> str:
    return format_currency(amount, currency, locale="en_US")


def percent(rate: float) -> str:
    """An error rate of 0.0001 as '0.01%'."""
    return f"{rate * 100:.2f}%"


def duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds} seconds"
    if seconds < 2 * 3600:
        return f"{seconds // 60} minutes"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} hours"
    return f"{seconds // 86400} days"


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"
