"""The fused attention kernels of the BERT tower (kernels/onednn_attention.cc and its
gradient onednn_attention_grad.cc, through models/attention.qkv_attention), bf16 and
float32, against float64 numpy and the XLA form."""

import platform

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from gecko_jax.kernels import onednn
from gecko_jax.models.attention import qkv_attention

pytestmark = pytest.mark.skipif(platform.machine() != "x86_64" or platform.system() != "Linux",
                                reason="the kernel is built for x86-64 Linux")


def _case(b, l, h, d, seed, dtype=jnp.bfloat16):
    rng = np.random.default_rng(seed)
    qkv = jnp.asarray(rng.standard_normal((b, l, 3, h, d)), dtype)
    lengths = rng.integers(1, l + 1, b)
    # Padding at the end, and one sequence with holes (the mask need not be a prefix).
    mask = (np.arange(l)[None] < lengths[:, None]).astype(np.int32)
    mask[0, ::3] = 0
    mask[0, 1] = 1
    return qkv, jnp.asarray(mask)


def _probabilities(qkv, mask, scale):
    q, k, v = (np.asarray(qkv[:, :, i].astype(jnp.float32), np.float64) for i in range(3))
    logits = np.einsum("blhd,bshd->bhls", q, k) * scale
    logits = np.where(np.asarray(mask)[:, None, None, :] > 0, logits, -np.inf)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    return q, k, v, w / w.sum(-1, keepdims=True)


def _reference(qkv, mask, scale):
    """float64 numpy softmax attention over the given (e.g. bf16) operands."""
    _, _, v, w = _probabilities(qkv, mask, scale)
    b, l, _, h, d = qkv.shape
    return np.einsum("bhls,bshd->blhd", w, v).reshape(b, l, h * d)


def _reference_grad(qkv, mask, scale, c_bld):
    """float64 numpy d(sum(attention * c)) / d(qkv), by the softmax's formulas."""
    q, k, v, p = _probabilities(qkv, mask, scale)
    b, l, _, h, d = qkv.shape
    c = np.asarray(c_bld, np.float64).reshape(b, l, h, d)
    dv = np.einsum("bhls,blhd->bshd", p, c)
    dp = np.einsum("blhd,bshd->bhls", c, v)
    ds = p * (dp - (p * dp).sum(-1, keepdims=True)) * scale
    dq = np.einsum("bhls,bshd->blhd", ds, k)
    dk = np.einsum("bhls,blhd->bshd", ds, q)
    return np.stack([dq, dk, dv], axis=2)


@pytest.mark.parametrize("b,l,h,d", [(3, 37, 4, 16), (4, 128, 12, 32)])
def test_fused_attention_equals_float64(b, l, h, d):
    qkv, mask = _case(b, l, h, d, seed=l)
    scale = d ** -0.5
    want = _reference(qkv, mask, scale)
    fused_fn = lambda x, m: qkv_attention(x, m, scale, fused=True)  # noqa: E731
    fused = jax.jit(fused_fn)(qkv, mask)
    assert "ffi_call" in str(jax.make_jaxpr(fused_fn)(qkv, mask))
    assert fused.dtype == jnp.bfloat16 and fused.shape == (b, l, h * d)
    xla = qkv_attention(qkv.astype(jnp.float32), mask, scale, fused=False)
    # Probabilities and output are rounded to bf16 once each: |error| <= ~2^-8 relative.
    bound = 2.0 ** -7 * np.abs(want).max()
    np.testing.assert_allclose(np.asarray(fused.astype(jnp.float32), np.float64), want,
                               atol=bound, rtol=0)
    np.testing.assert_allclose(np.asarray(xla, np.float64), want, atol=1e-5, rtol=0)
    f32 = onednn.attention(qkv, mask, scale, out_dtype=jnp.float32)
    np.testing.assert_allclose(np.asarray(f32, np.float64), want, atol=bound, rtol=0)


def test_a_sequence_with_no_visible_key_gets_the_mean_of_its_values():
    qkv, mask = _case(2, 20, 2, 16, seed=1)
    mask = mask.at[1].set(0)
    got = np.asarray(onednn.attention(qkv, mask, 0.25, out_dtype=jnp.float32))
    xla = np.asarray(qkv_attention(qkv.astype(jnp.float32), mask, 0.25, fused=False))
    v_mean = np.asarray(qkv[1, :, 2].astype(jnp.float32)).mean(0).reshape(-1)
    np.testing.assert_allclose(got[1], np.broadcast_to(v_mean, got[1].shape), atol=1e-2)
    np.testing.assert_allclose(xla[1], got[1], atol=1e-2)


@pytest.mark.parametrize("b,l,h,d", [(3, 37, 4, 16), (4, 128, 12, 32)])
def test_float32_kernel_equals_float64_and_the_xla_form(b, l, h, d):
    qkv, mask = _case(b, l, h, d, seed=l + 1, dtype=jnp.float32)
    scale = d ** -0.5
    want = _reference(qkv, mask, scale)
    fn = lambda x, m: qkv_attention(x, m, scale, fused=True)  # noqa: E731
    assert "ffi_call" in str(jax.make_jaxpr(fn)(qkv, mask))
    got = jax.jit(fn)(qkv, mask)
    assert got.dtype == jnp.float32 and got.shape == (b, l, h * d)
    # float32 products and softmax (exp to ~3e-6 relative): the XLA form's own distance
    np.testing.assert_allclose(np.asarray(got, np.float64), want, atol=1e-5, rtol=0)
    xla = qkv_attention(qkv, mask, scale, fused=False)
    np.testing.assert_allclose(np.asarray(got), np.asarray(xla), atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("b,l,h,d", [(2, 24, 2, 16), (3, 128, 12, 32)])
def test_fused_attention_gradients_equal_float64(dtype, b, l, h, d, monkeypatch):
    qkv, mask = _case(b, l, h, d, seed=2 + l, dtype=dtype)
    c = jnp.asarray(np.random.default_rng(3).standard_normal((b, l, h * d)), jnp.float32)
    scale = d ** -0.5

    def loss(x, fused):
        return jnp.sum(qkv_attention(x, mask, scale, fused=fused).astype(jnp.float32) * c)

    got = jax.grad(loss)(qkv, True)
    assert got.dtype == dtype
    if dtype == jnp.bfloat16:   # bf16 gradients take the kernel where float32 ones pay
        monkeypatch.setenv("GECKO_ONEDNN_F32", "1")
        got = jax.grad(loss)(qkv, True)
    assert "gecko_onednn_attention_grad" in jax.jit(jax.grad(loss), static_argnums=1).lower(
        qkv, True).as_text()
    # The cotangent reaching a bf16 output is bf16: the reference uses it rounded too.
    c_out = c.astype(dtype).astype(jnp.float32)
    want = _reference_grad(qkv, mask, scale, c_out)
    top = np.abs(want).max()
    got64 = np.asarray(got.astype(jnp.float32), np.float64)
    if dtype == jnp.float32:
        np.testing.assert_allclose(got64, want, atol=1e-5 * top, rtol=0)
        xla = jax.grad(loss)(qkv, False)
        np.testing.assert_allclose(np.asarray(xla, np.float64), want, atol=1e-5 * top, rtol=0)
    else:   # exact in float32 at the bf16 values, rounded to bf16 once: 2^-9 relative
        np.testing.assert_allclose(got64, want, atol=2.0 ** -8 * top, rtol=0)


def test_bf16_gradients_keep_the_xla_form_where_float32_kernels_do_not_pay(monkeypatch):
    monkeypatch.setenv("GECKO_ONEDNN_F32", "0")
    qkv, mask = _case(2, 24, 2, 16, seed=9)
    c = jnp.asarray(np.random.default_rng(3).standard_normal((2, 24, 32)), jnp.float32)

    def loss(x, fused):
        return jnp.sum(qkv_attention(x, mask, 0.25, fused=fused).astype(jnp.float32) * c)

    hlo = jax.jit(jax.grad(loss), static_argnums=1).lower(qkv, True).as_text()
    assert "gecko_onednn_attention_grad" not in hlo
    got, want = jax.grad(loss)(qkv, True), jax.grad(loss)(qkv, False)
    np.testing.assert_array_equal(np.asarray(got.astype(jnp.float32)),
                                  np.asarray(want.astype(jnp.float32)))


def test_gradient_with_no_visible_key_equals_the_xla_form():
    qkv, mask = _case(2, 20, 2, 16, seed=6, dtype=jnp.float32)
    mask = mask.at[1].set(0)
    c = jnp.asarray(np.random.default_rng(7).standard_normal((2, 20, 32)), jnp.float32)

    def loss(x, fused):
        return jnp.sum(qkv_attention(x, mask, 0.25, fused=fused) * c)

    got, want = jax.grad(loss)(qkv, True), jax.grad(loss)(qkv, False)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_fused_attention_on_the_8_device_mesh_equals_one_device(dtype):
    mesh = jax.make_mesh((8,), ("data",))
    qkv, mask = _case(8, 40, 4, 16, seed=4, dtype=dtype)
    c = jnp.asarray(np.random.default_rng(8).standard_normal((8, 40, 64)), jnp.float32)

    def value_and_grad(x, m):
        f = lambda y: qkv_attention(y, m, 0.25, fused=True)  # noqa: E731
        out, vjp = jax.vjp(f, x)
        return out, vjp(c.astype(out.dtype))[0]

    f = jax.jit(value_and_grad)
    shard = NamedSharding(mesh, PartitionSpec("data"))
    sharded = f(jax.device_put(qkv, shard), jax.device_put(mask, shard))
    one = f(jax.device_put(qkv, jax.devices()[0]), jax.device_put(mask, jax.devices()[0]))
    for a, b in zip(sharded, one):
        a, b = np.asarray(a.astype(jnp.float32)), np.asarray(b.astype(jnp.float32))
        if dtype == jnp.float32:
            np.testing.assert_array_equal(a, b)
        else:
            # bfloat16 products: oneDNN may split the reduction differently for a shard
            # of 1 row than for 8 (it varies with the threads it gets), so results agree
            # to a few bfloat16 ulps, not bit for bit; a wrong sharding is off by O(1).
            np.testing.assert_allclose(a, b, rtol=2**-6, atol=2**-4 * np.abs(b).max())


def test_bad_shapes_are_refused():
    qkv, mask = _case(2, 8, 2, 16, seed=5)
    with pytest.raises(ValueError, match=r"\[b, l, 3, h, d\]"):
        onednn.attention(qkv[:, :, :2], mask, 0.25)
    with pytest.raises(Exception, match="mask must be int32"):
        jax.block_until_ready(onednn.attention(qkv, mask[:, :4], 0.25))
    g = jnp.zeros((2, 8, 32), jnp.float32)
    with pytest.raises(ValueError, match=r"g \[b, l, h \* d\]"):
        onednn.attention_grad(qkv, mask, g[:, :4], 0.25)
    with pytest.raises(Exception, match="mask must be int32"):
        jax.block_until_ready(onednn.attention_grad(qkv, mask[:, :4], g, 0.25))
