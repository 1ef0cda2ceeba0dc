"""The unified Gecko format (GECKO.md appendix B) for every training source.

Every source becomes (task, query, positive, negative) examples:

    query side:                "task: {task} | query: {text}"
    asymmetric document side:  "title: {title or 'none'} | text: {text}"
    symmetric target side:     "task: {task} | query: {text}"   (STS, NLI, classification)

Asymmetric tasks (title -> body, question -> passage, FRet) format the
positive and negative as documents; symmetric tasks format them like the
query, so both sides live in the same space. The strings are built by the
seqio preprocessor gecko_jax.data.tasks.gecko_format; `format_texts` here is
the same thing in Python (for checks and for writing JSONL).

Two conversions from GECKO.md:
  * NLI -> (premise, entailed hypothesis as positive, contradiction as hard
    negative). A premise with no entailed hypothesis gives no example.
  * Classification -> retrieval: query x, positive x+ = another input with the
    same label, negative x- = an input with a different label. In a batch, two
    rows of one label make each other's positives (and queries) false
    negatives. The paper appends one unique id to x, x+ and x- so that the
    model can tell them apart; here every example instead carries its label
    group (`Example.group`), and the loss masks every in-batch item of the
    row's group, as it masks duplicate texts (tasks.gecko_format gives the
    group's id to the query and positive). The mask is chosen over the
    appended id because it holds at every sequence length: an id at the end
    of an ~86-token text is cut away by training lengths of 32 or 64, and an
    id placed before the text would sit inside the mean-pooled embedding of
    every query. `unique_ids=True` still appends the paper's id.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Iterable, Sequence

import numpy as np

from gecko_jax.data.training_records import Document, FRetRecord
from gecko_jax.unified_format import format_document, format_query, task_description
from gecko_jax.errors import GeckoError

# Raw string columns a seqio task reads (tasks.RAW_FIELDS plus `symmetric`).
COLUMNS = ("task", "query", "positive_title", "positive_text", "negative_title",
           "negative_text", "has_negative", "symmetric", "group")

# Task descriptions by kind (unified_format.TASK_DESCRIPTIONS): the evaluation's own.
NLI_TASK = task_description("similarity")
TITLE_BODY_TASK = task_description("retrieval")   # pre-finetuning: title -> body retrieval
CLASSIFICATION_TASK = task_description("classification")


@dataclasses.dataclass(frozen=True)
class Example:
    """One training example in the unified format (before the string templates)."""

    id: str
    task: str
    query: str
    positive: Document
    negative: Document | None = None
    symmetric: bool = False
    # Label group (classification as retrieval): the query and positive of every
    # example of one group are never negatives of each other in a batch. "" = none.
    group: str = ""

    def to_json(self) -> dict:
        """FRet-record JSON (a superset: `symmetric` is an extra key)."""
        out = FRetRecord(self.id, self.task, self.query, self.positive, self.negative).to_json()
        if self.symmetric:
            out["symmetric"] = True
        return out


def from_record(rec: FRetRecord, symmetric: bool = False) -> Example:
    return Example(rec.id, rec.task, rec.query, rec.positive, rec.negative, symmetric)


def format_target(doc: Document, task: str, symmetric: bool) -> str:
    """The string the document tower sees for a positive / negative."""
    if symmetric:
        return format_query(doc.text, task)
    return format_document(doc.text, doc.title or None)


def format_texts(ex: Example) -> tuple[str, str, str | None]:
    """(query, positive, negative) strings exactly as training encodes them."""
    neg = None if ex.negative is None else format_target(ex.negative, ex.task, ex.symmetric)
    return (format_query(ex.query, ex.task), format_target(ex.positive, ex.task, ex.symmetric),
            neg)


def to_columns(examples: Sequence[Example]) -> dict[str, list]:
    """Examples -> the raw columns of a seqio source (see tasks.gecko_format)."""
    cols: dict[str, list] = {k: [] for k in COLUMNS}
    for ex in examples:
        cols["task"].append(ex.task)
        cols["query"].append(ex.query)
        cols["positive_title"].append(ex.positive.title)
        cols["positive_text"].append(ex.positive.text)
        cols["negative_title"].append(ex.negative.title if ex.negative else "")
        cols["negative_text"].append(ex.negative.text if ex.negative else "")
        cols["has_negative"].append(ex.negative is not None)
        cols["symmetric"].append(bool(ex.symmetric))
        cols["group"].append(ex.group)
    return cols


# --------------------------------------------------------------------------- title -> body
def title_body_examples(pairs: Iterable[tuple[str, str]], task: str = TITLE_BODY_TASK,
                        prefix: str = "title_body") -> list[Example]:
    """(title, body) pairs -> asymmetric examples with no hard negative (pre-finetuning)."""
    return [Example(f"{prefix}:{i}", task, title, Document(text=body))
            for i, (title, body) in enumerate(pairs) if title.strip() and body.strip()]


# --------------------------------------------------------------------------- NLI
def nli_examples(rows: Iterable[tuple[str, str, str]], task: str = NLI_TASK,
                 entailment: str = "entailment", contradiction: str = "contradiction",
                 prefix: str = "nli") -> list[Example]:
    """(premise, hypothesis, label) rows -> symmetric examples.

    Per premise (in first-seen order): one example per entailed hypothesis, the
    positive; the premise's contradictions are the hard negatives, used in turn.
    Neutral pairs and unlabeled rows (tfds label -1) give nothing.
    """
    entailed: dict[str, list[str]] = collections.defaultdict(list)
    contradicted: dict[str, list[str]] = collections.defaultdict(list)
    order: dict[str, None] = {}            # premises in first-seen order
    for premise, hypothesis, label in rows:
        order.setdefault(premise)
        if label == entailment:
            entailed[premise].append(hypothesis)
        elif label == contradiction:
            contradicted[premise].append(hypothesis)
    out = []
    for premise in order:
        negs = contradicted.get(premise, [])
        for j, hyp in enumerate(entailed.get(premise, [])):
            neg = Document(text=negs[j % len(negs)]) if negs else None
            out.append(Example(f"{prefix}:{len(out)}", task, premise, Document(text=hyp), neg,
                               symmetric=True))
    return out


# --------------------------------------------------------------------------- classification
def with_unique_id(text: str, uid: int) -> str:
    """The text with the example's unique id appended (GECKO.md appendix B)."""
    return f"{text} (id: {uid})"


def classification_examples(items: Sequence[tuple[str, str]], task: str, seed: int = 0,
                            name: str = "classification", unique_ids: bool = False
                            ) -> list[Example]:
    """(text, label) items -> symmetric retrieval examples.

    Each item with at least one other same-label item is a query; its positive
    is a random other item of its label, its negative a random item of another
    label. Every example's `group` is "{name}/{label}" (the loss's same-label
    mask; module docstring). With unique_ids, the same id (the example's index)
    is also appended to query, positive and negative (the paper's form).

    Raises GeckoError if there are fewer than two labels (no negative exists)
    or no label has two items (no positive exists).
    """
    by_label: dict[str, list[int]] = collections.defaultdict(list)
    for i, (_, label) in enumerate(items):
        by_label[str(label)].append(i)
    if len(by_label) < 2:
        raise GeckoError(f"{name}: classification as retrieval needs at least two labels, "
                         f"found {sorted(by_label) or 'none'} in {len(items)} items")
    if all(len(v) < 2 for v in by_label.values()):
        raise GeckoError(f"{name}: no label has two items, so no same-label positive exists")
    rng = np.random.default_rng(seed)
    labels = sorted(by_label)
    out = []
    for i, (text, label) in enumerate(items):
        same = by_label[str(label)]
        if len(same) < 2:
            continue
        # A positive with different text (sets can repeat texts); give up after a few tries.
        for _ in range(16):
            j = same[rng.integers(len(same))]
            if items[j][0] != text:
                break
        else:
            continue
        others = [lab for lab in labels if lab != str(label)]
        other = by_label[others[rng.integers(len(others))]]
        k = other[rng.integers(len(other))]
        uid = len(out)
        tag = (lambda t: with_unique_id(t, uid)) if unique_ids else (lambda t: t)
        out.append(Example(f"{name}:{i}", task, tag(text), Document(text=tag(items[j][0])),
                           Document(text=tag(items[k][0])), symmetric=True,
                           group=f"{name}/{label}"))
    return out
