from __future__ import annotations


def venue_group_name(venue_id: int) -> str:
    """The channel-layer group of one venue's room; the only place the name is built."""
    return f"venue.{venue_id}"
