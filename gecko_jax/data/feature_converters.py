"""The dual-encoder feature converter: task features -> fixed-length model features.

Task features (from gecko_jax.data.tasks): token ids for `query`, `positive`,
`negative` (each [None] int32, special tokens included) plus integer text ids
`query_text_id`, `positive_text_id`, `negative_text_id` (scalars; NO_ID = -1
for a missing negative) that the loss uses for its false-negative masks.

Model features, every sequence trimmed/padded to its feature length:

    query_ids    [Lq]  query_mask    [Lq]
    positive_ids [Ld]  positive_mask [Ld]
    negative_ids [Ld]  negative_mask [Ld]
    query_text_id [], positive_text_id [], negative_text_id []

Trimming keeps the tokenizer's closing special tokens ([SEP]; an LLM tokenizer's
EOS if it appends one; none for Gemma's BOS-only rule), like
gecko_jax.tokenization.Tokenizer.encode at inference; the Tasks trim already
(tasks.trim_sequences), so seqio's length checks hold. seqio's own `__call__`
runs with all its checks: callers pass `task_feature_lengths(lengths)`. No packing: a dual
encoder needs one text per row.
"""

from __future__ import annotations

from typing import Mapping

import seqio
import tensorflow as tf

SEQUENCE_FEATURES = ("query", "positive", "negative")
TEXT_ID_FEATURES = ("query_text_id", "positive_text_id", "negative_text_id")


def trim_keep_last(ids: tf.Tensor, length: int, keep: int = 1) -> tf.Tensor:
    """ids [n] -> ids [min(n, length)]: the first length-keep tokens and the last `keep`
    (the tokenizer's closing special tokens; tokenization.truncate_keep_closing)."""
    n = tf.shape(ids)[0]
    if keep == 0:
        return ids[:length]
    return tf.cond(n > length,
                   lambda: tf.concat([ids[:length - keep], ids[n - keep:]], axis=0),
                   lambda: ids)


def pad_to(ids: tf.Tensor, length: int, pad_id: int) -> tuple[tf.Tensor, tf.Tensor]:
    """ids [n <= length] -> (ids [length], mask [length]) right-padded."""
    n = tf.shape(ids)[0]
    padded = tf.pad(ids, [[0, length - n]], constant_values=pad_id)
    mask = tf.cast(tf.range(length) < n, tf.int32)
    padded.set_shape([length])
    mask.set_shape([length])
    return padded, mask


class DualEncoderFeatureConverter(seqio.FeatureConverter):
    """query / positive / negative ids + masks at fixed lengths, text ids passed through."""

    TASK_FEATURES = {
        **{f: seqio.FeatureConverter.FeatureSpec(dtype=tf.int32) for f in SEQUENCE_FEATURES},
        **{f: seqio.FeatureConverter.FeatureSpec(dtype=tf.int32, rank=0)
           for f in TEXT_ID_FEATURES},
    }
    MODEL_FEATURES = {
        **{f"{f}_{s}": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32)
           for f in SEQUENCE_FEATURES for s in ("ids", "mask")},
        **{f: seqio.FeatureConverter.FeatureSpec(dtype=tf.int32, rank=0)
           for f in TEXT_ID_FEATURES},
    }
    PACKING_FEATURE_DTYPES = {}

    def __init__(self, pad_id: int = 0, keep_last: int = 1, **kwargs):
        kwargs.setdefault("pack", False)
        super().__init__(**kwargs)
        self._pad_id = pad_id
        self._keep_last = keep_last

    def _convert_features(self, ds: tf.data.Dataset,
                          task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
        def convert(ex):
            out = {}
            for f in SEQUENCE_FEATURES:
                length = task_feature_lengths[f]
                ids, mask = pad_to(trim_keep_last(ex[f], length, self._keep_last), length, self._pad_id)
                out[f"{f}_ids"], out[f"{f}_mask"] = ids, mask
            for f in TEXT_ID_FEATURES:
                out[f] = tf.cast(ex[f], tf.int32)
            return out

        return ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]
                                  ) -> Mapping[str, int]:
        out = {f: task_feature_lengths[f] for f in TEXT_ID_FEATURES}
        for f in SEQUENCE_FEATURES:
            out[f"{f}_ids"] = out[f"{f}_mask"] = task_feature_lengths[f]
        return out


def task_feature_lengths(lengths: Mapping[str, int]) -> dict[str, int]:
    """{"query": Lq, "positive": Ld, "negative": Ld} -> the converter's task feature
    lengths: seqio's checks want a length for every task feature, and the scalar text
    ids get 1 (seqio skips the length check of rank-0 features)."""
    missing = [f for f in SEQUENCE_FEATURES if f not in lengths]
    if missing:
        raise ValueError(f"feature lengths missing for {missing}")
    return {**{f: int(lengths[f]) for f in SEQUENCE_FEATURES}, **{f: 1 for f in TEXT_ID_FEATURES}}
