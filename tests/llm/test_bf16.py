"""The bf16 compute option (weights, activations and KV cache in bfloat16; norms, softmax
and logits in float32) against the float32 engine on the real SmolLM2 teacher."""

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
    g32 = f32.generate_ids([ids], max_new_tokens=8)[0]
    g16 = bf16.generate_ids([ids], max_new_tokens=8)[0]
    assert g16[:2] == g32[:2]
