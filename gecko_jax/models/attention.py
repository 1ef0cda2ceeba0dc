"""Softmax attention, shared by the BERT tower and the decoder (teacher LLM / LLM tower).

Heads-major operands and plain batched matmuls (the einsum over [b, l, h, k]
measured ~1.8x slower on XLA:CPU). The softmax is normalised after the value
matmul, on [.., t, d] instead of [.., t, s]: one pass less over the logits (with
XLA:CPU's YNNPACK fusions, BERT attention of 4 x 256 tokens took 28 ms instead of
47 ms for 32 rows). Grouped-query attention folds each kv head's query group into
its rows, so h query heads share kv heads without repeating K and V. Logits and
softmax are float32 whatever the operands' dtype.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from gecko_jax.kernels import onednn
from gecko_jax.kernels.dense import float32_kernel_pays

MASKED = -1e9  # additive bias of a hidden key (exp underflows to exactly 0)


def attention(q_bhtd, k_bksd, v_bksd, mask, scale: float | None = None):
    """Softmax(q k^T * scale + mask bias) v, for h query heads over kv heads.

    Args:
      q_bhtd: queries [b, h, t, d].
      k_bksd, v_bksd: keys and values [b, kv, s, d]; kv divides h.
      mask: which keys each query sees (nonzero / True = visible): [b, s] (padding
        only) or [b, t, s].
      scale: logit scale (default d ** -0.5).

    Returns:
      [b, h, t, d] in v's dtype.
    """
    b, h, t, d = q_bhtd.shape
    kv, s = k_bksd.shape[1], k_bksd.shape[2]
    g = h // kv
    scale = d ** -0.5 if scale is None else scale
    q_bkrd = (q_bhtd * scale).reshape(b, kv, g * t, d)   # rows r = (group, query)
    logits_bkgts = (q_bkrd @ jnp.swapaxes(k_bksd, -1, -2)).reshape(b, kv, g, t, s)
    logits_bkgts = logits_bkgts.astype(jnp.float32)
    visible = mask[:, None, None, None, :] if mask.ndim == 2 else mask[:, None, None]
    logits_bkgts = logits_bkgts + jnp.where(visible > 0, 0.0, MASKED).astype(jnp.float32)
    weights_bkgts = jnp.exp(logits_bkgts - jax.lax.stop_gradient(
        jnp.max(logits_bkgts, axis=-1, keepdims=True)))
    weights_bkrs = weights_bkgts.reshape(b, kv, g * t, s)
    ctx_bkrd = (weights_bkrs.astype(v_bksd.dtype) @ v_bksd).astype(jnp.float32)
    ctx_bkrd = ctx_bkrd / jnp.sum(weights_bkrs, axis=-1, keepdims=True)
    return ctx_bkrd.astype(v_bksd.dtype).reshape(b, h, t, d)


def _qkv_attention_xla(qkv_bl3hd, mask_bl, scale: float):
    b, l, _, h, d = qkv_bl3hd.shape
    q, k, v = (qkv_bl3hd[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
    return attention(q, k, v, mask_bl, scale).transpose(0, 2, 1, 3).reshape(b, l, h * d)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _qkv_attention_onednn(qkv_bl3hd, mask_bl, scale):
    return onednn.attention(qkv_bl3hd, mask_bl, scale)


def _onednn_fwd(qkv_bl3hd, mask_bl, scale):
    return _qkv_attention_onednn(qkv_bl3hd, mask_bl, scale), (qkv_bl3hd, mask_bl)


def _onednn_bwd(scale, res, g_bld):
    qkv_bl3hd, mask_bl = res
    if qkv_bl3hd.dtype == jnp.float32 or float32_kernel_pays():
        # kernels/onednn_attention_grad.cc, in float32 (for bf16 operands: the exact
        # gradient at their bf16 values, rounded to bf16 once)
        grad = onednn.attention_grad(qkv_bl3hd, mask_bl, g_bld, scale)
        return grad.astype(qkv_bl3hd.dtype), None
    # bf16 where float32 products were not measured to pay: the XLA form, recomputed
    _, vjp = jax.vjp(lambda x: _qkv_attention_xla(x, mask_bl, scale), qkv_bl3hd)
    return vjp(g_bld.astype(qkv_bl3hd.dtype)) + (None,)


_qkv_attention_onednn.defvjp(_onednn_fwd, _onednn_bwd)


def float32_kernel(dtype) -> bool:
    """Whether float32 attention runs as the oneDNN kernels (forward and gradient) here:
    where float32 dense layers do (kernels/dense.float32_kernel_pays). On the AMX Xeon
    it was measured on, XLA:CPU's float32 attention of 16 x 128 tokens, 12 heads, took
    27 ms forward and backward, the kernels 4.8 ms, torch's 10 ms."""
    return (jnp.dtype(dtype) == jnp.float32 and jax.default_backend() == "cpu"
            and onednn.available() and float32_kernel_pays())


def qkv_attention(qkv_bl3hd, mask_bl, scale: float, *, fused: bool):
    """`attention` with q, k, v from one fused projection [b, l, 3, h, d] and a padding
    mask [b, l]; returns [b, l, h * d] in qkv's dtype.

    `fused` runs it as one oneDNN custom call (kernels/onednn_attention.cc: products in
    qkv's dtype, bf16 or float32, float32 softmax, no [b, h, l, l] logits in memory):
    the CPU bf16 mode (kernels/dense.py) and float32 where `float32_kernel` says so.
    Gradients: the kernel of onednn_attention_grad.cc (float32 products; for bf16 qkv
    the exact gradient at its bf16 values, rounded to bf16), for bf16 only where
    float32 products pay (kernels/dense.float32_kernel_pays: AMX CPUs; elsewhere the
    XLA form, recomputed). Otherwise the XLA form above."""
    if fused:
        if qkv_bl3hd.dtype != jnp.float32:
            qkv_bl3hd = qkv_bl3hd.astype(jnp.bfloat16)
        return _qkv_attention_onednn(qkv_bl3hd, mask_bl, scale)
    return _qkv_attention_xla(qkv_bl3hd, mask_bl, scale)


def attention_with_prefix(q_bhtd, pk_ksd, pv_ksd, pmask, k_bksd, v_bksd, mask,
                          scale: float | None = None):
    """`attention` over a shared prefix's keys (one copy for every row) and each row's
    own keys, as if the two were concatenated along the key axis.

    A prefix that every row continues (a few-shot block) is stored once, not per row:
    its logits are one matmul of all rows' queries against it, so decoding reads its
    keys and values once per step instead of once per row.

    Args:
      q_bhtd: queries [b, h, t, d].
      pk_ksd, pv_ksd: the prefix's keys and values [kv, s0, d] (shared by all rows).
      pmask: which prefix keys each query sees: [b, t, s0] (or broadcastable to it).
      k_bksd, v_bksd, mask: each row's keys and values [b, kv, s, d] and mask [b, t, s].
      scale: logit scale (default d ** -0.5).

    Returns:
      [b, h, t, d] in v's dtype.
    """
    b, h, t, d = q_bhtd.shape
    kv, s0, s = pk_ksd.shape[0], pk_ksd.shape[1], k_bksd.shape[2]
    g = h // kv
    n = b * g * t
    scale = d ** -0.5 if scale is None else scale
    q_bkrd = (q_bhtd * scale).reshape(b, kv, g * t, d)
    # The prefix part kv-major ([kv, rows of every batch row, s0]): one matmul of all
    # rows' queries against the single prefix copy, and its logits stay in the layout
    # the matmul writes (batch-major logits came out of XLA's dot as [kv, s0, rows] and
    # were transposed with a stride, which cost more than the matmul in decode steps).
    q_knd = jnp.swapaxes(q_bkrd, 0, 1).reshape(kv, n, d)
    lp = jnp.einsum("knd,ksd->kns", q_knd, pk_ksd).astype(jnp.float32)
    pm = jnp.broadcast_to(pmask, (b, t, s0))
    pbias = jnp.where(jnp.broadcast_to(pm[:, None], (b, g, t, s0)).reshape(n, s0) > 0, 0.0,
                      MASKED).astype(jnp.float32)
    lp = lp + pbias[None]
    lo = (q_bkrd @ jnp.swapaxes(k_bksd, -1, -2)).reshape(b, kv, g, t, s)
    lo = lo.astype(jnp.float32) + jnp.where(mask[:, None, None] > 0, 0.0,
                                            MASKED).astype(jnp.float32)
    lo = lo.reshape(b, kv, g * t, s)

    def to_rows(x_kn):   # [kv, n] -> [b, kv, g * t]
        return jnp.swapaxes(x_kn.reshape(kv, b, g * t), 0, 1)

    top = jax.lax.stop_gradient(jnp.maximum(to_rows(jnp.max(lp, axis=-1)),
                                            jnp.max(lo, axis=-1)))       # [b, kv, r]
    top_kn = jnp.swapaxes(top, 0, 1).reshape(kv, n)
    wp = jnp.exp(lp - top_kn[..., None])
    wo = jnp.exp(lo - top[..., None])
    ctx_p = jnp.einsum("kns,ksd->knd", wp.astype(pv_ksd.dtype), pv_ksd).astype(jnp.float32)
    ctx_p = jnp.swapaxes(ctx_p.reshape(kv, b, g * t, d), 0, 1)
    ctx = ctx_p + (wo.astype(v_bksd.dtype) @ v_bksd).astype(jnp.float32)
    ctx = ctx / (to_rows(jnp.sum(wp, axis=-1))[..., None] + jnp.sum(wo, axis=-1, keepdims=True))
    return ctx.astype(v_bksd.dtype).reshape(b, h, t, d)
