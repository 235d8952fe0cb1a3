"""The rule state machine, as a pure function: the engine and the preview both use it.

Given where a rule stands for one scope (since when it breaches, since when it has been
clear, whether an incident is open), one new value and the time, decide what happens.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Protocol


class Decision(Enum):
    NOTHING = "nothing"
    OPEN = "open"
    STILL_FIRING = "still_firing"
    CLEARING = "clearing"
    RESOLVE = "resolve"


class RuleTiming(Protocol):
    pending_seconds: int
    clear_seconds: int

    def breaches(self, value: float) -> bool: ...


@dataclass
class Tracker:
    breaching_since: datetime | None = None
    clear_since: datetime | None = None


def decide(
    rule: RuleTiming, tracker: Tracker, value: float | None, now: datetime, *, open_incident: bool
) -> Decision:
    """Advance `tracker` by one evaluation and say what to do. No data counts as clear."""
    if value is not None and rule.breaches(value):
        tracker.clear_since = None
        tracker.breaching_since = tracker.breaching_since or now
        if open_incident:
            return Decision.STILL_FIRING
        if now - tracker.breaching_since >= timedelta(seconds=rule.pending_seconds):
            return Decision.OPEN
        return Decision.NOTHING
    tracker.breaching_since = None
    if not open_incident:
        tracker.clear_since = None
        return Decision.NOTHING
    tracker.clear_since = tracker.clear_since or now
    if now - tracker.clear_since >= timedelta(seconds=rule.clear_seconds):
        tracker.clear_since = None
        return Decision.RESOLVE
    return Decision.CLEARING
