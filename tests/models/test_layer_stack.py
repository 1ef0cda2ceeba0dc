"""Numerics of the towers' layer options (models/layer_stack.py): remat, scan, bf16.

Remat and scan change how the layers run, not what they compute: the gradient of a
loss of the hidden states equals the plain (unrolled, no remat) one within 1e-6
relative to the largest gradient entry (float32; XLA fuses the variants differently),
on the BERT tower and on both decoder families. bf16 compute: every matmul in the
layer stack runs on bf16 operands while the parameters stay float32, and the output
is float32 and close to the float32 tower.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gecko_jax.kernels.dense import cpu_bf16_mode
from gecko_jax.models.bert import BertConfig, BertEncoder
from gecko_jax.models.decoder import Decoder, DecoderConfig
from gecko_jax.models.layer_stack import LayerOptions, run_stack

TINY_BERT = BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=3,
                       num_attention_heads=4, intermediate_size=64, max_position_embeddings=64)
TINY_GEMMA = DecoderConfig(architecture="gemma3", vocab_size=101, hidden_size=32,
                           intermediate_size=48, num_layers=4, num_heads=2, num_kv_heads=1,
                           head_dim=16, sliding_window=5, sliding_window_pattern=2,
                           query_pre_attn_scalar=16)
TINY_LLAMA = DecoderConfig(architecture="llama", vocab_size=97, hidden_size=32,
                           intermediate_size=64, num_layers=3, num_heads=4, num_kv_heads=2,
                           head_dim=8)

# (remat, scan): scan "flip" runs the layers the other way from the tower's default
# (BERT: scanned; the decoder: unrolled).
VARIANTS = [("full", None), ("dots", None), ("none", "flip"), ("dots_no_batch", "flip")]


def _options(tower, remat, scan):
    if scan == "flip":
        scan = not isinstance(tower, Decoder)
    return LayerOptions(remat=remat, scan=scan)


def _tower(kind):
    with nnx.use_eager_sharding(False):
        if kind == "bert":
            return BertEncoder(TINY_BERT, rngs=nnx.Rngs(0))
        return Decoder(TINY_GEMMA if kind == "gemma3" else TINY_LLAMA, causal=False,
                       rngs=nnx.Rngs(0))


def _batch(vocab):
    rng = np.random.default_rng(0)
    ids = jnp.asarray(rng.integers(1, vocab, (3, 12)), jnp.int32)
    mask = jnp.ones((3, 12), jnp.int32).at[1, 7:].set(0).at[2, 3:].set(0)
    return ids, mask


def _value_and_grad(tower, options):
    """(hidden [b, l, d], loss, grads) of sum(hidden * w) for `tower` run with `options`."""
    vocab = getattr(tower, "cfg", None) or tower.config
    ids, mask = _batch(vocab.vocab_size)
    graphdef, state = nnx.split(tower)
    w = jnp.asarray(np.random.default_rng(1).normal(size=(3, 12, 32)), jnp.float32)

    def hidden(s):
        model = nnx.merge(graphdef, s)
        model.options = options
        if isinstance(model, Decoder):
            return model.hidden_states(ids, mask)
        return model(ids, mask)

    def loss(s):
        h = hidden(s)
        return jnp.sum(h * w * mask[..., None]), h

    (value, h), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(state)
    return np.asarray(h), float(value), jax.tree.leaves(grads)


@pytest.fixture(scope="module", params=["bert", "gemma3"])
def plain(request):
    tower = _tower(request.param)
    return tower, _value_and_grad(tower, LayerOptions())


def _check_equal(tower, options, reference):
    h_ref, _, g_ref = reference
    h, _, g = _value_and_grad(tower, options)
    assert np.max(np.abs(h - h_ref)) <= 1e-6 * max(1.0, np.max(np.abs(h_ref)))
    scale = max(1.0, max(float(jnp.max(jnp.abs(x))) for x in g_ref))
    worst = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(g, g_ref)) / scale
    print(f"{type(tower).__name__} {options}: max |grad diff| / max|grad| = {worst:.2e}")
    assert worst <= 1e-6


@pytest.mark.parametrize("remat,scan", VARIANTS, ids=[f"{r}-{s}" for r, s in VARIANTS])
def test_remat_and_scan_equal_plain(plain, remat, scan):
    tower, reference = plain
    _check_equal(tower, _options(tower, remat, scan), reference)


def test_llama_unrolled_remat_equals_plain():
    tower = _tower("llama")
    _check_equal(tower, LayerOptions(remat="full", scan=False),
                 _value_and_grad(tower, LayerOptions()))


def _dot_dtypes(jaxpr, prims=("dot_general",)):
    """Operand dtypes of every `prims` equation in `jaxpr` (dot_general: XLA's dots;
    ffi_call: the oneDNN matmul), sub-jaxprs (scan, remat, custom_vjp) included."""
    out = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in prims:
            out.append(tuple(str(v.aval.dtype) for v in eqn.invars))
        for sub in jax.core.jaxprs_in_params(eqn.params):
            out.extend(_dot_dtypes(sub, prims))
    return out


@pytest.mark.parametrize("kind", ["bert", "gemma3"])
@pytest.mark.parametrize("scan", [False, True])
def test_bf16_compute_keeps_float32_params(kind, scan):
    tower = _tower(kind)
    options = LayerOptions(compute_dtype="bfloat16", scan=scan, remat="dots_no_batch")
    h_ref, _, _ = _value_and_grad(tower, LayerOptions())
    h, _, grads = _value_and_grad(tower, options)
    assert h.dtype == np.float32
    assert all(x.dtype == jnp.float32 for x in grads)               # float32 masters
    assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(nnx.state(tower, nnx.Param)))
    real = np.asarray(_batch(10)[1]) > 0
    cos = np.sum(h * h_ref, -1) / np.linalg.norm(h, axis=-1) / np.linalg.norm(h_ref, axis=-1)
    assert cos[real].min() > 0.99, cos[real].min()
    # Every matmul of the tower runs on bf16 operands (108 rows: enough for the
    # oneDNN route of kernels/dense.py where it runs).
    ids, mask = (jnp.tile(a, (3, 1)) for a in _batch(50))
    graphdef, state = nnx.split(tower)

    def run(s):
        model = nnx.merge(graphdef, s)
        model.options = options
        return model.hidden_states(ids, mask) if isinstance(model, Decoder) else model(ids, mask)

    jaxpr = jax.make_jaxpr(run)(state).jaxpr
    if cpu_bf16_mode(jnp.bfloat16):
        # CPU bf16 mode (kernels/dense.py): every dense layer is a oneDNN matmul on bf16
        # operands (one layer's worth at least: a scan traces one body; its third
        # operand is the float32 bias). BERT's attention is the fused kernel
        # (bf16 qkv, int32 mask), so no XLA dot is left; the decoder's attention stays
        # on XLA's dots, in float32.
        kernels = _dot_dtypes(jaxpr, ("ffi_call",))
        matmuls = [k[:2] for k in kernels if len(k) == 3]
        assert len(matmuls) >= (4 if kind == "bert" else 7), kernels
        assert set(matmuls) == {("bfloat16", "bfloat16")}, kernels
        if kind == "bert":
            assert ("bfloat16", "int32") in kernels, kernels
            assert not _dot_dtypes(jaxpr), _dot_dtypes(jaxpr)
        else:
            assert set(_dot_dtypes(jaxpr)) == {("float32", "float32")}, set(_dot_dtypes(jaxpr))
    else:
        dots = _dot_dtypes(jaxpr)
        assert dots and all(d == ("bfloat16", "bfloat16") for d in dots), set(dots)


def test_run_stack_stacked_and_list_agree():
    ws = [jnp.full((2,), float(i + 1)) for i in range(4)]
    f = lambda x, w: jnp.tanh(x * w) + w   # noqa: E731
    x = jnp.array([0.3, -0.2])
    want = x
    for w in ws:
        want = f(want, w)
    for scan in (False, True):
        for stacked, per_layer in ((False, ws), (True, jnp.stack(ws))):
            got = run_stack(f, x, per_layer, scan=scan, remat="full", stacked=stacked)
            np.testing.assert_allclose(got, want, rtol=1e-6)


def test_bad_option_names_are_refused():
    with pytest.raises(ValueError, match="remat='dot'.*dots_no_batch"):
        LayerOptions(remat="dot")
    with pytest.raises(ValueError, match="compute_dtype='fp16'"):
        LayerOptions(compute_dtype="fp16")



def test_bert_float32_attention_takes_the_kernels_where_they_pay(monkeypatch):
    """float32 BERT attention and its gradient run as the oneDNN kernels exactly where
    models/attention.float32_kernel says (AMX CPUs); that route gives the XLA route's
    loss and gradients (GECKO_ONEDNN_F32=0) within 1e-5 of the largest entry."""
    from gecko_jax.models.attention import float32_kernel

    tower = _tower("bert")
    ids, mask = _batch(TINY_BERT.vocab_size)
    graphdef, state = nnx.split(tower)

    def value_and_grad(s):
        def loss(t):
            return jnp.sum(nnx.merge(graphdef, t)(ids, mask) ** 2 * mask[..., None])
        return jax.value_and_grad(loss)(s)

    on = float32_kernel(jnp.float32)
    hlo = jax.jit(value_and_grad).lower(state).as_text()
    assert ("gecko_onednn_attention_grad" in hlo) == on
    got = jax.jit(value_and_grad)(state)
    monkeypatch.setenv("GECKO_ONEDNN_F32", "0")
    assert not float32_kernel(jnp.float32)
    want = jax.jit(lambda s: value_and_grad(s))(state)
    assert abs(float(got[0]) - float(want[0])) <= 1e-5 * abs(float(want[0]))
    top = max(float(jnp.max(jnp.abs(x))) for x in jax.tree.leaves(want[1]))
    for a, b in zip(jax.tree.leaves(got[1]), jax.tree.leaves(want[1])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5 * top, rtol=0)
