"""gin_configs/experiments/pod_gemma3.gin as a real multi-process job: 2 OS processes
x 4 emulated CPU devices on 127.0.0.1 (gloo collectives), the Gemma-3 tower sharded
over the fsdp axis of all 8 devices, 2 steps. The experiment's REQUIRED macros point
at local files; the coordinator is given explicitly (jax.distributed.initialize finds
it from the TPU metadata or SLURM's environment on a real cluster); lengths, batch and
bf16 compute (a CPU's bf16 runs on oneDNN, the accelerators' natively) are made small
/ float32 for the CPU."""

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import pytest

# The full Gemma-3 tower in two processes: about two minutes, ~4.7 GB RSS in each (the
# process's quarter of the sharded state, the loaded weights while they are placed,
# compilation): needs about 10 GB free.
pytestmark = pytest.mark.slow

REPO = pathlib.Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_pod_experiment_two_processes_two_steps(tmp_path, wiki_jsonl):
    port = _free_port()
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    procs = []
    t0 = time.time()
    for i in range(2):
        bindings = [f"TRAIN_FILES=[{str(wiki_jsonl)!r}]",
                    f"CHECKPOINT_DIR={str(tmp_path / 'checkpoints')!r}",
                    "TOWER_SOURCE='gemma3'",
                    "BATCH_SIZE=8", "TRAIN_STEPS=2", "WARMUP_STEPS=1", "QUERY_LENGTH=16",
                    "DOC_LENGTH=32", "train.checkpoint_every=2", "train.log_every=1",
                    "train.export=False", "LayerOptions.compute_dtype=None",
                    f"MeshSpec.coordinator_address='127.0.0.1:{port}'",
                    "MeshSpec.num_processes=2", f"MeshSpec.process_id={i}",
                    "MeshSpec.cpu_collectives='gloo'", "MeshSpec.heartbeat_timeout_seconds=120"]
        out_json = model_dir / f"worker{i}.json"
        log = model_dir / f"worker{i}.log"
        procs.append((subprocess.Popen(
            [sys.executable, "-m", "tests.training.multiprocess_worker",
             "gin_configs/experiments/pod_gemma3.gin", str(model_dir), str(out_json), *bindings],
            stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env, cwd=REPO), out_json, log))
    results = []
    for proc, out_json, log in procs:
        assert proc.wait(timeout=1500) == 0, log.read_text()[-4000:]
        results.append(json.loads(out_json.read_text()))
    # Each worker's own peak (RUSAGE_CHILDREN would also count the subprocesses that
    # earlier tests of the same pytest run started, e.g. the wheel test's).
    peak_gb = max(r["peak_rss_kb"] for r in results) / 2**20
    print(f"pod experiment, 2 processes x 4 devices, 2 steps: {time.time() - t0:.0f} s, "
          f"largest worker RSS {peak_gb:.1f} GB; losses {results[0]['losses']}")
    assert [r["process_index"] for r in results] == [0, 1]
    assert len(results[0]["losses"]) == 2 and results[0]["losses"] == results[1]["losses"]
    # Four Matryoshka dims, each a cross-entropy over the batch's candidates of about
    # 5.5 at the start (one process on 8 devices, same config: 21.8, then 18.4).
    assert all(4 < loss < 40 for loss in results[0]["losses"])
    # Each process holds its quarter of the sharded state (optimizer moments replicated
    # on each device, or the state gathered whole to be placed, take 8-11 GB).
    assert peak_gb < 6
    # One checkpoint, in CHECKPOINT_DIR (not under the model folder), written together.
    assert (tmp_path / "checkpoints" / "2").is_dir()
    assert not (model_dir / "checkpoints").exists()
    assert (model_dir / "config.gin").is_file()
    mesh_line = [line for line in (model_dir / "config.gin").read_text().splitlines()
                 if line.startswith("MeshSpec.fsdp")]
    assert mesh_line == ["MeshSpec.fsdp = -1"]
