"""The LLM tower's sharded train step equals the single-device one.

A random tiny bidirectional Gemma-3 (sliding window 8 < the 32-token documents,
dense head) with the real Gemma tokenizer, on real Wikipedia pairs; 3 steps of the
Gecko loss with MRL on a data=2 x fsdp=2 x model=2 mesh of 8 emulated CPU devices
vs 1 device.
"""

import functools

import jax
import numpy as np
import pytest

from gecko_jax.data import tasks
from gecko_jax.data.batching import StepIndexedBatches
from gecko_jax import partitioning
from gecko_jax.training import llm_tower, optimizers, train_step
from gecko_jax.partitioning import MeshSpec
from tests.training.conftest import LENGTHS

STEPS = 3
BATCH = 8
TINY_GEMMA = dict(architecture="gemma3", hidden_size=32, intermediate_size=64, num_layers=2,
                  num_heads=2, num_kv_heads=1, head_dim=16, sliding_window=8,
                  sliding_window_pattern=2, query_pre_attn_scalar=16, rope_theta=1e6,
                  bos_token_id=2, eos_token_id=1, pad_token_id=0)
model_fn = functools.partial(llm_tower.random_llm_model, config=TINY_GEMMA, source="gemma3",
                             dense_dims=(64, 32), seed=0)


@pytest.fixture(scope="module")
def gemma_examples(wiki_jsonl):
    _, tokenizer = model_fn()
    tasks.register_jsonl_task("test_wiki_pairs_gemma", {"train": [wiki_jsonl]}, tokenizer.folder)
    return tasks.load_examples("test_wiki_pairs_gemma", "train", LENGTHS, tokenizer.pad_id)


def _run(examples, mesh):
    model, _ = model_fn()
    schedule = optimizers.learning_rate_schedule(peak_value=1e-3, total_steps=STEPS,
                                                 warmup_steps=1)
    tr = train_step.Trainer(model, optimizers.make_optimizer(schedule=schedule), mesh,
                            train_step.LossConfig(tau=0.05, mrl_dims=(32, 16)), schedule=schedule)
    batches = StepIndexedBatches(examples, BATCH, seed=1)
    curve = [float(tr.step(batches.batch(s))["loss"]) for s in range(STEPS)]
    return curve, jax.device_get(tr.state["params"]), tr


@pytest.mark.slow  # two compiles of the scanned decoder: ~80 s CPU, minutes on a loaded machine
def test_llm_tower_sharded_step_matches_single_device(gemma_examples):
    assert len(jax.devices()) == 8
    # Documents longer than the window, BOS first (the tokenizer adds it).
    assert gemma_examples["positive_mask"].sum(1).max() > TINY_GEMMA["sliding_window"]
    assert (gemma_examples["query_ids"][:, 0] == 2).all()
    curve1, params1, _ = _run(gemma_examples, partitioning.make_mesh(
        MeshSpec(), devices=jax.devices()[:1]))
    spec = MeshSpec(data=2, fsdp=2, model=2)
    curve8, params8, tr = _run(gemma_examples, partitioning.make_mesh(spec))
    np.testing.assert_allclose(curve8, curve1, atol=1e-5, rtol=0)
    assert curve1[-1] < curve1[0]
    diffs = {k: float(np.max(np.abs(params8[k] - params1[k]))) for k in params1}
    where = max(diffs, key=diffs.get)
    print(f"{spec}: loss {curve8}, max |param diff| {diffs[where]:.2e} at {where}")
    assert diffs[where] <= 1e-5
    # Split where the table says: mlp over model, embed over fsdp.
    w_up = tr.state["params"]["backbone/layers/w_up"]
    assert tuple(w_up.sharding.spec)[1:] == ("fsdp", "model")
    dense = tr.state["params"]["dense/0/kernel"]
    assert tuple(dense.sharding.spec) == ("fsdp", "model")


@pytest.mark.parametrize("gin_file,source,width", [("gemma3_270m.gin", "gemma3", 640),
                                                   ("smollm2_135m.gin", "smollm2", 576)])
def test_model_gin_files_parse(gin_file, source, width):
    """The LLM model files combine with the run files; MRL dims fit the tower's width."""
    import gin

    from gecko_jax.training.trainer import parse_gin

    parse_gin([f"gin_configs/models/{gin_file}", "gin_configs/runs/finetune.gin"],
              ["TRAIN_FILES = ['x.jsonl']", "BATCH_SIZE = 8", "TRAIN_STEPS = 1"])
    assert gin.query_parameter("train.model_fn").selector == "llm_model"
    assert gin.query_parameter("llm_model.source") == source
    dims = gin.query_parameter("llm_model.dense_dims")
    out = dims[-1] if dims else width
    assert out == width and max(gin.query_parameter("LossConfig.mrl_dims")) == out
    gin.clear_config()
