"""Who may read the monitoring API: a staff session, or the MONITORING_TOKEN bearer token."""

from __future__ import annotations

import functools
import hmac
from collections.abc import Awaitable, Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from inkwave.api_errors import ErrorJSON, json_error
from inkwave.openapi import SESSION, Answer, SecurityScheme

AsyncView = Callable[..., Awaitable[HttpResponse]]


MONITORING_TOKEN = SecurityScheme(
    "monitoringToken",
    {"type": "http", "scheme": "bearer", "description": "The MONITORING_TOKEN setting."},
)
MONITORING_AUTH = (MONITORING_TOKEN, SESSION)
# What every monitoring endpoint may answer besides its own figures.
REFUSALS = {
    401: Answer("No or wrong credentials", ErrorJSON),
    403: Answer("Signed in, but not staff", ErrorJSON),
}


def _bearer(request: HttpRequest) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    return credentials.strip()


def monitoring_access_required(view: AsyncView) -> AsyncView:
    @functools.wraps(view)
    async def wrapper(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        token = _bearer(request)
        if token is not None:
            expected = settings.MONITORING_TOKEN
            if expected and hmac.compare_digest(token.encode(), expected.encode()):
                return await view(request, *args, **kwargs)
            response = json_error(401, "invalid_token", "The bearer token is not valid.")
            response["WWW-Authenticate"] = 'Bearer error="invalid_token"'
            return response
        user = await request.auser()
        if not user.is_authenticated:
            response = json_error(
                401,
                "unauthenticated",
                "Sign in as staff or send Authorization: Bearer <MONITORING_TOKEN>.",
            )
            response["WWW-Authenticate"] = "Bearer"
            return response
        if not (user.is_active and user.is_staff):
            return json_error(403, "forbidden", "Monitoring is for staff users only.")
        return await view(request, *args, **kwargs)

    return wrapper
