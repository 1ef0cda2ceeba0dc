"""start_distill: prompt stripping against the real MiniLM tokenizer, and the KL term
against numpy."""

import jax
import jax.numpy as jnp
import numpy as np

from gecko_jax import assets, start_distill, unified_format
from gecko_jax.tokenization import Tokenizer, pad_batch


def test_strip_prompt_gives_the_raw_texts_tokens():
    tok = Tokenizer.from_folder(assets.minilm_dir())
    texts = ["who led the Confederate army at Shiloh", "tax rises in the budget",
             "a text long enough to be cut by the query length of twelve tokens here"]
    task = unified_format.task_description("retrieval")
    formatted = [unified_format.format_query(t, task) for t in texts] + [texts[0]]
    ids, mask = pad_batch(tok.encode(formatted, 24), 24, tok.pad_id)
    out_ids, out_mask = start_distill.strip_prompt(jnp.asarray(ids), jnp.asarray(mask),
                                                   tok.prompt_markers)
    out_ids, out_mask = np.asarray(out_ids), np.asarray(out_mask)
    for row, text in enumerate(texts + [texts[0]]):
        kept = out_ids[row][out_mask[row] > 0].tolist()
        raw = tok.encode([text], 64)[0]
        if row == 2:
            # Cut by the prompted length: [CLS], the text's first tokens, [SEP].
            n = len(kept) - 2
            assert kept == raw[:n + 1] + raw[-1:] and n < len(raw) - 2
        else:
            assert kept == raw, (text, tok.backend.decode(kept))
        assert out_mask[row][:len(kept)].all() and not out_mask[row][len(kept):].any()
    assert (out_ids[:3] != ids[:3]).any()          # the prompt really was removed


def _numpy_kl(q, d, q0, d0, tau, dims, weights):
    def unit(x):
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    def log_softmax(z):
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    lp = log_softmax((q0 @ d0.T) / tau)
    total = 0.0
    for m, w in zip(dims, weights):
        ls = log_softmax((unit(q[:, :m]) @ unit(d[:, :m]).T) / tau)
        total += w * np.mean(np.sum(np.exp(lp) * (lp - ls), axis=1))
    return total


def test_start_kl_matches_numpy_and_vanishes_at_the_start():
    rng = np.random.default_rng(0)
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    q, d = unit(rng.normal(size=(6, 16))), unit(rng.normal(size=(12, 16)))
    q0, d0 = unit(rng.normal(size=(6, 16))), unit(rng.normal(size=(12, 16)))
    got, metrics = start_distill.start_kl(jnp.asarray(q), jnp.asarray(d), jnp.asarray(q0),
                                          jnp.asarray(d0), tau=0.05, dims=(16, 8),
                                          weights=(1.0, 0.5))
    want = _numpy_kl(q, d, q0, d0, 0.05, (16, 8), (1.0, 0.5))
    np.testing.assert_allclose(float(got), want, rtol=1e-5)
    assert set(metrics) == {"distill/dim_16", "distill/dim_8"} and want > 0.1
    # The start model against itself at its full size: no divergence.
    same, _ = start_distill.start_kl(jnp.asarray(q0), jnp.asarray(d0), jnp.asarray(q0),
                                     jnp.asarray(d0), tau=0.05)
    assert abs(float(same)) < 1e-5
    # No gradient reaches the target.
    g = jax.grad(lambda a: start_distill.start_kl(jnp.asarray(q), jnp.asarray(d), a,
                                                  jnp.asarray(d0), tau=0.05)[0])(jnp.asarray(q0))
    assert float(jnp.abs(g).max()) == 0.0


def test_start_distill_with_grad_cache_is_refused():
    import pytest

    from gecko_jax import partitioning
    from gecko_jax.errors import GeckoError
    from gecko_jax.training import optimizers, train_step
    from gecko_jax.training.grad_cache import GradCache
    from tests.training.conftest import tiny_model_fn

    model, _ = tiny_model_fn()()
    mesh = partitioning.make_mesh(partitioning.MeshSpec(), devices=jax.devices()[:1])
    with pytest.raises(GeckoError, match="start_distill.*GradCache"):
        train_step.Trainer(model, optimizers.make_optimizer(), mesh,
                           train_step.LossConfig(start_distill=1.0), grad_cache=GradCache(4))
