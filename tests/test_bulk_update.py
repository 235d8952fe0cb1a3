"""inkwave.bulk.update_in_bulk: one UPDATE … FROM (VALUES …) on PostgreSQL, Django's
bulk_update elsewhere; both write the same."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.db import connection

from inkwave.bulk import update_in_bulk
from monitoring.models import AlertRule, AlertState, Incident

pytestmark = pytest.mark.django_db

AT = datetime(2026, 12, 3, 19, 0, tzinfo=UTC)


@pytest.mark.parametrize("vendor", ["postgresql", "sqlite"])
def test_fields_are_written_and_counters_added_to_in_the_database(
    vendor: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connection, "vendor", vendor)  # "sqlite": the bulk_update path
    rule = AlertRule.objects.create(name="Failures", metric="ws.error_rate", threshold=5)
    states = [
        AlertState.objects.create(rule=rule, scope=str(n), breaching_since=AT, last_value=1.0)
        for n in range(3)
    ]
    states[0].breaching_since, states[0].last_value = None, None  # NULLs need their type
    states[1].last_value, states[1].last_evaluated_at = 2.5, AT
    update_in_bulk(states, ["breaching_since", "last_value", "last_evaluated_at"], batch_size=2)
    assert list(
        AlertState.objects.order_by("pk").values_list(
            "breaching_since", "last_value", "last_evaluated_at"
        )
    ) == [(None, None, None), (AT, 2.5, AT), (AT, 1.0, None)]

    incident = Incident.objects.create(
        rule=rule, title="x", severity="warning", opened_at=AT, last_seen_at=AT,
        first_value=6, peak_value=6, last_value=6, occurrences=4,
    )  # fmt: skip
    Incident.objects.filter(pk=incident.pk).update(occurrences=7)  # another writer's count
    incident.last_value = 9.0
    update_in_bulk([incident], ["last_value"], plus_one=["occurrences"])
    assert incident.occurrences == 4  # its own copy is left as it was
    incident.refresh_from_db()
    assert (incident.occurrences, incident.last_value) == (8, 9.0)
