"""The options every redis-py client and pool of this project is made with.

redis-py 8 speaks RESP3 and turns "maintenance notifications" on by default, in "auto"
mode (push messages that Redis Enterprise and Redis Cloud send before they move a shard).
With them on, an asyncio pool no longer checks that a pooled connection is still open
before it hands it out (redis/redis-py#4128; still so in 8.1.0, the newest here): after
Redis restarts, each connection left idle in a pool fails the next command it carries with
"Connection closed by server." or "Error UNKNOWN while writing to socket". The suite's
soak saw that as a 503 from /health a second after Redis was back; a broadcast or a group
join can hit it as well. The Redis servers this project runs on send no such
notifications, so they are off, and the pools check their connections again. (kombu's
broker pools are left as they are: the sync client retries such a command on a new
connection, and a publish right after a restart succeeds at once.)
"""

from __future__ import annotations

from typing import Any

from redis.maint_notifications import MaintNotificationsConfig


def redis_options() -> dict[str, Any]:
    """Keyword arguments for `Redis.from_url`, `ConnectionPool.from_url` and their asyncio
    twins (a fresh dict each call: callers add their own)."""
    return {"maint_notifications_config": MaintNotificationsConfig(enabled=False)}
