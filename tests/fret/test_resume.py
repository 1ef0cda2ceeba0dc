"""Resume: a real `gecko fret` subprocess SIGKILLed at 3 random points, restarted each
time, ends with exactly the records of an uninterrupted run (no loss, no duplicates)."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest


def _cmd(corpus, out, extra=()):
    return [sys.executable, "-m", "gecko_jax.cli", "fret", "--corpus", str(corpus),
            "--output", str(out), "--teacher", "smollm2", "--limit", "5", "--shard-size", "1",
            "--num-neighbors", "3", "--max-batch", "8", "--no-progress", "--no-tfrecord",
            *extra]


def _env():
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # one CPU device, as a user's run
    return env


def _records(out):
    return sorted((out / "shards").glob("records-*.jsonl"))


@pytest.mark.slow
def test_sigkill_three_times_then_resume_equals_uninterrupted(tmp_path, tiny_corpus):
    ref = tmp_path / "uninterrupted"
    subprocess.run(_cmd(tiny_corpus, ref), env=_env(), check=True, capture_output=True,
                   timeout=900)
    rng = random.Random(1234)
    out = tmp_path / "killed"
    kills = 0
    for target_done in (1, 2, 4):  # kill after this many shards finished + a random delay
        proc = subprocess.Popen(_cmd(tiny_corpus, out), env=_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None:
            if len(list((out / "shards").glob("stats-*.json"))) >= target_done:
                break
            time.sleep(0.2)
        time.sleep(rng.uniform(0.0, 4.0))  # a random point inside the next shard's work
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills == 3
    assert not (out / "manifest.json").exists()
    done = subprocess.run(_cmd(tiny_corpus, out), env=_env(), capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    got = [p.read_text() for p in _records(out)]
    want = [p.read_text() for p in _records(ref)]
    assert [p.name for p in _records(out)] == [p.name for p in _records(ref)]
    assert got == want
    m_got = json.loads((out / "manifest.json").read_text())["counts"]
    m_want = json.loads((ref / "manifest.json").read_text())["counts"]
    assert m_got == m_want
    assert not list(out.rglob(".*.tmp*"))
    # A changed configuration is refused with a clear message.
    bad = subprocess.run(_cmd(tiny_corpus, out, ["--seed", "7"]), env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2
    assert "different configuration" in bad.stderr and "seed: 0 -> 7" in bad.stderr
