"""Evaluation splits, defined once: which texts each local evaluation task scores.

Evaluation (evaluation/local_tasks.py) scores what it returns; the training data
(data/mixtures.py, data/streaming.py, data/tasks.py) excludes it, so no training
stage sees a text an evaluation task scores, whatever the evaluation `limit`. It
lives in data/ because evaluation sits above data and may import it, while data may
not import evaluation. A leaf module (standard library and numpy only: no
TensorFlow). Functions take any article objects with `id`, `category`,
`headline` and `body` attributes (data.sources.BBCArticle).

BBC News (the deduplicated articles of data.sources.read_bbc_news, grouped
by category, files in name order):

  held-out pool   every 2nd article of each category (index in category odd),
                  plus every article that shares a normalised headline with
                  one, or whose body contains one's opening words (or the
                  reverse): near-duplicates and quotes go together.
                  Fine-tuning never sees these; it is independent of `limit`.
  training pool   the rest: the classification evaluation fits its logistic
                  regression on it (fitting is not scoring); the fine-tuning
                  mixture's BBC classification task draws from it, less the
                  validation pool below.

  bbc_retrieval       scores an evenly spaced `limit` of the held-out pool's
                      first article of each near-duplicate group (so every
                      headline has one relevant body), headline -> body.
  bbc_clustering      clusters the same articles.
  bbc_classification  tests on the same articles; fits on an evenly spaced
                      `limit` of the training pool.

So every scored text comes from the held-out pool for every `limit`
(tests/evaluation/test_splits.py checks it against the built mixture).

Validation, carved from the training pool (where defaults are chosen, so the
held-out pool never decides anything):

  validation pool   every VALIDATION_EVERY-th training-pool article of each
                    category, with its near-duplicate group. Training excludes
                    it too: the training pool proper is what remains.
  bbc_val_retrieval   headline -> body over the validation pool (one article
                      per group), as bbc_retrieval over the held-out pool.
  bbc_val_clustering  clusters the same articles.

Wikipedia (a MediaWiki dump, articles in file order):

  validation articles  every WIKI_VALIDATION_EVERY-th article (index
                       WIKI_VALIDATION_OFFSET); no training source and no FRet
                       corpus built from the dump includes them.
  wiki_val_retrieval   (article: section) -> section text over their sections.

BEIR-format folders (corpus.jsonl, queries.jsonl, qrels/<split>.tsv):

  evaluated split   qrels/test.tsv (BEIR_EVAL_SPLIT): `beir:<folder>` scores its
                    judged queries (any `limit` takes a subset of them).
  training          reads qrels/train.tsv (BEIR_TRAIN_SPLIT) and drops every pair
                    whose query id, query text (normalised), document id or
                    document text (normalised opening words) belongs to the
                    evaluated split: its queries and every document they judge.
                    Training on the evaluated split itself is refused.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import unicodedata
from collections.abc import Mapping, Sequence

import numpy as np

BBC_TASKS = ("bbc_retrieval", "bbc_classification", "bbc_clustering")
BBC_VALIDATION_TASKS = ("bbc_val_retrieval", "bbc_val_clustering")
# Every validation task (evaluation/local_tasks.py registers them): defaults are chosen here.
VALIDATION_TASKS = ("bbc_val_retrieval", "wiki_val_retrieval", "bbc_val_clustering")
HELD_OUT_EVERY = 2          # 1 in HELD_OUT_EVERY articles of each category is held out
HELD_OUT_OFFSET = 1         # ... the one at this index within each run of HELD_OUT_EVERY
VALIDATION_EVERY = 2        # 1 in VALIDATION_EVERY training-pool articles per category
WIKI_VALIDATION_EVERY = 8   # 1 in WIKI_VALIDATION_EVERY Wikipedia articles validates
WIKI_VALIDATION_OFFSET = 4


def normalise_text(text: str) -> str:
    """Case-, accent-width- and punctuation-insensitive form for overlap checks.

    NFKC, lower case, every run of non-alphanumeric characters -> one space.
    """
    text = unicodedata.normalize("NFKC", text).lower()
    return re.sub(r"[\W_]+", " ", text).strip()


PREFIX_WORDS = 20           # a body is recognised by its first normalised words


def text_key(text: str, words: int = PREFIX_WORDS) -> str:
    """The normalised first `words` words of a text (how overlap checks match bodies)."""
    return " ".join(normalise_text(text).split()[:words])


def evenly_spaced(items: Sequence, limit: int | None) -> list:
    """An evenly spaced subset of `limit` items (all of them when limit is None or large).

    The pools are grouped by category, so a subset keeps every category.
    """
    items = list(items)
    if limit is None or limit >= len(items):
        return items
    if limit < 1:
        raise ValueError(f"limit must be a positive number of items, got {limit}")
    keep = np.unique(np.linspace(0, len(items) - 1, limit).round().astype(int))
    return [items[i] for i in keep]


def near_duplicate_groups(articles: Sequence) -> list[int]:
    """Group index of each article: equal for re-headlined copies and quotes (_groups_of)."""
    return list(_groups_of(tuple(articles)))



@functools.lru_cache(maxsize=4)
def _groups_of(articles: tuple) -> tuple[int, ...]:
    """Group index of each article (union-find), numbered by its first member.

    Two articles are in one group when they share a normalised headline, or
    when one's normalised body contains the start of the other's (text_key):
    the corpus holds re-headlined copies and articles quoting another's opening.
    """
    parent = list(range(len(articles)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        ri, rj = find(i), find(j)
        parent[max(ri, rj)] = min(ri, rj)

    first: dict[str, int] = {}
    for i, a in enumerate(articles):
        key = normalise_text(a.headline)
        if key:
            union(i, first.setdefault(key, i))
    bodies = [normalise_text(a.body) for a in articles]
    starts = np.cumsum([0] + [len(b) + 1 for b in bodies])
    haystack = "\n".join(bodies)
    for i, body in enumerate(bodies):
        key = text_key(body)
        if len(key.split()) < PREFIX_WORDS // 2:
            continue
        pos = haystack.find(key)
        while pos >= 0:
            union(i, int(np.searchsorted(starts, pos, side="right")) - 1)
            pos = haystack.find(key, pos + 1)
    return tuple(find(i) for i in range(len(articles)))


def bbc_held_out_ids(articles: Sequence) -> frozenset[str]:
    """Ids of the held-out pool (see the module docstring); never trained on."""
    seen: dict[str, int] = {}
    chosen = []
    for a in articles:
        i = seen[a.category] = seen.get(a.category, -1) + 1
        chosen.append(i % HELD_OUT_EVERY == HELD_OUT_OFFSET)
    groups = near_duplicate_groups(articles)
    held_groups = {g for g, c in zip(groups, chosen) if c}
    return frozenset(a.id for a, g in zip(articles, groups) if g in held_groups)


@dataclasses.dataclass(frozen=True)
class TaskSplit:
    """Article ids of one BBC evaluation task at one `limit`.

    Attributes:
      scored: ids whose texts the task scores (retrieval queries and corpus,
        clustering inputs, classification test items); all held out.
      fit: ids the task fits on without scoring them (the classification
        evaluation's logistic regression); from the training pool.
    """

    scored: tuple[str, ...]
    fit: tuple[str, ...] = ()


def _every_nth_of_category(articles: Sequence, eligible, every: int, offset: int) -> list[bool]:
    seen: dict[str, int] = {}
    chosen = []
    for a in articles:
        if not eligible(a):
            chosen.append(False)
            continue
        i = seen[a.category] = seen.get(a.category, -1) + 1
        chosen.append(i % every == offset)
    return chosen


def _with_groups(articles: Sequence, chosen: Sequence[bool]) -> frozenset[str]:
    groups = near_duplicate_groups(articles)
    picked = {g for g, c in zip(groups, chosen) if c}
    return frozenset(a.id for a, g in zip(articles, groups) if g in picked)


def bbc_validation_ids(articles: Sequence) -> frozenset[str]:
    """Ids of the validation pool: carved from the training pool (module docstring).

    Held-out groups are whole, so a group is either held out or not, and the
    validation pool never touches the held-out pool.
    """
    held = bbc_held_out_ids(articles)
    chosen = _every_nth_of_category(articles, lambda a: a.id not in held, VALIDATION_EVERY, 0)
    return _with_groups(articles, chosen)


def bbc_task_split(task: str, articles: Sequence, limit: int | None = None) -> TaskSplit:
    """Which article ids `task` scores (and fits on) for `limit`.

    Args:
      task: one of BBC_TASKS (held-out pool) or BBC_VALIDATION_TASKS (validation pool).
      articles: all deduplicated BBC articles, in read order.
      limit: scored articles (an evenly spaced subset of the pool); None scores it all.
    """
    if task not in BBC_TASKS + BBC_VALIDATION_TASKS:
        raise ValueError(f"unknown BBC evaluation task {task!r}; "
                         f"known: {BBC_TASKS + BBC_VALIDATION_TASKS}")
    pool_ids = (bbc_validation_ids(articles) if task in BBC_VALIDATION_TASKS
                else bbc_held_out_ids(articles))
    groups = near_duplicate_groups(articles)
    # One article per near-duplicate group, so each headline has one relevant body.
    pool = [a for i, (a, g) in enumerate(zip(articles, groups)) if a.id in pool_ids and g == i]
    scored = tuple(a.id for a in evenly_spaced(pool, limit))
    if task != "bbc_classification":
        return TaskSplit(scored)
    held = bbc_held_out_ids(articles)
    fit = tuple(a.id for a in evenly_spaced([a for a in articles if a.id not in held], limit))
    return TaskSplit(scored, fit)


def bbc_training_articles(articles: Sequence) -> list:
    """The training pool proper: articles that no BBC evaluation or validation task
    scores, at any limit."""
    never = bbc_held_out_ids(articles) | bbc_validation_ids(articles)
    return [a for a in articles if a.id not in never]


def wikipedia_validation_titles(articles: Sequence) -> frozenset[str]:
    """Titles of the Wikipedia validation articles (every WIKI_VALIDATION_EVERY-th)."""
    return frozenset(a.title for i, a in enumerate(articles)
                     if i % WIKI_VALIDATION_EVERY == WIKI_VALIDATION_OFFSET)


def wikipedia_training_articles(articles: Sequence) -> list:
    """The Wikipedia articles training and FRet corpora may use (not validation)."""
    val = wikipedia_validation_titles(articles)
    return [a for a in articles if a.title not in val]


@dataclasses.dataclass(frozen=True)
class HeldOutTexts:
    """Normalised headlines and body keys of held-out articles, for text-level guards."""

    headlines: frozenset[str]
    body_keys: frozenset[str]

    def overlaps(self, title: str, text: str) -> bool:
        """True when (title, text) is, or starts like, a held-out headline / body."""
        if normalise_text(title) in self.headlines:
            return True
        norm = normalise_text(text)
        words = norm.split()
        return (norm in self.headlines
                or (len(words) >= PREFIX_WORDS // 2
                    and " ".join(words[:PREFIX_WORDS]) in self.body_keys))

    def record_overlaps(self, query: str, documents: Sequence[tuple[str, str]]) -> bool:
        """True when a training record touches a held-out text: its query (as an untitled
        text), or any of its (title, text) documents (positive, negative)."""
        return self.overlaps("", query) or any(self.overlaps(t, x) for t, x in documents)


def bbc_held_out_texts(articles: Sequence) -> HeldOutTexts:
    """Texts no training record may hold: the held-out and the validation pools."""
    held = bbc_held_out_ids(articles) | bbc_validation_ids(articles)
    rows = [a for a in articles if a.id in held]
    return HeldOutTexts(frozenset(normalise_text(a.headline) for a in rows),
                        frozenset(text_key(a.body) for a in rows))


# -- BEIR folders ------------------------------------------------------------------------

BEIR_EVAL_SPLIT = "test"    # the qrels split `beir:<folder>` evaluation scores
BEIR_TRAIN_SPLIT = "train"  # the qrels split training reads


@dataclasses.dataclass(frozen=True)
class BeirHeldOut:
    """What a BEIR folder's evaluated split scores: its queries and judged documents."""

    query_ids: frozenset[str]
    query_texts: frozenset[str]     # normalise_text of each query
    doc_ids: frozenset[str]
    doc_keys: frozenset[str]        # text_key of each judged document

    def excludes(self, query_id: str, query: str, doc_id: str, doc_text: str) -> str | None:
        """Why a training pair touches the evaluated split ('query' / 'document'), or None."""
        if query_id in self.query_ids or normalise_text(query) in self.query_texts:
            return "query"
        if doc_id in self.doc_ids or (doc_text.strip() and text_key(doc_text) in self.doc_keys):
            return "document"
        return None


def beir_held_out(queries: Mapping[str, str], corpus: Mapping[str, tuple[str, str]],
                  eval_qrels: Mapping[str, Mapping[str, int]]) -> BeirHeldOut:
    """The held-out part of a BEIR folder, from its evaluated split's qrels.

    Args:
      queries: query id -> text (at least the evaluated ones).
      corpus: doc id -> (title, text).
      eval_qrels: query id -> doc id -> grade of BEIR_EVAL_SPLIT; every judged document
        is held out, relevant or not (the evaluation ranks them all).
    """
    qids = frozenset(eval_qrels)
    dids = frozenset(d for docs in eval_qrels.values() for d in docs)
    return BeirHeldOut(qids, frozenset(normalise_text(queries[q]) for q in qids if q in queries),
                       dids, frozenset(text_key(corpus[d][1]) for d in dids if d in corpus))
