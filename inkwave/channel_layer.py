"""The Redis channel layer, with a connection pool that waits instead of failing.

redis-py 8 caps a pool at 100 connections and raises at once when they are all busy; a
burst of 500 disconnects then fails most group_discard calls and leaves stale members in
the room's group for a day. A blocking pool makes the burst wait its turn instead.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from channels_redis.core import RedisChannelLayer


class BlockingPoolRedisChannelLayer(RedisChannelLayer):
    def create_pool(self, index: int) -> Any:
        host = dict(self.hosts[index])
        address = host.pop("address")
        return aioredis.BlockingConnectionPool.from_url(address, **host)
