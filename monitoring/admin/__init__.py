"""The monitoring admin, one module per subject; importing registers every ModelAdmin."""

from __future__ import annotations

from monitoring.admin import incidents, rules, samples, silences

__all__ = ["incidents", "rules", "samples", "silences"]
