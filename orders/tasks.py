"""Celery tasks: thin wrappers that call plain functions the tests call directly."""

from __future__ import annotations

from celery import shared_task

from orders import retention


@shared_task(name="orders.prune", ignore_result=True)
def prune() -> dict[str, int]:
    return retention.prune()
