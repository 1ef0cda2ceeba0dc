"""bf16 compute and remat on the learning test: 20 steps of MiniLM on Wikipedia pairs.

The set-up of test_learning.test_learning_light (real MiniLM, real pairs, batch 8,
lengths 32/48), cut to 20 steps: the loss after 20 steps with bf16 compute (float32
parameters and optimizer state) and with remat / scanned layers must be within 1%
of the plain float32 run.
"""

import functools

import numpy as np
import pytest

from gecko_jax import assets
from gecko_jax.data import training_records
from gecko_jax.models.layer_stack import LayerOptions
from gecko_jax import partitioning
from gecko_jax.training import model_fns, optimizers, train_step, trainer
from tests.training.test_learning import split  # noqa: F401  (fixture)

STEPS = 20
LENGTHS = {"query": 32, "positive": 48, "negative": 48}


def _losses(tmp_path, train_arts, options: LayerOptions):
    jsonl = tmp_path / "train.jsonl"
    if not jsonl.exists():
        recs = training_records.wikipedia_section_records(train_arts, max_words=30)
        training_records.write_records(jsonl, recs)
    out = trainer.train(
        tmp_path / f"run_{options.remat}_{options.scan}_{options.compute_dtype}",
        model_fn=functools.partial(model_fns.pretrained_model, folder=assets.minilm_dir()),
        train_files=[str(jsonl)], feature_lengths=LENGTHS, batch_size=8, num_steps=STEPS,
        checkpoint_every=10**6, log_every=10, loss_config=train_step.LossConfig(tau=0.05),
        schedule_fn=functools.partial(optimizers.learning_rate_schedule, peak_value=5e-5,
                                      total_steps=STEPS, warmup_steps=4),
        mesh_spec=partitioning.MeshSpec(data=1), progress=False, export=False,
        layer_options=options)
    params = out["trainer"].state["params"]
    assert all(v.dtype == np.float32 for v in params.values())     # float32 masters
    return np.asarray(out["losses"])


@pytest.fixture(scope="module")
def float32_losses(tmp_path_factory, split):   # noqa: F811
    return _losses(tmp_path_factory.mktemp("f32"), split[0], LayerOptions())


@pytest.mark.slow   # three 20-step MiniLM runs: ~4 min on 2 loaded cores
@pytest.mark.parametrize("options", [
    LayerOptions(compute_dtype="bfloat16"),
    LayerOptions(remat="full"),
    LayerOptions(remat="dots_no_batch", scan=True)], ids=["bf16", "remat_full", "scan_dots"])
def test_loss_after_20_steps_within_1_percent(tmp_path, split, float32_losses, options):  # noqa: F811
    ref = float32_losses
    got = _losses(tmp_path, split[0], options)
    last_ref, last = float(np.mean(ref[-5:])), float(np.mean(got[-5:]))
    print(f"{options}: loss at step 20 {got[-1]:.5f} vs float32 {ref[-1]:.5f}; mean of steps "
          f"16-20 {last:.5f} vs {last_ref:.5f} (rel {abs(last - last_ref) / last_ref:.2e}); "
          f"max per-step rel diff {np.max(np.abs(got - ref) / ref):.2e}")
    assert ref[-5:].mean() < ref[:5].mean()                    # it learns
    assert abs(got[-1] - ref[-1]) <= 0.01 * ref[-1]
    assert abs(last - last_ref) <= 0.01 * last_ref
