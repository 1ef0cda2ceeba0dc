"""Metrics against pytrec_eval (trec_eval's C code), hand-computed cases and scipy/sklearn."""

import math

import numpy as np
import pytest

from gecko_jax import metrics

pytrec_eval = pytest.importorskip("pytrec_eval")  # in the eval/dev extra


def test_hand_computed_case():
    qrels = {"q1": {"d1": 1, "d3": 2}, "q2": {"d9": 1}}
    run = {"q1": {"d1": 0.2, "d2": 0.9, "d3": 0.5, "d4": 0.1},  # ranking d2 d3 d1 d4
           "q2": {"d1": 0.3, "d2": 0.2}}                          # d9 not retrieved
    got = metrics.retrieval_scores(qrels, run, k_values=(1, 3))
    # q1: grades by rank [0, 2, 1]; ideal [2, 1].
    dcg3 = 2 / math.log2(3) + 1 / math.log2(4)
    idcg3 = 2 / math.log2(2) + 1 / math.log2(3)
    assert got["ndcg_at_3"] == pytest.approx((dcg3 / idcg3 + 0.0) / 2)
    assert got["ndcg_at_1"] == 0.0
    assert got["recall_at_3"] == pytest.approx((1.0 + 0.0) / 2)
    assert got["mrr_at_3"] == pytest.approx((1 / 2 + 0) / 2)
    # MAP@3 for q1: precision at rank 2 (1/2) and rank 3 (2/3), over 2 relevant.
    assert got["map_at_3"] == pytest.approx(((1 / 2 + 2 / 3) / 2 + 0) / 2)
    assert got["num_queries"] == 2


def test_ties_broken_by_doc_id_descending():
    assert metrics.rank_documents({"a": 1.0, "c": 1.0, "b": 2.0}) == ["b", "c", "a"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_pytrec_eval_on_random_runs(seed):
    rng = np.random.default_rng(seed)
    docs = [f"d{i}" for i in range(60)]
    qrels, run = {}, {}
    for q in range(40):
        judged = rng.choice(60, size=rng.integers(1, 8), replace=False)
        qrels[f"q{q}"] = {docs[j]: int(rng.integers(0, 3)) for j in judged}
        if not any(qrels[f"q{q}"].values()):
            qrels[f"q{q}"][docs[judged[0]]] = 1
        retrieved = rng.choice(60, size=rng.integers(5, 60), replace=False)
        # Rounded scores create ties, checking the tie-break too.
        run[f"q{q}"] = {docs[j]: float(np.round(rng.random(), 1)) for j in retrieved}
    ks = (1, 3, 5, 10, 20)
    ours = metrics.retrieval_scores(qrels, run, k_values=ks)
    measures = {"ndcg_cut." + ",".join(map(str, ks)), "recall." + ",".join(map(str, ks)),
                "map_cut." + ",".join(map(str, ks)), "recip_rank"}
    ref = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)
    for k in ks:
        for ours_name, ref_name in (("ndcg", "ndcg_cut"), ("recall", "recall"), ("map", "map_cut")):
            want = np.mean([r[f"{ref_name}_{k}"] for r in ref.values()])
            assert ours[f"{ours_name}_at_{k}"] == pytest.approx(want, abs=1e-9), (ours_name, k)
    # MRR without cutoff = trec_eval's recip_rank.
    full = metrics.retrieval_scores(qrels, run, k_values=(1000,))
    assert full["mrr_at_1000"] == pytest.approx(np.mean([r["recip_rank"] for r in ref.values()]))


def test_run_from_top_k_skips_padding():
    run = metrics.run_from_top_k(["q"], ["a", "b", "c"], [[0.9, 0.1, -np.inf]], [[2, 0, -1]])
    assert run == {"q": {"c": pytest.approx(0.9), "a": pytest.approx(0.1)}}


def test_classification_and_clustering_on_separable_data():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 8)) * 5
    y = np.repeat(np.arange(3), 40)
    x = centers[y] + rng.normal(size=(120, 8))
    cls = metrics.classification_scores(x[::2], y[::2], x[1::2], y[1::2])
    assert cls["accuracy"] == 1.0 and cls["f1"] == 1.0
    assert metrics.clustering_scores(x, y)["v_measure"] == pytest.approx(1.0)
    noise = rng.normal(size=(120, 8))
    assert metrics.clustering_scores(noise, y)["v_measure"] < 0.2


def test_sts_spearman_against_scipy():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(30, 5)), rng.normal(size=(30, 5))
    gold = rng.random(30)
    cos = [float(u @ v / np.linalg.norm(u) / np.linalg.norm(v)) for u, v in zip(a, b)]
    assert metrics.sts_spearman(a, b, gold)["cosine_spearman"] == pytest.approx(
        spearmanr(cos, gold).statistic)
    # Gold scores that are a monotone function of the cosine: correlation 1.
    assert metrics.sts_spearman(a, b, np.exp(cos))["cosine_spearman"] == pytest.approx(1.0)


def test_v_measure_equals_sklearn_exactly():
    from sklearn.metrics import v_measure_score

    rng = np.random.default_rng(0)
    cases = [([1], [2]), ([0, 0, 0], [1, 1, 1]), ([0, 1, 2], [0, 0, 0]), ([0, 0], [0, 1]),
             (["a", "b", "a", "c"], [3, 3, 1, 1])]
    for _ in range(300):
        n, c, k = (int(v) for v in rng.integers(1, [200, 8, 8]))
        cases.append((rng.integers(0, c, n), rng.integers(0, k, n)))
    for labels, clusters in cases:
        assert metrics.v_measure(labels, clusters) == float(v_measure_score(labels, clusters))
    with pytest.raises(ValueError, match="length"):
        metrics.v_measure([0, 1], [0])
