"""Each venue metric's value from what was seen, as pure functions.

The live metrics (orders.anomaly.live) gather what was seen with a few SQL aggregates over
every open venue; the replay (orders.anomaly.replay) gathers the same from rows loaded for
a period. Both end here, so the preview and the benchmark judge what the engine judges.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import NamedTuple, Protocol

from inkwave.lib.counts import binomial_sf, nb_two_sided, nb_zero
from orders.baseline import SlotBaseline, local_slot
from orders.models.activity import SLOT_SECONDS, SLOTS_PER_WEEK

# Negative binomial dispersion of a venue's orders in a stretch of an evening, once today's
# pace is known: the larger, the closer to Poisson. 25 allows an hour 20% busier or quieter
# than the pace says (1 / 0.2²).
ORDER_DISPERSION = 25.0
# A silence is looked back at this far at most: by then any rule has long fired.
SILENCE_LOOKBACK = timedelta(hours=2)
# Today's pace is read from the orders of this long before what is judged ...
LEVEL_LOOKBACK = timedelta(hours=2)
# ... weighed against a usual evening's this many orders (the less seen, the closer to 1).
LEVEL_PRIOR_ORDERS = 8.0
# A window is judged as if at least this many orders were usual in it: a venue whose past
# weeks were empty at this hour is not "unusual" with its first two orders.
VOLUME_MIN_EXPECTED = 1.0
# A volume rule scans the windows ending now of these lengths that are shorter
# than its own, and its own: a big venue's surge shows in 10 minutes, a small venue's only
# over the hour. The smallest chance is reported, multiplied by the number of windows
# (Bonferroni), so looking several times raises no more false alerts than the line allows.
SCAN_SECONDS = (600, 1200, 1800, 3600)
# A surge is judged as this many times the usual orders against the usual (surge_value):
# the rise a venue's kitchen must hear of (a party, a rush a post brought), and the one the
# benchmark's history injects. A likelihood ratio for a rise of a known size is a stronger
# test of it than a count's tail either way (bench/README.md, "Venue anomalies").
SURGE_RISE = 3.0
# A surge is judged against the usual at today's pace where today is busier than usual (a
# holiday), never below the usual: a quiet start to the evening, or an outage in the hours
# before, does not make the usual rush look like three times the usual. Over half the surge
# rule's false alerts were an hour after an outage until it was floored (bench/README.md).
SURGE_PACE_FLOOR = 1.0
# Below this many orders in the window, a median wait says little.
ACCEPT_MIN_ORDERS = 3
# ... and below this many taken orders in the baseline, the venue's usual is unknown.
ACCEPT_MIN_BASELINE = 10
# Failures are judged against at least this rate (a card declined now and then is normal).
PAYMENT_FLOOR_RATE = 0.02
# The other venues' rate needs this many settled payments in the window to be a yardstick.
PLATFORM_MIN_PAYMENTS = 20
# An order still waiting after this long is abandoned, not waiting (left out).
WAITING_LOOKBACK = timedelta(hours=12)
# The usual time to take an order that the oldest order's wait is held against: learned
# over the quarter hours of this last span (a kitchen is slower at its rush hour).
WAITING_USUAL_SPAN = timedelta(hours=1)

# A slow kitchen is judged as one whose waits have become this many times the usual
# (kitchen_value): a slowdown the venue's guests feel, and a manager wants to hear of.
KITCHEN_SLOWDOWN = 3.0
# Its evidence is read from the orders placed over this last span (a change since then).
KITCHEN_LOOKBACK = timedelta(hours=1)
# No kitchen's waits are taken as spread less than this (the log's standard deviation): a
# venue whose past weeks look very regular is not held to a precision it never had.
KITCHEN_MIN_SPREAD = 0.25

QUARTER = timedelta(seconds=SLOT_SECONDS)


@dataclass(frozen=True)
class OpenVenue:
    id: int
    since: datetime  # when its current opening began
    slot: int  # the week slot of the quarter hour holding "now"
    quarter: datetime  # that quarter hour's start
    zone: tzinfo = UTC  # the venue's time zone (for the slots across a clock change)


class Baselines(Protocol):
    def get(self, key: tuple[int, int], /) -> SlotBaseline | None: ...


def _quarters_back(venue: OpenVenue, first: float, last: float) -> tuple[tuple[int, int], ...]:
    """(quarter hour's start as a timestamp, its week slot) for each quarter hour touching
    [first, last], newest first.

    The slots of earlier quarters are counted back from now's; across a clock change in
    the venue's zone each quarter's local time is looked up instead."""
    return _quarters_of(venue.slot, venue.quarter, venue.zone, first, last)


@functools.lru_cache(maxsize=1024)  # venues in one zone share them: thousands a cycle
def _quarters_of(
    now_slot: int, now_quarter: datetime, zone: tzinfo, first: float, last: float
) -> tuple[tuple[int, int], ...]:
    quarter = int(last) // SLOT_SECONDS * SLOT_SECONDS
    back = round((now_quarter.timestamp() - quarter) / SLOT_SECONDS)
    offset = now_quarter.astimezone(zone).utcoffset()
    start = datetime.fromtimestamp(first, tz=UTC)
    changed = start.astimezone(zone).utcoffset() != offset  # between start and now
    found = []
    while quarter + SLOT_SECONDS > first:
        if changed:
            slot = local_slot(datetime.fromtimestamp(quarter, tz=UTC), zone)
        else:
            slot = (now_slot - back) % SLOTS_PER_WEEK
        found.append((quarter, slot))
        quarter -= SLOT_SECONDS
        back += 1
    return tuple(found)


def slots_back(venue: OpenVenue, start: datetime, end: datetime) -> tuple[tuple[int, float], ...]:
    """(week slot, seconds of it inside [start, end]) for each quarter hour of the span."""
    return _slots_of(venue.slot, venue.quarter, venue.zone, start.timestamp(), end.timestamp())


@functools.lru_cache(maxsize=1024)  # as _quarters_of
def _slots_of(
    now_slot: int, now_quarter: datetime, zone: tzinfo, first: float, last: float
) -> tuple[tuple[int, float], ...]:
    found = []
    for quarter, slot in _quarters_of(now_slot, now_quarter, zone, first, last):
        seconds = min(last, quarter + SLOT_SECONDS) - max(first, quarter)
        if seconds > 0:
            found.append((slot, seconds))
    return tuple(found)


def _learned(venue: OpenVenue, known: Baselines) -> bool:
    current = known.get((venue.id, venue.slot))
    return current is not None and current.known


def expected_orders(
    venue: OpenVenue, start: datetime, end: datetime, known: Baselines
) -> float | None:
    """The orders the venue usually gets in [start, end]; None while it is still learned."""
    found = expected_in_spans(venue, [(start, end)], known)
    return None if found is None else found[0]


def expected_in_spans(
    venue: OpenVenue, spans: Sequence[tuple[datetime, datetime]], known: Baselines
) -> list[float] | None:
    """The orders the venue usually gets in each span, from one walk over the quarter hours
    they touch (a cycle asks five spans of each of thousands of venues); None while it is
    still learned."""
    if not _learned(venue, known):
        return None
    first = min(start for start, _ in spans).timestamp()
    last = max(end for _, end in spans).timestamp()
    quarters = _quarters_back(venue, first, last)
    if not quarters:
        return [0.0] * len(spans)
    newest = quarters[0][0]
    # The usual orders of each quarter hour, newest first (none where the venue was never
    # open then in past weeks).
    usual = []
    for _, slot in quarters:
        base = known.get((venue.id, slot))
        usual.append(0.0 if base is None else base.orders)
    totals = []
    for start, end in spans:
        a, b = start.timestamp(), end.timestamp()
        if b <= a:
            totals.append(0.0)
            continue
        # Only the quarter hours the span touches: a part of its last and first, all of
        # those between.
        top, bottom = b // SLOT_SECONDS * SLOT_SECONDS, a // SLOT_SECONDS * SLOT_SECONDS
        i, j = int((newest - top) // SLOT_SECONDS), int((newest - bottom) // SLOT_SECONDS)
        if i == j:
            totals.append(usual[i] * (b - a) / SLOT_SECONDS)
            continue
        total = usual[i] * (b - top) / SLOT_SECONDS
        for k in range(i + 1, j):
            total += usual[k]
        totals.append(total + usual[j] * (bottom + SLOT_SECONDS - a) / SLOT_SECONDS)
    return totals


def pace_start(venue: OpenVenue, until: datetime) -> datetime:
    """Today's pace is read from here to `until`: LEVEL_LOOKBACK, within this opening."""
    return max(venue.since, until - LEVEL_LOOKBACK)


def pace(venue: OpenVenue, seen: int, start: datetime, end: datetime, known: Baselines) -> float:
    """Today's pace against the usual, from the orders seen in (start, end] (the hours before
    what is judged): 1 on a usual day, 1.3 on one 30% busier. A usual evening's
    LEVEL_PRIOR_ORDERS are added to both sides, so a few orders do not swing it."""
    return pace_of(seen, expected_orders(venue, start, end, known) or 0.0)


def pace_of(seen: int, expected: float) -> float:
    """pace() from the orders seen and those usual in the same stretch."""
    return (seen + LEVEL_PRIOR_ORDERS) / (expected + LEVEL_PRIOR_ORDERS)


def silence_value(
    venue: OpenVenue, last_order: datetime | None, seen: int, now: datetime, known: Baselines
) -> float | None:
    """In %: the chance of no order since the last one (or the opening), were it usual.
    `seen` counts the orders after pace_start(venue, now): today's pace."""
    since = max(last_order or venue.since, venue.since, now - SILENCE_LOOKBACK)
    found = expected_in_spans(venue, [(since, now), (pace_start(venue, now), since)], known)
    if found is None:
        return None
    expected, before = found
    return 100.0 * nb_zero(expected * pace_of(seen, before), ORDER_DISPERSION)


def span_start(venue: OpenVenue, window_start: datetime) -> datetime:
    """The window's start, or the opening if that came later."""
    return max(window_start, venue.since)


def scan_windows(seconds: int) -> list[int]:
    """The lengths, in seconds, of the windows a scan over a rule's window looks at."""
    return list(_scan_windows(seconds))


@functools.lru_cache(maxsize=64)  # asked for each of thousands of venues a cycle
def _scan_windows(seconds: int) -> tuple[int, ...]:
    return (*(s for s in SCAN_SECONDS if s < seconds), seconds)


def scanned(chances: Sequence[float | None]) -> float | None:
    """In %: the smallest of the windows' chances times their number (at most 100)."""
    found = [c for c in chances if c is not None]
    return min(100.0, len(chances) * min(found)) if found else None


class ScanUsual(NamedTuple):
    """What a scan judges each window against: the orders usual in it, and today's pace."""

    expected: list[float]  # in each window of scan_windows(), at the usual pace
    pace: float

    def at(self, pace: float) -> list[float]:
        """The orders usual in each window at this pace, and at least VOLUME_MIN_EXPECTED."""
        return [max(e * pace, VOLUME_MIN_EXPECTED) for e in self.expected]


def scan_usuals(
    venue: OpenVenue, seen_before: int, window_start: datetime, now: datetime, known: Baselines
) -> ScanUsual | None:
    """The orders usual in each window of scan_windows() ending now (from its span_start()),
    and today's pace; None while the venue is learned. `seen_before` counts the orders from
    pace_start(venue, window_start) to window_start (the longest window's): today's pace,
    the same for every window."""
    spans = [(pace_start(venue, window_start), window_start)] + [
        (span_start(venue, now - timedelta(seconds=seconds)), now)
        for seconds in scan_windows(round((now - window_start).total_seconds()))
    ]
    found = expected_in_spans(venue, spans, known)
    if found is None:
        return None
    before, *expected = found
    return ScanUsual(expected, pace_of(seen_before, before))


def volume_scan(seen: Sequence[int], usual: ScanUsual) -> float:
    """In %: for each window, the chance of a count at least this far from its usual, either
    way, read at today's pace and at the usual, the larger of the two (a count is unusual
    only if it is so by both readings); scanned(). `seen[i]` counts the orders of the i-th
    window of scan_usuals()."""
    found = scanned([
        100.0 * _both_readings(n, a, b)
        for n, a, b in zip(seen, usual.at(usual.pace), usual.at(1.0), strict=True)
    ])  # fmt: skip
    assert found is not None  # every window has a chance
    return found


def _both_readings(n: int, paced: float, plain: float) -> float:
    """The larger of the count's two-sided chances at either usual. A count above both is
    likelier at the larger usual, one below both at the smaller (a negative binomial grows
    with its mean), so only a count between them needs both: one sum, not two, a window."""
    low, high = min(paced, plain), max(paced, plain)
    if n > high:
        return nb_two_sided(n, high, ORDER_DISPERSION)
    if n < low:
        return nb_two_sided(n, low, ORDER_DISPERSION)
    return max(nb_two_sided(n, low, ORDER_DISPERSION), nb_two_sided(n, high, ORDER_DISPERSION))


def surge_scan(seen: Sequence[int], usual: ScanUsual) -> float:
    """In %: how likely a usual evening is to look this much like a surge. For each window, the
    log-likelihood ratio of its orders at SURGE_RISE times its usual against its usual; a
    usual window reaches a ratio of e^x with a chance under e^-x (Markov's inequality), so the
    largest one's e^-x, times the number of windows, bounds the chance. The usual is taken
    at today's pace where that is busier than usual, never below the usual (SURGE_PACE_FLOOR)."""
    jump = math.log(SURGE_RISE)
    usuals = usual.at(max(usual.pace, SURGE_PACE_FLOOR))
    largest = max(
        0.0,
        *(n * jump - (SURGE_RISE - 1) * u for n, u in zip(seen, usuals, strict=True)),
    )
    return min(100.0, 100.0 * len(usuals) * math.exp(-largest))


def volume_value(
    venue: OpenVenue, seen: Sequence[int], seen_before: int, window_start: datetime,
    now: datetime, known: Baselines,
) -> float | None:  # fmt: skip
    """volume_scan() of the windows of scan_usuals(); `seen[i]` counts the orders since
    span_start() of the i-th window."""
    usual = scan_usuals(venue, seen_before, window_start, now, known)
    return None if usual is None else volume_scan(seen, usual)


def surge_value(
    venue: OpenVenue, seen: Sequence[int], seen_before: int, window_start: datetime,
    now: datetime, known: Baselines,
) -> float | None:  # fmt: skip
    """surge_scan() of the windows of scan_usuals(); arguments as volume_value()."""
    usual = scan_usuals(venue, seen_before, window_start, now, known)
    return None if usual is None else surge_scan(seen, usual)


def uses_screens(venue: OpenVenue, known: Baselines) -> bool:
    """Its room had a screen at this time in at least half of the past weeks."""
    base = known.get((venue.id, venue.slot))
    return base is not None and base.known and 2 * base.screen_weeks >= base.weeks


def screens_value(venue: OpenVenue, most: int, known: Baselines) -> float | None:
    return float(most) if uses_screens(venue, known) else None


def waiting_value(venue: OpenVenue, oldest_placed: datetime | None, now: datetime) -> float:
    """Minutes the oldest order nobody has taken has waited while the venue was open (one
    left from before the opening counts from the opening)."""
    if oldest_placed is None:
        return 0.0
    return (now - max(oldest_placed, venue.since)).total_seconds() / 60.0


def waiting_ratio_value(
    venue: OpenVenue, oldest_placed: datetime | None, now: datetime, known: Baselines
) -> float | None:
    """The wait of the oldest order nobody has taken (waiting_value) as a multiple of the
    venue's usual time to take one over the last WAITING_USUAL_SPAN; None while that usual
    is unknown. A kitchen that takes orders in a minute is ignoring one after ten; one that
    takes five is not."""
    usual = usual_accept_seconds(venue, now - WAITING_USUAL_SPAN, now, known)
    if usual is None:
        return None
    return 60.0 * waiting_value(venue, oldest_placed, now) / usual


def usual_accept_seconds(
    venue: OpenVenue, start: datetime, now: datetime, known: Baselines
) -> float | None:
    accepted, seconds = 0, 0.0
    for slot, _ in slots_back(venue, start, now):
        base = known.get((venue.id, slot))
        if base is not None:
            accepted += base.accepted
            seconds += base.accept_seconds
    if accepted < ACCEPT_MIN_BASELINE or seconds <= 0:
        return None
    return seconds / accepted


@dataclass(frozen=True)
class WaitModel:
    """A venue's usual waits to be taken, log-normal: log_median and spread are the mean and
    the standard deviation of their natural logs (in seconds)."""

    log_median: float
    spread: float


def usual_wait_model(
    venue: OpenVenue, start: datetime, now: datetime, known: Baselines
) -> WaitModel | None:
    """Learned from the taken orders of the quarter hours of [start, now] in past weeks."""
    count, logs, squares = 0, 0.0, 0.0
    for slot, _ in slots_back(venue, start, now):
        base = known.get((venue.id, slot))
        if base is not None:
            count += base.accepted
            logs += base.accept_log_sum
            squares += base.accept_log_squares
    if count < ACCEPT_MIN_BASELINE:
        return None
    mean = logs / count
    variance = max(0.0, squares / count - mean * mean) * count / (count - 1)
    return WaitModel(mean, max(math.sqrt(variance), KITCHEN_MIN_SPREAD))


def log_longer(z: float) -> float:
    """log P(Z > z) for Z standard normal, without underflow far in the tail."""
    if z < 5.0:
        return math.log(0.5 * math.erfc(z / math.sqrt(2.0)))
    # Mills' ratio: P(Z > z) ~ phi(z) / z * (1 - 1/z^2 + 3/z^4)
    return (
        -z * z / 2.0 - math.log(z * math.sqrt(2.0 * math.pi)) + math.log1p(-1.0 / z**2 + 3.0 / z**4)
    )


def slowdown_evidence(model: WaitModel, wait: float, taken: bool, slowdown: float) -> float:
    """What one order says for a kitchen `slowdown` times slower than usual, against usual:
    the log of the likelihood ratio. Taken after `wait` seconds: the two densities' ratio
    there; still waiting after `wait`: the two chances of waiting longer than that."""
    return evidence_for(model, slowdown)(wait, taken)


def kitchen_value(
    venue: OpenVenue, waits: Sequence[tuple[float, bool]], now: datetime, known: Baselines,
    slowdown: float = KITCHEN_SLOWDOWN,
) -> float | None:  # fmt: skip
    """How strongly the waits of the orders placed since some moment in the last
    KITCHEN_LOOKBACK say the kitchen has become `slowdown` times slower than this venue's
    usual: the largest log-likelihood ratio of any such stretch (Lorden's test for a change;
    a usual kitchen's waits reach x for any one stretch with a chance under e^-x).
    `waits` are (seconds, taken) in the order the orders were placed: taken after so many
    seconds, or waiting that long so far. None while the venue's usual is unknown."""
    model = usual_wait_model(venue, now - WAITING_USUAL_SPAN, now, known)
    if model is None:
        return None
    return largest_since_change(waits, evidence_for(model, slowdown))


def evidence_for(model: WaitModel, slowdown: float) -> Callable[[float, bool], float]:
    """slowdown_evidence(model, ., ., slowdown) with what every order shares worked out once
    (a cycle weighs some 100,000 orders). For a taken order the two log densities' halves
    differ by shift * (x - shift / 2), so that is one multiplication."""
    log_median, spread, log = model.log_median, model.spread, math.log
    shift = log(slowdown) / spread

    def evidence(wait: float, taken: bool) -> float:
        x = (log(wait if wait > 1.0 else 1.0) - log_median) / spread
        if taken:
            return shift * (x - shift / 2.0)
        return log_longer(x - shift) - log_longer(x)

    return evidence


def largest_since_change(
    waits: Sequence[tuple[float, bool]], evidence: Callable[[float, bool], float]
) -> float:
    """The largest sum of the evidence of the orders from some one on to the last (`waits`
    as kitchen_value's), at least 0. Evidence of -inf (an order the alternative rules out)
    ends the stretches that would hold it."""
    best = total = 0.0
    for wait, taken in reversed(waits):
        total += evidence(wait, taken)
        if total == -math.inf:
            break
        best = max(best, total)
    return best


def accept_value(
    venue: OpenVenue, median_wait: float, count: int, window_start: datetime, now: datetime,
    known: Baselines,
) -> float | None:  # fmt: skip
    """The median wait of the `count` orders placed since span_start() (so far, for those
    still waiting) as a multiple of the venue's usual."""
    if count < ACCEPT_MIN_ORDERS:
        return None
    usual = usual_accept_seconds(venue, span_start(venue, window_start), now, known)
    return None if usual is None else median_wait / usual


def usual_failure_rate(venue: OpenVenue, start: datetime, now: datetime, known: Baselines) -> float:
    paid = failed = 0
    for slot, _ in slots_back(venue, start, now):
        base = known.get((venue.id, slot))
        if base is not None:
            paid, failed = paid + base.payments_paid, failed + base.payments_failed
    # One failure in a few payments is no rate: shrunk towards the floor.
    return (failed + PAYMENT_FLOOR_RATE * 20) / (paid + failed + 20)


def others_failure_rate(platform: tuple[int, int], own: tuple[int, int]) -> float | None:
    """Every other venue's failure rate in the window, if they settled enough payments.
    Both pairs are (paid, failed)."""
    paid, failed = platform[0] - own[0], platform[1] - own[1]
    return failed / (paid + failed) if paid + failed >= PLATFORM_MIN_PAYMENTS else None


def payment_value(
    venue: OpenVenue, own: tuple[int, int], platform: tuple[int, int], window_start: datetime,
    now: datetime, known: Baselines,
) -> float | None:  # fmt: skip
    """In %: the chance of at least this many failures among the settled payments, at the
    venue's usual rate or the other venues' rate now, whichever is higher."""
    paid, failed = own
    if not paid + failed:
        return None
    usual = usual_failure_rate(venue, span_start(venue, window_start), now, known)
    rate = max(usual, others_failure_rate(platform, own) or 0.0, PAYMENT_FLOOR_RATE)
    return 100.0 * binomial_sf(failed, paid + failed, rate)
