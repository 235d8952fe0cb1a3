"""What the WebSocket transport tells the application (no Django, no daphne here)."""

from __future__ import annotations


class ConnectionClosing(Exception):
    """A frame for a connection whose close had begun before the application heard: not sent
    (as a frame in flight at a close is lost), and not a failure of the server's: its client
    left, sent an oversized frame, or is being closed. Raised by the server's protocol
    (inkwave.serve) so that the sender neither counts the frame as sent nor takes it for its
    own error."""
