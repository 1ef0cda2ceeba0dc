"""The XLA:CPU matmul back ends that bench/matmul.py compares exist in the pinned
jaxlib and compute the right product (a removed flag makes XLA abort at start-up)."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

BENCH = pathlib.Path(__file__).resolve().parents[2] / "bench" / "matmul.py"
sys.path.insert(0, str(BENCH.parent))

from matmul import XLA_VARIANTS, check_product  # noqa: E402


@pytest.mark.parametrize("name", [n if n == "xla" else pytest.param(n, marks=pytest.mark.slow)
                                  for n in sorted(XLA_VARIANTS)])
def test_each_xla_backend_starts_and_multiplies_correctly(name):
    env = dict(os.environ, XLA_FLAGS=XLA_VARIANTS[name], TF_CPP_MIN_LOG_LEVEL="3")
    for dtype in ("float32", "bfloat16"):
        out = subprocess.run(
            [sys.executable, str(BENCH), "--worker", "xla", "--dtype", dtype,
             "--shape", "96,64,80", "--iters", "2"],
            env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        assert len(json.loads(out.stdout.splitlines()[-1])) == 2


def test_the_product_check_catches_a_wrong_result():
    import numpy as np

    a, b = np.ones((4, 3)), np.ones((3, 5))
    check_product(a @ b, a, b, "float32")
    with pytest.raises(ArithmeticError):
        check_product(a @ b * (1 + 1e-3), a, b, "float32")


def test_cpu_features_are_read():
    from gecko_jax import hardware

    flags = hardware.cpu_features()
    if not pathlib.Path("/proc/cpuinfo").exists():
        pytest.skip("no /proc/cpuinfo")
    assert "fpu" in flags
    assert hardware.has_amx_bf16() == ({"amx_bf16", "amx_tile"} <= flags)
    peak = hardware.nominal_peak_gflops(cores=1)
    assert peak is None or 1 < peak < 1000
