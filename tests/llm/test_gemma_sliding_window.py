"""Gemma-3's sliding-window layers on a prompt longer than the window (700 tokens > 512),
against transformers loading the same GGUF: top-1 at every position and log-prob sums
within 1e-3, for scoring (plain forward, and the shared-prefix extend path) and for the
KV-cached generation path (prefill, then one token at a time)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from gecko_jax.models import decoder as dec

PROMPT_TOKENS = 700
SPLIT = 600  # prefix / continuation for the log-prob sums
LOGPROB_SUM_ATOL = 1e-3

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def long_ids(get_model):
    from gecko_jax.fret.corpus import wikipedia_passages

    engine = get_model("engine", "gemma3")
    text = ""
    for row in wikipedia_passages(words=100):
        text += row["text"] + "\n\n"
        if len(engine.tokenizer.encode(text)) > PROMPT_TOKENS:
            break
    ids = engine.tokenizer.encode(text)[:PROMPT_TOKENS]
    assert engine.config.sliding_window < len(ids)
    return ids


@pytest.fixture(scope="module")
def reference(get_model, long_ids):
    """transformers: log-softmax of the logits at every position [T, V] -> (top1, logp of
    the next token)."""
    model, _ = get_model("torch", "gemma3")
    with torch.no_grad():
        logits = model(torch.tensor([long_ids])).logits[0].double()
    lp = torch.log_softmax(logits, -1)
    nxt = torch.tensor(long_ids[1:])
    return logits.argmax(-1).numpy(), lp[:-1].gather(-1, nxt[:, None])[:, 0].numpy()


def _check(name, top1, logp_next, ref_top1, ref_logp_next):
    np.testing.assert_array_equal(top1, ref_top1[:len(top1)], err_msg=name)
    cont = slice(SPLIT - 1, PROMPT_TOKENS - 1)  # predictions of tokens SPLIT..T-1
    diff = abs(float(np.sum(logp_next[cont])) - float(np.sum(ref_logp_next[cont])))
    print(f"\n{name}: top-1 equal at {len(top1)} positions; |log-prob sum diff| = {diff:.2e}")
    assert diff < LOGPROB_SUM_ATOL, (name, diff)


def test_scoring_past_the_window_matches_transformers(get_model, long_ids, reference):
    engine = get_model("engine", "gemma3")
    logits = engine.full_logits(long_ids).astype(np.float64)
    top1 = logits.argmax(-1)
    lp = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
    logp_next = lp[np.arange(len(long_ids) - 1), long_ids[1:]]
    del logits, lp
    _check("plain forward", top1, logp_next, *reference)
    # score_ids: the plain path, and the extend path (two rows share the 600-token prefix;
    # its KV cache is computed once and the rest attends to it through the window).
    prefix, cont = long_ids[:SPLIT], long_ids[SPLIT:]
    plain = engine.score_ids([prefix], [cont], reuse_prefix=False)[0]
    reused = engine.score_ids([prefix, prefix], [cont, cont[:50]])[0]
    ref_sum = float(np.sum(reference[1][SPLIT - 1:]))
    for label, got in (("score plain", plain), ("score extend", reused)):
        print(f"{label}: |log-prob sum diff| = {abs(got - ref_sum):.2e}")
        assert abs(got - ref_sum) < LOGPROB_SUM_ATOL, (label, got, ref_sum)


def test_kv_cached_decoding_past_the_window_matches_transformers(get_model, long_ids,
                                                                 reference):
    """Prefill the first SPLIT tokens into the cache, then feed the rest one token at a
    time through the decode path (cache writes at slots > 512)."""
    engine = get_model("engine", "gemma3")
    cfg, params = engine.config, engine.params
    cache = {"k": jnp.zeros((cfg.num_layers, 1, 768, cfg.num_kv_heads, cfg.head_dim)),
             "pos": jnp.arange(768, dtype=jnp.int32)[None], "valid": jnp.ones((1, 768), bool)}
    cache["v"] = cache["k"]
    prefill = jax.jit(lambda c, ids: dec.forward(cfg, params, ids, jnp.arange(SPLIT)[None],
                                                 cache=c, write_at=jnp.zeros((1,), jnp.int32)))

    @jax.jit
    def step(c, tok, pos):
        h, c = dec.forward(cfg, params, tok[None, None], pos[None, None], cache=c,
                           write_at=pos[None])
        logits = dec.lm_head(cfg, params, h)[0, 0]
        return c, jnp.argmax(logits), jax.nn.log_softmax(logits)

    h, cache = prefill(cache, jnp.asarray([long_ids[:SPLIT]]))
    last = jax.nn.log_softmax(dec.lm_head(cfg, params, h[:, -1:])[0, 0])
    top1, logp = [int(jnp.argmax(last))], [float(last[long_ids[SPLIT]])]
    for p in range(SPLIT, PROMPT_TOKENS - 1):
        cache, t1, lp = step(cache, jnp.int32(long_ids[p]), jnp.int32(p))
        top1.append(int(t1))
        logp.append(float(lp[long_ids[p + 1]]))
    ref_top1, ref_logp = reference
    np.testing.assert_array_equal(top1, ref_top1[SPLIT - 1:PROMPT_TOKENS - 1])
    diff = abs(sum(logp) - float(np.sum(ref_logp[SPLIT - 1:])))
    print(f"\nKV-cached decode: top-1 equal at {len(top1)} steps; |log-prob sum diff| = "
          f"{diff:.2e}")
    assert diff < LOGPROB_SUM_ATOL
    # And the engine's own generation (prefill of 700, then decode at positions > 700).
    model, _ = get_model("torch", "gemma3")
    got = engine.generate_ids([long_ids], max_new_tokens=12)[0]
    with torch.no_grad():
        ref = model.generate(torch.tensor([long_ids]), max_new_tokens=12, do_sample=False,
                             attention_mask=torch.ones(1, len(long_ids), dtype=torch.long))
    assert got == ref[0, len(long_ids):].tolist()
