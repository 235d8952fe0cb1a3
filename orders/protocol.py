"""The venue-room WebSocket protocol: close codes and frame shapes (documented in the README)."""

from __future__ import annotations

from enum import IntEnum, StrEnum
from typing import Literal, NotRequired, TypedDict


class CloseCode(IntEnum):
    UNAUTHENTICATED = 4401
    FORBIDDEN = 4403
    NOT_FOUND = 4404
    RATE_LIMITED = 4429
    SERVER_ERROR = 1011


class ErrorCode(StrEnum):
    INVALID_JSON = "invalid_json"
    INVALID_MESSAGE = "invalid_message"
    UNKNOWN_TYPE = "unknown_type"
    FRAME_TOO_LARGE = "frame_too_large"
    BINARY_NOT_SUPPORTED = "binary_not_supported"
    RATE_LIMITED = "rate_limited"
    INTERNAL_ERROR = "internal_error"


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


class WelcomeFrame(TypedDict):
    type: Literal["welcome"]
    venue: int
    serverTime: float
