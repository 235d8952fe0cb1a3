"""The specification's "Test Integration": a test message to each destination, sent now."""

from __future__ import annotations

from dataclasses import dataclass

from django.utils import timezone

from inkwave.lib.formats import utc_time
from notifications.delivery import skip_reason
from notifications.formatting import compose
from notifications.models import Destination
from notifications.slack import SlackMessage, TransportError, transport_from_settings


@dataclass(frozen=True, slots=True)
class TestResult:
    __test__ = False  # not a pytest class

    ok: bool
    detail: str


def send_test_messages(destinations: list[Destination]) -> list[tuple[Destination, TestResult]]:
    """Send directly (not through the outbox): the operator wants the answer now."""
    transport = transport_from_settings()
    results = []
    for destination in destinations:
        reason = skip_reason(destination)
        if reason:
            results.append((destination, TestResult(False, reason)))
            continue
        message = compose(
            "🔔 Test notification",
            [("Destination", destination.name), ("Time", utc_time(timezone.now()))],
            note="Inkwave Ops can post here.",
        )
        try:
            delivered = transport.notify(
                SlackMessage(
                    text=message.text, blocks=message.blocks, channel=destination.slack_channel_id
                ),
                webhook_url=destination.webhook_url,
            )
        except TransportError as error:
            results.append((destination, TestResult(False, f"failed: {error}")))
            continue
        where = f" (ts {delivered.ts})" if delivered.ts else ""
        results.append((destination, TestResult(True, f"sent{where}")))
    return results
