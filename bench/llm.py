"""Teacher-LLM throughput: the JAX engine vs transformers (torch) vs llama.cpp on SmolLM2.

  python bench/llm.py            # 16 prompts x 256 tokens scoring; batch 16 x 32 new tokens
  python bench/llm.py --quick    # fewer rows, under a minute once compiled caches are warm

Scoring: each 256-token prompt (real BBC News text) is split into a 192-token prefix
and a 64-token continuation whose log-probs are summed (FRet's query likelihood has
this shape); throughput counts all 256 tokens per prompt. Every engine runs the LM
head only on the positions it needs (transformers via `logits_to_keep`; llama.cpp
returns all logits). Generation: greedy, 32 new tokens per prompt from 64-token
prompts; llama.cpp's Python API decodes one sequence at a time.
The last line is `ratio <ours/transformers scoring throughput>`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np


def texts_from_bbc(n: int) -> list[str]:
    from gecko_jax import assets

    root = assets.bbc_news_dir()
    files = sorted(root.glob("*/*.txt"))[::37][:n]
    return [f.read_text(encoding="latin-1") for f in files]


def timed(label, fn, reps):
    t = time.perf_counter()
    fn()  # warm-up (compiles / allocates)
    warm = time.perf_counter() - t
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    print(f"  {label}: {best:.2f}s (first call {warm:.1f}s)", file=sys.stderr, flush=True)
    return best, out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-llama-cpp", action="store_true")
    args = ap.parse_args(argv)
    n_rows = 4 if args.quick else 16
    reps = 1 if args.quick else 2
    prefix_len, cont_len, prompt_len, new_tokens = 192, 64, 64, 32

    import torch
    from transformers import AutoModelForCausalLM

    from gecko_jax.llm.jax_engine import JaxEngine
    from gecko_jax.llm.loading import resolve

    torch.set_num_threads(os.cpu_count() or 1)
    engine = JaxEngine.load("smollm2", max_batch=16)
    tok = engine.tokenizer
    # Each row: the first 256 tokens of an article, topped up from the next if short.
    stream = [tok.encode(t + "\n\n") for t in texts_from_bbc(4 * n_rows)]
    ids, i = [], 0
    while len(ids) < n_rows:
        row = []
        while len(row) < prefix_len + cont_len:
            row += stream[i]
            i += 1
        ids.append(row[:prefix_len + cont_len])
    prefixes = [r[:prefix_len] for r in ids]
    conts = [r[prefix_len:] for r in ids]
    gen_prompts = [r[:prompt_len] for r in ids]
    n_score_tokens = n_rows * (prefix_len + cont_len)
    n_gen_tokens = n_rows * new_tokens
    results = {}

    # ---- ours
    t_score, ours = timed("jax score", lambda: engine.score_ids(prefixes, conts, reuse_prefix=False), reps)
    t_gen, ours_gen = timed("jax generate", lambda: engine.generate_ids(gen_prompts, new_tokens), reps)
    results["jax"] = (n_score_tokens / t_score, n_gen_tokens / t_gen)

    # ---- transformers (same GGUF, dequantised to float32)
    path = resolve("smollm2")
    hf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                              dtype=torch.float32).eval()
    x = torch.tensor(ids)

    def hf_score():
        with torch.inference_mode():
            logits = hf(x, logits_to_keep=cont_len + 1).logits[:, :-1]
            lp = torch.log_softmax(logits.float(), -1)
            return lp.gather(-1, x[:, prefix_len:, None])[..., 0].sum(-1).numpy()

    t_score_hf, ref = timed("transformers score", hf_score, reps)
    gp = torch.tensor(gen_prompts)

    def hf_gen():
        with torch.inference_mode():
            return hf.generate(gp, attention_mask=torch.ones_like(gp), max_new_tokens=new_tokens,
                               min_new_tokens=new_tokens, do_sample=False)

    t_gen_hf, _ = timed("transformers generate", hf_gen, reps)
    results["transformers"] = (n_score_tokens / t_score_hf, n_gen_tokens / t_gen_hf)
    diff = float(np.abs(np.asarray(ours) - ref).max())

    # ---- llama.cpp in-process (Q4_1 weights as shipped)
    if not args.no_llama_cpp:
        try:
            import llama_cpp
        except ImportError:
            print("llama.cpp: not installed (bash scripts/build_llama_cpp.sh)", file=sys.stderr)
        else:
            llm = llama_cpp.Llama(str(path), n_ctx=512, n_batch=512, logits_all=True,
                                  n_threads=os.cpu_count(), verbose=False)

            def lc_score():
                out = []
                for r in ids:
                    llm.reset()
                    llm.eval(r)
                    sc = np.asarray(llm.scores[prefix_len - 1:len(r) - 1], np.float64)
                    m = sc.max(-1, keepdims=True)
                    lse = (m + np.log(np.exp(sc - m).sum(-1, keepdims=True)))[:, 0]
                    out.append(float((sc[np.arange(cont_len), r[prefix_len:]] - lse).sum()))
                return out

            def lc_gen():
                for r in gen_prompts:
                    llm.reset()
                    n = 0
                    for _ in llm.generate(r, temp=0.0, reset=True):
                        n += 1
                        if n == new_tokens:
                            break

            t_score_lc, _ = timed("llama.cpp score", lc_score, reps)
            t_gen_lc, _ = timed("llama.cpp generate", lc_gen, reps)
            results["llama.cpp"] = (n_score_tokens / t_score_lc, n_gen_tokens / t_gen_lc)

    print(f"SmolLM2-135M on {os.cpu_count()} CPU cores; scoring {n_rows} x "
          f"{prefix_len + cont_len} tokens; generation batch {n_rows} x {new_tokens} new tokens")
    print(f"{'engine':14s} {'score tok/s':>12s} {'gen tok/s':>10s}")
    for name, (s, g) in results.items():
        print(f"{name:14s} {s:12.1f} {g:10.1f}")
    print(f"max |sum logprob| diff jax vs transformers: {diff:.2e}")
    if "llama.cpp" in results:
        print(f"llama.cpp ratio (llama.cpp/transformers scoring): "
              f"{results['llama.cpp'][0] / results['transformers'][0]:.2f}")
        print(f"jax / llama.cpp scoring: {results['jax'][0] / results['llama.cpp'][0]:.2f}; "
              f"generation: {results['jax'][1] / results['llama.cpp'][1]:.2f}")
    print(f"generation ratio (jax/transformers): "
          f"{results['jax'][1] / results['transformers'][1]:.2f}")
    print(f"ratio {results['jax'][0] / results['transformers'][0]:.2f}")


if __name__ == "__main__":
    main()
