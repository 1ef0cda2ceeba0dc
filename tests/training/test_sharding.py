"""Sharded training equals unsharded training (8 emulated CPU devices vs 1)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from gecko_jax import losses
from gecko_jax.data.batching import StepIndexedBatches
from gecko_jax.models.dual_encoder import l2_normalize
from gecko_jax.models.layer_stack import LayerOptions, set_options
from gecko_jax import partitioning
from gecko_jax.training import optimizers, train_step
from gecko_jax.partitioning import MeshSpec
from tests.training.conftest import tiny_model_fn

STEPS = 5
BATCH = 16


def _run(examples, mesh, grad_accum_steps=1, layer_options=None, separate_update=False,
         start_decay=0.0, start_distill=0.0):
    model, _ = tiny_model_fn()()
    if layer_options is not None:
        set_options(model, layer_options)
    schedule = optimizers.learning_rate_schedule(peak_value=3e-4, total_steps=STEPS,
                                                 warmup_steps=2)
    tr = train_step.Trainer(model, optimizers.make_optimizer(schedule=schedule,
                                                             start_decay=start_decay), mesh,
                            train_step.LossConfig(tau=0.05, start_distill=start_distill),
                            grad_accum_steps=grad_accum_steps,
                            schedule=schedule, separate_update=separate_update)
    batches = StepIndexedBatches(examples, BATCH, seed=3)
    tr.metrics = [tr.step(batches.batch(s)) for s in range(STEPS)]
    curve = [float(m["loss"]) for m in tr.metrics]
    return curve, jax.device_get(tr.state["params"]), tr


@pytest.fixture(scope="module")
def single(wiki_examples):
    return _run(wiki_examples, partitioning.make_mesh(MeshSpec(), devices=jax.devices()[:1]))


@pytest.mark.parametrize("spec", [
    MeshSpec(data=8), MeshSpec(data=4, model=2),
    pytest.param(MeshSpec(data=2, fsdp=2, model=2), marks=pytest.mark.slow)],
                         ids=["data8", "data4_model2", "data2_fsdp2_model2"])
def test_sharded_matches_single_device(single, wiki_examples, spec):
    assert len(jax.devices()) == 8
    curve1, params1, _ = single
    mesh = partitioning.make_mesh(spec)
    curve8, params8, tr = _run(wiki_examples, mesh)
    np.testing.assert_allclose(curve8, curve1, atol=1e-5, rtol=0)
    assert curve1[-1] < curve1[0]                 # it trained
    worst = max(float(np.max(np.abs(params8[k] - params1[k]))) for k in params1)
    where = max(params1, key=lambda k: float(np.max(np.abs(params8[k] - params1[k]))))
    print(f"{spec}: loss curve {curve8}, max |param diff| {worst:.2e} at {where}")
    assert worst <= 1e-5
    # The params really are split where the table says so.
    kernel = tr.state["params"]["backbone/layers/0/intermediate/kernel"]
    if spec.model > 1:
        assert kernel.sharding.spec == P(None, "model") or kernel.sharding.spec[1] == "model"
        assert kernel.addressable_shards[0].data.shape[1] == kernel.shape[1] // spec.model
    if spec.fsdp > 1:
        assert kernel.sharding.spec[0] == "fsdp"


def test_scanned_remat_layers_shard_like_unsharded(single, wiki_examples):
    """Scanned layers with remat on data=4 x model=2: the per-layer parameters keep
    their logical names (so they still split over 'model') and the run equals the
    plain single-device one."""
    curve1, params1, _ = single
    mesh = partitioning.make_mesh(MeshSpec(data=4, model=2))
    curve8, params8, tr = _run(wiki_examples, mesh,
                               layer_options=LayerOptions(scan=True, remat="dots_no_batch"))
    np.testing.assert_allclose(curve8, curve1, atol=1e-5, rtol=0)
    assert max(float(np.max(np.abs(params8[k] - params1[k]))) for k in params1) <= 1e-5
    kernel = tr.state["params"]["backbone/layers/1/intermediate/kernel"]
    assert kernel.addressable_shards[0].data.shape[1] == kernel.shape[1] // 2


def test_separate_update_equals_one_call_sharded_and_not(single, wiki_examples):
    """Trainer(separate_update=True), gradients and update as two compiled calls (the
    LLM towers' setting), equals the one-call step on 1 device and on data=4 x model=2."""
    curve1, params1, _ = single
    for mesh in (partitioning.make_mesh(MeshSpec(), devices=jax.devices()[:1]),
                 partitioning.make_mesh(MeshSpec(data=4, model=2))):
        curve, params, tr = _run(wiki_examples, mesh, separate_update=True)
        np.testing.assert_allclose(curve, curve1, atol=1e-5, rtol=0)
        assert max(float(np.max(np.abs(params[k] - params1[k]))) for k in params1) <= 1e-5
        assert int(tr.state["step"]) == STEPS


def _start_copy(trainer) -> dict:
    """The initial parameters that decay_toward_start keeps in the optimizer state."""
    found = [x for x in jax.tree.leaves(trainer.state["opt_state"],
                                        is_leaf=lambda x: isinstance(x, optimizers.StartState))
             if isinstance(x, optimizers.StartState)]
    assert len(found) == 1
    return found[0].start


def test_start_decay_sharded_matches_single_device(single, wiki_examples):
    """The decay toward the initial weights (its copy of them lives in the optimizer
    state, laid out like the parameters) on data=4 x model=2 equals one device, and
    keeps the weights nearer their start than plain AdamW does."""
    curve1, params1, tr1 = _run(wiki_examples, partitioning.make_mesh(
        MeshSpec(), devices=jax.devices()[:1]), start_decay=2000.0)
    curve8, params8, tr8 = _run(wiki_examples, partitioning.make_mesh(MeshSpec(data=4, model=2)),
                                start_decay=2000.0)
    np.testing.assert_allclose(curve8, curve1, atol=1e-5, rtol=0)
    assert max(float(np.max(np.abs(params8[k] - params1[k]))) for k in params1) <= 1e-5
    kernel = "backbone/layers/0/intermediate/kernel"
    start8 = _start_copy(tr8)
    assert start8[kernel].sharding == tr8.state["params"][kernel].sharding
    assert start8[kernel].addressable_shards[0].data.shape[1] == start8[kernel].shape[1] // 2
    start = jax.device_get(_start_copy(tr1))
    plain = single[1]
    moved = lambda p: sum(float(np.sum((p[k] - start[k]) ** 2)) for k in p)  # noqa: E731
    assert 0 < moved(params1) < 0.5 * moved(plain)


def test_start_distill_sharded_matches_single_device(single, wiki_examples):
    """Distillation from the frozen start tower (a copy of the initial parameters laid
    out like them) on data=4 x model=2, and as two compiled calls, equals one
    device; the start copy stays the initial parameters while the parameters move."""
    curve1, params1, tr1 = _run(wiki_examples, partitioning.make_mesh(
        MeshSpec(), devices=jax.devices()[:1]), start_distill=1.0)
    assert all(float(m["distill"]) >= 0 for m in tr1.metrics)
    assert float(tr1.metrics[0]["distill"]) < 1e-4       # step 0: the model is its start
    assert float(tr1.metrics[-1]["distill"]) > float(tr1.metrics[0]["distill"])
    assert curve1 != single[0]                          # the term is in the loss
    for mesh, separate in ((partitioning.make_mesh(MeshSpec(data=4, model=2)), False),
                           (partitioning.make_mesh(MeshSpec(data=4, model=2)), True)):
        curve8, params8, tr8 = _run(wiki_examples, mesh, start_distill=1.0,
                                    separate_update=separate)
        np.testing.assert_allclose(curve8, curve1, atol=1e-5, rtol=0)
        assert max(float(np.max(np.abs(params8[k] - params1[k]))) for k in params1) <= 1e-5
        kernel = "backbone/layers/0/intermediate/kernel"
        assert tr8.start[kernel].sharding == tr8.state["params"][kernel].sharding
    start = jax.device_get(tr1.start)
    init = train_step._flatten(nnx.state(tiny_model_fn()()[0], nnx.Param))  # same seed
    assert all(np.array_equal(start[k], np.asarray(init[k])) for k in init)
    assert max(float(np.max(np.abs(start[k] - params1[k]))) for k in start) > 1e-4


def test_positive_on_other_device_is_a_negative():
    """Row 0 lives on device 0, positive 7 on device 7; under jit over the global
    batch, p_7 enters row 0's softmax (here it is made to beat row 0's own positive)."""
    mesh = partitioning.make_mesh(MeshSpec(data=8))
    b, d = 8, 16
    rng = np.random.default_rng(0)
    q = rng.normal(size=(b, d)).astype(np.float32)
    p = rng.normal(size=(b, d)).astype(np.float32)
    p[7] = q[0]                                    # row 0's query == row 7's positive
    q, p = l2_normalize(jnp.asarray(q)), l2_normalize(jnp.asarray(p))
    sharding = NamedSharding(mesh, P(("data", "fsdp"), None))
    q8, p8 = jax.device_put(q, sharding), jax.device_put(p, sharding)
    assert {s.device for s in p8.addressable_shards if s.index[0].start == 7} != \
        {s.device for s in q8.addressable_shards if s.index[0].start == 0}

    @jax.jit
    def row_stats(q_bd, p_bd):
        _, valid, logits = losses.gecko_logits(q_bd, p_bd, None, tau=0.05, same_tower=False)
        loss, met = losses.gecko_loss(q_bd, p_bd, tau=0.05, same_tower=False)
        return logits, loss, met

    logits8, loss8, met8 = row_stats(q8, p8)
    logits1, loss1, _ = row_stats(q, p)
    assert int(jnp.argmax(logits8[0])) == 7        # the cross-device positive wins row 0
    np.testing.assert_allclose(float(logits8[0, 7]), 1.0 / 0.05, rtol=1e-5)
    np.testing.assert_allclose(float(loss8), float(loss1), rtol=1e-6)
    assert float(met8["accuracy"]) < 1.0

    # And its gradient reaches p_7 from row 0's term alone.
    g = jax.jit(jax.grad(lambda pp: losses._cross_entropy_diag(
        losses.gecko_logits(q8, pp, None, tau=0.05, same_tower=False)[2])[0]))(p8)
    assert float(jnp.linalg.norm(g[7])) > 1.0


@pytest.mark.slow
def test_grad_accumulation_sharded_matches_single(single, wiki_examples):
    curve1, params1, _ = _run(wiki_examples, partitioning.make_mesh(
        MeshSpec(), devices=jax.devices()[:1]), grad_accum_steps=2)
    curve8, params8, _ = _run(wiki_examples, partitioning.make_mesh(MeshSpec(data=8)),
                              grad_accum_steps=2)
    np.testing.assert_allclose(curve8, curve1, atol=1e-5, rtol=0)
    assert max(float(np.max(np.abs(params8[k] - params1[k]))) for k in params1) <= 1e-5
    assert curve1 != single[0]                     # micro-batches: fewer in-batch negatives
