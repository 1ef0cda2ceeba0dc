"""A real `gecko train` killed with SIGKILL after a checkpoint resumes to the same params
(on the streaming input: the tf.data iterator position is restored with the state)."""

import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import gin
import numpy as np
import orbax.checkpoint as ocp
import pytest

from gecko_jax.training import train_step, trainer
from gecko_jax.errors import GeckoError
from tests.training.conftest import tiny_gin_file

STEPS = 12
EVERY = 4
GECKO = [sys.executable, "-m", "gecko_jax.cli"]


def _gin_file(tmp_path, jsonl) -> pathlib.Path:
    return tiny_gin_file(tmp_path / "tiny.gin", jsonl, STEPS, EVERY, warmup=3, log_every=EVERY, export=False)


def _final_params(model_dir: pathlib.Path) -> dict:
    state = ocp.StandardCheckpointer().restore(
        (model_dir / "checkpoints" / str(STEPS) / "state").absolute())
    return state["params"]


def _finished_steps(ckpt_dir: pathlib.Path) -> list[int]:
    if not ckpt_dir.is_dir():
        return []
    return sorted(int(p.name) for p in ckpt_dir.iterdir() if re.fullmatch(r"\d+", p.name))


def test_sigkill_and_resume_matches_uninterrupted(tmp_path, wiki_jsonl):
    gin_path = _gin_file(tmp_path, wiki_jsonl)

    # The three processes share one persistent XLA cache: only the first compiles.
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(tmp_path / "xla_cache"),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")

    # The uninterrupted reference runs beside the run that is killed (two processes on
    # two cores: the test's wall time is about that of one).
    ref_dir = tmp_path / "ref"
    ref = subprocess.Popen(GECKO + ["train", f"--gin_file={gin_path}", f"--model_dir={ref_dir}",
                                    "--no-progress"], stdout=subprocess.DEVNULL,
                           stderr=open(tmp_path / "ref.log", "w"), env=env)

    run_dir = tmp_path / "run"
    cmd = GECKO + ["train", f"--gin_file={gin_path}", f"--model_dir={run_dir}", "--no-progress"]
    log1 = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(cmd, stdout=log1, stderr=subprocess.STDOUT, env=env)
    deadline = time.time() + 300
    while not _finished_steps(run_dir / "checkpoints"):
        assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    killed_at = _finished_steps(run_dir / "checkpoints")
    assert killed_at and killed_at[-1] < STEPS, killed_at
    assert ref.wait(timeout=300) == 0, (tmp_path / "ref.log").read_text()[-3000:]

    resumed = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    match = re.search(r"trained to step (\d+) \(from (\d+)\)", resumed.stdout)
    assert match and int(match.group(1)) == STEPS
    start = int(match.group(2))
    assert 0 < start < STEPS and start % EVERY == 0

    ref, got = _final_params(ref_dir), _final_params(run_dir)
    worst = max(float(np.max(np.abs(np.asarray(ref[k]) - np.asarray(got[k])))) for k in ref)
    print(f"killed after checkpoint {killed_at[-1]}, resumed from {start}; "
          f"max |param diff| vs uninterrupted = {worst:.2e}")
    assert worst <= 1e-7
    assert (run_dir / "data_position").is_dir()      # the streamed input's position
    assert (run_dir / "config.gin").read_text().count("TRAIN_STEPS") >= 1
    assert list(run_dir.glob("events.out.tfevents.*"))


def test_unknown_gin_binding_fails_before_compute(tmp_path, wiki_jsonl):
    gin_path = _gin_file(tmp_path, wiki_jsonl)
    for binding in ("train.no_such_param = 3", "NoSuchConfigurable.x = 1"):
        t0 = time.time()
        proc = subprocess.run(GECKO + ["train", f"--gin_file={gin_path}",
                                       f"--gin_bindings={binding}",
                                       f"--model_dir={tmp_path / 'bad'}"],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert "gin config" in proc.stderr and "Traceback" not in proc.stderr
        assert not (tmp_path / "bad").exists()          # nothing ran, nothing written
    with pytest.raises(GeckoError, match="gin file not found"):
        trainer.parse_gin(["no/such/file.gin"], [])
    gin.clear_config()


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, wiki_jsonl):
    from gecko_jax import partitioning
    from gecko_jax.training import trainer
    from tests.training.conftest import LENGTHS, tiny_model_fn

    kwargs = dict(model_fn=tiny_model_fn(), train_files=[str(wiki_jsonl)],
                  feature_lengths=LENGTHS, batch_size=8, checkpoint_every=2, export=False,
                  mesh_spec=partitioning.MeshSpec(data=1), progress=False)
    trainer.train(tmp_path, num_steps=4, **kwargs)
    # tau = 0 turns every logit into inf: the loss is NaN at the first resumed step.
    with pytest.raises(trainer.TrainingDiverged, match=r"loss is nan at step 5.*step 4"):
        trainer.train(tmp_path, num_steps=8, loss_config=train_step.LossConfig(tau=0.0), **kwargs)
    assert _finished_steps(tmp_path / "checkpoints") == [2, 4]
