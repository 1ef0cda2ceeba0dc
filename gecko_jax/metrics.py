"""Evaluation metrics as pure functions of arrays and id maps.

A bottom module (numpy; sklearn and scipy imported where used): evaluation/ and
FRet's re-ranking evaluation (fret/rerank_eval.py) both score with it.

Retrieval metrics follow trec_eval's definitions (the ones pytrec_eval, BEIR
and MTEB report), so our numbers and the mteb route's agree:
  - a document is relevant when its qrels grade is > 0;
  - ranking: score descending, ties broken by document id descending;
  - nDCG@k: gain = grade, discount 1 / log2(rank + 1), normalised by the ideal
    ordering of all judged documents of the query;
  - recall@k: relevant retrieved in the top k / all relevant;
  - MRR@k: 1 / rank of the first relevant document in the top k (0 if none);
  - MAP@k (trec_eval map_cut): sum of precision at each relevant rank <= k,
    divided by the number of relevant documents.
Every metric is averaged over the queries that have results and at least
one judged document.

Classification (logistic regression on embeddings) and clustering
(mini-batch k-means, V-measure) use MTEB's estimator settings for the same
reason. STS: Spearman correlation of cosine similarity with gold scores.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

Qrels = Mapping[str, Mapping[str, int]]  # query id -> doc id -> grade
Run = Mapping[str, Mapping[str, float]]  # query id -> doc id -> score

DEFAULT_K = (1, 3, 5, 10, 100)


def rank_documents(doc_scores: Mapping[str, float]) -> list[str]:
    """Doc ids by score descending, ties by doc id descending (as trec_eval)."""
    return [d for d, _ in sorted(doc_scores.items(), key=lambda x: (x[1], x[0]), reverse=True)]


def ndcg_at_k(grades_ranked: Sequence[float], ideal_grades: Sequence[float], k: int) -> float:
    """nDCG@k of one ranking.

    Args:
      grades_ranked: grade of the retrieved document at each rank (0 if unjudged).
      ideal_grades: grades of all judged documents of the query (any order).
      k: cutoff.
    """
    gains = np.asarray(grades_ranked[:k], np.float64)
    discounts = 1.0 / np.log2(np.arange(2, len(gains) + 2))
    dcg = float(np.sum(np.maximum(gains, 0) * discounts))
    ideal = np.sort(np.asarray([g for g in ideal_grades if g > 0], np.float64))[::-1][:k]
    idcg = float(np.sum(ideal / np.log2(np.arange(2, len(ideal) + 2))))
    return dcg / idcg if idcg > 0 else 0.0


def retrieval_query_scores(qrels: Qrels, run: Run, k_values: Sequence[int] = DEFAULT_K
                           ) -> dict[str, dict[str, float]]:
    """nDCG@k, recall@k, MRR@k, MAP@k of each query (the bootstrap resamples these).

    Returns:
      {query id: {"ndcg_at_10": ..., ...}} for the queries of `run` that have
      at least one judged document, in run order.
    """
    out = {}
    for qid, doc_scores in run.items():
        judged = qrels.get(qid)
        if not judged:
            continue
        relevant = {d for d, g in judged.items() if g > 0}
        ranked = rank_documents(doc_scores)
        grades = [judged.get(d, 0) for d in ranked]
        hits = np.asarray([d in relevant for d in ranked], bool)
        row = {}
        for k in k_values:
            top = hits[:k]
            row[f"ndcg_at_{k}"] = ndcg_at_k(grades, list(judged.values()), k)
            row[f"recall_at_{k}"] = float(top.sum()) / len(relevant) if relevant else 0.0
            first = np.flatnonzero(top)
            row[f"mrr_at_{k}"] = 1.0 / (first[0] + 1) if relevant and len(first) else 0.0
            precision_at_hits = np.cumsum(top)[top] / (np.flatnonzero(top) + 1)
            row[f"map_at_{k}"] = (float(precision_at_hits.sum()) / len(relevant)
                                  if relevant else 0.0)
        out[qid] = row
    return out


def retrieval_scores(qrels: Qrels, run: Run, k_values: Sequence[int] = DEFAULT_K
                     ) -> dict[str, float]:
    """Mean nDCG@k, recall@k, MRR@k, MAP@k over queries.

    Args:
      qrels: query id -> {doc id: grade}.
      run: query id -> {doc id: score} (any number of scored docs per query).
      k_values: cutoffs.
    Returns:
      {"ndcg_at_10": ..., "recall_at_10": ..., "mrr_at_10": ..., "map_at_10": ...}
      for each k, plus "num_queries".
    """
    per_query = retrieval_query_scores(qrels, run, k_values)
    names = [f"{m}_at_{k}" for m in ("ndcg", "recall", "mrr", "map") for k in k_values]
    n = len(per_query)
    out = {name: (sum(row[name] for row in per_query.values()) / n if n else 0.0)
           for name in names}
    out["num_queries"] = n
    return out


def run_from_top_k(query_ids: Sequence[str], doc_ids: Sequence[str], scores_qk,
                   indices_qk) -> dict[str, dict[str, float]]:
    """A trec-style run from exact top-k output (gecko_jax.retrieval.TopK)."""
    run = {}
    for qid, s_row, i_row in zip(query_ids, np.asarray(scores_qk), np.asarray(indices_qk)):
        run[qid] = {doc_ids[i]: float(s) for s, i in zip(s_row, i_row) if i >= 0}
    return run


# ----------------------------------------------------------------------------
# Classification, clustering, STS.

def classification_predictions(train_x, train_y, test_x, seed: int = 42,
                               max_iter: int = 100) -> np.ndarray:
    """Logistic regression on embeddings (MTEB's settings): predicted label [N_test].

    Args:
      train_x: [N_train, d]; train_y: [N_train] labels; test_x: [N_test, d].
    """
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(max_iter=max_iter, random_state=seed)
    clf.fit(np.asarray(train_x), np.asarray(train_y))
    return clf.predict(np.asarray(test_x))


def classification_scores(train_x, train_y, test_x, test_y, seed: int = 42,
                          max_iter: int = 100) -> dict[str, float]:
    """Accuracy and macro F1 of `classification_predictions`.

    Args:
      train_x: [N_train, d]; train_y: [N_train] labels; test_x: [N_test, d];
      test_y: [N_test] labels.
    """
    pred = classification_predictions(train_x, train_y, test_x, seed, max_iter)
    return prediction_scores(test_y, pred)


def prediction_scores(test_y, pred) -> dict[str, float]:
    """Accuracy and macro F1 of predicted labels [N] against gold labels [N]."""
    from sklearn.metrics import accuracy_score, f1_score

    return {"accuracy": float(accuracy_score(test_y, pred)),
            "f1": float(f1_score(test_y, pred, average="macro"))}


def clustering_assignments(x, k: int, seed: int = 42, batch_size: int = 500) -> np.ndarray:
    """Mini-batch k-means with k clusters (MTEB's settings): cluster of each row [N].

    Args:
      x: [N, d] embeddings.
    """
    from sklearn.cluster import MiniBatchKMeans

    model = MiniBatchKMeans(n_clusters=k, batch_size=batch_size, n_init="auto",
                            random_state=seed)
    model.fit(np.asarray(x))
    return model.labels_


def clustering_scores(x, labels, seed: int = 42, batch_size: int = 500) -> dict[str, float]:
    """V-measure of `clustering_assignments` with k = number of labels.

    Args:
      x: [N, d] embeddings; labels: [N] gold classes.
    """
    clusters = clustering_assignments(x, len(set(labels)), seed, batch_size)
    return {"v_measure": v_measure(labels, clusters)}


def _entropy(counts: np.ndarray) -> float:
    """Entropy (nats) of a labelling given its class counts [C] (all > 0)."""
    if counts.size == 1:
        return 0.0
    pi = counts.astype(np.float64)
    pi_sum = np.sum(pi)
    return float(-np.sum((pi / pi_sum) * (np.log(pi) - math.log(pi_sum))))


def v_measure(labels, clusters) -> float:
    """V-measure of a clustering [N] against gold labels [N].

    sklearn's v_measure_score, operation for operation (the same floats), without its
    input validation: the bootstrap (evaluation/intervals.py) calls this a thousand
    times per interval, where validation cost ~40x the arithmetic.
    """
    labels, clusters = np.asarray(labels), np.asarray(clusters)
    if len(labels) != len(clusters):
        raise ValueError(f"labels and clusters differ in length: {len(labels)} vs {len(clusters)}")
    if len(labels) == 0:
        return 1.0
    _, class_idx = np.unique(labels, return_inverse=True)
    _, cluster_idx = np.unique(clusters, return_inverse=True)
    n_classes, n_clusters = int(class_idx.max()) + 1, int(cluster_idx.max()) + 1
    # contingency[c, k]: items of class c in cluster k (int64)
    contingency = np.bincount(class_idx.ravel() * n_clusters + cluster_idx.ravel(),
                              minlength=n_classes * n_clusters).reshape(n_classes, n_clusters)
    pi, pj = contingency.sum(axis=1), contingency.sum(axis=0)
    entropy_c, entropy_k = _entropy(pi), _entropy(pj)
    if n_classes == 1 or n_clusters == 1:
        mi = 0.0
    else:
        nzx, nzy = np.nonzero(contingency)
        nz_val = contingency[nzx, nzy]
        total = contingency.sum()
        contingency_nm = nz_val / total
        outer = pi.take(nzx).astype(np.int64) * pj.take(nzy).astype(np.int64)
        log_outer = -np.log(outer) + math.log(pi.sum()) + math.log(pj.sum())
        terms = (contingency_nm * (np.log(nz_val) - math.log(total))
                 + contingency_nm * log_outer)
        terms = np.where(np.abs(terms) < np.finfo(terms.dtype).eps, 0.0, terms)
        mi = float(np.clip(terms.sum(), 0.0, None))
    homogeneity = mi / entropy_c if entropy_c else 1.0
    completeness = mi / entropy_k if entropy_k else 1.0
    if homogeneity + completeness == 0.0:
        return 0.0
    return float(2 * homogeneity * completeness / (homogeneity + completeness))


def sts_spearman(x1, x2, gold) -> dict[str, float]:
    """Spearman correlation of pairwise cosine similarity with gold scores.

    Args:
      x1, x2: [N, d] embeddings of the two sides; gold: [N] human scores.
    """
    from scipy.stats import spearmanr

    x1 = np.asarray(x1, np.float64)
    x2 = np.asarray(x2, np.float64)
    cos = np.sum(x1 * x2, axis=1) / (np.linalg.norm(x1, axis=1) * np.linalg.norm(x2, axis=1))
    return {"cosine_spearman": float(spearmanr(cos, gold).statistic)}
