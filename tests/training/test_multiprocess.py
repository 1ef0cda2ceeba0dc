"""A real multi-process job: 2 OS processes x 4 emulated CPU devices on 127.0.0.1.

Each process runs `gecko train`'s code path (tests/training/multiprocess_worker.py:
gin file + bindings -> trainer.train) with MeshSpec.distributed and gloo CPU
collectives. The run must equal the 1-process 8-device run (same mesh shape, same
global batch), write one export that sentence-transformers loads, fail fast with
a clear error when a peer dies, and resume from its checkpoint when rerun.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests.training.conftest import TINY_BERT, tiny_gin_file

pytestmark = pytest.mark.slow      # ~2-4 min on 2 loaded cores (each process compiles)

STEPS = 5
EVERY = 2
HEARTBEAT_S = 30      # generous: 2 loaded cores can starve heartbeats of 10 s
REPO = pathlib.Path(__file__).resolve().parents[2]


def _gin_file(tmp_path, jsonl) -> pathlib.Path:
    # In memory: N hosts then read exactly the rows of one (streams shard per host).
    return tiny_gin_file(tmp_path / "tiny.gin", jsonl, STEPS, EVERY, warmup=2, log_every=1,
                         streaming=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(gin_path, model_dir, *, processes, devices, port=None, env=None):
    """Starts `processes` workers; returns [(Popen, out_json, log_path)]."""
    model_dir.mkdir(parents=True, exist_ok=True)
    base_env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
                    PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
                    **(env or {}))
    procs = []
    for i in range(processes):
        bindings = [f"MeshSpec.data={processes * devices}"]
        if processes > 1:
            bindings = ["MeshSpec.data=-1", "MeshSpec.distributed=True",
                        f"MeshSpec.coordinator_address='127.0.0.1:{port}'",
                        f"MeshSpec.num_processes={processes}", f"MeshSpec.process_id={i}",
                        "MeshSpec.cpu_collectives='gloo'",
                        f"MeshSpec.heartbeat_timeout_seconds={HEARTBEAT_S}",
                        f"MeshSpec.shutdown_timeout_seconds={HEARTBEAT_S}"]
        out_json = model_dir / f"worker{i}.json"
        log = model_dir / f"worker{i}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.training.multiprocess_worker", str(gin_path),
             str(model_dir), str(out_json), *bindings],
            stdout=open(log, "w"), stderr=subprocess.STDOUT, env=base_env, cwd=REPO)
        procs.append((proc, out_json, log))
    return procs


def _finish(procs, timeout=400):
    results = []
    for proc, out_json, log in procs:
        rc = proc.wait(timeout=timeout)
        assert rc == 0, log.read_text()[-4000:]
        results.append(json.loads(out_json.read_text()))
    return results


def _params(model_dir, step=STEPS) -> dict:
    """Checkpointed params on one local device (the 2-process topology is gone here)."""
    import jax

    path = (model_dir / "checkpoints" / str(step) / "state").absolute()
    checkpointer = ocp.StandardCheckpointer()
    meta = checkpointer.metadata(path)
    meta = getattr(meta, "item_metadata", meta)
    one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one), meta)
    state = checkpointer.restore(path, target)
    return {k: np.asarray(v) for k, v in state["params"].items()}


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, wiki_jsonl):
    """The 1-process 8-device reference and the 2-process 4+4-device run, side by side."""
    tmp = tmp_path_factory.mktemp("multiprocess")
    gin_path = _gin_file(tmp, wiki_jsonl)
    t0 = time.time()
    ref = _launch(gin_path, tmp / "ref", processes=1, devices=8)
    two = _launch(gin_path, tmp / "two", processes=2, devices=4, port=_free_port())
    ref_out, two_out = _finish(ref), _finish(two)
    print(f"reference + 2-process runs: {time.time() - t0:.0f} s")
    return dict(tmp=tmp, gin=gin_path, ref=ref_out[0], two=two_out)


def test_two_processes_equal_one_process_eight_devices(runs):
    tmp, ref, two = runs["tmp"], runs["ref"], runs["two"]
    assert [r["process_index"] for r in two] == [0, 1]
    diff = _max_diff(_params(tmp / "two"), _params(tmp / "ref"))
    loss_diff = float(np.max(np.abs(np.subtract(two[0]["losses"], ref["losses"]))))
    print(f"2 processes vs 1: losses {two[0]['losses']} vs {ref['losses']} "
          f"(max diff {loss_diff:.2e}), max |param diff| {diff:.2e}")
    # gloo sums across processes in another order than the in-process all-reduce: the
    # losses (~3.8) agree to a few float32 ulps, so 1e-6 relative.
    np.testing.assert_allclose(two[0]["losses"], ref["losses"], rtol=1e-6, atol=0)
    np.testing.assert_array_equal(two[1]["losses"], two[0]["losses"])
    assert ref["losses"][-1] < ref["losses"][0]
    assert diff <= 1e-6
    # Written once, by process 0.
    assert two[0]["export"] and two[1]["export"] is None
    assert len(list((tmp / "two").glob("events.out.tfevents.*"))) == 1
    assert (tmp / "two" / "config.gin").is_file()


def test_export_of_two_processes_loads_in_sentence_transformers(runs):
    from sentence_transformers import SentenceTransformer

    tmp = runs["tmp"]
    texts = ["where do puffins nest", "Puffins breed in burrows on cliff tops."]
    got = SentenceTransformer(str(tmp / "two" / "export"), device="cpu").encode(texts)
    want = SentenceTransformer(str(tmp / "ref" / "export"), device="cpu").encode(texts)
    assert got.shape == (2, TINY_BERT["hidden_size"])
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_killed_peer_fails_fast_and_rerun_resumes(runs, wiki_jsonl):
    tmp, gin_path = runs["tmp"], runs["gin"]
    run_dir = tmp / "killed"
    # Process 1 stops before step 4's batch (after checkpoint 2); process 0 waits in
    # that step's collectives until its peer is killed.
    procs = _launch(gin_path, run_dir, processes=2, devices=4, port=_free_port(),
                    env=dict(GECKO_TEST_STALL_AT="3", GECKO_TEST_STALL_PROCESS="1",
                             GECKO_TEST_TRAIN_FILES=str(wiki_jsonl)))
    (p0, _, log0), (p1, _, log1) = procs
    deadline = time.time() + 400
    while "stalling at step 3" not in log1.read_text():
        assert p0.poll() is None and p1.poll() is None, log0.read_text()[-3000:]
        assert time.time() < deadline
        time.sleep(0.5)
    time.sleep(2)
    assert p0.poll() is None                        # blocked on its peer, not finished
    p1.kill()
    t_kill = time.time()
    rc = p0.wait(timeout=10 * HEARTBEAT_S)          # bounded: no hang
    waited = time.time() - t_kill
    text = log0.read_text()
    print(f"survivor exited rc={rc} {waited:.1f} s after its peer was killed")
    assert rc != 0, text[-3000:]
    assert waited < 4 * HEARTBEAT_S
    assert any(s in text for s in ("another process died", "another task died",
                                   "heartbeat", "lost its connection")), text[-3000:]
    p1.wait()

    # Rerun both: resume from checkpoint 2 and end where the uninterrupted run ends.
    resumed = _finish(_launch(gin_path, run_dir, processes=2, devices=4, port=_free_port()))
    assert resumed[0]["start_step"] == EVERY
    np.testing.assert_allclose(resumed[0]["losses"], runs["ref"]["losses"][EVERY:], rtol=1e-6)
    assert _max_diff(_params(run_dir), _params(tmp / "ref")) <= 1e-6
