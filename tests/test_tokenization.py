"""Length and batch buckets, padding, and the real MiniLM tokenizer's padding pitfall."""

import numpy as np

from gecko_jax.tokenization import Tokenizer, batch_bucket, bucket_length, pad_batch


def test_length_buckets():
    assert bucket_length(1, 256) == 8
    assert bucket_length(129, 256) == 160
    assert bucket_length(300, 256) == 256
    assert bucket_length(600, 512) == 512


def test_batch_buckets_pad_a_short_last_batch_to_a_power_of_two():
    assert [batch_bucket(n, 32) for n in (1, 2, 3, 5, 8, 9, 17, 32)] == [1, 2, 4, 8, 8, 16, 32, 32]
    assert batch_bucket(20, 24) == 24  # capped at a batch size that is not a power of two
    assert batch_bucket(3, 32, multiple=8) == 8  # a multiple of the data shards
    assert batch_bucket(9, 32, multiple=8) == 16


def test_pad_batch_builds_the_mask(minilm_dir):
    tok = Tokenizer.from_folder(minilm_dir)
    ids = tok.encode(["a short text", "a slightly longer text than that"], 64)
    ids_bl, mask_bl = pad_batch(ids, 16, tok.pad_id)
    assert ids_bl.shape == mask_bl.shape == (2, 16)
    # No padding from tokenizer.json's own 128-token setting (ASSETS.md pitfall).
    assert [len(x) for x in ids] == list(mask_bl.sum(axis=1))
    assert np.all(ids_bl[mask_bl == 0] == tok.pad_id)
