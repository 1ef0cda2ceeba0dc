"""seqio Tasks for every Gecko source, Mixtures with rates, and mixture batches.

Sources (each a gin-configurable function returning formatting.Example lists):

    wikipedia_title_body   (article: section) -> section text, no negatives (pre-finetuning)
    wikipedia_sections     the same pairs with the next section as hard negative
    bbc_title_body         BBC headline -> article lead (both stages), optionally a
                           TF-IDF-mined hard negative
    bbc_classification     BBC topic classification as symmetric retrieval (unique ids)
    jsonl_examples         FRet-format JSONL (FRet output; optional `symmetric` key)
    beir_examples          BEIR folders (NQ, HotpotQA, FEVER, ...): query -> judged document
    tfds_nli_examples      SNLI / MNLI through tensorflow-datasets
    tfds_classification_examples  AG News, IMDB, SST-2, ... through tensorflow-datasets

A gin table maps task names to sources (TASK_SOURCES in the run configs) and
another maps task names to rates (`mixture_data.rates`). `mixture_data` is the
trainer's `data_fn`: it registers the seqio Tasks and the seqio Mixture, loads
each task's examples through the Gecko feature converter and returns
MixtureBatches, whose batch `s` is a pure function of (seed, s), like
batching.StepIndexedBatches, so checkpoints resume exactly.

Batches are either mixed (per-row task draws: row counts ~ Multinomial(B,
rates)) or, with single_task_batches, drawn from one task chosen by rate per
step (t5x_retrieval and Gemini Embedding do this: in-batch negatives then all
come from the same task and format).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import json
import logging
import os
import pathlib
from typing import Callable, Mapping, Sequence

import gin
import numpy as np
import seqio
import tensorflow as tf

from gecko_jax import textio, unified_format
from gecko_jax.data import formatting, lexical_negatives, prompt_room, sources, training_records
from gecko_jax.data import tasks as tasks_lib
from gecko_jax.data.batches import BatchSource
from gecko_jax.data.formatting import Example
from gecko_jax.data.training_records import Document
from gecko_jax.errors import GeckoError
from gecko_jax.data import splits

log = logging.getLogger(__name__)

BBC_TASK = formatting.CLASSIFICATION_TASK
BEIR_TASK = formatting.TITLE_BODY_TASK    # retrieval


def _limit(examples: list[Example], limit: int | None) -> list[Example]:
    return examples if limit is None else examples[:limit]


# --------------------------------------------------------------------------- sources
def _wikipedia_training(path: str | None):
    """The dump's articles less the validation articles of data/splits.py."""
    articles = sources.read_wikipedia(path)
    kept = splits.wikipedia_training_articles(articles)
    log.info("wikipedia: %d of %d articles kept for validation (data/splits.py), %d used",
             len(articles) - len(kept), len(articles), len(kept))
    return kept


@gin.configurable
def wikipedia_title_body(path: str | None = None, max_words: int = 120,
                         task: str = formatting.TITLE_BODY_TASK, limit: int | None = None
                         ) -> list[Example]:
    """Pre-finetuning pairs: (article title + section title) -> section text."""
    pairs = sources.section_pairs(_wikipedia_training(path), max_words=max_words)
    return _limit(formatting.title_body_examples(pairs, task=task, prefix="wiki"), limit)


@gin.configurable
def wikipedia_sections(path: str | None = None, max_words: int = 120,
                       limit: int | None = None) -> list[Example]:
    """training_records.wikipedia_section_records: same pairs, next section as hard negative."""
    recs = training_records.wikipedia_section_records(_wikipedia_training(path),
                                                      max_words=max_words)
    return _limit([formatting.from_record(r) for r in recs], limit)


def _bbc_training(folder: str | None):
    """The deduplicated BBC articles less every evaluated and validation article."""
    articles = sources.read_bbc_news(folder, dedup=True)
    kept = splits.bbc_training_articles(articles)
    log.info("bbc: %d of %d articles held out for evaluation and validation "
             "(data/splits.py), %d used", len(articles) - len(kept), len(articles), len(kept))
    return kept


@gin.configurable
def bbc_title_body(folder: str | None = None, max_words: int = 100,
                   task: str = formatting.TITLE_BODY_TASK, limit: int | None = None,
                   negative_rank: int = 0) -> list[Example]:
    """Title -> body pairs from news: headline -> the article's first `max_words` words.

    Gecko pre-finetunes on title -> body pairs of a web corpus; the Wikipedia
    sample alone gives them one domain and one register, this source a second
    one (the default mixtures use it in pre-finetuning and fine-tuning).
    Training-pool articles only (data/splits.py), like bbc_classification.

    negative_rank: 0 gives no hard negative; k >= 1 gives each headline the
    k-th best other training-pool lead by TF-IDF retrieval with headline and lead
    as the query (a headline alone is too short to find a near miss), never one
    of its own near-duplicate group (data/lexical_negatives.py).
    """
    articles = [art for art in _bbc_training(folder) if art.headline.strip() and art.body.strip()]
    leads = [" ".join(art.body.split()[:max_words]) for art in articles]
    negatives: list[int | None] = [None] * len(articles)
    if negative_rank:
        negatives = lexical_negatives.ranked_negatives(
            [f"{art.headline} {lead}" for art, lead in zip(articles, leads)], leads,
            splits.near_duplicate_groups(articles), rank=negative_rank)
    examples = [Example(f"bbc:{art.id}", task, art.headline, Document(text=lead),
                        None if neg is None else Document(text=leads[neg]))
                for art, lead, neg in zip(articles, leads, negatives)]
    return _limit(examples, limit)


@gin.configurable
def bbc_classification(folder: str | None = None, task: str = BBC_TASK, max_words: int = 48,
                       exclude_eval_test: bool = True, seed: int = 0,
                       limit: int | None = None) -> list[Example]:
    """BBC headline + lead words, labelled by category, as classification-as-retrieval.

    exclude_eval_test keeps only the training pool of data/splits.py: no
    article that a local BBC evaluation or validation task scores (retrieval,
    classification test, clustering), at any limit, nor any near-duplicate of one.
    """
    articles = (_bbc_training(folder) if exclude_eval_test
                else sources.read_bbc_news(folder, dedup=True))
    items = []
    for art in articles:
        words = " ".join(art.body.split()[:max_words])
        items.append((f"{art.headline}. {words}", art.category))
    # Interleave categories so a `limit` keeps every label.
    order = np.argsort(_ranks(items), kind="stable")
    items = [items[i] for i in order]
    examples = formatting.classification_examples(items, task, seed=seed, name="bbc")
    # Name each example by its query's article ("bbc:<category>/<NNN>") for overlap checks.
    article_ids = [articles[i].id for i in order]
    examples = [dataclasses.replace(ex, id=f"bbc:{article_ids[int(ex.id.split(':')[1])]}")
                for ex in examples]
    return _limit(examples, limit)


def _ranks(items: Sequence[tuple[str, str]]) -> list[int]:
    """Rank of each item within its label (0, 1, ...): sorting by it interleaves labels."""
    count: dict[str, int] = {}
    out = []
    for _, label in items:
        out.append(count.setdefault(label, 0))
        count[label] += 1
    return out


@gin.configurable
def jsonl_examples(files: Sequence[str] = (), limit: int | None = None,
                   exclude_eval_test: bool = True) -> list[Example]:
    """FRet-format JSONL (training_records.py); a true `symmetric` key formats targets as queries.

    exclude_eval_test drops records whose query, positive or negative is (or
    starts like) a BBC article held out for evaluation (data/splits.py),
    e.g. FRet run on the BBC corpus (`gecko fret corpus --source bbc`).
    """
    out = []
    for path in files:
        for line, obj in textio.read_jsonl(path):
            rec = training_records.parse_record(obj, path, line)
            out.append(formatting.from_record(rec, symmetric=bool(obj.get("symmetric"))))
    if exclude_eval_test and out:
        held = tasks_lib.bbc_held_out_texts()
        kept = [ex for ex in out if not _overlaps(ex, held)]
        if len(kept) < len(out):
            log.info("jsonl_examples: dropped %d of %d records that hold BBC articles held out "
                     "for evaluation (data/splits.py)", len(out) - len(kept), len(out))
        out = kept
    return _limit(out, limit)


def _overlaps(ex: Example, held: splits.HeldOutTexts) -> bool:
    docs = [ex.positive] + ([ex.negative] if ex.negative is not None else [])
    return held.record_overlaps(ex.query, [(d.title, d.text) for d in docs])


@gin.configurable
def beir_examples(folder: str = gin.REQUIRED, split: str = splits.BEIR_TRAIN_SPLIT,
                  task: str = BEIR_TASK, limit: int | None = None,
                  exclude_eval_test: bool = True) -> list[Example]:
    """Every judged-relevant (query, document) pair of a BEIR folder, in-batch negatives only.

    exclude_eval_test drops the pairs that touch the folder's evaluated split
    (data/splits.py: the queries of qrels/test.tsv and every document they
    judge, by id and by normalised text), and refuses to train on that split.
    """
    data = sources.read_beir(folder, split)
    held = None
    if exclude_eval_test:
        if split == splits.BEIR_EVAL_SPLIT:
            raise GeckoError(f"{folder}: qrels/{split}.tsv is the split evaluation scores "
                             f"(data/splits.py); train on another split, or pass "
                             f"exclude_eval_test=False")
        if (pathlib.Path(folder) / "qrels" / f"{splits.BEIR_EVAL_SPLIT}.tsv").is_file():
            ev = sources.read_beir(folder, splits.BEIR_EVAL_SPLIT)
            held = splits.beir_held_out(ev.queries, ev.corpus, ev.qrels)
    out, dropped = [], collections.Counter()
    pairs = [(qid, did) for qid, docs in data.qrels.items() for did, g in docs.items() if g >= 1]
    for i, (qid, did) in enumerate(pairs):  # ids as sources.beir_pairs numbers them
        title, text = data.corpus[did]
        why = held.excludes(qid, data.queries[qid], did, text) if held else None
        if why:
            dropped[why] += 1
            continue
        out.append(Example(f"beir:{qid}:{i}", task, data.queries[qid],
                           training_records.Document(text=text, title=title)))
    if dropped:
        log.info("beir_examples: dropped %d of %d pairs of %s that touch the evaluated split "
                 "(%s; data/splits.py)", sum(dropped.values()),
                 len(out) + sum(dropped.values()), folder, dict(dropped))
    return _limit(out, limit)


@gin.configurable
def tfds_nli_examples(name: str = "snli", split: str = "train", data_dir: str | None = None,
                      task: str = formatting.NLI_TASK, limit: int | None = None,
                      spec: sources.TfdsNLI | None = None) -> list[Example]:
    rows = sources.read_tfds_nli(name, split, data_dir=data_dir, spec=spec)
    return _limit(formatting.nli_examples(rows, task=task, prefix=name), limit)


@gin.configurable
def tfds_classification_examples(name: str = "ag_news_subset", split: str = "train",
                                 data_dir: str | None = None, task: str = gin.REQUIRED,
                                 seed: int = 0, limit: int | None = None,
                                 spec: sources.TfdsClassification | None = None
                                 ) -> list[Example]:
    rows = sources.read_tfds_classification(name, split, data_dir=data_dir, spec=spec)
    return _limit(formatting.classification_examples(rows, task, seed=seed, name=name), limit)


# --------------------------------------------------------------------------- seqio
def examples_dataset_fn(split: str, shuffle_files: bool = False, seed: int | None = None, *,
                        examples_fn: Callable[[], Sequence[Example]]) -> tf.data.Dataset:
    """seqio dataset_fn over formatting.to_columns (file order; shuffling is the batcher's)."""
    del shuffle_files, seed
    if split != "train":
        raise ValueError(f"split {split!r}: example sources have only 'train'")
    cols = formatting.to_columns(examples_fn())
    return tf.data.Dataset.from_tensor_slices(
        {k: tf.constant(v, dtype=tf.bool if k in ("has_negative", "symmetric") else tf.string)
         for k, v in cols.items()})


def register_examples_task(name: str, examples: Sequence[Example],
                           tokenizer_folder: str | os.PathLike, derive_name: bool = False,
                           prompt_format: str = "gecko") -> seqio.Task:
    """Registers a Gecko seqio Task over in-memory examples, once (tasks.register_once).

    Its definition is the examples' content and the tokenizer. derive_name registers
    it as tasks.derived_name(name, definition) instead, so other examples under the
    same `name` (another limit, another run) are another Task; the Task's `.name`
    says which. prompt_format: tasks.gecko_format's ("raw": texts without prompts).
    """
    examples = list(examples)
    digest = hashlib.sha1(json.dumps(formatting.to_columns(examples), sort_keys=True)
                          .encode()).hexdigest()
    definition = {"source": "examples", "count": len(examples), "sha1": digest}
    if derive_name:
        key = {**definition, "tokenizer": tasks_lib.tokenizer_key(tokenizer_folder)}
        if prompt_format != "gecko":
            key["prompt_format"] = prompt_format
        name = tasks_lib.derived_name(name, key)
    source = seqio.FunctionDataSource(
        functools.partial(examples_dataset_fn, examples_fn=lambda: examples), splits=("train",))
    return tasks_lib.register_gecko_task(name, source, tokenizer_folder, definition,
                                         prompt_format=prompt_format)


def check_rates(rates: Mapping[str, float], known: Sequence[str], mixture: str = "mixture"
                ) -> dict[str, float]:
    """Validates a {task: rate} table; unknown task names are a GeckoError."""
    if not rates:
        raise GeckoError(f"{mixture}: the rate table is empty")
    unknown = [t for t in rates if t not in known]
    if unknown:
        raise GeckoError(f"{mixture}: unknown task(s) {unknown}; known tasks: {sorted(known)}")
    bad = {t: r for t, r in rates.items() if not (float(r) > 0 and np.isfinite(float(r)))}
    if bad:
        raise GeckoError(f"{mixture}: rates must be positive numbers, got {bad}")
    return {t: float(r) for t, r in rates.items()}


def register_mixture(name: str, rates: Mapping[str, float], derive_name: bool = False
                     ) -> seqio.Mixture:
    """A seqio Mixture over registered tasks, registered once (tasks.register_once);
    an unregistered task is a GeckoError. derive_name: registered as
    tasks.derived_name(name, rates), one Mixture per rate table (see `.name`)."""
    rates = check_rates(rates, list(seqio.TaskRegistry.names()), name)
    definition = {"rates": rates}
    if derive_name:
        name = tasks_lib.derived_name(name, definition)
    return tasks_lib.register_once(seqio.MixtureRegistry, name, definition,
                                   lambda: seqio.MixtureRegistry.add(name, list(rates.items())))


# --------------------------------------------------------------------------- batches
class MixtureBatches(BatchSource):
    """Step-indexed batches drawn from several tasks' example arrays at given rates.

    Batch `s` uses the generator default_rng([seed, s]) only, so it is a pure
    function of (seed, s): resuming needs just the step. Within a batch, a
    task's rows are distinct (drawn without replacement while it has enough
    rows); across steps rows are redrawn, so a small task repeats sooner than
    a large one, as with a repeated seqio mixture.

    Args:
      examples: {task: {feature: [N_task, ...]}} (tasks.load_examples output).
      rates: {task: positive rate}; normalised to probabilities.
      global_batch_size: rows per step (all processes).
      single_task: every batch comes from one task, chosen by rate.
    """

    seqio_mixture: str | None = None     # the seqio Mixture registered by mixture_data

    def __init__(self, examples: Mapping[str, Mapping[str, np.ndarray]],
                 rates: Mapping[str, float], global_batch_size: int, seed: int = 0,
                 single_task: bool = False, process_index: int = 0, process_count: int = 1):
        rates = check_rates(rates, list(examples))
        self.task_names = list(rates)
        self.probabilities = np.array([rates[t] for t in self.task_names], np.float64)
        self.probabilities /= self.probabilities.sum()
        self.examples = [dict(examples[t]) for t in self.task_names]
        keys = [sorted(e) for e in self.examples]
        if any(k != keys[0] for k in keys):
            raise GeckoError(f"tasks have different features: {dict(zip(self.task_names, keys))}")
        self.sizes = [len(next(iter(e.values()))) for e in self.examples]
        if global_batch_size % process_count:
            raise GeckoError(f"global batch {global_batch_size} is not divisible by "
                             f"{process_count} processes")
        if single_task:
            small = {t: n for t, n in zip(self.task_names, self.sizes) if n < global_batch_size}
            if small:
                raise GeckoError(f"single-task batches of {global_batch_size} need that many "
                                 f"examples per task; too few: {small}")
        self.global_batch_size = global_batch_size
        self.seed = seed
        self.single_task = single_task
        self.process_index, self.process_count = process_index, process_count
        self.num_examples = int(sum(self.sizes))

    def epochs(self, num_steps: int) -> dict[str, float]:
        """Expected passes over each task's examples in `num_steps` steps (S * B * p_t / n_t)."""
        return {t: round(float(num_steps * self.global_batch_size * p / n), 2)
                for t, p, n in zip(self.task_names, self.probabilities, self.sizes)}

    def indices(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(task index [B], row index [B]) of batch `step`, all processes."""
        rng = np.random.default_rng([self.seed, step])
        b = self.global_batch_size
        if self.single_task:
            counts = np.zeros(len(self.sizes), np.int64)
            counts[rng.choice(len(self.sizes), p=self.probabilities)] = b
        else:
            counts = rng.multinomial(b, self.probabilities)
        task_idx, row_idx = [], []
        for t, k in enumerate(counts):
            if k:
                task_idx.append(np.full(k, t))
                row_idx.append(rng.choice(self.sizes[t], size=k, replace=k > self.sizes[t]))
        task_idx, row_idx = np.concatenate(task_idx), np.concatenate(row_idx)
        order = rng.permutation(b)        # processes each get a mix, not one task's block
        return task_idx[order], row_idx[order]

    def tasks(self, step: int) -> list[str]:
        """Task name of each row of batch `step` (all processes)."""
        return [self.task_names[t] for t in self.indices(step)[0]]

    def batch(self, step: int) -> dict[str, np.ndarray]:
        """This process's rows of batch `step`."""
        task_idx, row_idx = self.indices(step)
        per = self.global_batch_size // self.process_count
        sl = slice(self.process_index * per, (self.process_index + 1) * per)
        task_idx, row_idx = task_idx[sl], row_idx[sl]
        out = {}
        for key in self.examples[0]:
            first = self.examples[0][key]
            arr = np.empty((len(row_idx),) + first.shape[1:], first.dtype)
            for t, ex in enumerate(self.examples):
                sel = task_idx == t
                if sel.any():
                    arr[sel] = ex[key][row_idx[sel]]
            out[key] = arr
        return out


def cap_rates(rates: Mapping[str, float], sizes: Mapping[str, int], batch_size: int,
              num_steps: int, max_epochs: float) -> dict[str, float]:
    """Rates (as probabilities) lowered so no task is drawn more than max_epochs times over.

    A task whose expected epochs S * B * p_t / n_t exceed max_epochs gets
    p_t = max_epochs * n_t / (S * B); the freed probability goes to the other
    tasks in proportion to their rates, repeated until nothing exceeds the cap.
    When every task is capped (too little data for S * B rows at max_epochs),
    the capped probabilities are renormalised and the cap cannot hold.
    """
    if max_epochs <= 0:
        raise GeckoError(f"max_epochs must be positive, got {max_epochs}")
    total = float(sum(rates.values()))
    p = {t: float(r) / total for t, r in rates.items()}
    rows = float(num_steps * batch_size)
    capped: dict[str, float] = {}
    while True:
        over = {t for t in p if t not in capped and rows * p[t] / sizes[t] > max_epochs + 1e-12}
        if not over:
            break
        for t in over:
            capped[t] = max_epochs * sizes[t] / rows
        free = 1.0 - sum(capped.values())
        rest = {t: float(rates[t]) for t in p if t not in capped}
        if free <= 0 or not rest:
            break
        p = {**capped, **{t: free * r / sum(rest.values()) for t, r in rest.items()}}
    p = {**p, **capped}
    norm = sum(p.values())
    return {t: p[t] / norm for t in rates}


# --------------------------------------------------------------------------- data_fn
@gin.configurable(denylist=["tokenizer", "feature_lengths", "batch_size", "seed",
                            "process_index", "process_count"])
def mixture_data(*, tokenizer, feature_lengths: Mapping[str, int], batch_size: int, seed: int,
                 process_index: int = 0, process_count: int = 1,
                 mixture: str = gin.REQUIRED, rates: Mapping[str, float] = gin.REQUIRED,
                 task_sources: Mapping[str, Callable[[], Sequence[Example]]] = gin.REQUIRED,
                 optional_tasks: Sequence[str] = (), single_task_batches: bool = False,
                 num_steps: int | None = None, max_epochs: float | None = None,
                 prompt_format: str = "gecko") -> MixtureBatches:
    """The trainer's data_fn: tasks + mixture registered, examples loaded, batches returned.

    The source tables' Tasks are registered under names derived from their examples
    (register_examples_task(derive_name=True)) and the Mixture under one derived from
    `mixture` and the rates (its name is the batches' `seqio_mixture`), so each call
    may bring other examples under the same names; the batches keep the table's names.

    Args:
      mixture: seqio Mixture name to register (the base of its derived name).
      rates: {task name: rate}; a name must be in task_sources or already be a
        registered seqio task (e.g. one made by tasks.register_jsonl_task).
      task_sources: {task name: source function} (the TASK_SOURCES table).
      optional_tasks: tasks dropped (with a log line) when their source is empty,
        e.g. FRet records that have not been generated yet.
      num_steps, max_epochs: with both, rates are lowered (cap_rates) so that no
        task is replayed more than max_epochs times in num_steps steps; the
        expected epochs per task are logged either way when num_steps is given.
      prompt_format: "gecko" (the unified format's task and title prompts) or "raw"
        (every text alone); the batches carry it and the trainer's export declares it.
    """
    if prompt_format not in unified_format.PROMPT_FORMATS:
        raise GeckoError(f"{mixture}: prompt_format {prompt_format!r}; use one of "
                         f"{list(unified_format.PROMPT_FORMATS)}")
    known = set(task_sources) | set(seqio.TaskRegistry.names())
    rates = check_rates(rates, sorted(known), mixture)
    kept, seqio_names = {}, {}
    for name, rate in rates.items():
        seqio_names[name] = name
        if name in task_sources:
            examples = list(task_sources[name]())
            if not examples:
                if name in optional_tasks:
                    log.info("%s: task %s has no examples; left out", mixture, name)
                    continue
                raise GeckoError(f"{mixture}: task {name!r} has no examples")
            if hasattr(tokenizer, "backend") and prompt_format == "gecko":
                examples = prompt_room.with_query_room(tokenizer, examples,
                                                       int(feature_lengths["query"]), where=name)
            seqio_names[name] = register_examples_task(name, examples, tokenizer.folder,
                                                       derive_name=True,
                                                       prompt_format=prompt_format).name
        kept[name] = rate
    seqio_mixture = register_mixture(mixture, {seqio_names[t]: r for t, r in kept.items()},
                                     derive_name=True)
    examples = {name: tasks_lib.load_examples(seqio_names[name], "train", feature_lengths,
                                              tokenizer.pad_id)
                for name in kept}
    sizes = {t: len(e["query_ids"]) for t, e in examples.items()}
    log.info("%s: %s", mixture, sizes)
    if num_steps is not None and max_epochs is not None:
        kept = cap_rates(kept, sizes, batch_size, num_steps, max_epochs)
    batches = MixtureBatches(examples, kept, batch_size, seed=seed,
                             single_task=single_task_batches,
                             process_index=process_index, process_count=process_count)
    batches.seqio_mixture = seqio_mixture.name
    batches.prompt_format = prompt_format
    if num_steps is not None:
        log.info("%s: expected epochs per task over %d steps: %s", mixture, num_steps,
                 batches.epochs(num_steps))
    return batches
