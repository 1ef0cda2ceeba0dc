"""Bootstrap intervals against direct computations, and the report's noise labels."""

import itertools

import numpy as np
import pytest
from sklearn.metrics import v_measure_score

from gecko_jax.recipes import distill_report
from gecko_jax.evaluation import bootstrap, intervals, report


def test_resamples_are_the_documented_draws():
    idx = bootstrap.resample_indices(7, 50, seed=3)
    np.testing.assert_array_equal(idx, np.random.default_rng(3).integers(0, 7, size=(50, 7)))


def test_mean_interval_matches_a_numpy_loop():
    x = np.random.default_rng(0).random(40)
    iv = bootstrap.bootstrap_mean(x, n_resamples=500, seed=11)
    rng = np.random.default_rng(11)
    draws = rng.integers(0, 40, size=(500, 40))
    reps = [x[row].mean() for row in draws]
    assert iv.estimate == pytest.approx(x.mean(), abs=1e-12)
    assert iv.low == pytest.approx(np.percentile(reps, 2.5), abs=1e-12)
    assert iv.high == pytest.approx(np.percentile(reps, 97.5), abs=1e-12)


def test_interval_matches_exact_enumeration():
    """x = [0, 1, 1, 1, 0, 1]: the exact bootstrap distribution of the mean is
    Binomial(6, 2/3) / 6 (enumerating all 6^6 resamples); its 2.5% and 97.5%
    quantiles are 2/6 and 6/6, far from any jump, so a large R must hit them."""
    x = np.array([0, 1, 1, 1, 0, 1], float)
    sums = np.array([x[list(r)].sum() for r in itertools.product(range(6), repeat=6)])
    cdf = np.array([(sums <= k).mean() for k in range(7)])
    exact_low = np.argmax(cdf >= 0.025) / 6
    exact_high = np.argmax(cdf >= 0.975) / 6
    assert (exact_low, exact_high) == (2 / 6, 1.0)
    iv = bootstrap.bootstrap_mean(x, n_resamples=20000, seed=0)
    assert (iv.low, iv.high) == pytest.approx((exact_low, exact_high))
    assert not iv.contains_zero


def test_paired_interval_matches_direct_and_generic_paths():
    rng = np.random.default_rng(1)
    a = rng.random(30)
    b = a + 0.01 * rng.standard_normal(30)
    iv = bootstrap.paired_bootstrap_mean(a, b, n_resamples=400, seed=5)
    draws = np.random.default_rng(5).integers(0, 30, size=(400, 30))
    reps = [b[r].mean() - a[r].mean() for r in draws]
    assert (iv.low, iv.high) == pytest.approx((np.percentile(reps, 2.5),
                                               np.percentile(reps, 97.5)), abs=1e-12)
    generic = bootstrap.paired_bootstrap_statistic(lambda i: a[i].mean(), lambda i: b[i].mean(),
                                                   30, n_resamples=400, seed=5)
    assert (generic.low, generic.high) == pytest.approx((iv.low, iv.high), abs=1e-12)


def test_clustering_interval_resamples_items_with_clusterings_fixed():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, 60)
    clusters = np.where(rng.random(60) < 0.8, labels, rng.integers(0, 3, 60))
    row = {"v_measure": v_measure_score(labels, clusters),
           "per_item": {"labels": labels.tolist(), "clusters": clusters.tolist()}}
    iv = intervals.score_interval("clustering", "v_measure", row, n_resamples=200, seed=4)
    draws = np.random.default_rng(4).integers(0, 60, size=(200, 60))
    reps = [v_measure_score(labels[r], clusters[r]) for r in draws]
    assert iv.estimate == pytest.approx(row["v_measure"])
    assert (iv.low, iv.high) == pytest.approx((np.percentile(reps, 2.5),
                                               np.percentile(reps, 97.5)), abs=1e-12)
    other = {"per_item": {"labels": labels[::-1].tolist(), "clusters": clusters.tolist()}}
    with pytest.raises(ValueError, match="different items"):
        intervals.change_interval("clustering", "v_measure", row, other)


def _row(metric, values, **extra):
    return {metric: float(np.mean(values)), "per_item": {metric: list(values), **extra}}


def test_report_labels_a_within_noise_change():
    rng = np.random.default_rng(0)
    correct_base = (rng.random(200) < 0.7).astype(float)
    flips = rng.random(200) < 0.02                       # a handful of items change
    correct_noise = np.where(flips, 1 - correct_base, correct_base)
    correct_better = np.maximum(correct_base, (rng.random(200) < 0.6).astype(float))
    ids = [f"q{i}" for i in range(200)]
    ndcg_base = rng.random(200)
    results = {
        distill_report.BASE: {"cls": {384: _row("accuracy", correct_base)},
                              "ret": {384: _row("ndcg_at_10", ndcg_base, ids=ids)}},
        distill_report.DISTILLED: {"cls": {384: _row("accuracy", correct_noise)},
                                   "ret": {384: _row("ndcg_at_10",
                                                     np.minimum(ndcg_base + 0.2, 1), ids=ids)}},
    }
    tasks = {"cls": {"type": "classification", "main_score": "accuracy"},
             "ret": {"type": "retrieval", "main_score": "ndcg_at_10"}}
    lines = distill_report.before_after_table(results, tasks)
    cls_line = next(line for line in lines if line.startswith("| cls "))
    ret_line = next(line for line in lines if line.startswith("| ret "))
    assert cls_line.endswith("| not significant |") and ret_line.endswith("| significant |")
    assert "[" in cls_line.split("|")[4]             # base score carries its interval
    # A clearly better model is significant; the plain report prints intervals too.
    results[distill_report.DISTILLED]["cls"][384] = _row("accuracy", correct_better)
    lines = distill_report.before_after_table(results, tasks)
    assert next(x for x in lines if x.startswith("| cls ")).endswith("| significant |")
    md = report.to_markdown(results, tasks, {m: {} for m in results})
    assert "95% interval" in md and " [" in md
