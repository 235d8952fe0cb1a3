"""Dependencies a fault test can break: its own Redis server, a TCP proxy to PostgreSQL.

Fault tests must never touch the shared Redis on 6379 or stop the shared PostgreSQL: other
test runs use them. `RedisServer` is a Redis of the test's own, on a free loopback port,
keeping nothing on disk, to stop, hang (SIGSTOP) and bring back. `TcpProxy` stands between
a server process and the database; closing it refuses new connections and cuts open ones,
as a database that went away does.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


def send_json(
    method: str,
    url: str,
    body: Any = None,
    *,
    token: str | None = None,
    timeout: float = 5.0,
) -> tuple[int, dict[str, str], Any]:
    """One HTTP request with a JSON body: (status, headers, decoded body or the raw text)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 (loopback)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            status, headers, raw = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        status, headers, raw = exc.code, dict(exc.headers), exc.read()
    try:
        return status, headers, json.loads(raw)
    except ValueError:
        return status, headers, raw.decode(errors="replace")
