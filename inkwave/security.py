"""Small request helpers for security settings; nothing here knows the domain."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest


def client_ip(request: HttpRequest) -> str:
    """The address a request came from, as the login throttle counts it.

    Behind the TLS proxy: the last X-Forwarded-For entry, the one the proxy appended.
    Entries before it are whatever the client sent, and daphne's --proxy-headers puts the
    first of them in REMOTE_ADDR, so neither can be trusted. Without the proxy the header is
    ignored altogether.
    """
    if settings.BEHIND_TLS_PROXY:
        forwarded = str(request.META.get("HTTP_X_FORWARDED_FOR", ""))
        last = forwarded.rpartition(",")[2].strip()
        if last:
            return last
    return str(request.META.get("REMOTE_ADDR", ""))
