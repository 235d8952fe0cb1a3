"""What a rule's scope is called in titles and messages.

Per-venue metrics scope their values by venue id. This app knows no venues (orders is above
it), so the app that owns them hands in a namer at start-up; without one, or for a venue
gone since, the scope reads "venue 12".
"""

from __future__ import annotations

from collections.abc import Callable

ScopeNamer = Callable[[str], str | None]


def _nobody(scope: str) -> str | None:
    return None


_namer: ScopeNamer = _nobody


def name_scopes_with(namer: ScopeNamer) -> None:
    global _namer
    _namer = namer


def scope_name(scope: str) -> str:
    """ "Harbour (venue 12)", or "venue 12" when it has no name."""
    try:
        name = _namer(scope)
    except Exception:  # a name is a nicety: an alert goes out without it
        name = None
    return f"{name}, venue {scope}" if name else f"venue {scope}"
