"""x @ W for the towers' dense layers: oneDNN's bf16 matmul on CPU where it pays,
XLA's dot everywhere else.

`dense(x, w)` contracts x's last axis with w's first: x [..., K], w [K, N] -> [..., N]
in x's dtype. The weights' dtype sets the operands' precision: with bfloat16 weights
and float32 activations (the CPU bf16 mode, `cpu_bf16_mode`), x is rounded to bf16
for the product, which is accumulated and returned in float32. This is how the bf16
compute option runs on a CPU that has the kernel: bf16 matmul operands, float32
activations, norms, softmax and attention (XLA:CPU's float32 is native, its bf16
elementwise work is emulated). Elsewhere (accelerators) activations are bf16 too.

The product goes through the oneDNN custom call (kernels/onednn.py) when:
- the weights are bfloat16 (float32 stays on XLA, whose float32 dots match
  oneDNN's on these CPUs: bench/matmul.py);
- the default backend is the CPU;
- there are at least MIN_ROWS rows (oneDNN's per-call cost loses to XLA on
  decode-sized matmuls of a few rows);
- the kernel builds and loads here (`onednn.available()`; GECKO_ONEDNN=0 turns it off).
Gradients (a custom VJP) use the same kernel: dx = g W^T, dW = x^T g.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from gecko_jax.kernels import onednn

MIN_ROWS = 64


def cpu_bf16_mode(compute_dtype) -> bool:
    """bf16 compute here means bf16 matmul operands with float32 activations (a CPU
    that runs the oneDNN kernel), not bf16 activations throughout."""
    return (compute_dtype is not None and jnp.dtype(compute_dtype) == jnp.bfloat16
            and jax.default_backend() == "cpu" and onednn.available())


def use_onednn(x, w) -> bool:
    """Whether `dense(x, w)` goes through oneDNN (decided at trace time)."""
    rows = math.prod(x.shape[:-1])
    return (w.dtype == jnp.bfloat16 and x.dtype in (jnp.bfloat16, jnp.float32)
            and w.ndim == 2 and rows >= MIN_ROWS and jax.default_backend() == "cpu"
            and onednn.available())


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _matmul_2d(x_mk, w, w_is_nk, out_dtype):
    return onednn.matmul(x_mk, w, transpose_b=w_is_nk, out_dtype=out_dtype)


def _fwd(x_mk, w, w_is_nk, out_dtype):
    return _matmul_2d(x_mk, w, w_is_nk, out_dtype), (x_mk, w)


def _bwd(w_is_nk, out_dtype, res, g_mn):
    x_mk, w = res
    g_mn = g_mn.astype(x_mk.dtype)
    # dx = g op(W)^T; dW = x^T g ([K, N]) or g^T x ([N, K]).
    dx = onednn.matmul(g_mn, w, transpose_b=not w_is_nk)
    dw = (onednn.matmul(g_mn, x_mk, transpose_a=True) if w_is_nk
          else onednn.matmul(x_mk, g_mn, transpose_a=True))
    return dx, dw


_matmul_2d.defvjp(_fwd, _bwd)


def dense(x, w, *, w_is_nk: bool = False, out_dtype=None):
    """x [..., K] @ w [K, N] -> [..., N]; with `w_is_nk`, w is stored [N, K] (a tied
    embedding used as the LM head) and x @ w.T is computed. The result is in
    `out_dtype` (default x's dtype). See the module docstring for the route."""
    out_dtype = out_dtype or x.dtype
    if not use_onednn(x, w):
        if x.dtype == jnp.float32 and w.dtype == jnp.bfloat16:   # the CPU bf16 mode
            x = x.astype(w.dtype)
        if w_is_nk:
            return jnp.einsum("...k,nk->...n", x, w, preferred_element_type=out_dtype)
        if out_dtype == x.dtype:
            return x @ w
        return jnp.matmul(x, w, preferred_element_type=out_dtype)
    lead = x.shape[:-1]
    x = x.astype(w.dtype)
    out = _matmul_2d(x.reshape(-1, x.shape[-1]), w, w_is_nk, out_dtype)
    return out.reshape(*lead, w.shape[0] if w_is_nk else w.shape[1])
