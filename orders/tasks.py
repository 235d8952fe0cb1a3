"""Celery tasks: thin wrappers that call plain functions the tests call directly."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from orders import activity, reports, retention


# Named as when it lived in notifications: beat's schedule (and queued tasks) keep working.
@shared_task(name="notifications.reports", ignore_result=True)
def daily_and_weekly_reports() -> int:
    now = timezone.now()
    return len(reports.daily_summaries(now)) + len(reports.weekly_report(now))


@shared_task(name="orders.prune", ignore_result=True)
def prune() -> dict[str, int]:
    return retention.prune()


@shared_task(name="orders.activity_rollup", ignore_result=True)
def activity_rollup() -> int:
    return activity.roll_up_recent()
