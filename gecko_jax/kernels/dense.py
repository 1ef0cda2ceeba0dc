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
- the weights are bfloat16, or x and the weights are float32 on a CPU where
  oneDNN's float32 matmul beats XLA's (`float32_kernel_pays`: Intel with AMX;
  elsewhere XLA's float32 dots matched oneDNN's: bench/matmul.py);
- the default backend is the CPU;
- there are at least MIN_ROWS rows (oneDNN's per-call cost loses to XLA on
  decode-sized matmuls of a few rows);
- the kernel builds and loads here (`onednn.available()`; GECKO_ONEDNN=0 turns it off).
A bias and an activation (GELU, ReLU, SiLU) are applied inside the kernel: the [M, N]
result is written once instead of passing three times through XLA's elementwise loops
(XLA:CPU's erf GELU alone took longer than the bf16 matmul before it).
Gradients (a custom VJP) use the same kernel: dx = g W^T, dW = x^T g; with an
activation, the differentiated forward keeps the pre-activation for its derivative.
"""

from __future__ import annotations

import functools
import math
import os

import jax
import jax.numpy as jnp

from gecko_jax import hardware
from gecko_jax.kernels import onednn

MIN_ROWS = 64


def cpu_bf16_mode(compute_dtype) -> bool:
    """bf16 compute here means bf16 matmul operands with float32 activations (a CPU
    that runs the oneDNN kernel), not bf16 activations throughout."""
    return (compute_dtype is not None and jnp.dtype(compute_dtype) == jnp.bfloat16
            and jax.default_backend() == "cpu" and onednn.available())


def float32_kernel_pays() -> bool:
    """Whether float32 products go through oneDNN too: on the Intel CPUs with AMX where
    it was measured (a 2-core Sapphire Rapids Xeon: oneDNN's float32 matmul 12-27%
    above XLA's on the towers' shapes, the MiniLM float32 train step +13-16% with the
    GELU fused). Elsewhere (e.g. AMD Zen 4, where XLA's float32 dots matched oneDNN's)
    XLA keeps them. GECKO_ONEDNN_F32=1 / 0 forces it on / off."""
    forced = os.environ.get("GECKO_ONEDNN_F32")
    if forced in ("0", "1"):
        return forced == "1"
    return hardware.has_amx_bf16()


def use_onednn(x, w) -> bool:
    """Whether `dense(x, w)` goes through oneDNN (decided at trace time)."""
    rows = math.prod(x.shape[:-1])
    f32 = w.dtype == jnp.float32 and x.dtype == jnp.float32 and float32_kernel_pays()
    return ((w.dtype == jnp.bfloat16 or f32) and x.dtype in (jnp.bfloat16, jnp.float32)
            and w.ndim == 2 and rows >= MIN_ROWS and jax.default_backend() == "cpu"
            and onednn.available())


# The activations `dense` can apply (oneDNN fuses them into the kernel; XLA's forms
# here are the reference and the fallback). "gelu" is the erf form (HF's "gelu").
ACTIVATIONS = {
    "gelu": lambda z: jax.nn.gelu(z, approximate=False),
    "gelu_tanh": lambda z: jax.nn.gelu(z, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
}


def _through_activation(activation: str, z_mn, g_mn):
    """The cotangent g of activation(z) carried back to z (the derivative recomputed
    from the kept pre-activation: both routes' backward passes)."""
    _, act_vjp = jax.vjp(ACTIVATIONS[activation], z_mn)
    return act_vjp(g_mn)[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _dense_2d(x_mk, w, bias_n, w_is_nk, out_dtype, activation):
    return onednn.matmul(x_mk, w, transpose_b=w_is_nk, out_dtype=out_dtype, bias=bias_n,
                         activation=activation)


def _fwd(x_mk, w, bias_n, w_is_nk, out_dtype, activation):
    if activation is None:
        return _dense_2d(x_mk, w, bias_n, w_is_nk, out_dtype, None), (x_mk, w, bias_n, None)
    # Differentiated: keep the pre-activation for the activation's derivative.
    z_mn = onednn.matmul(x_mk, w, transpose_b=w_is_nk, out_dtype=jnp.float32, bias=bias_n)
    return ACTIVATIONS[activation](z_mn).astype(out_dtype), (x_mk, w, bias_n, z_mn)


def _bwd(w_is_nk, out_dtype, activation, res, g_mn):
    x_mk, w, bias_n, z_mn = res
    if activation is not None:
        g_mn = _through_activation(activation, z_mn, g_mn.astype(jnp.float32))
    dbias = (None if bias_n is None
             else jnp.sum(g_mn.astype(jnp.float32), axis=0).astype(bias_n.dtype))
    g_mn = g_mn.astype(x_mk.dtype)
    # dx = g op(W)^T; dW = x^T g ([K, N]) or g^T x ([N, K]).
    dx = onednn.matmul(g_mn, w, transpose_b=not w_is_nk)
    dw = (onednn.matmul(g_mn, x_mk, transpose_a=True) if w_is_nk
          else onednn.matmul(x_mk, g_mn, transpose_a=True))
    return dx, dw, dbias


_dense_2d.defvjp(_fwd, _bwd)


# XLA's route, with the same custom VJP as the kernel's: the gradient keeps x, W and
# (with an activation) the pre-activation z only, and the activation's derivative is
# recomputed from z in the backward pass. Autodiff of the tanh GELU kept six
# [rows, width] intermediates per layer, and XLA:CPU fused their product into the
# transposed copy its weight-gradient dot asked for, evaluated in strided order: in a
# Gemma-3 train step those fusions cost more than the layer's matmuls.
def _xla_product(x_mk, w, bias_n, w_is_nk, out_dtype):
    z_mn = jax.lax.dot_general(x_mk, w, (((1,), (1 if w_is_nk else 0,)), ((), ())),
                               preferred_element_type=out_dtype)
    return z_mn if bias_n is None else z_mn + bias_n.astype(out_dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _dense_xla(x_mk, w, bias_n, w_is_nk, out_dtype, activation):
    z_mn = _xla_product(x_mk, w, bias_n, w_is_nk, out_dtype)
    return z_mn if activation is None else ACTIVATIONS[activation](z_mn)


def _xla_fwd(x_mk, w, bias_n, w_is_nk, out_dtype, activation):
    z_mn = _xla_product(x_mk, w, bias_n, w_is_nk, out_dtype)
    y = z_mn if activation is None else ACTIVATIONS[activation](z_mn)
    return y, (x_mk, w, bias_n, None if activation is None else z_mn)


def _xla_bwd(w_is_nk, out_dtype, activation, res, g_mn):
    x_mk, w, bias_n, z_mn = res
    if activation is not None:
        g_mn = _through_activation(activation, z_mn, g_mn)
    dbias = None if bias_n is None else jnp.sum(g_mn, axis=0).astype(bias_n.dtype)
    g_mn = g_mn.astype(x_mk.dtype)
    dx = jax.lax.dot_general(g_mn, w, (((1,), (0 if w_is_nk else 1,)), ((), ())),
                             preferred_element_type=x_mk.dtype)
    rows = (((0,), (0,)), ((), ()))
    dw = (jax.lax.dot_general(g_mn, x_mk, rows, preferred_element_type=w.dtype) if w_is_nk
          else jax.lax.dot_general(x_mk, g_mn, rows, preferred_element_type=w.dtype))
    return dx, dw, dbias


_dense_xla.defvjp(_xla_fwd, _xla_bwd)


def dense(x, w, *, bias=None, activation: str | None = None, w_is_nk: bool = False,
          out_dtype=None):
    """activation(x [..., K] @ w [K, N] + bias [N]) -> [..., N]; with `w_is_nk`, w is
    stored [N, K] (a tied embedding used as the LM head) and x @ w.T is computed. The
    result is in `out_dtype` (default x's dtype); the bias is added and the activation
    (a key of ACTIVATIONS, or None) applied before rounding to it. On the oneDNN route
    both happen inside the kernel. See the module docstring for the route."""
    out_dtype = out_dtype or x.dtype
    lead = x.shape[:-1]
    n = w.shape[0] if w_is_nk else w.shape[1]
    if not use_onednn(x, w):
        if x.dtype == jnp.float32 and w.dtype == jnp.bfloat16:   # the CPU bf16 mode
            x = x.astype(w.dtype)
        out = _dense_xla(x.reshape(-1, x.shape[-1]), w, bias, w_is_nk, out_dtype, activation)
        return out.reshape(*lead, n)
    x = x.astype(w.dtype)
    if bias is not None:
        bias = bias.astype(jnp.float32)
    out = _dense_2d(x.reshape(-1, x.shape[-1]), w, bias, w_is_nk, out_dtype, activation)
    return out.reshape(*lead, n)
