"""gecko_jax: the Gecko recipe (LLM-distilled text embedders) in JAX/Flax."""

__version__ = "0.1.0"
