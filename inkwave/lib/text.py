"""Text that came from outside, made safe to store."""

from __future__ import annotations

from typing import Any

REPLACEMENT = "\ufffd"


def storable(text: str, limit: int | None = None) -> str:
    """`text` with what PostgreSQL cannot store (NUL, unpaired surrogates) replaced by U+FFFD.

    A UTF-16 round trip joins surrogate pairs that arrived as two code points and turns the
    unpaired ones into U+FFFD. `limit` cuts after cleaning, so no half pair is left behind.
    """
    cleaned = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    cleaned = cleaned.replace("\x00", REPLACEMENT)
    return cleaned if limit is None else cleaned[:limit]


def storable_json(value: Any, limit: int = 200) -> Any:
    """A JSON value with every string (keys included) made storable and cut to `limit`."""
    if isinstance(value, str):
        return storable(value, limit)
    if isinstance(value, dict):
        return {storable(str(k), limit): storable_json(v, limit) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable_json(v, limit) for v in value]
    return value
