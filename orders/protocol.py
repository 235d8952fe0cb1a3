"""The venue-room WebSocket protocol: close codes, frame shapes and event names.

Documented in docs/protocol.md; tests/test_docs.py checks that the document names exactly
the frame types, error codes, close codes and events defined here.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum
from typing import Any, Literal, NotRequired, TypedDict


class CloseCode(IntEnum):
    UNAUTHENTICATED = 4401
    FORBIDDEN = 4403
    NOT_FOUND = 4404
    RATE_LIMITED = 4429
    SERVER_ERROR = 1011
    SERVICE_RESTART = 1012  # sent by inkwave.serve to every client as the process stops


class ErrorCode(StrEnum):
    INVALID_JSON = "invalid_json"
    INVALID_MESSAGE = "invalid_message"
    UNKNOWN_TYPE = "unknown_type"
    FRAME_TOO_LARGE = "frame_too_large"
    BINARY_NOT_SUPPORTED = "binary_not_supported"
    RATE_LIMITED = "rate_limited"
    INTERNAL_ERROR = "internal_error"


class RoomEvent(StrEnum):
    """What the server tells a venue's room about, in an event frame's `event` field."""

    ORDER_PLACED = "order.placed"
    ORDER_UPDATED = "order.updated"


# Reasons a connection is refused, as counted by the monitor.
REFUSAL_REASONS = {
    CloseCode.UNAUTHENTICATED: "unauthenticated",
    CloseCode.FORBIDDEN: "forbidden",
    CloseCode.NOT_FOUND: "not_found",
}


class PingFrame(TypedDict):
    type: Literal["ping"]
    ts: NotRequired[float | int | str]
    rttMs: NotRequired[float]


class PongFrame(TypedDict):
    type: Literal["pong"]
    ts: float | int | str | None
    serverTime: float


class ErrorFrame(TypedDict):
    type: Literal["error"]
    code: str
    message: str


class ResumeFrame(TypedDict):
    type: Literal["resume"]
    after: int


class WelcomeFrame(TypedDict):
    type: Literal["welcome"]
    venue: int
    serverTime: float
    seq: int


class EventFrame(TypedDict):
    type: Literal["event"]
    event: str
    data: Any
    sentAt: float
    seq: NotRequired[int]


class LiveFrame(TypedDict):
    type: Literal["live"]
    seq: int
    replayed: int


class ResyncReason(StrEnum):
    """Why a resume cannot be served from the room's recorded events."""

    TOO_MANY = "too_many"  # more missed events than ROOM_REPLAY_MAX_EVENTS
    TOO_OLD = "too_old"  # the first missed event is older than ROOM_REPLAY_MAX_AGE_SECONDS
    PRUNED = "pruned"  # no longer kept (ORDER_EVENT_RETENTION_DAYS)
    UNKNOWN = "unknown"  # a number the room never reached (another database, restored)


class ResyncFrame(TypedDict):
    type: Literal["resync"]
    seq: int
    reason: str


# Every frame of the protocol, by who sends it.
CLIENT_FRAMES = (PingFrame, ResumeFrame)
ServerFrame = WelcomeFrame | PongFrame | ErrorFrame | EventFrame | LiveFrame | ResyncFrame
SERVER_FRAMES = (WelcomeFrame, PongFrame, ErrorFrame, EventFrame, LiveFrame, ResyncFrame)
