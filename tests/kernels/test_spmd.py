"""The oneDNN custom calls on a device mesh (kernels/spmd.py): each of the suite's 8
emulated devices computes its own rows (matmul) or sequences (attention) instead of
XLA gathering every operand and running the whole product on every device; results
equal one device's."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from gecko_jax.kernels import onednn
from gecko_jax.kernels.dense import dense

pytestmark = pytest.mark.skipif(not onednn.available(), reason="oneDNN kernel unavailable")


def _rand(shape, seed, dtype=jnp.float32):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), dtype)


def _mesh(shape, names):
    """A mesh whose axes XLA partitions automatically (as the engine's and trainer's)."""
    auto = (jax.sharding.AxisType.Auto,) * len(names)
    return jax.make_mesh(shape, names, axis_types=auto)


def _hlo(f, *args) -> str:
    return f.lower(*args).compile().as_text()


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_dense_rows_stay_on_their_device(dtype):
    mesh = _mesh((8,), ("data",))
    x = _rand((8 * 64, 96), 0, dtype)
    w = _rand((96, 48), 1, dtype)
    bias = _rand((48,), 2)
    f = jax.jit(lambda x, w, b: onednn.matmul(x, w, bias=b, activation="gelu",
                                              out_dtype=jnp.float32))
    xs = jax.device_put(x, NamedSharding(mesh, P("data")))
    text = _hlo(f, xs, w, bias)
    assert "gecko_onednn_matmul" in text
    assert "all-gather" not in text and "f32[64,48]" in text  # a local block per device
    got = f(xs, w, bias)
    assert got.sharding.spec == P("data")
    np.testing.assert_array_equal(np.asarray(got), np.asarray(f(x, w, bias)))


def test_column_split_weight_keeps_its_columns():
    """A weight split over "model" by columns (tensor parallel): each device computes its
    columns of the product; rows split over "data" at the same time."""
    mesh = _mesh((4, 2), ("data", "model"))
    x = _rand((4 * 32, 64), 3)
    w = _rand((64, 2 * 40), 4)
    f = jax.jit(lambda x, w: onednn.matmul(x, w))
    xs = jax.device_put(x, NamedSharding(mesh, P("data", None)))
    ws = jax.device_put(w, NamedSharding(mesh, P(None, "model")))
    text = _hlo(f, xs, ws)
    assert "all-gather" not in text and "f32[32,40]" in text
    got = f(xs, ws)
    assert got.sharding.spec == P("data", "model")
    np.testing.assert_array_equal(np.asarray(got), np.asarray(f(x, w)))


def test_dense_gradient_on_the_mesh_equals_one_device():
    """dx stays local; the weight gradient contracts over the split rows (gathered)."""
    mesh = _mesh((8,), ("data",))
    x = _rand((8 * 64, 96), 5)
    w = _rand((96, 48), 6, jnp.bfloat16)  # the kernel's route on every CPU (bf16 mode)

    def loss(x, w):
        return jnp.sum(jnp.tanh(dense(x, w, activation="silu")))

    g = jax.jit(jax.grad(loss, argnums=(0, 1)))
    xs = jax.device_put(x, NamedSharding(mesh, P("data")))
    dx, dw = g(xs, w)
    dx1, dw1 = g(x, w)
    np.testing.assert_array_equal(np.asarray(dx), np.asarray(dx1))
    np.testing.assert_array_equal(np.asarray(dw), np.asarray(dw1))


def test_attention_sequences_stay_on_their_device():
    mesh = _mesh((8,), ("data",))
    qkv = _rand((8 * 2, 32, 3, 4, 16), 7)
    mask = jnp.asarray(np.random.default_rng(8).random((16, 32)) > 0.2)
    g = _rand((16, 32, 64), 9)
    fwd = jax.jit(lambda q, m: onednn.attention(q, m, 0.25))
    bwd = jax.jit(lambda q, m, g: onednn.attention_grad(q, m, g, 0.25))
    put = lambda a: jax.device_put(a, NamedSharding(mesh, P("data")))  # noqa: E731
    for f, args in ((fwd, (qkv, mask)), (bwd, (qkv, mask, g))):
        sharded = [put(a) for a in args]
        assert "all-gather" not in _hlo(f, *sharded)
        got = f(*sharded)
        assert got.sharding.spec == P("data")
        np.testing.assert_array_equal(np.asarray(got), np.asarray(f(*args)))


def test_an_operand_tiled_unlike_any_mesh_spec_is_gathered():
    """Rows padded and reshaped into blocks (the teacher's LM-head blocks) get a tiling
    that no spec over the mesh describes: the call falls back to the gathered operand
    instead of failing to compile (it did, inside JAX's sharding decoding)."""
    mesh = _mesh((8,), ("data",))
    h = _rand((8, 9, 64), 10)
    w = _rand((80, 64), 11, jnp.bfloat16)   # [N, K]: a tied embedding as the head (bf16:
    # the kernel's route on every CPU it builds on)

    def head_blocks(h):
        n = h.shape[0] * h.shape[1]
        x = jnp.pad(h.reshape(n, 64), ((0, -n % 64), (0, 0))).reshape(-1, 64, 64)
        out = jax.lax.map(lambda blk: dense(blk, w, w_is_nk=True), x)
        return out.reshape(-1, 80)[:n]

    f = jax.jit(head_blocks)
    got = f(jax.device_put(h, NamedSharding(mesh, P("data"))))
    np.testing.assert_array_equal(np.asarray(got), np.asarray(f(h)))
