"""The venue room: staff screens and devices follow one venue's events live.

Every connection, disconnection, frame in, frame out, error and delivery delay is counted
by the process's monitor, in memory; nothing here does I/O for monitoring.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import secrets
import time
from typing import Any, TypeGuard
from urllib.parse import parse_qs

import structlog
from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.utils import await_many_dispatch
from django.conf import settings

from inkwave.lib.sockets import ConnectionClosing
from inkwave.sentry import error_context
from monitoring.monitor import get_monitor
from orders.access import Grant, credentials
from orders.entry import Ask, get_door
from orders.groups import room_user_group_name, venue_group_name
from orders.hub import get_hub
from orders.layerwatch import get_layer_watch
from orders.protocol import REFUSAL_REASONS, CloseCode, ErrorCode, ServerFrame
from orders.ratelimit import TokenBucket
from orders.replay import Replay
from orders.watch import get_watch

logger = structlog.get_logger(__name__)

# NaN and Infinity are not JSON: a frame that holds one raises here instead of reaching clients.
_dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


class NonFiniteNumberError(ValueError):
    """NaN, Infinity, or a number too large for a double (1e400): not a value of the protocol."""


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise NonFiniteNumberError(text)
    return number


def _non_finite(text: str) -> float:
    raise NonFiniteNumberError(text)


_loads = json.JSONDecoder(parse_float=_finite_float, parse_constant=_non_finite).decode
# A client-reported round trip above this is noise (a laptop waking from sleep), not latency.
MAX_REPORTED_RTT_MS = 60_000.0
# Messages waiting for one connection, at most (a channel's capacity in the Redis layer).
INBOX_LIMIT = 1000


AFTER_RULE = "after must be a whole number of 0 or more: the last seq this client saw."
# No venue has a larger id (a BigAutoField); the URL takes any number of digits.
MAX_VENUE_ID = 2**63 - 1


def _is_seq(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63


def _after(scope: dict[str, Any]) -> tuple[int | None, bool]:
    """The `after` of the URL's query (?after=41): (the number or None, whether it was bad)."""
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("after")
    if not values:
        return None, False
    raw = values[-1]
    if raw.isascii() and raw.isdigit() and len(raw) < 19:
        return int(raw), False
    return None, True


class VenueRoomConsumer(AsyncWebsocketConsumer):
    group: str | None = None
    # The signed-in user's group (room_user_group_name), which their grant's end is sent to.
    user_group: str | None = None
    grant: Grant | None = None
    closing = False
    # Counted by the monitor as a connection (it was accepted): only then is its end counted.
    counted = False
    # The handshake was accepted: a close is then a close code, not an HTTP 403.
    accepted = False
    # The number of the last room event this client has (replayed, sent, or before it joined).
    last_seq = 0
    last_resume_at = -math.inf

    async def connect(self) -> None:
        self.monitor = get_monitor()
        venue_id = int(self.scope["url_route"]["kwargs"]["venue_id"])
        shown = credentials(self.scope)
        if shown is None:  # nothing to look up: no query, no channel layer call
            await self.refuse(CloseCode.UNAUTHENTICATED)
            return
        if venue_id > MAX_VENUE_ID:  # nor here: its group's name may be one the layer refuses
            await self.refuse(CloseCode.NOT_FOUND)
            return
        group = venue_group_name(venue_id)
        # Set before the join is awaited: daphne cancels a consumer whose handshake it gave
        # up on, possibly after Redis added it to the group but before group_add returned,
        # and only a group that is set is left on the way out (leaving twice is harmless).
        self.group = group
        # Join before knocking: whatever is recorded after the door reads the room's state
        # (and any revocation sent meanwhile) reaches this connection.
        if not await self.join(group):
            await self.turn_away(group, "channel_layer_unavailable")
            return
        after, bad_after = _after(self.scope)
        try:
            answer = await get_door().ask(Ask(venue_id, after, shown))
        except Exception:
            logger.warning("venue_room_admission_failed", venue=venue_id, exc_info=True)
            await self.turn_away(group, "admission_failed")
            return
        if self.closing:
            # The hub lost the channel layer meanwhile and closed this connection (1011);
            # its client's goodbye takes it out of the room.
            return
        grant = answer.admission.grant if answer.admission is not None else None
        if grant is None or answer.state is None:
            code = answer.admission.refusal if answer.admission is not None else None
            self.group = None
            await self.refuse(code or CloseCode.FORBIDDEN)
            await self.leave_groups(group)
            return
        if grant.user_id is not None:
            structlog.contextvars.bind_contextvars(user=grant.user_id)
            self.user_group = room_user_group_name(grant.user_id)
            if not await self.join(self.user_group):
                await self.turn_away(group, "channel_layer_unavailable")
                return
            if self.closing:
                return
        state = answer.state
        self.venue_id = venue_id
        self.grant = grant
        watch = get_watch()
        watch.add(self, grant)
        if grant.user_id is not None:
            # The user's group was joined after the door looked: an end of their access sent
            # in between (a logout, a deactivation) is found by this re-check instead.
            watch.recheck(self)
        layer_watch = get_layer_watch()
        if layer_watch is not None:
            layer_watch.add(self)
        self.bucket = TokenBucket(settings.WS_RATE_LIMIT_PER_SECOND, settings.WS_RATE_LIMIT_BURST)
        self.max_bytes = settings.WS_MAX_MESSAGE_BYTES
        await self.accept()
        self.counted = True
        self.monitor.track_connection(group)
        self.last_seq = state.current
        await self.send_frame(
            {"type": "welcome", "venue": venue_id, "serverTime": time.time(), "seq": state.current}
        )
        if bad_after:
            await self.reject_frame(ErrorCode.INVALID_MESSAGE, AFTER_RULE)
        elif after is not None:
            self.last_resume_at = time.monotonic()
            await self.catch_up(state, after)

    async def join(self, group: str) -> bool:
        """Bounded (orders/hub.py): a hung Redis would otherwise outlast daphne's handshake
        timeout, and the client would see a dropped handshake instead of 1011."""
        return await get_hub().enter(group, self)

    def deliver(self, message: dict[str, Any]) -> None:
        """A message to one of this connection's groups, from the process's hub."""
        if self.inbox.qsize() >= INBOX_LIMIT and message.get("type") == "venue.event":
            # Left out as a full channel would: a missed event is sent from the record
            # when the next one shows the gap. An end of access is never left out (nothing
            # would send it again); those are few.
            self.monitor.track_error("room_inbox_full")
            return
        self.inbox.put_nowait(message)

    async def room_state(self, after: int) -> Replay | None:
        """The events after `after`, for a connection already in (None: the venue is gone)."""
        return (await get_door().ask(Ask(self.venue_id, after))).state

    async def turn_away(self, group: str, reason: str) -> None:
        """The room could not take this connection after joining its groups: 1011, "try again
        later". Accepted first: closing a handshake before accepting it is an HTTP 403, which
        a client cannot tell from "not allowed". Told before leaving the groups, which may
        take as long again on a hung Redis."""
        self.monitor.track_rejection(reason)
        self.group = None
        if not self.closing:  # not closed already (by the hub, when it lost the layer)
            self.closing = True
            if not self.accepted:
                await self.accept()
            await self.close(code=int(CloseCode.SERVER_ERROR))
        await self.leave_groups(group)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        # What this connection reports to Sentry carries its venue, whichever line reports
        # it (inkwave/sentry.py); the Django integration does not see WebSocket consumers.
        venue_id = scope["url_route"]["kwargs"].get("venue_id")
        with error_context("venue_room", venue_id=venue_id, path=scope.get("path")):
            await self.serve(scope, receive, send)

    async def serve(self, scope: Any, receive: Any, send: Any) -> None:
        """channels' AsyncConsumer.__call__, except that this consumer has no channel of its
        own: what its groups are sent comes from the process's hub (orders/hub.py), through
        its inbox."""
        self.scope = scope
        self.base_send = send
        # Every line this connection logs says which one it is (inkwave/logcontext.py).
        structlog.contextvars.bind_contextvars(
            connection=secrets.token_hex(6),
            venue=scope.get("url_route", {}).get("kwargs", {}).get("venue_id"),
        )
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        try:
            with contextlib.suppress(StopConsumer):
                await await_many_dispatch([receive, self.inbox.get], self.dispatch)
        except Exception:
            # Every handler survives its own failures: what ends up here is a bug. The client
            # is told (1011), and reconnects.
            logger.exception("venue_room_failed", group=self.group)
            await self.server_error("internal_error")
        finally:
            # Cancelled (server shutdown, application_close_timeout) or crashed: disconnect()
            # never ran, so leave the room here; it is a no-op once it has run.
            if self.group is not None:
                await self.disconnect(1001)

    async def dispatch(self, message: dict[str, Any]) -> None:
        """channels' dispatch, without its close_old_connections() before every handler.

        That call is a hop to the sync thread for every frame and every broadcast delivery,
        about half of this consumer's CPU time (bench/README.md). No handler here touches
        the ORM directly: connect() goes through inkwave.db.database_sync_to_async, which closes
        stale connections itself. A handler that needs the database must do the same.
        """
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def accept(self, subprotocol: str | None = None, headers: Any = None) -> None:
        await super().accept(subprotocol, headers)
        self.accepted = True

    async def refuse(self, code: CloseCode) -> None:
        """Accept, then close with a documented code: browsers only see codes after accept."""
        self.monitor.track_rejection(REFUSAL_REASONS.get(code, "refused"))
        self.closing = True
        await self.accept()
        await self.close(code=int(code))

    async def layer_lost(self) -> None:
        """The room can no longer reach this connection: close with 1011 so the client
        reconnects (and learns whether the server can take it back) instead of staying
        open and hearing nothing. Called by the layer watch (orders/layerwatch.py) too."""
        await self.server_error("channel_layer_unavailable")

    async def server_error(self, reason: str) -> None:
        if self.closing:
            return
        self.closing = True
        get_monitor().track_error(reason)
        # The client may be gone already; there is nothing more to tell it then.
        with contextlib.suppress(Exception):
            if not self.accepted:
                await self.accept()
            await self.close(code=int(CloseCode.SERVER_ERROR))

    async def disconnect(self, code: int) -> None:
        group = self.group
        if group is None:
            return
        self.group = None
        get_watch().discard(self)
        layer_watch = get_layer_watch()
        if layer_watch is not None:
            layer_watch.discard(self)
        if self.counted:
            self.monitor.track_disconnection(group)
        await self.leave_groups(group)

    async def leave_groups(self, group: str) -> None:
        """Out of both groups at once; what takes the process out of them (when this was its
        last connection there) is the hub's work, which a cancel of this consumer does not
        stop (daphne cancels a consumer every second past its close timeout)."""
        user_group, self.user_group = self.user_group, None
        hub = get_hub()
        parts = [hub.leave(name, self) for name in (group, user_group) if name is not None]
        waiting = [part for part in parts if part is not None]
        if waiting:
            await asyncio.shield(asyncio.gather(*waiting))

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        """channels' websocket_disconnect without its close_old_connections(), a hop to the
        database thread for every connection that ends (see dispatch)."""
        await self.disconnect(message["code"])
        raise StopConsumer()

    # --- frames from the client -----------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        monitor = self.monitor
        monitor.track_message_received()
        if self.group is None or self.closing:
            return
        if not self.bucket.take():
            self.closing = True
            monitor.track_error(ErrorCode.RATE_LIMITED)
            await self.send_error(ErrorCode.RATE_LIMITED, "Too many messages; slow down.")
            await self.close(code=int(CloseCode.RATE_LIMITED))
            return
        if text_data is None:
            await self.reject_frame(ErrorCode.BINARY_NOT_SUPPORTED, "Send JSON text frames.")
            return
        # Cheap bound first: a str's UTF-8 size is between len and 4 * len.
        if len(text_data) > self.max_bytes or (
            len(text_data) * 4 > self.max_bytes and len(text_data.encode("utf-8")) > self.max_bytes
        ):
            await self.reject_frame(
                ErrorCode.FRAME_TOO_LARGE, f"Frames are limited to {self.max_bytes} bytes."
            )
            return
        try:
            message = _loads(text_data)
        except NonFiniteNumberError:
            await self.reject_frame(
                ErrorCode.INVALID_MESSAGE, "Numbers must be finite (no NaN, Infinity or 1e400)."
            )
            return
        except (ValueError, RecursionError):
            await self.reject_frame(ErrorCode.INVALID_JSON, "The frame is not valid JSON.")
            return
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            await self.reject_frame(
                ErrorCode.INVALID_MESSAGE, 'A frame is a JSON object with a string "type".'
            )
            return
        kind = message["type"]
        if kind == "ping":
            await self.on_ping(message)
        elif kind == "resume":
            await self.on_resume(message)
        else:
            await self.reject_frame(ErrorCode.UNKNOWN_TYPE, f"Unknown message type {kind[:50]!r}.")

    async def on_ping(self, message: dict[str, Any]) -> None:
        rtt = message.get("rttMs")
        if rtt is not None:
            if (
                isinstance(rtt, int | float)
                and not isinstance(rtt, bool)
                and math.isfinite(rtt)
                and 0 <= rtt <= MAX_REPORTED_RTT_MS
            ):
                self.monitor.track_round_trip(float(rtt))
            else:
                await self.reject_frame(
                    ErrorCode.INVALID_MESSAGE, "rttMs must be a number of milliseconds."
                )
                return
        ts = message.get("ts")
        if not isinstance(ts, int | float | str) or isinstance(ts, bool):
            ts = None
        elif isinstance(ts, str):
            ts = ts[:64]
        await self.send_frame({"type": "pong", "ts": ts, "serverTime": time.time()})

    async def on_resume(self, message: dict[str, Any]) -> None:
        after = message.get("after")
        if not _is_seq(after):
            await self.reject_frame(ErrorCode.INVALID_MESSAGE, AFTER_RULE)
            return
        # A resume may send hundreds of frames: one per WS_RESUME_INTERVAL_SECONDS, or the
        # connection is closed as any flood is.
        now = time.monotonic()
        if now - self.last_resume_at < settings.WS_RESUME_INTERVAL_SECONDS:
            self.closing = True
            self.monitor.track_error(ErrorCode.RATE_LIMITED)
            await self.send_error(ErrorCode.RATE_LIMITED, "One resume at a time; slow down.")
            await self.close(code=int(CloseCode.RATE_LIMITED))
            return
        self.last_resume_at = now
        state = await self.room_state(after)
        if state is not None:
            await self.catch_up(state, after)

    async def catch_up(self, state: Replay, after: int, *, asked: bool = True) -> None:
        """Send what the client missed after `after`, in order, then say it is live; or tell
        it to reload when that cannot be done. Live events that arrive meanwhile wait in the
        channel layer (a consumer handles one message at a time) and are sent after, the ones
        already replayed left out by their number. Not `asked`: a gap in the live stream the
        server fills by itself, without a `live` frame (the client never left)."""
        monitor = self.monitor
        if state.resync is not None:
            monitor.track_resume(0, resynced=True, asked=asked)
            await self.send_frame({"type": "resync", "seq": state.current, "reason": state.resync})
        else:
            for _, frame in state.frames:
                if await self.send_text(frame):
                    monitor.track_message_sent()
            monitor.track_resume(len(state.frames), resynced=False, asked=asked)
            if asked:
                await self.send_frame(
                    {"type": "live", "seq": state.current, "replayed": len(state.frames)}
                )
        self.last_seq = max(self.last_seq, state.current)

    async def reject_frame(self, code: ErrorCode, message: str) -> None:
        self.monitor.track_error(code)
        await self.send_error(code, message)

    async def send_error(self, code: ErrorCode, message: str) -> None:
        await self.send_frame({"type": "error", "code": code.value, "message": message})

    async def send_frame(self, frame: ServerFrame) -> None:
        if await self.send_text(_dumps(frame)):
            self.monitor.track_message_sent()

    async def send_text(self, frame: str) -> bool:
        """Whether the frame went to the transport: not when the connection's close had
        begun before this consumer heard of it (its disconnect is on its way)."""
        try:
            await self.send(text_data=frame)
        except ConnectionClosing:
            return False
        return True

    # --- events from the channel layer ----------------------------------------------------

    async def venue_event(self, event: dict[str, Any]) -> None:
        if self.group is None or self.closing:
            return
        seq = event.get("seq")
        if seq is not None:
            if seq <= self.last_seq:
                return  # sent already (replayed), or from before this client joined
            if seq > self.last_seq + 1:
                # A broadcast this connection missed (the channel layer dropped it): sent
                # from the record, in order, before this one.
                state = await self.room_state(self.last_seq)
                if state is not None:
                    await self.catch_up(state, self.last_seq, asked=False)
                if seq <= self.last_seq:
                    return
            self.last_seq = seq
        if not await self.send_text(event["frame"]):
            return
        monitor = self.monitor
        monitor.track_message_sent()
        monitor.track_delivery_latency((time.time() - event["sent_at"]) * 1000.0)

    async def access_recheck(self, event: dict[str, Any]) -> None:
        """A grant may have ended (orders/revocation.py): re-check ours if it is one named."""
        grant = self.grant
        if self.group is None or self.closing or grant is None:
            return
        token, user = event.get("token"), event.get("user")
        if (token is None or token == grant.token_id) and (user is None or user == grant.user_id):
            get_watch().recheck(self)

    async def access_session_ended(self, event: dict[str, Any]) -> None:
        """The session that let us in was logged out: nothing to check, it is gone."""
        if self.grant is not None and event.get("session") == self.grant.session_key:
            get_watch().discard(self)
            await self.access_ended(CloseCode.UNAUTHENTICATED)

    async def access_ended(self, code: CloseCode) -> None:
        """Close because what let this connection in no longer does (called by the watch)."""
        if self.group is None or self.closing:
            return
        self.closing = True
        self.monitor.track_error("access_revoked")
        await self.close(code=int(code))

    # --- the consumer must survive its own bugs ------------------------------------------

    async def websocket_receive(self, message: dict[str, Any]) -> None:
        try:
            await super().websocket_receive(message)
        except Exception:
            logger.exception("venue_room_frame_failed", group=self.group)
            self.monitor.track_error(ErrorCode.INTERNAL_ERROR)
            await self.send_error(ErrorCode.INTERNAL_ERROR, "The server could not handle that.")


class UnknownPathConsumer(AsyncWebsocketConsumer):
    """Any other WebSocket path: refused with 4404 rather than an unexplained drop."""

    async def connect(self) -> None:
        get_monitor().track_rejection("not_found")
        await self.accept()
        await self.close(code=int(CloseCode.NOT_FOUND))
