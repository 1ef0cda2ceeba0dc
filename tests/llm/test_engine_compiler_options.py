"""The float32 teacher on CPU compiles with oneDNN matmuls (`CPU_ONEDNN`): its greedy
generations equal those of XLA's default matmuls and its scores agree to float32
rounding, on FRet-shaped prompts of the real SmolLM2 teacher."""

import numpy as np

from gecko_jax.llm.jax_engine import CPU_ONEDNN, JaxEngine

FEW_SHOT = ("Write a search query that the passage answers.\n\n"
            "Passage: Tea is an aromatic beverage prepared by pouring hot water over cured "
            "leaves.\nQuery: how is tea made\n\n")
PASSAGES = ["The Eiffel Tower is a wrought-iron lattice tower in Paris.",
            "Honey bees tell each other where flowers are by dancing.",
            "Ada Lovelace wrote the first algorithm for Charles Babbage's Analytical Engine."]


def test_onednn_matmuls_match_xla_defaults(smollm2_engine):
    eng = smollm2_engine
    assert eng.compiler_options == CPU_ONEDNN  # the default on CPU, float32
    plain = JaxEngine(eng.config, eng.params, eng.tokenizer, max_batch=eng.max_batch,
                      compiler_options=None)
    prompts = [FEW_SHOT + "Passage: " + p + "\nQuery:" for p in PASSAGES]
    ids = eng.tokenizer.encode_batch(prompts)
    got = eng.generate_ids(ids, max_new_tokens=16)
    assert got == plain.generate_ids(ids, max_new_tokens=16)
    con = [" where is the eiffel tower", " how do bees communicate", " who was ada lovelace"]
    a = eng.score(prompts, con, per_token=True)
    b = plain.score(prompts, con, per_token=True)
    tok = max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))
    print(f"\noneDNN vs XLA default matmuls: max per-token log-prob diff {tok:.2e}")
    assert tok < 3e-5
