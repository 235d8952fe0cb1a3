"""The status badge: an SVG that says the state in words, with a colour as a second cue."""

from __future__ import annotations

from django.utils.html import escape

from monitoring.status.rollup import DayState

# Okabe-Ito colours, told apart with any colour vision; the words carry the meaning.
COLOURS = {
    DayState.OPERATIONAL: "#00704f",
    DayState.MAINTENANCE: "#0061a0",
    DayState.DEGRADED: "#8f5d00",
    DayState.OUTAGE: "#b33c00",
}
LABEL_COLOUR = "#444"
# Verdana 11px averages about 6.6px a character; shields.io's badges use the same measure.
CHAR_WIDTH = 6.6
PADDING = 12


def _width(text: str) -> int:
    return round(len(text) * CHAR_WIDTH) + PADDING


def render(label: str, value: str, state: str) -> str:
    left, right = _width(label), _width(value)
    total = left + right
    label, value = escape(label), escape(value)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total}" height="20" role="img" '
        f'aria-label="{label}: {value}"><title>{label}: {value}</title>'
        f'<rect width="{left}" height="20" fill="{LABEL_COLOUR}"/>'
        f'<rect x="{left}" width="{right}" height="20" fill="{COLOURS[state]}"/>'
        '<g fill="#fff" font-family="Verdana,DejaVu Sans,sans-serif" font-size="11" '
        'text-anchor="middle">'
        f'<text x="{left / 2}" y="14">{label}</text>'
        f'<text x="{left + right / 2}" y="14">{value}</text></g></svg>'
    )
