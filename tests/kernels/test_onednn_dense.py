"""The oneDNN matmul custom call (gecko_jax/kernels/onednn.py) and the dense-layer
route over it (kernels/dense.py), checked against float64 numpy products of the same
(bf16-rounded) operands and against XLA's own dot."""

import platform

import jax
from jax.ad_checkpoint import print_saved_residuals
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from gecko_jax.kernels import dense as dense_lib
from gecko_jax.kernels import onednn

pytestmark = pytest.mark.skipif(platform.machine() != "x86_64" or platform.system() != "Linux",
                                reason="the kernel is built for x86-64 Linux")


def _rand(shape, seed, dtype):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), dtype)


def _f64(x):
    return np.asarray(x.astype(jnp.float32), np.float64)


def test_kernel_builds_and_loads_here():
    # setup.py installs oneDNN's wheels on x86-64 Linux and the machine has g++: the
    # kernel must be there (else the bf16 option silently loses its speed).
    assert onednn.why_unavailable() is None
    assert dense_lib.cpu_bf16_mode(jnp.bfloat16)
    assert not dense_lib.cpu_bf16_mode(jnp.float32) and not dense_lib.cpu_bf16_mode(None)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True)])
def test_matmul_equals_float64_product(dtype, ta, tb):
    m, k, n = 70, 96, 40
    a = _rand((k, m) if ta else (m, k), 0, dtype)
    b = _rand((n, k) if tb else (k, n), 1, dtype)
    want = (_f64(a).T if ta else _f64(a)) @ (_f64(b).T if tb else _f64(b))
    got = jax.jit(lambda x, y: onednn.matmul(x, y, transpose_a=ta, transpose_b=tb,
                                             out_dtype=jnp.float32))(a, b)
    assert got.shape == (m, n) and got.dtype == jnp.float32
    # float32 sums of K = 96 exact products: error ~ K * 2^-24 * |terms|.
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-4 * np.abs(want).max(), rtol=0)
    low = onednn.matmul(a, b, transpose_a=ta, transpose_b=tb)      # result in a's dtype
    assert low.dtype == dtype
    bound = 2.0 ** -8 if dtype == jnp.bfloat16 else 1e-6           # one rounding of the sum
    np.testing.assert_allclose(_f64(low), want, atol=bound * np.abs(want).max() + 1e-4, rtol=0)


def test_bad_operands_are_refused():
    a, b = _rand((80, 8), 0, jnp.bfloat16), _rand((8, 4), 1, jnp.float32)
    with pytest.raises(Exception, match="must both be bf16 or both f32"):
        jax.block_until_ready(onednn.matmul(a, b))


def test_dense_takes_the_kernel_and_agrees_with_xla():
    x = _rand((4, 32, 48), 2, jnp.float32)        # 128 rows >= MIN_ROWS
    w = _rand((48, 24), 3, jnp.bfloat16)
    assert dense_lib.use_onednn(x, w)
    assert "ffi_call" in str(jax.make_jaxpr(dense_lib.dense)(x, w))
    got = dense_lib.dense(x, w)
    want = jnp.matmul(x.astype(jnp.bfloat16), w, preferred_element_type=jnp.float32)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=1e-5)
    # Few rows (decode-sized) stay on XLA's dot.
    assert not dense_lib.use_onednn(x[:1, :8], w)
    # The tied-embedding (LM head) layout: w stored [N, K].
    w_nk = _rand((24, 48), 4, jnp.bfloat16)
    got = dense_lib.dense(x, w_nk, w_is_nk=True, out_dtype=jnp.float32)
    want = _f64(x.astype(jnp.bfloat16)) @ _f64(w_nk).T
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-4 * np.abs(want).max(), rtol=0)


@pytest.mark.parametrize("w_is_nk", [False, True])
def test_dense_gradients_equal_float64(w_is_nk):
    x = _rand((96, 40), 5, jnp.float32)
    w = _rand((24, 40) if w_is_nk else (40, 24), 6, jnp.bfloat16)
    c = _rand((96, 24), 7, jnp.float32)

    def loss(x, w):
        return jnp.sum(dense_lib.dense(x, w, w_is_nk=w_is_nk, out_dtype=jnp.float32) * c)

    gx, gw = jax.grad(loss, argnums=(0, 1))(x, w)
    assert gx.dtype == jnp.float32 and gw.dtype == jnp.bfloat16
    # d/dx sum((x W) * c) = c W^T; d/dW = x^T c, on the bf16-rounded operands (the
    # custom VJP multiplies in bf16 too: c is rounded to bf16 before its products).
    cb, xb, wb = _f64(c.astype(jnp.bfloat16)), _f64(x.astype(jnp.bfloat16)), _f64(w)
    w_kn = wb.T if w_is_nk else wb
    want_x, want_w = cb @ w_kn.T, (xb.T @ cb)
    want_w = want_w.T if w_is_nk else want_w
    np.testing.assert_allclose(_f64(gx), want_x, atol=2 ** -7 * np.abs(want_x).max(), rtol=0)
    np.testing.assert_allclose(_f64(gw), want_w, atol=2 ** -7 * np.abs(want_w).max(), rtol=0)


def test_dense_on_the_8_device_mesh_equals_one_device():
    # The suite emulates 8 CPU devices: each runs the kernel on its own rows
    # (kernels/spmd.py; tests/kernels/test_spmd.py); the result must not change.
    assert jax.device_count() == 8
    mesh = jax.make_mesh((8,), ("data",))
    x = _rand((8, 16, 48), 8, jnp.float32)
    w = _rand((48, 24), 9, jnp.bfloat16)
    f = jax.jit(dense_lib.dense)
    sharded = f(jax.device_put(x, NamedSharding(mesh, PartitionSpec("data"))), w)
    one = f(jax.device_put(x, jax.devices()[0]), w)
    np.testing.assert_array_equal(np.asarray(sharded), np.asarray(one))


def test_concurrent_calls_on_8_devices_equal_float64():
    # Each emulated device runs the kernel on its own rows at the same time, from its own
    # thread: every call needs a scratchpad of its own (oneDNN's library-managed one is
    # shared between concurrent executions of a primitive, and corrupted results here
    # before the kernel switched to user scratchpads).
    mesh = jax.make_mesh((8,), ("data",))
    x = _rand((8 * 256, 384), 10, jnp.bfloat16)
    w = _rand((384, 1536), 11, jnp.bfloat16)
    f = jax.jit(jax.shard_map(lambda a, b: onednn.matmul(a, b, out_dtype=jnp.float32), mesh=mesh,
                          in_specs=(PartitionSpec("data"), PartitionSpec()),
                          out_specs=PartitionSpec("data")))
    want = _f64(x) @ _f64(w)
    xs = jax.device_put(x, NamedSharding(mesh, PartitionSpec("data")))
    for _ in range(3):
        got = np.asarray(f(xs, w), np.float64)
        np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(want).max(), rtol=0)


def _act64(name, z):
    from scipy.special import erf

    if name == "gelu":
        return 0.5 * z * (1 + erf(z / np.sqrt(2)))
    if name == "gelu_tanh":
        return 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z ** 3)))
    return np.maximum(z, 0) if name == "relu" else z


@pytest.mark.parametrize("activation", [None, "gelu", "gelu_tanh", "relu"])
def test_bias_and_activation_inside_the_kernel_equal_float64(activation):
    x = _rand((130, 64), 12, jnp.float32)
    w = _rand((64, 48), 13, jnp.bfloat16)
    bias = _rand((48,), 14, jnp.float32)
    assert dense_lib.use_onednn(x, w)
    want = _act64(activation, _f64(x.astype(jnp.bfloat16)) @ _f64(w) + _f64(bias))
    got = jax.jit(lambda x, w, b: dense_lib.dense(x, w, bias=b, activation=activation))(x, w, bias)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(_f64(got), want, atol=1e-5 * np.abs(want).max(), rtol=0)
    # XLA's route (few rows) computes the same thing.
    xla = dense_lib.dense(x[:8], w, bias=bias, activation=activation)
    assert not dense_lib.use_onednn(x[:8], w)
    np.testing.assert_allclose(_f64(xla), want[:8], atol=1e-5 * np.abs(want).max(), rtol=0)


@pytest.mark.parametrize("activation", [None, "gelu"])
def test_bias_and_activation_gradients_match_xla(activation):
    # The kernel route's custom VJP against jax.grad of the XLA route on the same
    # bf16-rounded operands (both round the output cotangent to bf16 for the products).
    x = _rand((96, 40), 15, jnp.float32)
    w = _rand((40, 24), 16, jnp.bfloat16)
    bias = _rand((24,), 17, jnp.float32)
    c = _rand((96, 24), 18, jnp.float32)

    def loss(dense_fn, x, w, b):
        return jnp.sum(dense_fn(x, w, bias=b, activation=activation) * c)

    def xla_dense(x, w, bias, activation):
        z = jnp.matmul(x.astype(jnp.bfloat16), w, preferred_element_type=jnp.float32) + bias
        return z if activation is None else dense_lib.ACTIVATIONS[activation](z)

    got = jax.grad(lambda *a: loss(dense_lib.dense, *a), argnums=(0, 1, 2))(x, w, bias)
    want = jax.grad(lambda *a: loss(xla_dense, *a), argnums=(0, 1, 2))(x, w, bias)
    for g, r in zip(got, want):
        assert g.dtype == r.dtype
        r = _f64(r)
        np.testing.assert_allclose(_f64(g), r, atol=2 ** -7 * np.abs(r).max(), rtol=0)


def test_unknown_activation_is_refused():
    with pytest.raises(ValueError, match="activation 'swish'"):
        onednn.matmul(_rand((4, 8), 0, jnp.bfloat16), _rand((8, 4), 1, jnp.bfloat16),
                      activation="swish")


@pytest.mark.parametrize("activation", [None, "gelu"])
def test_float32_route_equals_float64_and_xla_gradients(activation, monkeypatch):
    # float32 products through oneDNN (on by default on AMX CPUs: dense.float32_kernel_pays)
    # are float32 products: forward within 1e-5 of float64, gradients within 1e-5 of
    # jax.grad of XLA's route.
    monkeypatch.setenv("GECKO_ONEDNN_F32", "1")
    x = _rand((96, 40), 19, jnp.float32)
    w = _rand((40, 24), 20, jnp.float32)
    bias = _rand((24,), 21, jnp.float32)
    c = _rand((96, 24), 22, jnp.float32)
    assert dense_lib.use_onednn(x, w)
    fn = jax.jit(lambda x, w, b: dense_lib.dense(x, w, bias=b, activation=activation))
    assert "gecko_onednn_matmul" in fn.lower(x, w, bias).as_text()
    want = _act64(activation, _f64(x) @ _f64(w) + _f64(bias))
    np.testing.assert_allclose(_f64(fn(x, w, bias)), want, atol=1e-5 * np.abs(want).max(), rtol=0)

    def loss(dense_fn, x, w, b):
        return jnp.sum(dense_fn(x, w, bias=b, activation=activation) * c)

    def xla_dense(x, w, bias, activation):
        z = x @ w + bias
        return z if activation is None else dense_lib.ACTIVATIONS[activation](z)

    got = jax.grad(lambda *a: loss(dense_lib.dense, *a), argnums=(0, 1, 2))(x, w, bias)
    want_g = jax.grad(lambda *a: loss(xla_dense, *a), argnums=(0, 1, 2))(x, w, bias)
    for g, r in zip(got, want_g):
        r = _f64(r)
        np.testing.assert_allclose(_f64(g), r, atol=1e-5 * np.abs(r).max(), rtol=0)
    monkeypatch.setenv("GECKO_ONEDNN_F32", "0")
    assert not dense_lib.use_onednn(x, w)


@pytest.mark.parametrize("activation,w_is_nk", [("gelu_tanh", False), ("silu", True),
                                                (None, False)])
def test_xla_route_gradients_equal_autodiff_and_keep_only_z(activation, w_is_nk, monkeypatch,
                                                             capsys):
    # XLA's route (accelerators; CPUs where float32 kernels do not pay) has its own VJP:
    # gradients within 1e-5 of jax.grad of the plain formula, and the backward keeps
    # x, W and the pre-activation only (autodiff of the tanh GELU kept six
    # [rows, width] intermediates, which cost more than the matmuls in a Gemma step).
    monkeypatch.setenv("GECKO_ONEDNN_F32", "0")
    x = _rand((2, 48, 40), 23, jnp.float32)
    w = _rand((24, 40) if w_is_nk else (40, 24), 24, jnp.float32)
    bias = _rand((24,), 25, jnp.float32)
    c = _rand((2, 48, 24), 26, jnp.float32)
    assert not dense_lib.use_onednn(x, w)

    def ours(x, w, b):
        return dense_lib.dense(x, w, bias=b, activation=activation, w_is_nk=w_is_nk)

    def plain(x, w, b):
        z = (x @ (w.T if w_is_nk else w)) + b
        return z if activation is None else dense_lib.ACTIVATIONS[activation](z)

    np.testing.assert_allclose(ours(x, w, bias), plain(x, w, bias), atol=1e-6, rtol=1e-6)
    got = jax.grad(lambda *a: jnp.sum(ours(*a) * c), argnums=(0, 1, 2))(x, w, bias)
    want = jax.grad(lambda *a: jnp.sum(plain(*a) * c), argnums=(0, 1, 2))(x, w, bias)
    for g, r in zip(got, want):
        assert g.shape == r.shape and g.dtype == r.dtype
        r = _f64(r)
        np.testing.assert_allclose(_f64(g), r, atol=1e-5 * np.abs(r).max(), rtol=0)
    capsys.readouterr()
    print_saved_residuals(ours, x, w, bias)
    saved = capsys.readouterr().out.strip().splitlines()
    widths = [line for line in saved if line.startswith("f32[96,24]")]
    assert len(widths) == (0 if activation is None else 1), saved
