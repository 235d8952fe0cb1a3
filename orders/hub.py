"""One channel-layer membership per process and group, shared by the process's connections.

A venue's room may have hundreds of screens on one web process. Joined one by one, each
screen cost a Redis round trip to enter and another to leave (and a restarted process's
screens all enter at once), and each broadcast was one message per screen in Redis, popped
one by one. Here the process joins a group once, on a channel of its own, when the first of
its connections enters; a pump hands what arrives to every connection of the process in that
group, in order; the last connection to leave takes the process out. Entering a group the
process is in already is a set insert, and takes effect at once.

The process renews its membership every RENEW_SECONDS (at most a quarter of the layer's group
expiry): channels-redis leaves out of group_send a member whose join is older than the expiry
(5 minutes as configured, so that a process that died without leaving drops out soon), and a
kitchen screen connected for longer would hear nothing more, silently; and a Redis restarted
without persistence (back before the layer watch gives up on it) has lost every group, so the
process hears its rooms again within RENEW_SECONDS (and the events missed meanwhile are sent
from the record when the next one shows the gap).

Leaving is the hub's work, not the leaving connection's: daphne cancels a consumer again each
second past its close timeout, and a cancel in the middle of a leave must not leave the process
in a group for a connection that is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Coroutine
from typing import Any, Protocol

import structlog
from channels.layers import get_channel_layer
from django.conf import settings

from inkwave.lib.logstorm import LogStorm
from inkwave.logcontext import spawn
from monitoring.monitor import get_monitor
from orders.groups import venue_of_group

logger = structlog.get_logger(__name__)
# A Redis outage fails every join and leave of the process at once: one line per interval.
STORMS = LogStorm()

RENEW_SECONDS = 30.0
# A renewal that failed is tried again this much later (the layer watch closes the process's
# connections if the layer is down for longer).
RENEW_RETRY_SECONDS = 10.0
# A leave that did not reach the layer (Redis down or hung) is tried again this often.
LEAVE_RETRY_SECONDS = 1.0
# Once the layer has failed (a join, a receive), new groups are joined by one attempt this
# often; the others are refused at once. A process that lost Redis is asked to join by every
# screen that comes back, several times each while it is down: each ask cost a connection
# attempt for the join and another for taking the half-made join out, and with the retries
# of a thousand screens the event loop had no time left for /health (the soak: 2.4 s).
JOIN_PROBE_SECONDS = 1.0


class Member(Protocol):
    def deliver(self, message: dict[str, Any]) -> None:
        """Take a message sent to one of its groups; must not block."""

    async def layer_lost(self) -> None:
        """The group's messages can no longer be received: close, so the client reconnects."""


# Receives that were cancelled, until they have ended (a reference keeps each alive).
_reaping: set[asyncio.Task[None]] = set()


def reap(receive: asyncio.Future[Any]) -> None:
    """Cancel a channel-layer receive until it has ended, in the background. One cancel is
    not always enough: redis-py's read under its socket timeout can swallow a cancellation
    (seen in the tests: a receive still reading 30 s after it was cancelled), and a receive
    that never ends would hold channels-redis' receive lock, and the process would hear
    nothing more. Cancelling again each second ends it."""

    async def until_done() -> None:
        while not receive.done():
            receive.cancel()
            await asyncio.wait({receive}, timeout=1.0)
        if not receive.cancelled():
            receive.exception()  # read, so that it is not reported as never retrieved

    task = spawn(until_done())
    _reaping.add(task)
    task.add_done_callback(_reaping.discard)


class Joined:
    """The process's membership of one group."""

    def __init__(self, group: str) -> None:
        self.group = group
        self.members: set[Member] = set()
        self.channel: str | None = None
        self.ready: asyncio.Task[bool] | None = None
        self.pump: asyncio.Task[None] | None = None


class Hub:
    """One per event loop (get_hub)."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.groups: dict[str, Joined] = {}
        self.background: set[asyncio.Task[None]] = set()
        self.group_expiry = float(getattr(layer, "group_expiry", 86400))
        self.renew_seconds = min(RENEW_SECONDS, self.group_expiry / 4)
        # Memberships a leave could not take out, (group, channel) -> the loop time after which
        # the group expiry has removed them anyway; and the task that tries again meanwhile.
        self.unleft: dict[tuple[str, str], float] = {}
        self.leaving: asyncio.Task[None] | None = None
        # While the layer is failing: the loop time before which no new join is tried.
        self.refuse_until: float | None = None

    async def enter(self, group: str, member: Member) -> bool:
        """Put `member` in `group`; False when the process could not join it (the layer is
        down, or did not answer within CHANNEL_LAYER_TIMEOUT_SECONDS). From the moment this
        is called, whatever the group is sent reaches the member once the join is done."""
        joined = self.groups.get(group)
        if joined is None:
            if self._refusing():
                return False
            joined = self.groups[group] = Joined(group)
            joined.ready = spawn(self._join(joined))
        joined.members.add(member)
        assert joined.ready is not None
        if not await asyncio.shield(joined.ready):
            joined.members.discard(member)
            return False
        return True

    def _refusing(self) -> bool:
        """Whether the layer is failing and a join was tried less than JOIN_PROBE_SECONDS ago;
        when not, the join about to be tried is that interval's one."""
        if self.refuse_until is None:
            return False
        now = asyncio.get_running_loop().time()
        if now < self.refuse_until:
            return True
        self.refuse_until = now + JOIN_PROBE_SECONDS
        return False

    def _failing(self) -> None:
        self.refuse_until = asyncio.get_running_loop().time() + JOIN_PROBE_SECONDS

    def leave(self, group: str, member: Member) -> asyncio.Task[None] | None:
        """Take `member` out of `group` now. The last one out takes the process out: the task
        doing that is returned (the hub's: cancelling the caller does not stop it), and waits
        CHANNEL_LAYER_TIMEOUT_SECONDS at most (the group's expiry removes it otherwise)."""
        joined = self.groups.get(group)
        if joined is None or member not in joined.members:
            return None
        joined.members.discard(member)
        if joined.members:
            return None
        del self.groups[group]
        return self._in_background(self._part(joined))

    async def _join(self, joined: Joined) -> bool:
        try:
            async with asyncio.timeout(settings.CHANNEL_LAYER_TIMEOUT_SECONDS):
                joined.channel = await self.layer.new_channel()
                await self.layer.group_add(joined.group, joined.channel)
        except asyncio.CancelledError:
            # Its last member left: the add may have reached Redis before it was given up on.
            await self._discard(joined)
            raise
        except Exception:
            self._failing()
            if (suppressed := STORMS.admit("venue_room_join_failed")) is not None:
                logger.warning(
                    "venue_room_join_failed", group=joined.group, suppressed=suppressed,
                    exc_info=True,
                )  # fmt: skip
            if self.groups.get(joined.group) is joined:
                del self.groups[joined.group]
            # The add may have reached Redis before it failed. Taken out in the background:
            # the members are told to try again later (1011) first, within the handshake.
            self._in_background(self._discard(joined))
            return False
        self.refuse_until = None
        joined.pump = spawn(self._pump(joined))
        return True

    def _in_background(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = spawn(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task

    async def _part(self, joined: Joined) -> None:
        ready = joined.ready
        if ready is not None and not ready.done():
            ready.cancel()  # its own handler takes the half-made membership out
            await asyncio.wait({ready})
            return
        # Out of the group first, then stop listening: what was sent before the discard is
        # still taken off the channel, not left in channels-redis' buffer for a channel
        # nobody reads any more (kept there for good).
        await self._discard(joined)
        if joined.pump is not None:
            joined.pump.cancel()
            await asyncio.wait({joined.pump})
        buffers = getattr(self.layer, "receive_buffer", None)
        if isinstance(buffers, dict):
            buffers.pop(joined.channel, None)

    async def _discard(self, joined: Joined) -> None:
        if joined.channel is None:
            return
        try:
            await self._group_discard(joined.group, joined.channel)
        except Exception:
            # Left in, the channel would be sent every broadcast to the room until the group
            # expiry, and each outage would leave one more: taken out once the layer
            # answers again. Counted so it is seen.
            if (suppressed := STORMS.admit("venue_room_leave_failed")) is not None:
                logger.warning(
                    "venue_room_leave_failed", group=joined.group, suppressed=suppressed,
                    exc_info=True,
                )  # fmt: skip
            get_monitor().track_error("group_discard_failed")
            loop = asyncio.get_running_loop()
            self.unleft[(joined.group, joined.channel)] = loop.time() + self.group_expiry
            if self.leaving is None or self.leaving.done():
                self.leaving = spawn(self._leave_later())

    async def _group_discard(self, group: str, channel: str) -> None:
        async with asyncio.timeout(settings.CHANNEL_LAYER_TIMEOUT_SECONDS):
            await self.layer.group_discard(group, channel)

    async def _leave_later(self) -> None:
        loop = asyncio.get_running_loop()
        while self.unleft:
            await asyncio.sleep(LEAVE_RETRY_SECONDS)
            for (group, channel), expires_at in list(self.unleft.items()):
                if loop.time() < expires_at:
                    try:
                        await self._group_discard(group, channel)
                    except Exception:
                        break  # still unreachable: the rest wait for the next round too
                del self.unleft[(group, channel)]

    async def _renew(self, joined: Joined) -> bool:
        assert joined.channel is not None
        try:
            async with asyncio.timeout(settings.CHANNEL_LAYER_TIMEOUT_SECONDS):
                await self.layer.group_add(joined.group, joined.channel)
        except Exception:
            logger.warning("venue_room_renew_failed", group=joined.group, exc_info=True)
            return False
        return True

    async def _pump(self, joined: Joined) -> None:
        assert joined.channel is not None
        loop = asyncio.get_running_loop()
        renew_at = loop.time() + self.renew_seconds
        receiving: asyncio.Future[dict[str, Any]] | None = None
        try:
            while True:
                if receiving is None:
                    receiving = asyncio.ensure_future(self.layer.receive(joined.channel))
                await asyncio.wait({receiving}, timeout=max(0.0, renew_at - loop.time()))
                if receiving.done():
                    message = receiving.result()  # raises when the layer failed
                    receiving = None
                    for member in tuple(joined.members):
                        member.deliver(message)
                else:
                    renewed = await self._renew(joined)
                    wait = self.renew_seconds if renewed else RENEW_RETRY_SECONDS
                    renew_at = loop.time() + wait
        except asyncio.CancelledError:
            if receiving is not None:
                reap(receiving)
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
            # The receive was cancelled, not the pump: it hears nothing more, which is a
            # lost layer to its members, not a silent end.
            logger.warning("venue_room_receive_cancelled", group=joined.group)
            await self._lost(joined)
        except Exception:
            # Redis down, or hung past its socket timeout: the members are told, and their
            # clients reconnect (and learn whether the server can take them back).
            if (suppressed := STORMS.admit("venue_room_receive_failed")) is not None:
                logger.warning(
                    "venue_room_receive_failed", group=joined.group, suppressed=suppressed,
                    exc_info=True,
                )  # fmt: skip
            self._failing()
            await self._lost(joined)

    async def _lost(self, joined: Joined) -> None:
        if self.groups.get(joined.group) is joined:
            del self.groups[joined.group]
        members = tuple(joined.members)
        joined.members.clear()
        for member in members:
            with contextlib.suppress(Exception):  # one broken member must not keep the rest
                await member.layer_lost()
        await self._discard(joined)


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()


def get_hub() -> Hub:
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = Hub(get_channel_layer())
    return hub


def screens_per_venue() -> dict[int, int]:
    """Connections in each venue's room in this process (every event loop's hub), for the
    flusher's per-venue screen counts (monitoring.screens).

    Called from the flusher's thread once per flush while the loop changes the hubs: the
    copies are taken in one C-level step each (list() of a dict's items under the GIL), and
    a WeakKeyDictionary that changed size meanwhile is read again.
    """
    for _ in range(3):
        try:
            hubs = list(_hubs.values())
            break
        except RuntimeError:  # a loop's hub came or went while it was read
            continue
    else:
        return {}
    counts: dict[int, int] = {}
    for hub in hubs:
        for group, joined in list(hub.groups.items()):
            venue = venue_of_group(group)
            if venue is not None:
                counts[venue] = counts.get(venue, 0) + len(joined.members)
    return counts
