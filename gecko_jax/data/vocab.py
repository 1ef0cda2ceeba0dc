"""A seqio Vocabulary over the encoder's own HF tokenizer (tokenizer.json).

seqio Tasks tokenise with `vocabulary.encode_tf`; this adapter runs the same
`tokenizers` backend as inference (gecko_jax.tokenization.Tokenizer), so
training and `gecko embed` see identical ids. By default it adds the model's
special tokens ([CLS] ... [SEP] for BERT); the feature converter trims with
the closing token kept, exactly as `Tokenizer.encode` does.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np
import seqio
import tensorflow as tf

from gecko_jax.tokenization import Tokenizer


class HFTokenizerVocabulary(seqio.Vocabulary):
    """seqio.Vocabulary backed by a `tokenizers` tokenizer.json in a model folder."""

    def __init__(self, folder: str | os.PathLike, add_special_tokens: bool = True):
        super().__init__(extra_ids=0)
        self._folder = pathlib.Path(folder)
        self._add_special = add_special_tokens
        self._tokenizer = Tokenizer.from_folder(self._folder)

    # --- ids -------------------------------------------------------------------
    @property
    def tokenizer(self) -> Tokenizer:
        return self._tokenizer

    def _token_id(self, *names) -> int | None:
        for name in names:
            i = self._tokenizer.backend.token_to_id(name)
            if i is not None:
                return i
        return None

    @property
    def pad_id(self) -> int:
        return self._tokenizer.pad_id

    @property
    def eos_id(self) -> int | None:
        return self._token_id("[SEP]", "</s>", "<|endoftext|>")

    @property
    def bos_id(self) -> int | None:
        return self._token_id("[CLS]", "<s>")

    @property
    def unk_id(self) -> int | None:
        return self._token_id("[UNK]", "<unk>")

    @property
    def _base_vocab_size(self) -> int:
        return self._tokenizer.vocab_size

    # --- python ----------------------------------------------------------------
    def _encode(self, s: str) -> list[int]:
        return self._tokenizer.backend.encode(s, add_special_tokens=self._add_special).ids

    def _decode(self, ids) -> str:
        return self._tokenizer.backend.decode([int(i) for i in ids], skip_special_tokens=True)

    # --- tensorflow (numpy_function: the tokenizers library has no TF kernels) ---
    def encode_batch(self, texts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[B] bytes -> (ids [sum of lengths] int32, lengths [B] int64): one
        `tokenizers.encode_batch` call (Rust, multi-threaded) for the whole batch."""
        encs = self._tokenizer.backend.encode_batch(
            [t.decode("utf-8") for t in texts.reshape(-1)], add_special_tokens=self._add_special)
        lengths = np.array([len(e.ids) for e in encs], np.int64)
        ids = np.fromiter((i for e in encs for i in e.ids), np.int32, int(lengths.sum()))
        return ids, lengths

    def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
        """[] -> ids [None]; [B] -> RaggedTensor [B, None] (one batched call)."""
        if s.shape.rank == 0:
            ids, _ = tf.numpy_function(self.encode_batch, [tf.reshape(s, [1])],
                                       [tf.int32, tf.int64], stateful=False)
            ids.set_shape([None])
            return ids
        if s.shape.rank != 1:
            raise ValueError(f"encode_tf takes a scalar or a [B] string tensor, got {s.shape}")
        ids, lengths = tf.numpy_function(self.encode_batch, [s], [tf.int32, tf.int64],
                                         stateful=False)
        ids.set_shape([None])
        lengths.set_shape([None])
        return tf.RaggedTensor.from_row_lengths(ids, lengths, validate=False)

    def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
        def dec(x):
            return tf.constant(self._decode(x.numpy().tolist()))

        if ids.shape.rank == 1:
            out = tf.py_function(dec, [ids], tf.string)
            out.set_shape([])
            return out
        return tf.map_fn(self._decode_tf, ids, fn_output_signature=tf.string)

    def __eq__(self, other) -> bool:
        return (isinstance(other, HFTokenizerVocabulary) and other._folder == self._folder
                and other._add_special == self._add_special)

    def __hash__(self) -> int:
        return hash((str(self._folder), self._add_special))
