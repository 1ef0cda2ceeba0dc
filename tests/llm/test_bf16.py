"""The bf16 compute option (weights, activations and KV cache in bfloat16; norms, softmax
and logits in float32) against the float32 engine on the real SmolLM2 teacher."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.llm.test_jax_engine import PASSAGE

pytestmark = pytest.mark.slow


def test_bf16_scores_and_greedy_tokens_track_float32(smollm2_engine):
    from gecko_jax.llm.jax_engine import JaxEngine

    f32 = smollm2_engine
    bf16 = JaxEngine(f32.config, f32.params, f32.tokenizer, max_batch=8, dtype=jnp.bfloat16)
    ids = f32.tokenizer.encode(PASSAGE)
    a, b = f32.full_logits(ids), bf16.full_logits(ids)
    agree = float(np.mean(a.argmax(-1) == b.argmax(-1)))
    pre, good, bad = PASSAGE + "\nQuery:", " who built the eiffel tower", " best pizza in naples"
    s32 = np.array(f32.score([pre] * 2, [good, bad], per_token=True), dtype=object)
    s16 = np.array(bf16.score([pre] * 2, [good, bad], per_token=True), dtype=object)
    per_token = max(float(np.max(np.abs(x - y))) for x, y in zip(s32, s16))
    print(f"\nbf16 vs float32: top-1 agreement {agree:.2%}; max per-token log-prob diff "
          f"{per_token:.3f}")
    assert agree >= 0.9
    assert per_token < 0.25  # bfloat16 keeps ~3 significant digits
    assert sum(s16[0]) > sum(s16[1])  # the relevant query still wins
    from gecko_jax.kernels.dense import cpu_bf16_mode

    if cpu_bf16_mode(jnp.bfloat16):
        # CPU bf16 mode: decode steps (a few rows) run a float32 copy of the weights.
        assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(bf16.decode_params))
    g32 = f32.generate_ids([ids], max_new_tokens=8)[0]
    g16 = bf16.generate_ids([ids], max_new_tokens=8)[0]
    assert g16[:2] == g32[:2]


MESH_SCRIPT = """
import json
import jax, jax.numpy as jnp, numpy as np
from gecko_jax.llm.jax_engine import JaxEngine
from tests.llm.test_generate_reuse import PROMPTS

assert len(jax.devices()) == 8
one = JaxEngine.load("smollm2", max_batch=8, dtype=jnp.bfloat16)
mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
dp = JaxEngine(one.config, one.params, one.tokenizer, max_batch=8, mesh=mesh,
               dtype=jnp.bfloat16)
out = {"decode_devices": len(jax.tree.leaves(dp.decode_params)[0].sharding.device_set),
       "decode_f32": all(x.dtype == jnp.float32 for x in jax.tree.leaves(dp.decode_params))}
for name, eng in (("one", one), ("mesh", dp)):
    out[name] = eng.generate(PROMPTS, max_new_tokens=16)
print("RESULT " + json.dumps(out))
"""


def test_bf16_teacher_on_a_mesh_generates_like_one_device():
    """The bf16 teacher's float32 decode weights are placed on the mesh like its bf16
    ones; greedy generations equal one device's."""
    from gecko_jax.kernels.dense import cpu_bf16_mode
    from tests.llm.test_teacher_mesh import run_on_8_devices

    out = run_on_8_devices(MESH_SCRIPT)
    assert out["decode_devices"] == 8
    assert out["decode_f32"] == cpu_bf16_mode(jnp.bfloat16)
    assert out["mesh"] == out["one"]


def test_bf16_weights_run_as_bits_give_the_same_scores_and_no_float32_copy():
    """In the CPU bf16 mode the engine keeps its per-layer bf16 weights as bits
    (decoder.layers_as_bits): the scores equal those of the plain bf16 weights, and the
    compiled scoring call holds no float32 copy of a stacked weight (XLA:CPU made one
    of every bf16 weight its layer loop slices, each call)."""
    from gecko_jax.kernels.dense import cpu_bf16_mode
    from gecko_jax.llm.jax_engine import JaxEngine

    if not cpu_bf16_mode(jnp.bfloat16):
        pytest.skip("no CPU bf16 mode here (oneDNN kernel unavailable)")
    eng = JaxEngine.load("smollm2", max_batch=4, dtype=jnp.bfloat16)
    assert all(v.dtype == jnp.uint16 for k, v in eng._params["layers"].items()
               if not k.endswith("norm"))
    plain = eng.params  # the bf16 view
    assert all(v.dtype == jnp.bfloat16 for k, v in plain["layers"].items()
               if not k.endswith("norm"))
    ids = np.array([eng.tokenizer.encode(" ".join([PASSAGE] * 4))[:96]] * 2, np.int32)
    assert ids.shape == (2, 96)
    args = (ids, np.full((2,), 96, np.int32), np.tile(np.arange(40, 95, dtype=np.int32), (2, 1)),
            ids[:, 41:96])
    bits_lp = np.asarray(eng._score_full(eng._params, *args))
    plain_lp = np.asarray(eng._score_full(plain, *args))
    np.testing.assert_array_equal(bits_lp, plain_lp)
    assert np.all(np.isfinite(bits_lp)) and bits_lp.mean() < 0
    hlo = eng._score_full.lower(eng._params, *args).compile().as_text()
    w_down = plain["layers"]["w_down"].shape
    assert "f32[" + ",".join(map(str, w_down)) + "]" not in hlo
    plain_hlo = eng._score_full.lower(plain, *args).compile().as_text()
    assert "f32[" + ",".join(map(str, w_down)) + "]" in plain_hlo  # what it guards against
