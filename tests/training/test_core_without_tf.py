"""The model, loss and trainer core run where TensorFlow, seqio and tfds are missing.

A subprocess sees a copy of site-packages (symlinks) without those packages
(`python -S`: no site-packages, no .pth), so for it they are not installed at
all (importlib.util.find_spec is None, as etils checks), imports the core and
trains 2 steps on in-memory data with GradCache, MeshSpec.distributed and export, as on a GPU machine
that has only jax/flax/optax/orbax installed.
"""

import os
import re
import subprocess
import sys
import sysconfig
import textwrap

import pytest

BLOCKED = re.compile(r"^(tensorflow|tf_keras|seqio|tensorflow_datasets|tensorflow_text)"
                     r"([-_.].*)?$", re.I)

from gecko_jax import assets
from tests.training.conftest import TINY_BERT

SCRIPT = textwrap.dedent("""
    import importlib.util, json, sys

    BLOCKED = ("tensorflow", "seqio", "tensorflow_datasets", "tensorflow_text", "tf_keras")
    assert all(importlib.util.find_spec(m) is None for m in BLOCKED), "still installed"

    import numpy as np
    from gecko_jax import encode, losses
    from gecko_jax.data.batching import StepIndexedBatches
    from gecko_jax.models import bert, dual_encoder, weights
    from gecko_jax.tokenization import Tokenizer, pad_batch
    from gecko_jax import partitioning
    from gecko_jax.training import grad_cache, model_fns, optimizers, trainer

    tokenizer = Tokenizer.from_folder({folder!r})
    texts = [f"text number {{i}} about topic {{i % 5}}" for i in range(24)]

    def features(offset, length):
        ids, mask = pad_batch(tokenizer.encode(texts[offset:] + texts[:offset], length),
                              length, tokenizer.pad_id)
        return np.asarray(ids, np.int32), np.asarray(mask, np.int32)

    examples = {{}}
    for name, offset, length in (("query", 0, 8), ("positive", 1, 16), ("negative", 2, 16)):
        examples[name + "_ids"], examples[name + "_mask"] = features(offset, length)
        examples[name + "_text_id"] = (np.arange(24, dtype=np.int32) + offset) % 24

    def data_fn(tokenizer, feature_lengths, batch_size, seed, process_index, process_count):
        return StepIndexedBatches(examples, batch_size, seed=seed,
                                  process_index=process_index, process_count=process_count)

    summary = trainer.train(
        sys.argv[1], model_fn=lambda: model_fns.random_model(
            config={config!r}, tokenizer_folder={folder!r}),
        data_fn=data_fn, feature_lengths={{"query": 8, "positive": 16, "negative": 16}},
        batch_size=8, num_steps=2,
        # distributed=True: train() must call jax.distributed.initialize() before
        # anything touches the backend (a 1-process job here; 2 in test_multiprocess).
        mesh_spec=partitioning.MeshSpec(data=1, distributed=True, num_processes=1,
                                        process_id=0, coordinator_address="127.0.0.1:{port}"),
        grad_cache=grad_cache.GradCache(4), progress=False, log_every=1)
    blocked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    print(json.dumps({{"losses": summary["losses"], "export": summary["export"],
                      "blocked_loaded": blocked}}))
""")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _site_without_tensorflow(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    real = sysconfig.get_paths()["purelib"]
    for name in os.listdir(real):
        if not BLOCKED.match(name) and not name.endswith(".pth"):
            os.symlink(os.path.join(real, name), site / name)
    return site


def test_core_trains_and_exports_without_tensorflow(tmp_path):
    import json

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([repo, str(_site_without_tensorflow(
        tmp_path))]))
    script = SCRIPT.format(folder=str(assets.minilm_dir()), config=TINY_BERT,
                           port=_free_port())
    proc = subprocess.run([sys.executable, "-S", "-c", script, str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["blocked_loaded"] == []
    assert len(out["losses"]) == 2 and all(x == x for x in out["losses"])
    assert (tmp_path / "run" / "export" / "config.json").is_file()
    rows = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in rows] == [1, 2]


@pytest.mark.slow   # ~30 s idle: a whole bench process; the core test above stays default
def test_accelerator_bench_runs_without_tensorflow(tmp_path):
    """bench/accelerator.py (tiny shapes: the same code path as --quick) in a Python
    where TensorFlow, seqio and tfds are not installed."""
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([repo, str(_site_without_tensorflow(
        tmp_path))]))
    env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split()
                                if "force_host_platform_device_count" not in f)
    guard = ("import importlib.util, runpy, sys; "
             "assert importlib.util.find_spec('tensorflow') is None; "
             f"sys.argv = ['accelerator.py', '--tiny', '--budget', '1400']; "
             f"sys.path.insert(0, {os.path.join(repo, 'bench')!r}); "
             f"runpy.run_path({os.path.join(repo, 'bench', 'accelerator.py')!r}, "
             "run_name='__main__')")
    # About a minute of CPU (4 small compiles); the timeout allows for a loaded machine.
    proc = subprocess.run([sys.executable, "-S", "-c", guard], capture_output=True, text=True,
                          timeout=1500, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = proc.stdout.splitlines()
    assert out[0].startswith("CPU: ")
    rows = [ln for ln in out if ln.startswith("tiny ")]
    assert len(rows) == 2 and all("%" in ln for ln in rows), proc.stdout
    assert sum("compile tiny" in ln for ln in out) == 2
    assert out[-1].startswith("ratio ")
