"""GradCache equals the full-batch Gecko-loss gradient (1 device and the 8-device mesh)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gecko_jax.data.batching import StepIndexedBatches
from gecko_jax.errors import GeckoError
from gecko_jax.models.dual_encoder import l2_normalize
from gecko_jax import partitioning
from gecko_jax.training import grad_cache, optimizers, train_step
from gecko_jax.training.grad_cache import GradCache
from gecko_jax.partitioning import MeshSpec
from tests.training.conftest import tiny_model_fn

BATCH = 16
# Every branch of the loss: same-tower, hard negatives, MRL, duplicate masks.
LOSS = train_step.LossConfig(tau=0.05, same_tower=True, use_hard_negatives=True,
                          mask_duplicates=True, mrl_dims=(32, 16), mrl_weights=(1.0, 0.5))


def test_split_merge_roundtrip_and_chunks_are_strided():
    x = np.arange(12 * 2).reshape(12, 2)
    chunks = grad_cache.split_chunks(x, 3)
    assert chunks.shape == (3, 4, 2)
    np.testing.assert_array_equal(chunks[1][:, 0] // 2, [1, 4, 7, 10])
    np.testing.assert_array_equal(grad_cache.merge_chunks(chunks), x)
    with pytest.raises(GeckoError, match="does not divide"):
        GradCache(chunk_size=5).num_chunks(16)


def test_dropout_keys_are_replayed_exactly():
    """A toy tower with dropout: GradCache's gradient equals jax.grad of the loss of the
    same chunked forward (same per-chunk keys), so the mask is identical in both passes."""
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.normal(size=(8, 6)), jnp.float32)}
    batch = {"x": jnp.asarray(rng.normal(size=(12, 8)), jnp.float32),
             "y": jnp.asarray(rng.normal(size=(12, 8)), jnp.float32)}
    key = jax.random.key(7)

    def embed_fn(p, chunk, k):
        keep = jax.random.bernoulli(k, 0.7, (chunk["x"].shape[0], 6))
        tower = lambda x: l2_normalize(jnp.where(keep, jnp.tanh(x @ p["w"]) / 0.7, 0.0))
        return {"q": tower(chunk["x"]), "p": tower(chunk["y"])}

    def loss_fn(emb, _):
        from gecko_jax import losses
        return losses.gecko_loss(emb["q"], emb["p"], tau=0.1)

    loss, _, grads = grad_cache.loss_and_grads(params, batch, embed_fn=embed_fn,
                                               loss_fn=loss_fn, num_chunks=3, key=key)

    def full(p):
        chunks, keys = grad_cache.split_chunks(batch, 3), grad_cache.chunk_keys(key, 3)
        emb = grad_cache.merge_chunks(jax.vmap(lambda c, k: embed_fn(p, c, k))(chunks, keys))
        return loss_fn(emb, batch)[0]

    want_loss, want = jax.value_and_grad(full)(params)
    np.testing.assert_allclose(float(loss), float(want_loss), rtol=1e-6)
    np.testing.assert_allclose(grads["w"], want["w"], atol=1e-6)
    # Different keys would give a different gradient (the masks really matter).
    _, _, other = grad_cache.loss_and_grads(params, batch, embed_fn=embed_fn, loss_fn=loss_fn,
                                            num_chunks=3, key=jax.random.key(8))
    assert float(jnp.max(jnp.abs(other["w"] - grads["w"]))) > 1e-3


def _batch_with_duplicates(examples):
    batch = StepIndexedBatches(examples, BATCH, seed=3).batch(0)
    batch = {k: v.copy() for k, v in batch.items()}
    # Row 5's positive text is row 2's, row 9's query is row 4's positive, row 11's
    # hard negative is row 0's positive: the duplicate masks have work to do.
    batch["positive_text_id"][5] = batch["positive_text_id"][2]
    batch["query_text_id"][9] = batch["positive_text_id"][4]
    batch["negative_text_id"][11] = batch["positive_text_id"][0]
    return batch


def _grads(examples, mesh, chunk_size):
    model, _ = tiny_model_fn()()
    tr = train_step.Trainer(model, optimizers.make_optimizer(), mesh, LOSS,
                            grad_cache=GradCache(chunk_size))
    host = _batch_with_duplicates(examples)
    batch = partitioning.host_to_global(host, mesh)
    fn = jax.jit(tr._loss_and_grads, in_shardings=(tr.param_shardings,
                                                   tr.batch_shardings(host)))
    grads, metrics = fn(tr.state["params"], batch)
    return jax.device_get(grads), jax.device_get(metrics)


@pytest.fixture(scope="module")
def full_batch(wiki_examples):
    return _grads(wiki_examples, partitioning.make_mesh(MeshSpec(), jax.devices()[:1]), 0)


@pytest.mark.parametrize("spec,chunk", [
    (None, 4), pytest.param(None, 16, marks=pytest.mark.slow), (MeshSpec(data=8), 8),
    pytest.param(MeshSpec(data=4, model=2), 4, marks=pytest.mark.slow)],
                         ids=["1dev_chunk4", "1dev_chunk16", "data8_chunk8",
                              "data4_model2_chunk4"])
def test_grad_cache_equals_full_batch_gradient(full_batch, wiki_examples, spec, chunk):
    want, want_metrics = full_batch
    mesh = (partitioning.make_mesh(MeshSpec(), jax.devices()[:1]) if spec is None
            else partitioning.make_mesh(spec))
    got, metrics = _grads(wiki_examples, mesh, chunk)
    assert want.keys() == got.keys()
    # float32 sums over rows in another order: tolerance 1e-5 per unit of gradient
    # scale (the largest entries, ~7, differ by ~1.5e-5 = 2e-6 relative).
    worst = max(float(np.max(np.abs(got[k] - want[k])) / max(1.0, np.max(np.abs(want[k]))))
                for k in want)
    absolute = max(float(np.max(np.abs(got[k] - want[k]))) for k in want)
    print(f"{spec} chunk {chunk}: max |grad diff| {absolute:.2e}, scaled {worst:.2e}")
    assert worst <= 1e-5
    for name in ("loss", "loss/dim_16", "accuracy", "neg_sim"):
        np.testing.assert_allclose(metrics[name], want_metrics[name], rtol=1e-6, atol=1e-6)


def test_grad_cache_with_accumulation_is_refused(wiki_examples):
    model, _ = tiny_model_fn()()
    mesh = partitioning.make_mesh(MeshSpec(), jax.devices()[:1])
    with pytest.raises(GeckoError, match="not both"):
        train_step.Trainer(model, optimizers.make_optimizer(), mesh, LOSS, grad_accum_steps=2,
                           grad_cache=GradCache(4))

