"""The Redis channel layer, with a connection pool that waits instead of failing.

redis-py 8 caps a pool at 100 connections and raises at once when they are all busy; a
burst of 500 disconnects then fails most group_discard calls and leaves stale members in
the room's group for a day. A blocking pool makes the burst wait its turn instead.

And joining a group is one round trip to Redis, not two: channels-redis awaits its ZADD,
then its EXPIRE; here they go in one pipeline (every room connection joins at least one
group, and a restarted process's screens all join at once).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import redis.asyncio as aioredis
from channels_redis.core import RedisChannelLayer

from inkwave.lib.redis_options import redis_options


class BlockingPoolRedisChannelLayer(RedisChannelLayer):
    def create_pool(self, index: int) -> Any:
        host = dict(self.hosts[index])
        address = host.pop("address")
        return aioredis.BlockingConnectionPool.from_url(address, **redis_options(), **host)

    async def group_add(self, group: str, channel: str) -> None:
        assert self.require_valid_group_name(group), "Group name not valid"
        assert self.require_valid_channel_name(channel), "Channel name not valid"
        group_key = self._group_key(group)
        connection = self.connection(self.consistent_hash(group))
        # As channels-redis: the member's score is when it joined (group_send drops members
        # older than the group expiry), and the set expires after the last join.
        async with connection.pipeline(transaction=False) as pipe:
            pipe.zadd(group_key, {channel: time.time()})
            pipe.expire(group_key, self.group_expiry)
            await pipe.execute()

    async def ping(self, within: float) -> None:
        """Raise unless every Redis host of the layer answers PING within `within` seconds.

        Each ping has a connection of its own, outside the pools: a burst that holds every
        pooled connection is not an outage, and a hung server must not keep a pooled one.
        """
        for host in self.hosts:
            client = aioredis.Redis.from_url(
                host["address"],
                socket_connect_timeout=within,
                socket_timeout=within,
                **redis_options(),
            )
            try:
                await asyncio.wait_for(client.ping(), within)
            finally:
                await client.aclose()
