"""The llama.cpp side of bench/fret.py: a real llama.cpp server for generation, and
llama.cpp's own prompt evaluation for scoring.

Why scoring does not go through the server: llama-cpp-python 0.3.36's server answers
/v1/completions `echo` + `logprobs` (the only prompt-log-prob route it has; the C++
llama-server's `n_probs` covers generated tokens only), but (1) for a model without a
BOS token (SmolLM2) it pairs token i with the distribution computed *at* token i, one
position late (see gecko_jax/llm/openai_compat.py), so the values are wrong, and (2) it
sorts the whole 49k vocabulary in Python for every prompt token (`top_logprobs`):
measured 54-77 s for one 211-token prompt here, against 0.01 s for the same prompt's
evaluation. A run through it would measure that Python sort, not llama.cpp. The honest
equivalent is what a correct server would do: llama.cpp evaluates prefix + continuation
with logits for every position (`logits_all`), reusing the KV cache of the longest
common prefix with the previous request (as the server does), and the log-softmax is
read at the continuation positions. `LlamaCppTeacher.score` does exactly that with the
same libllama build, in process.
"""

from __future__ import annotations

import numpy as np

from gecko_jax.llm.base import LLM, Capabilities, check_pairs


class LlamaCppScorer:
    """log P(continuation | prefix) with llama.cpp (libllama via llama-cpp-python)."""

    def __init__(self, model_path: str, n_ctx: int = 2048, n_threads: int = 2):
        import llama_cpp

        self.llm = llama_cpp.Llama(model_path=str(model_path), n_ctx=n_ctx, n_batch=512,
                                   n_threads=n_threads, logits_all=True, verbose=False)
        self.prompt_tokens = 0

    def _tok(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def score_ids(self, prefix_ids, cont_ids) -> list[float]:
        llm = self.llm
        out = [0.0] * len(prefix_ids)
        # Sorted so consecutive rows share leading tokens (the server reuses the longest
        # common prefix with its previous request the same way).
        order = sorted(range(len(prefix_ids)), key=lambda i: prefix_ids[i] + cont_ids[i])
        for i in order:
            p, c = prefix_ids[i], cont_ids[i]
            toks = p + c
            prev = llm.input_ids[:llm.n_tokens].tolist()
            lcp = 0
            while lcp < min(len(prev), len(toks) - 1) and prev[lcp] == toks[lcp]:
                lcp += 1
            lcp = min(lcp, len(p) - 1)  # the first predictor row must be fresh or kept
            llm.n_tokens = lcp
            llm.eval(toks[lcp:])
            self.prompt_tokens += len(toks) - lcp
            rows = np.asarray(llm.scores[len(p) - 1:len(toks) - 1], np.float64)
            m = rows.max(axis=1, keepdims=True)
            lse = (m + np.log(np.exp(rows - m).sum(axis=1, keepdims=True)))[:, 0]
            out[i] = float(np.sum(rows[np.arange(len(c)), c] - lse))
        return out

    def score(self, prefixes, continuations) -> list[float]:
        return self.score_ids([self._tok(p) for p in prefixes],
                              [self._tok(c) for c in continuations])


class LlamaCppTeacher(LLM):
    """Generation through a llama.cpp server (OpenAICompatLLM); scoring by libllama."""

    def __init__(self, server_llm, scorer: LlamaCppScorer):
        self.server, self.scorer = server_llm, scorer
        self.name = f"llama.cpp({server_llm.base_url})"
        self.capabilities = Capabilities(generate=True, score=True, chat=True, seeded=True)

    def generate(self, prompts, max_new_tokens=64, temperature=0.0, top_p=1.0, stop=None,
                 seed=0):
        return self.server.generate(prompts, max_new_tokens, temperature, top_p, stop, seed)

    def score(self, prefixes, continuations, per_token=False):
        check_pairs(prefixes, continuations)
        if per_token:
            raise NotImplementedError("bench scorer: sums only")
        return self.scorer.score(prefixes, continuations)
