"""How a tower runs its stack of layers: remat policy, scan or unroll, compute dtype.

Memory options for big towers and big batches (the BERT tower and the LLM tower
both use them; gin binds `LayerOptions` in the trainer):

- remat: `jax.checkpoint` around each layer with a NAMED policy (REMAT_POLICIES):
  'none' (keep every activation, the default), 'full' (keep nothing: the
  layer is re-run in the backward pass), 'dots' (keep matmul outputs),
  'dots_no_batch' (keep matmuls without batch dimensions, i.e. the weight
  matmuls but not attention's q k^T / weights v: maxtext's usual choice).
- scan: run the layers under `jax.lax.scan` (one compiled body for all layers:
  shorter compiles, and with remat only one layer's activations live at a time).
  Parameters keep their per-layer layout (BERT: `layers/<i>/...`, the decoder's
  stacked `layers/...`): a per-layer stack is stacked into a view at call time,
  so loading, export, checkpoints and sharding names do not change.
- compute_dtype: 'bfloat16' runs matmuls and activations in bf16 while the
  parameters (and so the optimizer state) stay float32 (mixed precision as on
  TPU/GPU); layer norms, softmax, pooling and the loss stay float32.

Defaults leave the towers as they were: no remat, BERT unrolled, the decoder
scanned (its own default since it was written), float32.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class LayerOptions:
    """Args:
      remat: a name in REMAT_POLICIES.
      scan: True (lax.scan over layers), False (a Python loop), None (the tower's
        default: BERT unrolled, decoder scanned).
      compute_dtype: None (the parameters' dtype), 'float32' or 'bfloat16'.
    """

    remat: str = "none"
    scan: bool | None = None
    compute_dtype: str | None = None

    def __post_init__(self):
        if self.remat not in REMAT_POLICIES:
            raise ValueError(f"LayerOptions.remat={self.remat!r}: expected one of "
                             f"{sorted(REMAT_POLICIES)}")
        if self.compute_dtype is not None and self.compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(f"LayerOptions.compute_dtype={self.compute_dtype!r}: expected "
                             f"None or one of {sorted(COMPUTE_DTYPES)}")

    @property
    def dtype(self):
        """The jnp compute dtype, or None for the parameters' own."""
        return None if self.compute_dtype is None else COMPUTE_DTYPES[self.compute_dtype]


def to_compute(tree: Any, dtype) -> Any:
    """Float leaves of `tree` cast to `dtype` (None: unchanged). Gradients flow back
    through the cast to the float32 masters."""
    if dtype is None:
        return tree
    return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating)
                        else a, tree)


def run_stack(layer_fn: Callable[[Any, Any], Any], x: Any, per_layer: Any, *, scan: bool,
              remat: str = "none", stacked: bool) -> Any:
    """x after every layer in turn: x = layer_fn(x, p_i) for i = 0 .. n-1.

    Args:
      layer_fn: (carry, one layer's params) -> carry; a pure function.
      x: the carry (e.g. the residual stream [b, l, d]).
      per_layer: a pytree whose leaves carry a leading layer axis (stacked=True), or
        a list with one pytree per layer (stacked=False).
      scan: lax.scan over the layers (a per-layer list is stacked first), else a loop.
      remat: a REMAT_POLICIES name; each layer is wrapped in jax.checkpoint.
    """
    policy = REMAT_POLICIES[remat]
    fn = layer_fn
    if remat != "none":
        # Inside scan, CSE cannot merge the recomputation with the forward pass
        # (jax's advice: prevent_cse=False there, True when unrolled).
        fn = jax.checkpoint(layer_fn, policy=policy, prevent_cse=not scan)
    if scan:
        xs = per_layer if stacked else jax.tree.map(lambda *a: jnp.stack(a), *per_layer)
        x, _ = jax.lax.scan(lambda c, p: (fn(c, p), None), x, xs)
        return x
    n = jax.tree.leaves(per_layer)[0].shape[0] if stacked else len(per_layer)
    for i in range(n):
        x = fn(x, jax.tree.map(lambda a: a[i], per_layer) if stacked else per_layer[i])
    return x


def set_options(model, options: LayerOptions):
    """Gives `model`'s tower (DualEncoder/LLMEncoder `.backbone`, or the tower itself)
    these options; returns the model. Parameters are untouched."""
    tower = getattr(model, "backbone", model)
    if not hasattr(tower, "options"):
        raise ValueError(f"{type(tower).__name__} takes no LayerOptions")
    tower.options = options
    return model
