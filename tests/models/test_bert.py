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
                   "--format", "raw", "--max-length", "256", "--dtype", "float32"])
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


def test_bf16_encode_stays_close_to_float32(tmp_path, minilm_dir, bbc_articles):
    # The same 200 texts as above, float32 vs bfloat16 compute (issue 18's bound 0.998).
    picked = bbc_articles[::16][:100]
    texts = [a.headline for a in picked] + [a.body for a in picked]
    src = tmp_path / "texts.txt"
    src.write_text("\n".join(texts) + "\n", encoding="utf-8")
    out = {}
    for dtype in ("float32", "bfloat16"):
        out[dtype] = tmp_path / f"{dtype}.npy"
        rc = cli.main(["embed", "--model", str(minilm_dir), "--input", str(src),
                       "--output", str(out[dtype]), "--format", "raw", "--max-length", "256",
                       "--dtype", dtype])
        assert rc == 0
    f32, bf16 = np.load(out["float32"]), np.load(out["bfloat16"])
    assert bf16.dtype == np.float32 and bf16.shape == f32.shape == (200, 384)
    cosine = np.sum(f32 * bf16, axis=1)
    assert cosine.min() >= 0.998, cosine.min()
    assert cosine.min() < 0.999999  # bf16 really ran: not bit-identical to float32
    print(f"bf16 vs float32 cosine: min {cosine.min():.5f}, mean {cosine.mean():.5f}")
