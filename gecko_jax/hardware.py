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
