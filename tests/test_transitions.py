"""The rule state machine as a table: where a rule stands, one new value, what happens."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from monitoring.alerting.transitions import Decision, Tracker, decide

NOW = datetime(2026, 6, 5, 12, 0, tzinfo=UTC)


@dataclass
class Rule:
    """Over 10 breaches; 60 s pending, 120 s clear."""

    pending_seconds: int = 60
    clear_seconds: int = 120

    def breaches(self, value: float) -> bool:
        return value > 10


def ago(seconds: int | None) -> datetime | None:
    return None if seconds is None else NOW - timedelta(seconds=seconds)


# breaching since / clear since (seconds ago, None: not), the value, an incident open?,
# then what happens and where the tracker is left.
TABLE = [
    # No incident: breaches start the pending clock; it opens once the clock has run.
    ("first breach", None, None, 11, False, Decision.NOTHING, 0, None),
    ("pending", 30, None, 11, False, Decision.NOTHING, 30, None),
    ("pending is over", 60, None, 11, False, Decision.OPEN, 60, None),
    ("clear before it opened", 30, None, 5, False, Decision.NOTHING, None, None),
    ("no data is clear", 30, None, None, False, Decision.NOTHING, None, None),
    ("the threshold itself does not breach", None, None, 10, False, Decision.NOTHING, None, None),
    # An incident open: breaches keep it firing and cancel a clearing clock.
    ("still firing", 300, None, 11, True, Decision.STILL_FIRING, 300, None),
    ("a relapse while clearing", None, 60, 11, True, Decision.STILL_FIRING, 0, None),
    ("clearing starts", 300, None, 5, True, Decision.CLEARING, None, 0),
    ("clearing", None, 60, 5, True, Decision.CLEARING, None, 60),
    ("clear period over", None, 120, 5, True, Decision.RESOLVE, None, None),
    ("no data clears too", None, 120, None, True, Decision.RESOLVE, None, None),
]


@pytest.mark.parametrize(
    ("breaching", "clear", "value", "open_incident", "decision", "breaching_after", "clear_after"),
    [row[1:] for row in TABLE],
    ids=[row[0] for row in TABLE],
)
def test_the_rule_state_machine(
    breaching: int | None,
    clear: int | None,
    value: float | None,
    open_incident: bool,
    decision: Decision,
    breaching_after: int | None,
    clear_after: int | None,
) -> None:
    tracker = Tracker(ago(breaching), ago(clear))
    assert decide(Rule(), tracker, value, NOW, open_incident=open_incident) == decision
    assert (tracker.breaching_since, tracker.clear_since) == (
        ago(breaching_after),
        ago(clear_after),
    )


def test_without_a_pending_period_the_first_breach_opens() -> None:
    assert decide(Rule(pending_seconds=0), Tracker(), 11, NOW, open_incident=False) == Decision.OPEN


def test_without_a_clear_period_the_first_clear_value_resolves() -> None:
    tracker = Tracker(breaching_since=ago(300))
    assert decide(Rule(clear_seconds=0), tracker, 5, NOW, open_incident=True) == Decision.RESOLVE
