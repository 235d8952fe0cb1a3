"""Who may read the monitoring API: a staff session, or the MONITORING_TOKEN bearer token."""

from __future__ import annotations

import functools
import hmac
from collections.abc import Awaitable, Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

AsyncView = Callable[..., Awaitable[HttpResponse]]


def json_error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=status)


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
