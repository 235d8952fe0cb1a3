"""Tail probabilities of counts: how surprising is it to see k events when m were expected?

Orders arrive as a Poisson process whose rate itself varies from one evening to the next
(a rainy Tuesday is quieter than the average Tuesday), so a count is modelled as negative
binomial: Poisson with a gamma-distributed mean of `mean`, and `dispersion` k (the larger,
the closer to Poisson; its variance is mean + mean²/k). Payments that fail are binomial.

Each is summed term by term from the probability of 0 with the ratio of successive terms,
so it costs O(count) and needs no special functions.
"""

from __future__ import annotations

import math


def nb_zero(mean: float, dispersion: float) -> float:
    """P(X = 0) for a negative binomial count of that mean."""
    if mean <= 0:
        return 1.0
    return math.exp(-dispersion * math.log1p(mean / dispersion))


def nb_cdf(count: int, mean: float, dispersion: float) -> float:
    """P(X <= count)."""
    if count < 0:
        return 0.0
    if mean <= 0:
        return 1.0
    ratio = mean / (mean + dispersion)
    term = nb_zero(mean, dispersion)
    total = term
    for i in range(count):
        term *= (i + dispersion) / (i + 1) * ratio
        total += term
    return min(1.0, total)


def nb_sf(count: int, mean: float, dispersion: float) -> float:
    """P(X >= count)."""
    return max(0.0, 1.0 - nb_cdf(count - 1, mean, dispersion))


def nb_two_sided(count: int, mean: float, dispersion: float) -> float:
    """The chance of a count at least this far from the mean on its side, doubled (max 1)."""
    if count <= mean:
        return min(1.0, 2.0 * nb_cdf(count, mean, dispersion))
    return min(1.0, 2.0 * nb_sf(count, mean, dispersion))


def binomial_sf(successes: int, trials: int, p: float) -> float:
    """P(X >= successes) for X ~ Binomial(trials, p)."""
    if successes <= 0:
        return 1.0
    if successes > trials:
        return 0.0
    if p <= 0:
        return 0.0
    if p >= 1:
        return 1.0
    # P(X <= successes - 1), summed upwards from P(X = 0) in logs to survive large trials.
    log_term = trials * math.log1p(-p)
    odds = p / (1.0 - p)
    total = 0.0
    for i in range(successes):
        total += math.exp(log_term)
        log_term += math.log((trials - i) / (i + 1) * odds)
    return max(0.0, 1.0 - total)
