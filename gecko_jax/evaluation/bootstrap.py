"""Seeded bootstrap confidence intervals: pure functions of arrays.

An evaluation score is a statistic of a sample of items (queries, test
items, clustered items). Resampling the items with replacement R times and
recomputing the statistic gives its sampling distribution; the percentile
interval is the [2.5%, 97.5%] quantiles of the R replicates (Efron &
Tibshirani 1993, ch. 13). A base-vs-distilled change uses the SAME resamples
for both models (paired bootstrap), so the item-to-item variation they share
cancels; a change whose interval contains 0 is not significant.

Every function takes a seed: the same seed draws the same resamples, so two
models scored on the same items are paired exactly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

N_RESAMPLES = 1000
LEVEL = 0.95
SEED = 0


@dataclasses.dataclass(frozen=True)
class Interval:
    """A point estimate (the statistic on all items) and its percentile interval."""

    estimate: float
    low: float
    high: float
    level: float = LEVEL

    @property
    def contains_zero(self) -> bool:
        return self.low <= 0.0 <= self.high

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def resample_indices(n: int, n_resamples: int = N_RESAMPLES, seed: int = SEED) -> np.ndarray:
    """Bootstrap resamples of n items: int [R, n], row r drawn with replacement.

    Drawn as default_rng(seed).integers(0, n, size=(R, n)).
    """
    if n < 1:
        raise ValueError("the bootstrap needs at least one item")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be positive, got {n_resamples}")
    return np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))


def percentile_interval(estimate: float, replicates: np.ndarray, level: float = LEVEL
                        ) -> Interval:
    """The [(1-level)/2, (1+level)/2] quantiles (numpy's linear rule) of replicates [R]."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(np.asarray(replicates, np.float64), [alpha, 1.0 - alpha])
    return Interval(float(estimate), float(low), float(high), level)


def bootstrap_statistic(statistic: Callable[[np.ndarray], float], n: int,
                        n_resamples: int = N_RESAMPLES, seed: int = SEED,
                        level: float = LEVEL) -> Interval:
    """Interval of any statistic of n items.

    Args:
      statistic: item indices int [m] -> float (called with arange(n) for the
        estimate and with each resample's indices for the replicates).
    """
    idx = resample_indices(n, n_resamples, seed)
    replicates = np.array([statistic(row) for row in idx], np.float64)
    return percentile_interval(statistic(np.arange(n)), replicates, level)


def bootstrap_mean(values: np.ndarray, n_resamples: int = N_RESAMPLES, seed: int = SEED,
                   level: float = LEVEL) -> Interval:
    """Interval of the mean of per-item values [N] (e.g. nDCG@10 per query)."""
    x = np.asarray(values, np.float64)
    idx = resample_indices(len(x), n_resamples, seed)
    return percentile_interval(x.mean(), x[idx].mean(axis=1), level)


def paired_bootstrap_statistic(statistic_a: Callable[[np.ndarray], float],
                               statistic_b: Callable[[np.ndarray], float], n: int,
                               n_resamples: int = N_RESAMPLES, seed: int = SEED,
                               level: float = LEVEL) -> Interval:
    """Interval of statistic_b - statistic_a over the same n items, same resamples."""
    idx = resample_indices(n, n_resamples, seed)
    replicates = np.array([statistic_b(row) - statistic_a(row) for row in idx], np.float64)
    full = np.arange(n)
    return percentile_interval(statistic_b(full) - statistic_a(full), replicates, level)


def paired_bootstrap_mean(values_a: np.ndarray, values_b: np.ndarray,
                          n_resamples: int = N_RESAMPLES, seed: int = SEED,
                          level: float = LEVEL) -> Interval:
    """Interval of mean(values_b) - mean(values_a), per-item values [N] of the same items."""
    a, b = np.asarray(values_a, np.float64), np.asarray(values_b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values differ in shape: {a.shape} vs {b.shape}")
    d = b - a
    idx = resample_indices(len(d), n_resamples, seed)
    return percentile_interval(d.mean(), d[idx].mean(axis=1), level)


def significance(change: Interval) -> str:
    """'significant' unless the change's interval contains 0 ('not significant')."""
    return "not significant" if change.contains_zero else "significant"
