"""The monitoring admin, one module per subject; importing registers every ModelAdmin."""

from __future__ import annotations

from monitoring.admin import incidents, requests, rules, samples, silences, status

__all__ = ["incidents", "requests", "rules", "samples", "silences", "status"]
