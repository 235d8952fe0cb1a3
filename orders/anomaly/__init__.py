"""Venue-aware metrics: alerts that cost a venue money, and none for a venue that is closed.

Each is a per-venue metric in the alert registry (scope: the venue's id), so rules, scopes,
silences and the preview treat it as any other. Each has a value only for a venue that is
open now (orders.hours) and has been for VENUE_WARMUP_MINUTES; a closed venue, an inactive
one or one that just opened is absent, which the engine reads as clear.

What a venue usually does comes from its baseline (orders.baseline): the same local
quarter hours of the same weekday over the past weeks. Counts are modelled as negative
binomial around the baseline (inkwave.lib.counts): Poisson arrivals whose evening-to-evening
level varies, so a quiet Tuesday is not an outage.

- venue.orders_silence_chance: the chance that the venue, behaving as usual, would go as
  long without an order as it has now (since its last order, or since it opened), in %.
  20 quiet minutes are usual for a venue with 2 orders a night and very unlikely for one
  with 200.
- venue.order_volume_chance: the chance of an order count at least this far from the
  usual (either way), in %, in the least likely of the windows ending now of 10, 20, 30 and
  60 minutes shorter than the rule's and the rule's, times the number of windows
  (formulas.scan_windows): a big venue's surge is seen in 10 minutes, a small one's in 60.
  Each window is read at today's pace and at the usual, and the larger chance kept.
- venue.order_surge_chance: how likely a usual evening is to look this much like a surge
  (formulas.SURGE_RISE, three times the usual orders), in %: the largest log-likelihood
  ratio, surge against usual, of the same windows, as a bound e^-x on the chance, times the
  number of windows. One-sided and sized: it finds surges the volume chance misses. Its
  usual is at today's pace only where that is busier (formulas.SURGE_PACE_FLOOR).
- venue.screens_online: the most screens connected to the venue's room at once during the
  window, for a venue that usually has one at this hour; below 1: dark for the window.
- venue.oldest_waiting_minutes: how long the oldest order nobody has taken has waited.
- venue.oldest_waiting_ratio: the same wait as a multiple of the venue's usual time to take
  an order at this hour (formulas.WAITING_USUAL_SPAN): ten minutes are long for a kitchen
  that takes orders in one, and usual for one that takes five.
- venue.accept_time_ratio: the median wait from placed to taken of the window's orders
  (a wait still going counts as long as it is so far), as a multiple of the venue's usual.
- venue.kitchen_slowdown_evidence: how strongly the waits of the orders placed since some
  moment in the last hour say the kitchen has become three times slower than its usual
  (formulas.KITCHEN_SLOWDOWN), as the log of a likelihood ratio: each order taken counts for
  how much likelier its wait is from a kitchen that slow, each still waiting for how much
  likelier it is to wait this long yet, against the venue's own waits at this hour over the
  past weeks (their typical time and spread, log-normal). A usual kitchen reaches x with a
  chance of about e^-x; one order nobody takes adds more every minute.
- venue.payment_failure_chance: the chance of at least this many failed payments among the
  window's settled ones, were the venue failing at its own usual rate or the other venues'
  rate in the same window, whichever is higher, in %.

The values come from orders.anomaly.formulas, fed live (orders.anomaly.live) or from a
period's rows (orders.anomaly.replay, for the preview and the benchmark).
"""

from __future__ import annotations

from dataclasses import replace

from monitoring.alerting.metrics import Metric, register
from orders.anomaly import live, replay
from orders.anomaly.formulas import ORDER_DISPERSION as ORDER_DISPERSION

SILENCE = "venue.orders_silence_chance"
VOLUME = "venue.order_volume_chance"
SURGE = "venue.order_surge_chance"
SCREENS = "venue.screens_online"
WAITING = "venue.oldest_waiting_minutes"
WAITING_RATIO = "venue.oldest_waiting_ratio"
ACCEPT_RATIO = "venue.accept_time_ratio"
KITCHEN = "venue.kitchen_slowdown_evidence"
PAYMENTS = "venue.payment_failure_chance"
METRICS = (
    SILENCE, VOLUME, SURGE, SCREENS, WAITING, WAITING_RATIO, ACCEPT_RATIO, KITCHEN, PAYMENTS,
)  # fmt: skip


def register_metrics() -> None:
    database = ("database",)
    for metric in (
        Metric(SILENCE, "Venue: chance of so long without an order", "%", live.silence,
               maximum=100, depends_on=database, per_venue=True),
        Metric(VOLUME, "Venue: chance of an order count this far from usual", "%", live.volume,
               maximum=100, depends_on=database, per_venue=True),
        Metric(SURGE, "Venue: chance of a usual evening looking like this surge", "%",
               live.surge, maximum=100, depends_on=database, per_venue=True),
        Metric(SCREENS, "Venue: kitchen screens online (venues that use them)", "screens",
               live.screens, depends_on=("database", "redis"), per_venue=True),
        Metric(WAITING, "Venue: oldest order nobody has taken", "minutes", live.oldest_waiting,
               depends_on=database, per_venue=True),
        Metric(WAITING_RATIO, "Venue: oldest order nobody has taken, against its usual wait",
               "× usual",  # noqa: RUF001 -- a multiplication sign, as printed
               live.oldest_waiting_ratio, depends_on=database, per_venue=True),
        Metric(ACCEPT_RATIO, "Venue: time to take an order, against its usual",
               "× usual",  # noqa: RUF001 -- a multiplication sign, as printed
               live.accept_ratio, depends_on=database, per_venue=True),
        Metric(KITCHEN, "Venue: evidence that the kitchen has slowed down",
               "log odds", live.kitchen_slowdown, depends_on=database, per_venue=True),
        Metric(PAYMENTS, "Venue: chance of this many failed payments", "%",
               live.payment_failures, maximum=100, depends_on=database, per_venue=True),
    ):  # fmt: skip
        register(replace(metric, scoped_history=replay.scoped_history(metric.key)))
