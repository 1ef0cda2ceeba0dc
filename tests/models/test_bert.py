"""Numerics of the Flax BERT encoder against sentence-transformers (torch)."""

import numpy as np
import pytest

from gecko_jax import cli


@pytest.fixture(scope="module")
def texts(bbc_articles):
    """200 real texts: 100 headlines (short) and 100 article bodies (cut at 256 tokens)."""
    picked = bbc_articles[::16][:100]
    return [a.headline for a in picked] + [a.body for a in picked]


def _gecko_embed(folder, minilm_dir, texts, dtype):
    src = folder / "texts.txt"
    src.write_text("\n".join(texts) + "\n", encoding="utf-8")
    out = folder / f"{dtype}.npy"
    rc = cli.main(["embed", "--model", str(minilm_dir), "--input", str(src), "--output", str(out),
                   "--format", "raw", "--max-length", "256", "--dtype", dtype])
    assert rc == 0
    return np.load(out)


@pytest.fixture(scope="module")
def float32_embeddings(tmp_path_factory, minilm_dir, texts):
    """`gecko embed --dtype float32` of the texts (shared by the two tests below)."""
    return _gecko_embed(tmp_path_factory.mktemp("f32"), minilm_dir, texts, "float32")


def test_gecko_embed_matches_sentence_transformers(texts, float32_embeddings, st_minilm):
    assert len(texts) == 200
    ours = float32_embeddings
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


def test_bf16_encode_stays_close_to_float32(tmp_path, minilm_dir, texts, float32_embeddings):
    # The same 200 texts, float32 vs bfloat16 compute: bf16 rounding may turn each
    # embedding by at most cosine 0.998 (what retrieval rankings tolerate here).
    f32 = float32_embeddings
    bf16 = _gecko_embed(tmp_path, minilm_dir, texts, "bfloat16")
    assert bf16.dtype == np.float32 and bf16.shape == f32.shape == (200, 384)
    cosine = np.sum(f32 * bf16, axis=1)
    assert cosine.min() >= 0.998, cosine.min()
    assert cosine.min() < 0.999999  # bf16 really ran: not bit-identical to float32
    print(f"bf16 vs float32 cosine: min {cosine.min():.5f}, mean {cosine.mean():.5f}")


def test_encoder_bf16_kernels_cast_once_give_the_same_embeddings(minilm_dir, bbc_articles):
    # The Encoder stores the layers' kernels in bf16 once (encode.layer_kernels_as); the
    # model, run on its float32 parameters with the same compute dtype, casts them in
    # every layer. Same rounding, so the same numbers.
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from gecko_jax.encode import Encoder, layer_kernels_as
    from gecko_jax.kernels.dense import cpu_bf16_mode
    from gecko_jax.models.weights import load_dual_encoder
    from gecko_jax.tokenization import pad_batch

    if not cpu_bf16_mode(jnp.bfloat16):
        pytest.skip("no CPU bf16 mode here (oneDNN kernel unavailable)")
    enc = Encoder.from_pretrained(minilm_dir, max_length=128, batch_size=8,
                                  compute_dtype="bfloat16")
    cast = [x for x in jax.tree_util.tree_leaves(enc._state) if x.dtype == jnp.bfloat16]
    assert len(cast) == 6 * 6  # q, k, v, attention out, intermediate, output per layer
    texts = [a.body for a in bbc_articles[:8]]
    ids, mask = pad_batch(enc.tokenizer.encode(texts, 128), 128, enc.tokenizer.pad_id)
    state = nnx.split(load_dual_encoder(minilm_dir)[0])[1]  # float32 kernels
    ours = np.asarray(enc._embed(enc._state, ids, mask))
    theirs = np.asarray(enc._embed(state, ids, mask))
    assert not any(x.dtype == jnp.bfloat16 for x in jax.tree_util.tree_leaves(state))
    np.testing.assert_array_equal(ours, theirs)
    assert jax.tree_util.tree_structure(layer_kernels_as(state, jnp.bfloat16)) == \
        jax.tree_util.tree_structure(enc._state)
