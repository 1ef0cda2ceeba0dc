"""gecko_jax: the Gecko recipe (LLM-distilled text embedders) in JAX/Flax."""

from gecko_jax import hardware as _hardware

__version__ = "0.1.0"

# Opt-in (GECKO_MALLOC_TUNING=1), before JAX starts its CPU client's threads
# (hardware.tune_allocator says why and what it costs).
_hardware.tune_allocator()
