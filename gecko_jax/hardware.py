"""What the CPU can do, read once: vector/matrix extensions and a nominal FMA peak.

Used to pick per-machine defaults (bf16 compute only where the CPU has native bf16
matrix units) and by the benches to state the machine they ran on.
"""

from __future__ import annotations

import functools
import os
import platform


@functools.lru_cache(maxsize=None)
def _cpuinfo() -> dict[str, str]:
    """First processor's fields of /proc/cpuinfo ({} where there is none)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def cpu_model() -> str:
    return _cpuinfo().get("model name") or platform.processor() or "unknown CPU"


def cpu_features() -> frozenset[str]:
    """The kernel's CPU flags (avx512f, avx512_bf16, amx_bf16, ...); empty off Linux."""
    return frozenset(_cpuinfo().get("flags", "").split())


def has_amx_bf16() -> bool:
    """True where bf16 matmuls have a matrix unit (Intel AMX); bf16 is otherwise slower
    than fp32 on XLA:CPU, so bf16 compute is not a default there."""
    return {"amx_bf16", "amx_tile"} <= cpu_features()


def has_bf16_dot() -> bool:
    """True where the CPU has bf16 dot-product instructions (AVX512-BF16, e.g. AMD Zen 4,
    Intel Cooper Lake and later) or AMX: oneDNN's bf16 matmuls then run ~3x float32."""
    return "avx512_bf16" in cpu_features() or has_amx_bf16()


def nominal_peak_gflops(cores: int | None = None) -> float | None:
    """fp32 FMA peak: cores x clock x FLOP/cycle, from the vector flags.

    FLOP/cycle per core: 64 with AVX-512 on Intel (two 512-bit FMA units), 32 with
    AVX-512 on AMD Zen 4 (issued on 256-bit units) or with AVX2+FMA, else None.
    An estimate: turbo and AVX-512 clock offsets are not modelled.
    """
    info = _cpuinfo()
    try:
        mhz = float(info["cpu MHz"])
    except (KeyError, ValueError):
        return None
    flags = cpu_features()
    if "avx512f" in flags:
        per_cycle = 32 if info.get("vendor_id") == "AuthenticAMD" else 64
    elif {"avx2", "fma"} <= flags:
        per_cycle = 32
    else:
        return None
    return (cores or os.cpu_count() or 1) * mhz * 1e-3 * per_cycle


# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8


@functools.lru_cache(maxsize=None)
def tune_allocator() -> bool:
    """Let XLA:CPU reuse freed memory instead of page-faulting fresh pages every call
    (opt-in: GECKO_MALLOC_TUNING=1).

    XLA:CPU allocates each execution's buffers with malloc from its worker threads.
    glibc serves a block over its mmap threshold (at most 32 MB), and on a thread any
    block larger than a thread arena's 64 MB heap, with a fresh mmap, so each call
    zero-fills those pages again in the kernel: scoring 4 x 256 tokens with the bf16
    teacher spent over a quarter of its time in page faults. As many arenas as CPUs
    (glibc's default is 8 per CPU), no mmap threshold and no trimming keep freed
    blocks in the process for the next call. Measured on 2 cores (AMX Xeon): bf16
    teacher scoring ~1,870 -> ~2,200 tok/s and MiniLM bf16 encoding ~122 -> ~131
    docs/s in a process of their own, but the MiniLM train step lost about a quarter
    (bench/train_step.py --quick: 4.7-7.2 vs 6.9-7.4 examples/s) and one arena lost
    encoding ~10%; so it is not a default. Freed memory goes back to the system at
    exit, not before.

    It applies to threads that have not allocated yet, so it runs when gecko_jax is
    imported, before JAX starts its CPU client, where GECKO_MALLOC_TUNING=1. glibc
    Linux only. Returns whether it was applied.
    """
    if os.environ.get("GECKO_MALLOC_TUNING", "0") != "1" or platform.system() != "Linux":
        return False
    if platform.libc_ver()[0] != "glibc":
        return False
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    limit = 2 ** 31 - 1
    arenas = max(2, os.cpu_count() or 1)
    return all(libc.mallopt(param, value) == 1 for param, value in (
        (_M_ARENA_MAX, arenas), (_M_MMAP_THRESHOLD, limit), (_M_TRIM_THRESHOLD, limit)))
