"""After Redis restarts, every long-lived pool carries its next command on a live connection.

redis-py 8's default RESP3 "maintenance notifications" make its pools hand out pooled
connections without checking that they are still open (inkwave.lib.redis_options): the
first command after a restart then fails on a connection the old server had closed, and
/health said 503 a second after Redis was back. Each test holds a pooled connection open,
restarts the test's own Redis, and asks for one command at once, with no retry anywhere.
"""

from __future__ import annotations

import asyncio
import uuid

from django.test import override_settings

from inkwave.channel_layer import BlockingPoolRedisChannelLayer
from monitoring.health import RedisCheck, Status, run_checks
from tests.servers import RedisServer


def restart(server: RedisServer) -> None:
    server.stop()
    server.start()


async def restart_meanwhile(server: RedisServer) -> None:
    """The restart in a thread, with the event loop running as a server's would: it reads
    the old server's close on the pooled connections while it happens."""
    await asyncio.to_thread(restart, server)


async def test_the_channel_layer_carries_the_first_message_after_a_restart(
    own_redis: RedisServer,
) -> None:
    layer = BlockingPoolRedisChannelLayer(
        hosts=[{"address": own_redis.url, "max_connections": 10, "timeout": 5}]
    )
    channel = f"restart.{uuid.uuid4().hex}"
    try:
        await layer.send(channel, {"type": "before"})
        assert (await layer.receive(channel))["type"] == "before"
        await restart_meanwhile(own_redis)
        await layer.send(channel, {"type": "after"})
        assert (await layer.receive(channel))["type"] == "after"
        await layer.group_add("restart", channel)
    finally:
        await layer.flush()


async def test_the_redis_health_check_is_healthy_at_once_after_a_restart(
    own_redis: RedisServer,
) -> None:
    with override_settings(REDIS_URL=own_redis.url):
        [before] = await run_checks([RedisCheck()])
        assert before.status == Status.HEALTHY
        await restart_meanwhile(own_redis)
        [after] = await run_checks([RedisCheck()])
    assert after.status == Status.HEALTHY, after.reason
