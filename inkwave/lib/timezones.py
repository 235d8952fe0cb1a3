"""IANA time zones, as venues and silences name them."""

from __future__ import annotations

from zoneinfo import available_timezones

from django.core.exceptions import ValidationError


def validate_timezone(value: str) -> None:
    if value not in available_timezones():
        raise ValidationError(f"{value!r} is not a known IANA time zone (e.g. Europe/London).")
