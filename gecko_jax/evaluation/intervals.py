"""Bootstrap intervals of reported scores and of changes between two models.

Reads the per-item data each local task stores beside its scores
(`local_tasks.PER_ITEM`) and resamples the unit the score averages over:

  retrieval        queries (per-query nDCG@10 etc.; the score is their mean)
  classification   test items (correct or not; accuracy is their mean). The
                   fitted classifier is held fixed: the interval is the
                   test-sample noise, not the classifier's.
  clustering       clustered items: resample items, recompute the V-measure
                   of (gold label, cluster) on the resample with each model's
                   clustering held fixed. This measures the noise of the
                   evaluation sample; the k-means seed's own variance is not
                   included (the score uses one fixed seed).

A change (model b - model a) is bootstrapped on the same resamples of the same
items (paired); the items must match (same ids / labels in the same order).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from gecko_jax.evaluation import bootstrap
from gecko_jax.evaluation.bootstrap import Interval

PER_ITEM = "per_item"       # the key local_tasks stores per-item data under


def _row(by_dim: Mapping, dim: int) -> Mapping | None:
    return by_dim.get(dim, by_dim.get(str(dim)))


def _v_measure_stat(items: Mapping):
    from gecko_jax.metrics import v_measure

    labels = np.asarray(items["labels"])
    clusters = np.asarray(items["clusters"])
    return (lambda idx: v_measure(labels[idx], clusters[idx])), len(labels)


def score_interval(task_type: str, metric: str, row: Mapping | None,
                   n_resamples: int = bootstrap.N_RESAMPLES, seed: int = bootstrap.SEED
                   ) -> Interval | None:
    """Interval of one reported score; None when the row holds no per-item data for it."""
    items = (row or {}).get(PER_ITEM)
    if not items:
        return None
    if task_type == "clustering" and metric == "v_measure" and "labels" in items:
        stat, n = _v_measure_stat(items)
        return bootstrap.bootstrap_statistic(stat, n, n_resamples, seed)
    if metric in items and len(items[metric]):
        return bootstrap.bootstrap_mean(items[metric], n_resamples, seed)
    return None


def change_interval(task_type: str, metric: str, row_a: Mapping | None, row_b: Mapping | None,
                    n_resamples: int = bootstrap.N_RESAMPLES, seed: int = bootstrap.SEED
                    ) -> Interval | None:
    """Paired interval of score(b) - score(a); None without per-item data for both.

    Raises ValueError when the two rows scored different items.
    """
    a, b = (row_a or {}).get(PER_ITEM), (row_b or {}).get(PER_ITEM)
    if not a or not b:
        return None
    for key in ("ids", "labels"):
        if key in a and key in b and list(a[key]) != list(b[key]):
            raise ValueError(f"paired bootstrap: the two models scored different items ({key})")
    if task_type == "clustering" and metric == "v_measure" and "labels" in a and "labels" in b:
        stat_a, n = _v_measure_stat(a)
        stat_b, _ = _v_measure_stat(b)
        return bootstrap.paired_bootstrap_statistic(stat_a, stat_b, n, n_resamples, seed)
    if metric in a and metric in b:
        return bootstrap.paired_bootstrap_mean(a[metric], b[metric], n_resamples, seed)
    return None


def main_score_intervals(results: Mapping, tasks: Mapping[str, Mapping],
                         n_resamples: int = bootstrap.N_RESAMPLES, seed: int = bootstrap.SEED
                         ) -> dict[str, dict[str, dict[int, Interval]]]:
    """{model: {task: {dim: Interval}}} of each main score that has per-item data."""
    out: dict = {}
    for model, by_task in results.items():
        for task, info in tasks.items():
            for dim, row in by_task.get(task, {}).items():
                iv = score_interval(str(info.get("type", "")), info["main_score"], row,
                                    n_resamples, seed)
                if iv is not None:
                    out.setdefault(model, {}).setdefault(task, {})[int(dim)] = iv
    return out


def strip_per_item(results: Mapping) -> dict:
    """results without the per-item data (for compact report tables / JSON)."""
    return {m: {t: {d: {k: v for k, v in row.items() if k != PER_ITEM}
                    for d, row in by_dim.items()} for t, by_dim in by_task.items()}
            for m, by_task in results.items()}
