from __future__ import annotations


def venue_group_name(venue_id: int) -> str:
    """The channel-layer group of one venue's room; the only place the name is built."""
    return f"venue.{venue_id}"


def venue_of_group(group: str) -> int | None:
    """The venue whose room `group` is (venue_group_name read back), or None."""
    prefix, _, venue = group.partition(".")
    return int(venue) if prefix == "venue" and venue.isdigit() else None


def room_user_group_name(user_id: int) -> str:
    """The group of one signed-in user's room connections, in every venue: their grant's end
    (deactivated, deleted, logged out) reaches them wherever they are connected."""
    return f"venue-rooms.user.{user_id}"
