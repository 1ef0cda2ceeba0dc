"""seqio registration of Gecko training data (extend here with more sources / mixtures).

A task reads FRet JSONL records (gecko_jax.data.training_records: validated in Python,
so errors name file and line), formats them in the unified Gecko format

    query:     "task: {task} | query: {query}"
    documents: "title: {title or 'none'} | text: {text}"

(the templates of gecko_jax.unified_format, joined by TF string ops), adds
integer text ids for the loss's false-negative masks, and tokenises with the
encoder's own tokenizer (gecko_jax.data.vocab.HFTokenizerVocabulary).

`load_examples` runs a task through the DualEncoderFeatureConverter and
returns numpy arrays in file order; gecko_jax.data.batching turns those into
deterministic, step-indexed batches (the checkpointable data position).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import pathlib
from typing import Callable, Mapping, Sequence

import numpy as np
import seqio
import tensorflow as tf

from gecko_jax.data import training_records as records_lib
from gecko_jax.data.feature_converters import (DualEncoderFeatureConverter, task_feature_lengths,
                                               trim_keep_last)
from gecko_jax.data.vocab import HFTokenizerVocabulary
from gecko_jax.data import splits
from gecko_jax import unified_format
from gecko_jax.errors import GeckoError
from gecko_jax.losses import NO_ID

log = logging.getLogger(__name__)

# Hashed before a label group's name, so a group's id never equals a text's.
GROUP_ID_PREFIX = "\x1elabel group\x1f"
RAW_FIELDS = ("task", "query", "positive_title", "positive_text", "negative_title",
              "negative_text", "has_negative")


@functools.lru_cache(maxsize=1)
def bbc_held_out_texts() -> splits.HeldOutTexts:
    """The held-out BBC texts of data/splits.py (the shipped articles), built once."""
    from gecko_jax.data import sources

    return splits.bbc_held_out_texts(sources.read_bbc_news(dedup=True))


def _records_to_columns(paths: Sequence[str], exclude_eval_test: bool = False
                        ) -> dict[str, list]:
    cols: dict[str, list] = {k: [] for k in RAW_FIELDS}
    held = bbc_held_out_texts() if exclude_eval_test else None
    dropped = 0
    for rec in records_lib.read_records(paths):
        neg = rec.negative
        if held is not None and held.record_overlaps(
                rec.query, [(d.title, d.text) for d in (rec.positive, neg) if d is not None]):
            dropped += 1
            continue
        cols["task"].append(rec.task)
        cols["query"].append(rec.query)
        cols["positive_title"].append(rec.positive.title)
        cols["positive_text"].append(rec.positive.text)
        cols["negative_title"].append(neg.title if neg else "")
        cols["negative_text"].append(neg.text if neg else "")
        cols["has_negative"].append(neg is not None)
    if dropped:
        log.info("dropped %d records that hold BBC texts held out for evaluation "
                 "(data/splits.py)", dropped)
    return cols


def jsonl_dataset_fn(split: str, shuffle_files: bool = False, seed: int | None = None, *,
                     split_files: Mapping[str, Sequence[str]], exclude_eval_test: bool = False
                     ) -> tf.data.Dataset:
    """seqio dataset_fn: raw string fields of the records of `split`, in file order.

    Records are read and validated eagerly (a bad line fails here, naming
    file and line, before any training compute). Order is never shuffled here:
    shuffling is the step-indexed batcher's job, so the position is exact.
    exclude_eval_test drops records touching held-out evaluation texts.
    """
    del shuffle_files, seed
    if split not in split_files:
        raise ValueError(f"split {split!r} not in {sorted(split_files)}")
    cols = _records_to_columns(list(split_files[split]), exclude_eval_test)
    if not cols["query"]:
        raise records_lib.InputError(", ".join(map(str, split_files[split])), "no records")
    return tf.data.Dataset.from_tensor_slices(
        {k: tf.constant(v, dtype=tf.bool if k == "has_negative" else tf.string)
         for k, v in cols.items()})


def text_id(text: tf.Tensor) -> tf.Tensor:
    """A non-negative int32 hash of a text (the id used by the duplicate masks)."""
    return tf.cast(tf.strings.to_hash_bucket_fast(text, 2**31 - 1), tf.int32)


def tf_format(template: str, **fields: tf.Tensor) -> tf.Tensor:
    """A unified-format template filled by TF string ops (gecko_jax.unified_format)."""
    parts = []
    for literal, field in unified_format.template_pieces(template):
        parts.append(literal)
        if field is not None:
            parts.append(fields[field])
    return tf.strings.join(parts)


def document_id(title: tf.Tensor, text: tf.Tensor) -> tf.Tensor:
    """text_id of a document's identity: its text alone when untitled, else title + text."""
    titled = tf.strings.join([title, "\x1f", text])
    return tf.where(tf.strings.length(title) > 0, text_id(titled), text_id(text))


def gecko_format(ds: tf.data.Dataset, prompt_format: str = "gecko") -> tf.data.Dataset:
    """Unified Gecko format + text ids: the same strings as unified_format's Python form.

    prompt_format "raw": every text alone, without task or title (unified_format's raw
    form, as `gecko embed` and the evaluation give a raw-format model its inputs).
    """
    raw = unified_format.check_prompt_format(prompt_format) == "raw"

    def doc(title, text):
        if raw:
            return text
        title = tf.where(tf.strings.length(title) > 0, title, unified_format.NO_TITLE)
        return tf_format(unified_format.DOCUMENT_TEMPLATE, title=title, text=text)

    def query(task, text):
        if raw:
            return text
        return tf_format(unified_format.QUERY_TEMPLATE, task=task, text=text)

    def target(ex, side):
        # Symmetric tasks (NLI, STS, classification; optional `symmetric` column,
        # see data/formatting.py) format the targets like the query.
        d = doc(ex[f"{side}_title"], ex[f"{side}_text"])
        if "symmetric" not in ex:
            return d
        return tf.where(ex["symmetric"], query(ex["task"], ex[f"{side}_text"]), d)

    def fmt(ex):
        has_neg = ex["has_negative"]
        # Ids hash the raw text (with the title when there is one), so a query
        # equal to another row's untitled positive text (symmetric tasks) is a
        # duplicate, and one text under two titles is two documents.
        qid = text_id(ex["query"])
        pid = document_id(ex["positive_title"], ex["positive_text"])
        if "group" in ex:
            # A labelled example (classification as retrieval; optional `group`
            # column, data/formatting.py) stands for its label: its query and
            # positive take the group's id, so the loss's duplicate masks drop
            # every same-label query and positive of the batch as a negative,
            # whatever length the texts are cut to. Its hard negative (another
            # label) keeps its own text id and stays a negative.
            gid = text_id(tf.strings.join([GROUP_ID_PREFIX, ex["group"]]))
            grouped = tf.strings.length(ex["group"]) > 0
            qid, pid = tf.where(grouped, gid, qid), tf.where(grouped, gid, pid)
        return {
            "query": query(ex["task"], ex["query"]),
            "positive": target(ex, "positive"),
            # A missing negative still gets a (masked) text, so its embedding is finite.
            "negative": target(ex, "negative"),
            "query_text_id": qid,
            "positive_text_id": pid,
            "negative_text_id": tf.where(
                has_neg, document_id(ex["negative_title"], ex["negative_text"]), NO_ID),
        }

    return ds.map(fmt, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def trim_sequences(ds: tf.data.Dataset, sequence_length: Mapping[str, int] | None,
                   output_features: Mapping[str, seqio.Feature]) -> tf.data.Dataset:
    """seqio preprocessor: sequences longer than their length lose tokens before the last
    ones (the tokenizer's closing special tokens stay, [SEP] or an appended EOS, as at
    inference: tokenization.Tokenizer.encode), so
    seqio's own trimming and the feature converter's length checks find nothing to cut."""
    if not sequence_length:
        return ds

    def fn(ex):
        out = dict(ex)
        for name, feature in output_features.items():
            if sequence_length.get(name):
                out[name] = trim_keep_last(ex[name], sequence_length[name],
                                           closing_count(feature.vocabulary))
        return out

    return ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def closing_count(vocab: seqio.Vocabulary) -> int:
    """How many special tokens the vocabulary's tokenizer appends (1 for BERT's [SEP])."""
    return vocab.tokenizer.closing_count if isinstance(vocab, HFTokenizerVocabulary) else 1


@functools.lru_cache(maxsize=None)
def vocabulary(tokenizer_folder: str) -> HFTokenizerVocabulary:
    return HFTokenizerVocabulary(tokenizer_folder)


def register_jsonl_task(name: str, split_files: Mapping[str, Sequence[str | os.PathLike]],
                        tokenizer_folder: str | os.PathLike, exclude_eval_test: bool = True
                        ) -> seqio.Task:
    """Registers a Gecko task over JSONL files, once (register_once).

    Args:
      name: seqio task name.
      split_files: {"train": [paths], "validation": [...]}.
      tokenizer_folder: a model folder holding tokenizer.json.
      exclude_eval_test: drop records whose query, positive or negative is (or starts
        like) a BBC text held out for evaluation (data/splits.py), as the
        streaming Task and mixtures.jsonl_examples do.
    """
    split_files = {k: tuple(str(p) for p in v) for k, v in split_files.items()}
    source = seqio.FunctionDataSource(
        functools.partial(jsonl_dataset_fn, split_files=split_files,
                          exclude_eval_test=exclude_eval_test), splits=tuple(split_files))
    definition = {"source": "jsonl", "files": split_files, "exclude_eval_test": exclude_eval_test}
    return register_gecko_task(name, source, tokenizer_folder, definition)


def register_gecko_task(name: str, source: seqio.DataSource, tokenizer_folder: str | os.PathLike,
                        definition: Mapping, prompt_format: str = "gecko") -> seqio.Task:
    """Registers a seqio Task once (register_once): Gecko formatting, then the encoder's
    tokenizer on the query / positive / negative features.

    Args:
      definition: what the source reads (JSON-able); with the tokenizer's identity
        (and a prompt format other than gecko) it is the Task's definition.
      prompt_format: gecko_format's; "raw" texts without prompts.
    """
    definition = {**definition, "tokenizer": tokenizer_key(tokenizer_folder)}
    if unified_format.check_prompt_format(prompt_format) != "gecko":
        definition["prompt_format"] = prompt_format

    def add():
        vocab = vocabulary(str(tokenizer_folder))
        features = {f: seqio.Feature(vocabulary=vocab, add_eos=False, dtype=tf.int32)
                    for f in ("query", "positive", "negative")}
        return seqio.TaskRegistry.add(
            name, source=source,
            preprocessors=[functools.partial(gecko_format, prompt_format=prompt_format),
                           seqio.preprocessors.tokenize, trim_sequences],
            output_features=features, metric_fns=[])

    return register_once(seqio.TaskRegistry, name, definition, add)


# --------------------------------------------------------------------------- registry
# seqio's registries are process-global and refuse a second `add` of a name. A name
# is registered once per process with its definition; asking again with the same
# definition returns the registered Task or Mixture, with another one is an error.
_DEFINITIONS: dict[tuple[str, str], str] = {}


def definition_key(definition: Mapping) -> str:
    """A definition as canonical JSON (sorted keys; paths and tuples as strings/lists)."""
    return json.dumps(definition, sort_keys=True, default=str)


def derived_name(base: str, definition: Mapping) -> str:
    """`base` + a digest of the definition: one name per definition, for Tasks and
    Mixtures that a data_fn builds anew on each call (e.g. from a source's examples)."""
    digest = hashlib.sha1(definition_key(definition).encode()).hexdigest()[:12]
    return f"{base}_{digest}"


@functools.lru_cache(maxsize=None)
def _file_sha1(path: str, mtime_ns: int, size: int) -> str:
    del mtime_ns, size     # part of the cache key: a rewritten file is hashed again
    return hashlib.sha1(pathlib.Path(path).read_bytes()).hexdigest()


def tokenizer_key(folder: str | os.PathLike) -> str:
    """The identity of a tokenizer: the digest of its tokenizer.json (the one file
    tokenization.Tokenizer reads), so a copy in another model folder is the same."""
    path = pathlib.Path(folder) / "tokenizer.json"
    try:
        st = path.stat()
    except OSError:
        raise records_lib.InputError(path, "no tokenizer.json (not a model folder?)") from None
    return "tokenizer.json sha1 " + _file_sha1(str(path), st.st_mtime_ns, st.st_size)


def _short(key: str, limit: int = 400) -> str:
    return key if len(key) <= limit else key[:limit] + " ..."


def register_once(registry: type[seqio.DatasetProviderRegistry], name: str, definition: Mapping,
                  add: Callable[[], seqio.DatasetProviderBase]) -> seqio.DatasetProviderBase:
    """Registers `name` with `add()` unless it is there with the same definition.

    Args:
      registry: seqio.TaskRegistry or seqio.MixtureRegistry.
      definition: JSON-able; equal definitions denote the same data.
      add: registers the provider and returns it (called only for a new name).
    Raises:
      GeckoError naming both definitions when `name` is registered with another one
      (or by code that did not go through here).
    """
    kind = "mixture" if registry is seqio.MixtureRegistry else "task"
    key = definition_key(definition)
    if name in registry.names():
        old = _DEFINITIONS.get((kind, name))
        if old == key:
            return registry.get(name)
        was = _short(old) if old else "(registered by other code)"
        raise GeckoError(
            f"seqio {kind} {name!r} is already registered as {was}; now asked for "
            f"{_short(key)}. A name denotes one definition in a process: give this one "
            "another name")
    provider = add()
    _DEFINITIONS[(kind, name)] = key
    return provider


def load_examples(task_or_mixture: str, split: str, feature_lengths: Mapping[str, int],
                  pad_id: int = 0) -> dict[str, np.ndarray]:
    """All examples of a split as model-feature arrays [N, ...], in file order.

    Args:
      feature_lengths: {"query": Lq, "positive": Ld, "negative": Ld}.
    """
    task = seqio.get_mixture_or_task(task_or_mixture)
    ds = task.get_dataset(sequence_length=dict(feature_lengths), split=split, shuffle=False,
                          use_cached=False, num_epochs=1)
    keep = closing_count(task.output_features["query"].vocabulary)
    ds = DualEncoderFeatureConverter(pad_id=pad_id, keep_last=keep)(
        ds, task_feature_lengths(feature_lengths))
    chunks: dict[str, list[np.ndarray]] = {}
    for batch in ds.batch(1024).as_numpy_iterator():
        for k, v in batch.items():
            chunks.setdefault(k, []).append(v)
    out = {k: np.concatenate(v, axis=0) for k, v in chunks.items()}
    log.info("%s/%s: %d examples", task_or_mixture, split, len(out["query_ids"]))
    return out
