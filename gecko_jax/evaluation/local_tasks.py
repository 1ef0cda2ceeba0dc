"""Evaluation tasks on real data that ships offline, plus any BEIR-format folder.

Tasks (names used by `gecko eval --tasks`):
  bbc_retrieval       BBC News headline -> article body (deduplicated articles;
                      one relevant document per query); main score nDCG@10.
  bbc_classification  5-way topic of the article body; logistic regression on
                      embeddings, train/test = 4/5 and 1/5 of each category;
                      main score accuracy.
  bbc_clustering      mini-batch k-means of article bodies into 5 clusters;
                      main score V-measure.
  beir:<folder>       retrieval over corpus.jsonl, queries.jsonl, qrels/<split>.tsv.

Each task carries the Gecko task string its query side is encoded with
(`task: {task} | query: {text}`, GECKO.md appendix B); documents of retrieval
tasks are encoded as `title: {title} | text: {text}`. Symmetric tasks
(classification, clustering) encode every input on the query side, as Gecko
does. Format "raw" encodes the bare texts (base models such as MiniLM).

Matryoshka: inputs are encoded once at full size; each requested dim scores
the first `dim` coordinates renormalised to unit length.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
from collections.abc import Callable, Sequence

import numpy as np

from gecko_jax.encode import truncate_dim
from gecko_jax import unified_format
from gecko_jax.data.beir import RetrievalData, load_beir, subset_retrieval
from gecko_jax.errors import GeckoError
from gecko_jax import metrics
from gecko_jax.data import splits
from gecko_jax.evaluation.intervals import PER_ITEM

RETRIEVAL_K = (1, 3, 5, 10, 100)
SEED = 42
# Each dim's scores also hold, under PER_ITEM, what the bootstrap resamples
# (evaluation/intervals.py): per-query metrics, per-test-item correctness, or
# the gold labels and cluster of each clustered item.
PER_QUERY_METRICS = ("ndcg_at_10", "recall_at_10", "mrr_at_10")


# ----------------------------------------------------------------------------
# Encoding helpers.

class CachedEncoder:
    """A gecko_jax Encoder whose embeddings are memoised by exact formatted text.

    Tasks that share inputs (the BBC bodies are documents for retrieval and
    inputs for classification and clustering in raw format) encode them once;
    the mteb route uses the same object, so both routes see identical vectors.

    Args:
      encoder: a gecko_jax.encode.Encoder (anything with `encode(texts)`,
        `meta.prompt_format`, `meta.default_task`, `embedding_dim`).
      format: "gecko" or "raw"; None uses the model folder's prompt format.
    """

    def __init__(self, encoder, format: str | None = None):
        self.encoder = encoder
        self.format = format or encoder.meta.prompt_format
        if self.format not in ("gecko", "raw"):
            raise GeckoError(f"unknown prompt format {self.format!r} (gecko or raw)")
        self.embedding_dim = encoder.embedding_dim
        self._cache: dict[str, np.ndarray] = {}

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Formatted texts -> float32 [N, embedding_dim]."""
        texts = list(texts)
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            for text, row in zip(missing, self.encoder.encode(missing)):
                self._cache[text] = row
        if not texts:
            return np.zeros((0, self.embedding_dim), np.float32)
        return np.stack([self._cache[t] for t in texts])

    def encode_queries(self, texts: Sequence[str], task: str | None = None) -> np.ndarray:
        return self.encode(unified_format.format_queries(
            texts, task or self.encoder.meta.default_task, self.format))

    def encode_documents(self, texts: Sequence[str], titles=None) -> np.ndarray:
        return self.encode(unified_format.format_documents(texts, titles, self.format))


# ----------------------------------------------------------------------------
# Task data.

@dataclasses.dataclass
class ClassificationData:
    train_texts: list[str]
    train_labels: list[str]
    test_texts: list[str]
    test_labels: list[str]


@dataclasses.dataclass
class ClusteringData:
    texts: list[str]
    labels: list[str]


@dataclasses.dataclass
class LocalTask:
    """A named evaluation task over data read by `loader(limit)`.

    Attributes:
      name: task name on the command line.
      type: "retrieval", "classification" or "clustering".
      gecko_task: the task string of the query side (`task: {gecko_task} | query: ...`).
      main_score: the headline metric in reports.
      description: one line for reports and for the mteb task metadata.
      loader: limit -> RetrievalData | ClassificationData | ClusteringData.
        `limit` keeps an evenly spaced subset of that many items (tests).
    """

    name: str
    type: str
    gecko_task: str
    main_score: str
    description: str
    loader: Callable[[int | None], object]

    def load(self, limit: int | None = None):
        return self.loader(limit)

    def evaluate(self, encoder: CachedEncoder, dims: Sequence[int] | None = None,
                 limit: int | None = None, data=None) -> dict[int, dict[str, float]]:
        """Scores per Matryoshka dim: {dim: {metric: value}}."""
        data = data if data is not None else self.load(limit)
        dims = list(dims or [encoder.embedding_dim])
        if self.type == "retrieval":
            return evaluate_retrieval(data, encoder, self.gecko_task, dims)
        if self.type == "classification":
            return evaluate_classification(data, encoder, self.gecko_task, dims)
        if self.type == "clustering":
            return evaluate_clustering(data, encoder, self.gecko_task, dims)
        raise GeckoError(f"task {self.name}: unknown type {self.type!r}")


# ----------------------------------------------------------------------------
# Evaluation loops (encode once, score at every dim).

def evaluate_retrieval(data: RetrievalData, encoder: CachedEncoder, gecko_task: str,
                       dims: Sequence[int], k_values: Sequence[int] = RETRIEVAL_K
                       ) -> dict[int, dict[str, float]]:
    from gecko_jax.retrieval import ExactIndex

    qids, dids = list(data.queries), list(data.corpus)
    q_full = encoder.encode_queries([data.queries[q] for q in qids], task=gecko_task)
    d_full = encoder.encode_documents([data.corpus[d][1] for d in dids],
                                      titles=[data.corpus[d][0] or None for d in dids])
    out = {}
    for dim in dims:
        index = ExactIndex(truncate_dim(d_full, dim))
        top = index.search(truncate_dim(q_full, dim), max(k_values))
        run = metrics.run_from_top_k(qids, dids, top.scores, top.indices)
        out[dim] = metrics.retrieval_scores(data.qrels, run, k_values)
        per_query = metrics.retrieval_query_scores(data.qrels, run, k_values)
        out[dim][PER_ITEM] = {"ids": list(per_query), **{
            m: [row[m] for row in per_query.values()] for m in PER_QUERY_METRICS
            if any(m in row for row in per_query.values())}}
    return out


def mteb_train_order(n: int, seed: int = SEED) -> list[int]:
    """The order MTEB's classification feeds training rows to the classifier.

    MTEB shuffles the train indices with RandomState(seed) before fitting; the
    same order here makes both routes fit identical models.
    """
    idx = list(range(n))
    np.random.RandomState(seed).shuffle(idx)
    return idx


def evaluate_classification(data: ClassificationData, encoder: CachedEncoder,
                            gecko_task: str, dims: Sequence[int]
                            ) -> dict[int, dict[str, float]]:
    if not data.train_texts or not data.test_texts or len(set(data.train_labels)) < 2:
        raise GeckoError(f"classification needs train and test items of 2+ classes; got "
                         f"{len(data.train_texts)} train, {len(data.test_texts)} test")
    order = mteb_train_order(len(data.train_texts))
    train_texts = [data.train_texts[i] for i in order]
    train_labels = [data.train_labels[i] for i in order]
    train_full = encoder.encode_queries(train_texts, task=gecko_task)
    test_full = encoder.encode_queries(data.test_texts, task=gecko_task)
    out = {}
    for dim in dims:
        pred = metrics.classification_predictions(
            truncate_dim(train_full, dim), train_labels, truncate_dim(test_full, dim), seed=SEED)
        out[dim] = metrics.prediction_scores(data.test_labels, pred)
        out[dim][PER_ITEM] = {"accuracy": [float(p == y) for p, y in zip(pred, data.test_labels)]}
    return out


def evaluate_clustering(data: ClusteringData, encoder: CachedEncoder, gecko_task: str,
                        dims: Sequence[int]) -> dict[int, dict[str, float]]:
    full = encoder.encode_queries(data.texts, task=gecko_task)
    out = {}
    for dim in dims:
        clusters = metrics.clustering_assignments(truncate_dim(full, dim), len(set(data.labels)),
                                                  seed=SEED)
        out[dim] = {"v_measure": metrics.v_measure(data.labels, clusters)}
        out[dim][PER_ITEM] = {"labels": list(data.labels), "clusters": clusters.tolist()}
    return out


# ----------------------------------------------------------------------------
# BBC News.

def _bbc_split(task: str, limit: int | None):
    """(articles scored, articles fitted on) of a BBC task: data/splits.py decides."""
    from gecko_jax.data.sources import read_bbc_news

    articles = read_bbc_news(dedup=True)
    by_id = {a.id: a for a in articles}
    split = splits.bbc_task_split(task, articles, limit)
    return [by_id[i] for i in split.scored], [by_id[i] for i in split.fit]


def _headline_to_body(task: str, limit: int | None) -> RetrievalData:
    """Headline -> body over the articles `task` scores (data/splits.py)."""
    articles, _ = _bbc_split(task, limit)
    return RetrievalData(
        queries={f"q:{a.id}": a.headline for a in articles},
        corpus={a.id: ("", a.body) for a in articles},
        qrels={f"q:{a.id}": {a.id: 1} for a in articles})


def _topic_clusters(task: str, limit: int | None) -> ClusteringData:
    """The bodies of the articles `task` scores, into their 5 topics."""
    articles, _ = _bbc_split(task, limit)
    return ClusteringData([a.body for a in articles], [a.category for a in articles])


def load_bbc_retrieval(limit: int | None = None) -> RetrievalData:
    """Headline -> body over the held-out articles."""
    return _headline_to_body("bbc_retrieval", limit)


def load_bbc_classification(limit: int | None = None) -> ClassificationData:
    """Test items: held-out articles; classifier fitted on training-pool articles
    (data/splits.py), `limit` of each."""
    test, train = _bbc_split("bbc_classification", limit)
    return ClassificationData([a.body for a in train], [a.category for a in train],
                              [a.body for a in test], [a.category for a in test])


def load_bbc_clustering(limit: int | None = None) -> ClusteringData:
    """The held-out articles into 5 topic clusters."""
    return _topic_clusters("bbc_clustering", limit)


def load_bbc_val_retrieval(limit: int | None = None) -> RetrievalData:
    """Headline -> body over the validation pool (carved from the training pool)."""
    return _headline_to_body("bbc_val_retrieval", limit)


def load_bbc_val_clustering(limit: int | None = None) -> ClusteringData:
    """The validation pool into 5 topic clusters."""
    return _topic_clusters("bbc_val_clustering", limit)


# ----------------------------------------------------------------------------
# Wikipedia validation.

WIKI_VAL_WORDS = 120        # section text cut as the training sources cut it


def load_wiki_val_retrieval(limit: int | None = None) -> RetrievalData:
    """(article: section) -> section text over the Wikipedia validation articles;
    headings that repeat within them are dropped (one relevant text per query)."""
    from gecko_jax.data.sources import read_wikipedia, section_pairs

    articles = read_wikipedia()
    val = splits.wikipedia_validation_titles(articles)
    pairs = section_pairs([a for a in articles if a.title in val], max_words=WIKI_VAL_WORDS)
    counts: dict[str, int] = {}
    for q, _ in pairs:
        counts[q] = counts.get(q, 0) + 1
    pairs = splits.evenly_spaced([(q, t) for q, t in pairs if counts[q] == 1], limit)
    return RetrievalData(
        queries={f"q{i}": q for i, (q, _) in enumerate(pairs)},
        corpus={f"d{i}": ("", t) for i, (_, t) in enumerate(pairs)},
        qrels={f"q{i}": {f"d{i}": 1} for i in range(len(pairs))})


# ----------------------------------------------------------------------------
# BEIR folders.

def beir_task(folder: str | os.PathLike,
              gecko_task: str = unified_format.task_description("retrieval"),
              split: str = splits.BEIR_EVAL_SPLIT) -> LocalTask:
    """A retrieval task over a BEIR folder; the files are read (and checked) now.

    The default split is the one training excludes (data/splits.py)."""
    folder = pathlib.Path(folder)
    data = load_beir(folder, split)
    return LocalTask(
        name=f"beir:{folder}", type="retrieval", gecko_task=gecko_task,
        main_score="ndcg_at_10", description=f"BEIR-format retrieval over {folder.name}",
        loader=lambda limit: subset_retrieval(data, limit))


# ----------------------------------------------------------------------------
# Registry.

def _local(name: str, kind: str, metric: str, description: str, loader) -> LocalTask:
    """A local task whose queries take the table's description of its kind."""
    return LocalTask(name, kind, unified_format.task_description(kind), metric, description,
                     loader)


LOCAL_TASKS: dict[str, LocalTask] = {
    t.name: t for t in (
        _local("bbc_retrieval", "retrieval", "ndcg_at_10",
               "BBC News: find the article body for its headline (deduplicated)",
               load_bbc_retrieval),
        _local("bbc_classification", "classification", "accuracy",
               "BBC News: 5-way topic of the article body by logistic regression",
               load_bbc_classification),
        _local("bbc_clustering", "clustering", "v_measure",
               "BBC News: k-means of article bodies into their 5 topics", load_bbc_clustering),
        # Validation tasks (data/splits.py): defaults are chosen on these, never on the
        # held-out tasks above.
        _local("bbc_val_retrieval", "retrieval", "ndcg_at_10",
               "BBC News validation pool: body for its headline", load_bbc_val_retrieval),
        _local("bbc_val_clustering", "clustering", "v_measure",
               "BBC News validation pool: k-means of bodies into their 5 topics",
               load_bbc_val_clustering),
        _local("wiki_val_retrieval", "retrieval", "ndcg_at_10",
               "Wikipedia validation articles: section for its heading", load_wiki_val_retrieval),
    )
}


def known_task_names() -> list[str]:
    return list(LOCAL_TASKS) + ["beir:<folder>", "mteb:<MTEB task name>"]


def get_task(name: str) -> LocalTask:
    """A local task by name, or `beir:<folder>`; unknown names list the known ones."""
    name = name.strip()
    if name in LOCAL_TASKS:
        return LOCAL_TASKS[name]
    if name.startswith("beir:"):
        return beir_task(name[len("beir:"):])
    raise GeckoError(f"unknown task {name!r}; known tasks: {', '.join(known_task_names())}")


def data_fingerprint(texts: Sequence[str]) -> str:
    """Short hash of task inputs, recorded in reports so runs can be compared."""
    h = hashlib.sha1()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:12]
