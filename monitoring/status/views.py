"""/status/, /status.json and the badges: public, no login, cached for a short while.

All three render one snapshot (monitoring.status.page), computed at most once per
STATUS_CACHE_SECONDS per cache, so a crowd of visitors during an outage costs the
database a few queries a minute.
"""

from __future__ import annotations

from datetime import UTC, datetime

from django.conf import settings
from django.core.cache import cache
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.cache import patch_cache_control
from django.views.decorators.http import require_safe

from monitoring.health import public_checks
from monitoring.models import PublicComponent
from monitoring.status import badge
from monitoring.status.page import (
    STATE_WORDS,
    ComponentJSON,
    StatusJSON,
    build,
    build_without_database,
)
from monitoring.status.rollup import DayState
from monitoring.views import Unavailable, _read

CACHE_KEY = "monitoring.status.snapshot"
# The bars a phone shows (the page shows all 90 on wider screens).
PHONE_DAYS = 30


async def snapshot() -> StatusJSON:
    cached: StatusJSON | None = await cache.aget(CACHE_KEY)
    if cached is not None:
        return cached
    checks = await public_checks.results()
    now = timezone.now()

    def status_snapshot() -> StatusJSON:
        return build(now, checks)

    try:
        result = await _read(status_snapshot)
    except Unavailable:
        result = build_without_database(now, checks)
    if settings.STATUS_CACHE_SECONDS:
        await cache.aset(CACHE_KEY, result, settings.STATUS_CACHE_SECONDS)
    return result


def _cached(response: HttpResponse) -> HttpResponse:
    patch_cache_control(response, public=True, max_age=settings.STATUS_CACHE_SECONDS)
    return response


@require_safe
async def status_json(request: HttpRequest) -> HttpResponse:
    response = JsonResponse(await snapshot())
    # Anyone's page or script may read it: it holds nothing that is not public.
    response["Access-Control-Allow-Origin"] = "*"
    return _cached(response)


def _when(iso: str) -> str:
    moment = datetime.fromisoformat(iso).astimezone(UTC)
    return f"{moment:%-d %b %Y, %H:%M} UTC"


def _span(starts: str, ends: str) -> str:
    start = datetime.fromisoformat(starts).astimezone(UTC)
    end = datetime.fromisoformat(ends).astimezone(UTC)
    if start.date() == end.date():
        return f"{start:%-d %b %Y, %H:%M} to {end:%H:%M} UTC"
    return f"{_when(starts)} to {_when(ends)}"


def _bars(component: ComponentJSON) -> list[dict[str, object]]:
    bars: list[dict[str, object]] = []
    days = component["days"]
    for n, day in enumerate(days):
        date = datetime.fromisoformat(day["date"])
        label = f"{date:%-d %b %Y}: "
        if day["uptimePercent"] is None:
            label += "no data"
        else:
            label += f"{day['uptimePercent']:g}% uptime, {STATE_WORDS[day['state']].lower()}"
        bars.append({"state": day["state"], "label": label, "older": n < len(days) - PHONE_DAYS})
    return bars


@require_safe
async def status_page(request: HttpRequest) -> HttpResponse:
    data = await snapshot()
    context = {
        "status": data,
        "components": [
            {
                **c,
                "bars": _bars(c),
                "days_with_data": sum(d["state"] != DayState.NO_DATA for d in c["days"]),
            }
            for c in data["components"]
        ],
        "incidents": [{**i, "since_text": _when(i["since"])} for i in data["incidents"]],
        "maintenance": [
            {**m, "when_text": _span(m["startsAt"], m["endsAt"])} for m in data["maintenance"]
        ],
        "generated_text": _when(data["generatedAt"]),
        "phone_days": PHONE_DAYS,
        "legend": [
            (state, STATE_WORDS[state])
            for state in (
                DayState.OPERATIONAL,
                DayState.DEGRADED,
                DayState.OUTAGE,
                DayState.MAINTENANCE,
                DayState.NO_DATA,
            )
        ],
    }
    return _cached(render(request, "status/page.html", context))


def _badge(label: str, state: str) -> HttpResponse:
    response = HttpResponse(
        badge.render(label, STATE_WORDS[state].lower(), state),
        content_type="image/svg+xml; charset=utf-8",
    )
    return _cached(response)


@require_safe
async def status_badge(request: HttpRequest) -> HttpResponse:
    return _badge("status", (await snapshot())["status"])


@require_safe
async def component_badge(request: HttpRequest, component: str) -> HttpResponse:
    if component not in PublicComponent.values:
        raise Http404("No such component.")
    data = await snapshot()
    (found,) = [c for c in data["components"] if c["id"] == component]
    return _badge(found["name"].lower(), found["state"])
