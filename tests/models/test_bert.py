"""Numerics of the Flax BERT encoder against sentence-transformers (torch)."""

import numpy as np

from gecko_jax import cli


def test_gecko_embed_matches_sentence_transformers(tmp_path, minilm_dir, bbc_articles, st_minilm):
    # 200 real texts: 100 headlines (short) and 100 article bodies (cut at 256 tokens).
    picked = bbc_articles[::16][:100]
    texts = [a.headline for a in picked] + [a.body for a in picked]
    assert len(texts) == 200
    src = tmp_path / "texts.txt"
    src.write_text("\n".join(texts) + "\n", encoding="utf-8")
    out = tmp_path / "emb.npy"
    rc = cli.main(["embed", "--model", str(minilm_dir), "--input", str(src), "--output", str(out),
                   "--format", "raw", "--max-length", "256"])
    assert rc == 0
    ours = np.load(out)
    theirs = st_minilm.encode(texts, batch_size=32, normalize_embeddings=True)
    assert ours.shape == theirs.shape == (200, 384)
    assert ours.dtype == np.float32
    cosine = np.sum(ours * theirs, axis=1)
    assert cosine.min() >= 0.9999, cosine.min()


def test_padding_does_not_change_embeddings(minilm_encoder):
    # A text alone, and batched beside a much longer one (so padded far), must agree.
    short = "Markets rallied on Friday."
    alone = minilm_encoder.encode([short])
    beside = minilm_encoder.encode([short, "word " * 200])
    np.testing.assert_allclose(alone[0], beside[0], atol=2e-5)
