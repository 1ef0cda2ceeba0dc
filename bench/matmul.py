"""One dense matmul, XLA:CPU (with each of its matmul back ends) vs torch, fp32 and bf16.

    python bench/matmul.py            # 8192x384 @ 384x1536 (MiniLM's FFN shape), 5 rounds
    python bench/matmul.py --quick    # 2 rounds

XLA reads its flags once per process, so every XLA variant runs in its own
subprocess (`--worker`); rounds visit the variants in turn so that load from other
processes hits them alike. Each worker times `--iters` calls after a warm-up and
reports its median GFLOP/s; a row's figure is the median over rounds, with the
min-max spread. The peak column is the CPU's nominal FMA peak (cores x clock x
FLOP/cycle from its vector flags; an estimate: AMD Zen 4 issues AVX-512 on 256-bit
units, so it is counted at half of an Intel core with two 512-bit FMA units).
`gecko_jax oneDNN custom call` is the kernel the bf16 compute option uses on CPU
(gecko_jax/kernels/onednn.py, through jax.ffi). The last line is `ratio <x>`, the
lower of (our fastest path / torch) in fp32 and in bf16.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from machine import describe, nominal_peak_gflops  # noqa: E402

# name -> XLA_FLAGS; the option names are the pinned jaxlib's (see its --help).
XLA_VARIANTS = {
    "xla": "",
    "xla+onednn": "--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_fusion_type=dot",
    "xla+xnnpack": "--xla_cpu_experimental_xnn_fusion_type=dot",
    "xla+ynnpack": "--xla_cpu_experimental_ynn_fusion_type=dot",
}


def _time_calls(call, iters: int) -> list[float]:
    call()
    call()  # warm-up: compilation, thread pools, page faults
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


OURS_KERNEL = "gecko_jax oneDNN custom call"

# Largest |error| / max|reference| a back end may show (bf16 rounds its output to 8 bits).
TOLERANCE = {"float32": 1e-5, "bfloat16": 1e-2}


def check_product(got, a, b, dtype: str) -> None:
    """Raise if `got` is not a @ b (float64 reference of the same rounded inputs)."""
    want = a @ b
    err = float(abs(got - want).max() / abs(want).max())
    if not err <= TOLERANCE[dtype]:
        raise ArithmeticError(f"{dtype} matmul off by {err:.2e} of max |a @ b|")


def _xla_worker(m: int, k: int, n: int, dtype: str, iters: int) -> list[float]:
    import jax
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.standard_normal((m, k), dtype=np.float32), dtype=dtype)
    b = jnp.asarray(rng.standard_normal((k, n), dtype=np.float32), dtype=dtype)
    dot = jax.jit(lambda x, y: x @ y)
    check_product(np.asarray(dot(a, b), np.float64), np.asarray(a, np.float64),
                  np.asarray(b, np.float64), dtype)
    return _time_calls(lambda: dot(a, b).block_until_ready(), iters)


def _onednn_worker(m: int, k: int, n: int, dtype: str, iters: int) -> list[float]:
    """gecko_jax's oneDNN custom call (gecko_jax/kernels/onednn.py) inside a jitted call."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from gecko_jax.kernels import onednn

    if not onednn.available():
        raise RuntimeError(f"kernel unavailable: {onednn.why_unavailable()}")
    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.standard_normal((m, k), dtype=np.float32), dtype=dtype)
    b = jnp.asarray(rng.standard_normal((k, n), dtype=np.float32), dtype=dtype)
    dot = jax.jit(onednn.matmul)
    check_product(np.asarray(dot(a, b), np.float64), np.asarray(a, np.float64),
                  np.asarray(b, np.float64), dtype)
    return _time_calls(lambda: dot(a, b).block_until_ready(), iters)


def _torch_worker(m: int, k: int, n: int, dtype: str, iters: int) -> list[float]:
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    gen = torch.Generator().manual_seed(0)
    tdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    a = torch.randn((m, k), generator=gen).to(tdtype)
    b = torch.randn((k, n), generator=gen).to(tdtype)
    with torch.inference_mode():
        return _time_calls(lambda: a @ b, iters)


def _run_worker(side: str, flags: str, args, dtype: str) -> float:
    """Median GFLOP/s of one worker process."""
    env = dict(os.environ, XLA_FLAGS=flags, TF_CPP_MIN_LOG_LEVEL="3")
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", side, "--dtype", dtype,
           "--shape", f"{args.m},{args.k},{args.n}", "--iters", str(args.iters)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{side} {flags!r} {dtype} failed:\n{out.stderr[-2000:]}")
    times = json.loads(out.stdout.strip().splitlines()[-1])
    return 2.0 * args.m * args.k * args.n / statistics.median(times) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--shape", default="8192,384,1536", help="M,K,N")
    parser.add_argument("--worker", choices=["xla", "onednn", "torch"], help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.m, args.k, args.n = (int(v) for v in args.shape.split(","))
    if args.worker:
        work = {"xla": _xla_worker, "onednn": _onednn_worker, "torch": _torch_worker}[args.worker]
        print(json.dumps(work(args.m, args.k, args.n, args.dtype, args.iters)))
        return
    rounds = 2 if args.quick else args.rounds

    print(describe())
    peak = nominal_peak_gflops()
    print(f"nominal fp32 peak: {peak:.0f} GFLOP/s" if peak else "nominal fp32 peak: unknown")
    print(f"matmul {args.m}x{args.k} @ {args.k}x{args.n}, {args.iters} calls per worker, {rounds} rounds")
    rows = ([(name, "xla", flags) for name, flags in XLA_VARIANTS.items()]
            + [(OURS_KERNEL, "onednn", ""), ("torch", "torch", "")])
    figures: dict[tuple[str, str], list[float]] = {}
    for _ in range(rounds):
        for dtype in ("float32", "bfloat16"):
            for name, side, flags in rows:
                try:
                    gflops = _run_worker(side, flags, args, dtype)
                except RuntimeError as err:
                    print(f"  {name} {dtype}: failed ({str(err).splitlines()[0]})")
                    gflops = float("nan")
                figures.setdefault((name, dtype), []).append(gflops)

    print(f"\n| path | dtype | GFLOP/s (median) | min-max | of nominal fp32 peak |")
    print("|---|---|---:|---:|---:|")
    for (name, dtype), values in figures.items():
        med = statistics.median(values)
        share = f"{med / peak:.0%}" if peak else "n/a"
        print(f"| {name} | {dtype} | {med:.0f} | {min(values):.0f}-{max(values):.0f} | {share} |")
    ratios = {}
    for dtype in ("float32", "bfloat16"):
        ours = max(statistics.median(figures[(name, dtype)]) for name in [*XLA_VARIANTS, OURS_KERNEL])
        ratios[dtype] = ours / statistics.median(figures[("torch", dtype)])
        print(f"{dtype}: our fastest path / torch = {ratios[dtype]:.2f}")
    print(f"ratio {min(ratios.values()):.2f}")


if __name__ == "__main__":
    main()
