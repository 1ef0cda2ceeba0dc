"""The JAX decoder against transformers' Llama and Gemma-3 on tiny random models.

Tiny configs keep this fast while exercising what the real models do not reach in a
short test: Gemma-3's sliding window (a sequence longer than the window), padding,
the KV-cache path, bidirectional attention, and sharding on 8 emulated devices.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from gecko_jax.models import decoder as dec

ATOL = 1e-4

# Jitted twins of the pure functions (eager op-by-op execution is slow on CPU).
_logits = jax.jit(dec.logits, static_argnums=0)
_forward = jax.jit(dec.forward, static_argnums=0, static_argnames=("causal",))
_head = jax.jit(dec.lm_head, static_argnums=0)


def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, rope_theta=1e5,
                      rms_norm_eps=1e-5, tie_word_embeddings=True, max_position_embeddings=128)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).eval()


def _tiny_gemma():
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    cfg = Gemma3TextConfig(
        vocab_size=101, hidden_size=32, intermediate_size=48, num_hidden_layers=4,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=5,
        layer_types=["sliding_attention", "full_attention"] * 2, query_pre_attn_scalar=16,
        rope_theta=1e6, rope_local_base_freq=1e4, max_position_embeddings=128)
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(cfg).eval()
    with torch.no_grad():  # random norm offsets, so (1 + w) is really tested
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(0, 0.3)
    return model


@pytest.fixture(scope="module", params=["llama", "gemma3"])
def tiny(request):
    model = _tiny_llama() if request.param == "llama" else _tiny_gemma()
    cfg = dec.DecoderConfig.from_hf_dict(model.config.to_dict())
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    return model, cfg, dec.hf_to_params(cfg, state)


def _torch_logits(model, ids, mask=None):
    with torch.no_grad():
        kw = {} if mask is None else {"attention_mask": torch.tensor(mask)}
        return model(torch.tensor(ids), **kw).logits.numpy()


def test_logits_match_transformers(tiny):
    model, cfg, params = tiny
    ids = np.random.RandomState(0).randint(0, cfg.vocab_size, (2, 13))  # > sliding window 5
    ours = np.asarray(_logits(cfg, params, jnp.asarray(ids)))
    np.testing.assert_allclose(ours, _torch_logits(model, ids), atol=ATOL, rtol=0)


def test_right_padding_does_not_change_real_positions(tiny):
    model, cfg, params = tiny
    ids = np.random.RandomState(1).randint(1, cfg.vocab_size, (2, 9))
    mask = np.ones_like(ids)
    mask[1, 6:] = 0
    ours = np.asarray(_logits(cfg, params, jnp.asarray(ids), jnp.asarray(mask)))
    alone = np.asarray(_logits(cfg, params, jnp.asarray(ids[1:, :6])))
    np.testing.assert_allclose(ours[1, :6], alone[0], atol=ATOL, rtol=0)


def test_cache_path_equals_full_forward(tiny):
    """Prefill 4 tokens into a cache, then feed the rest one at a time."""
    _, cfg, params = tiny
    ids = jnp.asarray(np.random.RandomState(2).randint(0, cfg.vocab_size, (2, 11)))
    full = np.asarray(_logits(cfg, params, ids))
    s = 16
    shape = (cfg.num_layers, 2, s, cfg.num_kv_heads, cfg.head_dim)
    cache = {"k": jnp.zeros(shape), "v": jnp.zeros(shape),
             "pos": jnp.broadcast_to(jnp.arange(s), (2, s)), "valid": jnp.ones((2, s), bool)}
    pos = jnp.broadcast_to(jnp.arange(4), (2, 4))
    h, cache = _forward(cfg, params, ids[:, :4], pos, cache=cache,
                        write_at=jnp.zeros(2, jnp.int32))
    got = [_head(cfg, params, h)]
    for t in range(4, 11):
        p = jnp.full((2, 1), t)
        h, cache = _forward(cfg, params, ids[:, t:t + 1], p, cache=cache,
                            write_at=jnp.full((2,), t, jnp.int32))
        got.append(_head(cfg, params, h))
    np.testing.assert_allclose(np.concatenate(got, 1), full, atol=ATOL, rtol=0)


def test_hf_state_round_trip(tiny):
    model, cfg, params = tiny
    back = dec.params_to_hf(cfg, params)
    ref = {k: v.numpy() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    assert set(back) == set(ref)
    for k in ref:
        np.testing.assert_array_equal(back[k], ref[k])
    assert dec.DecoderConfig.from_hf_dict(cfg.to_hf_dict()) == cfg


def test_module_has_logical_axes_and_matches_pure_forward(tiny):
    _, cfg, params = tiny
    model = dec.decoder_from_params(cfg, params)
    specs = nnx.get_partition_spec(nnx.state(model, nnx.Param))
    assert tuple(specs["embed"].value) == ("vocab", "embed")
    assert tuple(specs["layers"]["wq"].value) == ("layers", "embed", "heads", "kv")
    assert tuple(specs["layers"]["w_down"].value) == ("layers", "mlp", "embed")
    ids = jnp.asarray(np.random.RandomState(3).randint(0, cfg.vocab_size, (2, 7)))
    np.testing.assert_allclose(np.asarray(model(ids)), np.asarray(_logits(cfg, params, ids)),
                               atol=1e-5, rtol=0)


def test_bidirectional_backbone_and_mean_pooling(tiny):
    _, cfg, params = tiny
    ids = jnp.asarray(np.random.RandomState(4).randint(1, cfg.vocab_size, (2, 6)))
    mask = jnp.asarray([[1] * 6, [1] * 4 + [0] * 2])
    pos = jnp.broadcast_to(jnp.arange(6), (2, 6))

    def hidden(x, causal):
        return np.asarray(_forward(cfg, params, x, pos, valid_bt=mask > 0, causal=causal)[0])

    later = ids.at[0, 5].set((ids[0, 5] + 1) % cfg.vocab_size)
    # Token 0 sees token 5 only without the causal mask.
    np.testing.assert_allclose(hidden(later, True)[0, 0], hidden(ids, True)[0, 0], atol=1e-6)
    assert np.abs(hidden(later, False)[0, 0] - hidden(ids, False)[0, 0]).max() > 1e-4
    bidir = dec.decoder_from_params(cfg, params, causal=False)
    emb = np.asarray(nnx.jit(lambda m, x, k: m.embed_text(x, k))(bidir, ids, mask))
    np.testing.assert_allclose(emb[1], hidden(ids, False)[1, :4].mean(0), atol=1e-5)
    # Padding never leaks into real rows.
    np.testing.assert_allclose(dec.mean_pool(hidden(ids.at[1, 4:].set(3), False), mask)[1],
                               emb[1], atol=1e-5)


def test_sharded_forward_matches_unsharded(tiny):
    """Params placed by logical axis names on a 4x2 mesh give the unsharded logits."""
    _, cfg, params = tiny
    from gecko_jax.llm.jax_engine import shard_params

    mesh = jax.make_mesh((4, 2), ("data", "model"),
                         axis_types=(jax.sharding.AxisType.Auto,) * 2)
    sharded = shard_params(cfg, params, mesh)
    assert sharded["layers"]["w_up"].sharding.spec == jax.sharding.PartitionSpec(None, None, "model")
    ids = jnp.asarray(np.random.RandomState(5).randint(0, cfg.vocab_size, (4, 8)))
    ids_s = jax.device_put(ids, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data")))
    got = jax.jit(lambda p, x: dec.logits(cfg, p, x))(sharded, ids_s)
    np.testing.assert_allclose(np.asarray(got), np.asarray(_logits(cfg, params, ids)),
                               atol=ATOL, rtol=0)
