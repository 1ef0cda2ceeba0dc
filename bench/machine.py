"""What machine a bench ran on: printed by every bench so its figures can be compared."""

from __future__ import annotations

import os

from gecko_jax.hardware import cpu_features, cpu_model, nominal_peak_gflops

__all__ = ["cpu_features", "cpu_model", "describe", "nominal_peak_gflops"]


def describe() -> str:
    flags = sorted(cpu_features() & {"avx2", "avx512f", "avx512_bf16", "amx_bf16"})
    return f"CPU: {cpu_model()} ({os.cpu_count()} cores visible; {' '.join(flags) or 'no AVX flags'})"
