"""The streaming input feeding the sharded step on 8 emulated CPU devices equals the
single-device run (tests/conftest.py sets --xla_force_host_platform_device_count=8)."""

import jax
import numpy as np
import pytest

from gecko_jax.data import training_records
from gecko_jax import partitioning
from gecko_jax.training import trainer
from gecko_jax.partitioning import MeshSpec
from tests.training.conftest import LENGTHS, tiny_model_fn

STEPS = 3


@pytest.fixture(scope="module")
def shards(tmp_path_factory, wiki_records):
    folder = tmp_path_factory.mktemp("stream_shards")
    paths = [folder / f"records-{i:05d}-of-00004.jsonl" for i in range(4)]
    for i, p in enumerate(paths):
        training_records.write_records(p, wiki_records[:160][i::4])
    return [str(p) for p in paths]


def _run(folder, shards, spec):
    out = trainer.train(folder, model_fn=tiny_model_fn(), train_files=shards,
                        feature_lengths=LENGTHS, batch_size=16, num_steps=STEPS, seed=2,
                        mesh_spec=spec, checkpoint_every=100, export=False, progress=False)
    return out["losses"], jax.device_get(out["trainer"].state["params"]), out["trainer"]


@pytest.fixture(scope="module")
def single(tmp_path_factory, shards):
    return _run(tmp_path_factory.mktemp("one"), shards, MeshSpec(data=1))


@pytest.mark.slow    # ~40-60 s on 2 cores (default suite budget: 20 minutes)
@pytest.mark.parametrize("spec", [MeshSpec(data=4, model=2), MeshSpec(data=8)],
                         ids=["data4_model2", "data8"])
def test_streamed_input_on_8_devices_matches_one_device(tmp_path, shards, single, spec):
    assert len(jax.devices()) == 8
    losses1, params1, tr1 = single
    assert tr1.mesh.devices.size == 1
    losses8, params8, tr8 = _run(tmp_path, shards, spec)
    assert tr8.mesh.devices.size == 8
    worst = max(float(np.max(np.abs(params8[k] - params1[k]))) for k in params1)
    print(f"{spec}: losses {losses8} vs {losses1}, max |param diff| {worst:.2e}")
    np.testing.assert_allclose(losses8, losses1, atol=1e-6, rtol=0)
    assert worst <= 1e-6
