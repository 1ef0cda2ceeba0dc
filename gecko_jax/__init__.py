"""gecko_jax: the Gecko recipe (LLM-distilled text embedders) in JAX/Flax."""

import os as _os

__version__ = "0.1.0"

# XLA:CPU routes dots through YNNPACK fusions by default; on the 2-core AVX-512
# machines we measure on, its batched matmuls ran the attention logits Q K^T
# (head dim 32) 1.6x slower than XLA's own (Eigen) path, and a whole MiniLM
# forward took 18% more CPU time. Only CPU compilation reads this flag, and only
# if it is set before jax starts its backend. GECKO_XLA_DEFAULTS=0 opts out.
if _os.environ.get("GECKO_XLA_DEFAULTS", "1") != "0":
    _flags = _os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_experimental_ynn_fusion_type" not in _flags:
        _os.environ["XLA_FLAGS"] = (_flags + " --xla_cpu_experimental_ynn_fusion_type=").strip()
