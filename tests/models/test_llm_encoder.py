"""The bidirectional decoder tower against transformers, on tiny random models.

Gemma-3: transformers' own `use_bidirectional_attention` (Gemma3TextModel) on a
sequence longer than the sliding window, with padding. Llama: transformers has no
such flag, so LlamaModel gets an explicit all-visible (padding-only) 4-D mask.
Also: last-token pooling, the dense head, logical axis names.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from gecko_jax.models import decoder as dec
from gecko_jax.models import llm_encoder as le

ATOL = 1e-4


def _tiny_gemma_text(bidirectional=True):
    from transformers import Gemma3TextConfig, Gemma3TextModel

    cfg = Gemma3TextConfig(
        vocab_size=101, hidden_size=32, intermediate_size=48, num_hidden_layers=4,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=6,
        layer_types=["sliding_attention", "full_attention"] * 2, query_pre_attn_scalar=16,
        rope_theta=1e6, rope_local_base_freq=1e4, max_position_embeddings=128,
        use_bidirectional_attention=bidirectional, attn_implementation="eager")
    torch.manual_seed(0)
    model = Gemma3TextModel(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(0, 0.3)
    return model


def _tiny_llama():
    from transformers import LlamaConfig, LlamaModel

    cfg = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, rope_theta=1e5,
                      rms_norm_eps=1e-5, tie_word_embeddings=True, max_position_embeddings=128,
                      attn_implementation="eager")
    torch.manual_seed(0)
    return LlamaModel(cfg).eval()


def _ours(model_t):
    d = model_t.config.to_dict()
    d.setdefault("model_type", model_t.config.model_type)
    cfg = dec.DecoderConfig.from_hf_dict(d)
    state = {k: v.detach().numpy() for k, v in model_t.state_dict().items()}
    return cfg, dec.hf_to_params(cfg, state)


def _batch(vocab):
    ids = np.random.RandomState(0).randint(1, vocab, (3, 15))
    mask = np.ones_like(ids)
    mask[1, 11:] = 0
    mask[2, 4:] = 0
    return ids, mask


def _hidden(cfg, params, ids, mask):
    pos = jnp.broadcast_to(jnp.arange(ids.shape[1]), ids.shape)
    fwd = jax.jit(dec.forward, static_argnums=0, static_argnames=("causal",))
    h, _ = fwd(cfg, params, jnp.asarray(ids), pos, valid_bt=jnp.asarray(mask) > 0, causal=False)
    return np.asarray(h)


def test_bidirectional_window_rule():
    # EmbeddingGemma: window 512 -> |i - j| < 257 (transformers halves it in the config).
    assert dec.bidirectional_window(512) == 257
    m = dec.attention_mask(jnp.arange(9)[None], jnp.arange(9)[None], jnp.ones((1, 9), bool),
                           causal=False, window=dec.bidirectional_window(6))
    i, j = np.indices((9, 9))
    np.testing.assert_array_equal(np.asarray(m[0]), np.abs(i - j) < 4)


def test_gemma3_bidirectional_matches_transformers():
    model_t = _tiny_gemma_text()
    assert model_t.config.sliding_window == 4          # 6 // 2 + 1, transformers' rule
    cfg, params = _ours(model_t)
    assert cfg.sliding_window == 6                     # to_dict() stores the original window
    ids, mask = _batch(cfg.vocab_size)
    with torch.no_grad():
        ref = model_t(torch.tensor(ids), attention_mask=torch.tensor(mask)).last_hidden_state.numpy()
    ours = _hidden(cfg, params, ids, mask)
    real = mask > 0
    np.testing.assert_allclose(ours[real], ref[real], atol=ATOL, rtol=0)
    # The causal twin really differs (the switch does something).
    causal_t = _tiny_gemma_text(bidirectional=False)
    with torch.no_grad():
        ref_c = causal_t(torch.tensor(ids), attention_mask=torch.tensor(mask)).last_hidden_state.numpy()
    assert np.abs(ref_c[real] - ours[real]).max() > 1e-2


def test_llama_bidirectional_matches_full_mask():
    model_t = _tiny_llama()
    cfg, params = _ours(model_t)
    ids, mask = _batch(cfg.vocab_size)
    # 4-D float mask: 0 where the key is a real token, -inf at padding, no causal part.
    add = torch.tensor(np.where(mask[:, None, None, :] > 0, 0.0, -1e30), dtype=torch.float32)
    add = add.expand(ids.shape[0], 1, ids.shape[1], ids.shape[1])
    with torch.no_grad():
        ref = model_t(torch.tensor(ids), attention_mask=add).last_hidden_state.numpy()
    ours = _hidden(cfg, params, ids, mask)
    real = mask > 0
    np.testing.assert_allclose(ours[real], ref[real], atol=ATOL, rtol=0)


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_encoder_pooling_and_dense_head(pooling):
    model_t = _tiny_gemma_text()
    cfg, params = _ours(model_t)
    ids, mask = _batch(cfg.vocab_size)
    model = le.llm_encoder_from_params(cfg, params, pooling=pooling, dense_dims=(48, 24), seed=3)
    assert model.embedding_dim == 24
    got = np.asarray(le.embed_fn(model)(jnp.asarray(ids), jnp.asarray(mask)))
    h = _hidden(cfg, params, ids, mask)
    if pooling == "mean":
        pooled = np.stack([h[b, mask[b] > 0].mean(0) for b in range(len(ids))])
    else:
        pooled = np.stack([h[b, mask[b].sum() - 1] for b in range(len(ids))])
    w1, w2 = (np.asarray(layer.kernel.get_value()) for layer in model.dense)
    want = pooled @ w1 @ w2
    want /= np.linalg.norm(want, axis=-1, keepdims=True)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(got, axis=-1), 1.0, atol=1e-5)


def test_parameters_carry_logical_axes():
    model_t = _tiny_gemma_text()
    cfg, params = _ours(model_t)
    model = le.llm_encoder_from_params(cfg, params, dense_dims=(48, 24))
    specs = nnx.get_partition_spec(nnx.state(model, nnx.Param))
    assert tuple(specs["backbone"]["embed"].value) == ("vocab", "embed")
    assert tuple(specs["backbone"]["layers"]["w_up"].value) == ("layers", "embed", "mlp")
    assert tuple(specs["dense"][0]["kernel"].value) == ("embed", "mlp")
    assert tuple(specs["dense"][1]["kernel"].value) == ("mlp", "embed")


def test_causal_backbone_refused():
    model_t = _tiny_gemma_text()
    cfg, params = _ours(model_t)
    with pytest.raises(ValueError, match="bidirectional"):
        le.LLMEncoder(dec.decoder_from_params(cfg, params, causal=True))
