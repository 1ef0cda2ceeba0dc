"""The fused attention kernel of the BERT tower (kernels/onednn_attention.cc, through
models/attention.qkv_attention) against the XLA form in float64-checked float32."""

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


def _case(b, l, h, d, seed):
    rng = np.random.default_rng(seed)
    qkv = jnp.asarray(rng.standard_normal((b, l, 3, h, d)), jnp.bfloat16)
    lengths = rng.integers(1, l + 1, b)
    # Padding at the end, and one sequence with holes (the mask need not be a prefix).
    mask = (np.arange(l)[None] < lengths[:, None]).astype(np.int32)
    mask[0, ::3] = 0
    mask[0, 1] = 1
    return qkv, jnp.asarray(mask)


def _reference(qkv, mask, scale):
    """float64 numpy softmax attention over the bf16 operands."""
    q, k, v = (np.asarray(qkv[:, :, i].astype(jnp.float32), np.float64) for i in range(3))
    logits = np.einsum("blhd,bshd->bhls", q, k) * scale
    logits = np.where(np.asarray(mask)[:, None, None, :] > 0, logits, -np.inf)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    b, l, _, h, d = qkv.shape
    return np.einsum("bhls,bshd->blhd", w, v).reshape(b, l, h * d)


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


def test_fused_attention_gradients_equal_the_xla_form():
    qkv, mask = _case(2, 24, 2, 16, seed=2)
    c = jnp.asarray(np.random.default_rng(3).standard_normal((2, 24, 32)), jnp.float32)

    def loss(x, fused):
        return jnp.sum(qkv_attention(x, mask, 0.25, fused=fused).astype(jnp.float32) * c)

    got = jax.grad(loss)(qkv, True)
    want = jax.grad(loss)(qkv, False)
    assert got.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(got.astype(jnp.float32)),
                               np.asarray(want.astype(jnp.float32)), atol=1e-2, rtol=0)


def test_fused_attention_on_the_8_device_mesh_equals_one_device():
    mesh = jax.make_mesh((8,), ("data",))
    qkv, mask = _case(8, 40, 4, 16, seed=4)
    f = jax.jit(lambda x, m: qkv_attention(x, m, 0.25, fused=True))
    sharded = f(jax.device_put(qkv, NamedSharding(mesh, PartitionSpec("data"))),
                jax.device_put(mask, NamedSharding(mesh, PartitionSpec("data"))))
    one = f(jax.device_put(qkv, jax.devices()[0]), jax.device_put(mask, jax.devices()[0]))
    np.testing.assert_array_equal(np.asarray(sharded.astype(jnp.float32)),
                                  np.asarray(one.astype(jnp.float32)))


def test_bad_shapes_are_refused():
    qkv, mask = _case(2, 8, 2, 16, seed=5)
    with pytest.raises(ValueError, match=r"\[b, l, 3, h, d\]"):
        onednn.attention(qkv[:, :, :2], mask, 0.25)
    with pytest.raises(Exception, match="mask must be int32"):
        jax.block_until_ready(onednn.attention(qkv, mask[:, :4], 0.25))
