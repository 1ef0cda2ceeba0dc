"""When the oneDNN kernel cannot be built, kernels/onednn.py logs one line saying why
and that XLA's routes run instead, and the towers still run (on XLA's dot).

Each case runs in a fresh process: the build is attempted once per process."""

import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]

_PROBE = """
import logging, sys
logging.basicConfig(level=logging.INFO, format="%(name)s|%(message)s", stream=sys.stdout)
import jax.numpy as jnp
from gecko_jax.kernels import dense, onednn
print("available", onednn.available())
print("again", onednn.available())
x = jnp.ones((128, 16), jnp.float32)
w = jnp.full((16, 8), 0.5, jnp.bfloat16)
print("dense", float(dense.dense(x, w)[0, 0]))
"""


def _probe(tmp_path, **env):
    run_env = dict(os.environ, GECKO_KERNEL_CACHE=str(tmp_path / "cache"),
                   PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
                   **env)
    proc = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                          env=run_env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [line for line in proc.stdout.splitlines()
            if line.startswith(("gecko_jax.kernels.onednn|", "available", "again", "dense"))]


def test_no_compiler_logs_one_line_and_runs_xla(tmp_path):
    lines = _probe(tmp_path, CXX=str(tmp_path / "no-such-g++"))
    logged = [line for line in lines if line.startswith("gecko_jax.kernels.onednn|")]
    assert len(logged) == 1, lines
    assert "oneDNN kernels not built (" in logged[0] and "no-such-g++" in logged[0]
    assert logged[0].endswith("using XLA's dot and attention")
    assert "available False" in lines and "again False" in lines
    assert "dense 8.0" in lines          # 16 x 1.0 x 0.5 on XLA's dot
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").glob("*.so"))


def test_switched_off_says_so(tmp_path):
    lines = _probe(tmp_path, GECKO_ONEDNN="0")
    logged = [line for line in lines if line.startswith("gecko_jax.kernels.onednn|")]
    assert logged == ["gecko_jax.kernels.onednn|oneDNN kernels not built (switched off "
                      "(GECKO_ONEDNN=0)); using XLA's dot and attention"], lines
