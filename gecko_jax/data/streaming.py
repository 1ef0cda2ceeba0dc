"""Streaming seqio Tasks over sharded FRet files: read lazily, tokenised in batches.

    jsonl_source(files)      FRet-format JSONL shards (training_records.py), one
                             TextLineDataset per file, each line with its file and
                             1-based line number
    tfrecord_source(files)   FRet TFRecord shards (fret/record_shards.py, tf.train.Example)

Preprocessors (in Task order), the first four on batches of PARSE_BATCH rows:

    parse_jsonl              JSON -> raw fields, validated by training_records.parse_record
                             on batches of lines (errors name file and line)
    fret_tfexample_fields    the TFRecord fields -> the same raw fields
    drop_held_out            records touching a BBC text held out for evaluation dropped
                             (data/splits.py; on by default, as in memory)
    tasks.gecko_format       unified Gecko format + text ids (shared with the in-memory
                             path; its TF string ops are elementwise, so batches work)
    tokenize_batches         the encoder's HF tokenizer on whole batches of texts
                             (HFTokenizerVocabulary.encode_tf on a [B] tensor: one
                             `tokenizers.encode_batch` call per feature and batch)
    unbatch_rows             back to rows
    seqio.CacheDatasetPlaceholder  where an offline cache (data/stream_cache.py, Beam)
                             takes over: the rows above, tokenised, read from its files
    tasks.trim_sequences     each sequence cut to its length, closing [SEP] kept

seqio then shards (by file when a host has at least one file, else by element:
seqio.Task.get_dataset with ShardInfo), shuffles with a seed, repeats; mixtures
sample by the Mixture's rates (gecko_jax.data.stream_batches).
"""

from __future__ import annotations

import functools
import json
import os
from typing import Mapping, Sequence

import numpy as np
import seqio
import tensorflow as tf

from gecko_jax.data import tasks as tasks_lib
from gecko_jax.data import training_records
from gecko_jax.errors import InputError
from gecko_jax.data import splits

RAW_STRING_FIELDS = ("task", "query", "positive_title", "positive_text", "negative_title",
                     "negative_text")
PARSE_BATCH = 256


# --------------------------------------------------------------------------- sources
def _read_jsonl_lines(path: tf.Tensor) -> tf.data.Dataset:
    """One file -> {"file", "line" (1-based), "text"} per line."""
    lines = tf.data.TextLineDataset(path).enumerate(start=1)
    return lines.map(lambda i, text: {"file": path, "line": i, "text": text})


def _files(files: Sequence[str | os.PathLike], check: bool = True) -> tuple[str, ...]:
    out = tuple(str(f) for f in files)
    missing = [f for f in out if check and not tf.io.gfile.exists(f)]
    if missing:
        raise InputError(missing[0], "no such file")
    return out


def jsonl_source(split_files: Mapping[str, Sequence[str | os.PathLike]], check_files: bool = True
                 ) -> seqio.DataSource:
    """FRet JSONL shards, read lazily (seqio.FileDataSource: files interleaved)."""
    return seqio.FileDataSource(
        read_file_fn=_read_jsonl_lines,
        split_to_filepattern={k: _files(v, check_files) for k, v in split_files.items()},
        caching_permitted=True)


def tfrecord_source(split_files: Mapping[str, Sequence[str | os.PathLike]],
                    check_files: bool = True) -> seqio.DataSource:
    """FRet TFRecord shards of fret/record_shards.write_tfrecords; schema: data/fret_records.py."""
    from gecko_jax.data.fret_records import TF_FEATURES

    return seqio.TFExampleDataSource(
        split_to_filepattern={k: _files(v, check_files) for k, v in split_files.items()},
        feature_description={k: tf.io.FixedLenFeature([], tf.string, default_value="")
                             for k in TF_FEATURES})


# --------------------------------------------------------------------------- parsing
def parse_lines(files: np.ndarray, lines: np.ndarray, texts: np.ndarray):
    """Batch of JSONL lines -> raw record columns (numpy; runs in tf.numpy_function).

    Args:
      files, lines, texts: [B] bytes / int64 / bytes (no blank lines).
    Returns:
      6 string columns [B] (RAW_STRING_FIELDS), has_negative [B], symmetric [B].
      Raises InputError naming file and line.
    """
    n = len(texts)
    cols = [np.empty(n, object) for _ in RAW_STRING_FIELDS]
    has_neg, symmetric = np.zeros(n, bool), np.zeros(n, bool)
    for i in range(n):
        path, line = files[i].decode("utf-8", "replace"), int(lines[i])
        try:
            obj = json.loads(texts[i].decode("utf-8"))
        except UnicodeDecodeError:
            raise InputError(path, "not valid UTF-8", line) from None
        except json.JSONDecodeError as err:
            raise InputError(path, f"not valid JSON ({err.msg} at column {err.colno})",
                             line) from None
        rec = training_records.parse_record(obj, path, line)
        neg = rec.negative
        values = (rec.task, rec.query, rec.positive.title, rec.positive.text,
                  neg.title if neg else "", neg.text if neg else "")
        for c, v in zip(cols, values):
            c[i] = v.encode("utf-8")
        has_neg[i] = neg is not None
        symmetric[i] = bool(obj.get("symmetric"))
    return (*cols, has_neg, symmetric)


def parse_jsonl(ds: tf.data.Dataset) -> tf.data.Dataset:
    """seqio preprocessor: lines {"file", "line", "text"} -> batches [B] of the raw fields
    of gecko_format (blank lines skipped). The following preprocessors work on batches
    (one TF op or numpy call per batch, not per row) until unbatch_rows."""

    def parse(batch):
        outs = tf.numpy_function(parse_lines, [batch["file"], batch["line"], batch["text"]],
                                 [tf.string] * len(RAW_STRING_FIELDS) + [tf.bool] * 2,
                                 stateful=False)
        out = {}
        for name, t in zip(RAW_STRING_FIELDS + ("has_negative", "symmetric"), outs):
            t.set_shape([None])
            out[name] = t
        return out

    ds = ds.filter(lambda ex: tf.strings.length(tf.strings.strip(ex["text"])) > 0)
    return ds.batch(PARSE_BATCH).map(parse, num_parallel_calls=tf.data.AUTOTUNE,
                                     deterministic=True)


def fret_tfexample_fields(ds: tf.data.Dataset) -> tf.data.Dataset:
    """seqio preprocessor: FRet tf.train.Example rows -> batches [B] of the raw fields."""

    def fields(ex):
        out = {k: ex[k] for k in RAW_STRING_FIELDS}
        out["has_negative"] = tf.strings.length(tf.strings.strip(ex["negative_text"])) > 0
        return out

    return ds.batch(PARSE_BATCH).map(fields, num_parallel_calls=tf.data.AUTOTUNE,
                                     deterministic=True)


# --------------------------------------------------------------------------- held out
def held_out_mask(held: splits.HeldOutTexts, query: np.ndarray, pos_title: np.ndarray,
                  pos_text: np.ndarray, neg_title: np.ndarray, neg_text: np.ndarray,
                  has_neg: np.ndarray) -> np.ndarray:
    """keep [B] bool: False for records touching a held-out evaluation text
    (splits.HeldOutTexts.record_overlaps, the in-memory path's rule). Inputs [B] bytes."""
    def s(b: bytes) -> str:
        return b.decode("utf-8", "replace")

    keep = np.ones(len(query), bool)
    for i in range(len(query)):
        docs = [(s(pos_title[i]), s(pos_text[i]))]
        if has_neg[i]:
            docs.append((s(neg_title[i]), s(neg_text[i])))
        keep[i] = not held.record_overlaps(s(query[i]), docs)
    return keep


def drop_held_out(held: splits.HeldOutTexts):
    """A seqio preprocessor on batches [B] of raw fields that drops the records whose
    query, positive or negative is (or starts like) a held-out evaluation text: what
    mixtures.jsonl_examples(exclude_eval_test=True) drops on the in-memory path."""

    def fn(ds: tf.data.Dataset) -> tf.data.Dataset:
        def mask(batch):
            keep = tf.numpy_function(
                functools.partial(held_out_mask, held),
                [batch["query"], batch["positive_title"], batch["positive_text"],
                 batch["negative_title"], batch["negative_text"], batch["has_negative"]],
                tf.bool, stateful=False)
            keep.set_shape([None])
            return {k: tf.boolean_mask(v, keep) for k, v in batch.items()}

        return ds.map(mask, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    return fn


# --------------------------------------------------------------------------- tokens
def tokenize_batches(ds: tf.data.Dataset, output_features: Mapping[str, seqio.Feature]
                     ) -> tf.data.Dataset:
    """seqio preprocessor on batches [B]: every output feature tokenised by one
    HFTokenizerVocabulary.encode_tf call per batch (ragged [B, None] ids)."""

    def tok(batch):
        out = dict(batch)
        for name, feat in output_features.items():
            out[name] = feat.vocabulary.encode_tf(batch[name])
        return out

    return ds.map(tok, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def unbatch_rows(ds: tf.data.Dataset) -> tf.data.Dataset:
    """seqio preprocessor: batches back to rows (what seqio's checks and shuffle expect)."""
    return ds.unbatch()


# --------------------------------------------------------------------------- tasks
def register_streaming_task(name: str, files: Sequence[str | os.PathLike],
                            tokenizer_folder: str | os.PathLike, kind: str | None = None,
                            exclude_eval_test: bool = True, check_files: bool = True
                            ) -> seqio.Task:
    """Registers a streaming seqio Task over FRet JSONL or TFRecord shards, once
    (tasks.register_once: the same name again must have the same definition).

    Args:
      files: the shards of the train split.
      kind: "jsonl" or "tfrecord"; by default from the first file's suffix.
      exclude_eval_test: drop records touching a BBC text held out for evaluation
        (drop_held_out; data/splits.py), as the in-memory path does.
      check_files: refuse missing files now (False for a Task read from its cache).
    """
    files = [str(f) for f in files]
    if not files:
        raise InputError(name, "no training files")
    kind = kind or ("tfrecord" if files[0].endswith((".tfrecord", ".tfrecords")) else "jsonl")
    if kind == "jsonl":
        source, parse = jsonl_source({"train": files}, check_files), parse_jsonl
    elif kind == "tfrecord":
        source, parse = tfrecord_source({"train": files}, check_files), fret_tfexample_fields
    else:
        raise ValueError(f"kind must be 'jsonl' or 'tfrecord', got {kind!r}")
    held_out = [drop_held_out(tasks_lib.bbc_held_out_texts())] if exclude_eval_test else []

    def add():
        vocab = tasks_lib.vocabulary(str(tokenizer_folder))
        features = {f: seqio.Feature(vocabulary=vocab, add_eos=False, dtype=tf.int32)
                    for f in ("query", "positive", "negative")}
        return seqio.TaskRegistry.add(
            name, source=source,
            preprocessors=[parse, *held_out, tasks_lib.gecko_format, tokenize_batches,
                           unbatch_rows, seqio.CacheDatasetPlaceholder(),
                           tasks_lib.trim_sequences],
            output_features=features, metric_fns=[], shuffle_buffer_size=1024)

    return tasks_lib.register_once(seqio.TaskRegistry, name, streaming_definition(
        files, tokenizer_folder, kind, exclude_eval_test), add)


def streaming_definition(files: Sequence[str], tokenizer_folder: str | os.PathLike, kind: str,
                         exclude_eval_test: bool = True) -> dict:
    """The definition of a streaming Task (tasks.register_once): what it reads and how."""
    return {"source": f"stream_{kind}", "files": [str(f) for f in files],
            "exclude_eval_test": exclude_eval_test,
            "tokenizer": tasks_lib.tokenizer_key(tokenizer_folder)}
