"""Teacher-LLM throughput: the JAX engine vs transformers (torch fp32 and bf16) vs llama.cpp on SmolLM2.

  python bench/llm.py            # 16 prompts x 256 tokens scoring; batch 16 x 32 new tokens
  python bench/llm.py --quick    # 4 rows: under a minute once compiled caches are warm

Scoring: each 256-token prompt (real BBC News text) is split into a 192-token prefix
and a 64-token continuation whose log-probs are summed (FRet's query likelihood has
this shape); throughput counts all 256 tokens per prompt. Every engine runs the LM
head only on the positions it needs (transformers via `logits_to_keep`; llama.cpp
returns all logits). Generation: greedy, 32 new tokens per prompt from 64-token
prompts; llama.cpp's Python API decodes one sequence at a time.
Every scoring side is compared with transformers fp32 (the reference): max |summed
log-prob| difference, max per-token log-prob difference and top-1 agreement on the
scored positions. The last line is `ratio <ours/peer scoring throughput>` against the
fastest peer within the bound our path (`--dtype`, default float32 like FRet's
teacher_dtype) is tested to: float32 per-token log-probs within 2e-3 (the logit bound
against transformers in tests/llm/test_jax_engine.py); bfloat16 within 0.25 per token
and top-1 agreement >= 0.9 (tests/llm/test_bf16.py). See bench/peers.py.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from machine import describe  # noqa: E402
from peers import Row, at_most, ratio_lines  # noqa: E402

# (max per-token |log-prob diff| to transformers fp32, min top-1 agreement) our
# engine is tested to, per compute dtype.
TOLERANCE = {"float32": (2e-3, None), "bfloat16": (0.25, 0.9)}


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
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                    help="our engine's compute dtype (FRet's teacher_dtype)")
    args = ap.parse_args(argv)
    n_rows = 4 if args.quick else 16
    reps = 2  # best of two timed calls after the warm-up (one was a cold outlier)
    prefix_len, cont_len, prompt_len, new_tokens = 192, 64, 64, 32

    import jax.numpy as jnp
    import torch
    from transformers import AutoModelForCausalLM

    from gecko_jax.llm.jax_engine import JaxEngine
    from gecko_jax.llm.loading import resolve

    torch.set_num_threads(os.cpu_count() or 1)
    print(describe(), f"| load average {os.getloadavg()[0]:.1f}", flush=True)
    engine = JaxEngine.load("smollm2", max_batch=16,
                            **({"dtype": jnp.bfloat16} if args.dtype == "bfloat16" else {}))
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
    scored = {}  # side -> (per-token log-probs [rows, cont_len], top-1 ids [rows, cont_len])

    # ---- ours
    t_score, _ = timed("jax score", lambda: engine.score_ids(prefixes, conts, reuse_prefix=False), reps)
    t_gen, _ = timed("jax generate", lambda: engine.generate_ids(gen_prompts, new_tokens), reps)
    ours_name = "jax" if args.dtype == "float32" else "jax bf16"
    results[ours_name] = (n_score_tokens / t_score, n_gen_tokens / t_gen)
    # Untimed: per-token log-probs and top-1 ids on the scored positions.
    per_token = np.array([np.asarray(t) for t in
                          engine.score_ids(prefixes, conts, per_token=True, reuse_prefix=False)])
    top1 = np.array([engine.full_logits(r)[prefix_len - 1:-1].argmax(-1) for r in ids])
    scored[ours_name] = (per_token, top1)

    # ---- transformers (same GGUF, dequantised to float32; and that cast to bfloat16)
    path = resolve("smollm2")
    x = torch.tensor(ids)
    gp = torch.tensor(gen_prompts)
    for name, dtype in (("transformers", torch.float32), ("transformers bf16", torch.bfloat16)):
        hf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                  dtype=dtype).eval()

        def hf_score():
            with torch.inference_mode():
                logits = hf(x, logits_to_keep=cont_len + 1).logits[:, :-1]
                lp = torch.log_softmax(logits.float(), -1)
                return lp.gather(-1, x[:, prefix_len:, None])[..., 0].numpy(), logits.argmax(-1).numpy()

        def hf_gen():
            with torch.inference_mode():
                return hf.generate(gp, attention_mask=torch.ones_like(gp), max_new_tokens=new_tokens,
                                   min_new_tokens=new_tokens, do_sample=False)

        t_score_hf, scored[name] = timed(f"{name} score", hf_score, reps)
        t_gen_hf, _ = timed(f"{name} generate", hf_gen, reps)
        results[name] = (n_score_tokens / t_score_hf, n_gen_tokens / t_gen_hf)
        del hf

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
                out, top = [], []
                for r in ids:
                    llm.reset()
                    llm.eval(r)
                    sc = np.asarray(llm.scores[prefix_len - 1:len(r) - 1], np.float64)
                    m = sc.max(-1, keepdims=True)
                    lse = (m + np.log(np.exp(sc - m).sum(-1, keepdims=True)))[:, 0]
                    out.append(sc[np.arange(cont_len), r[prefix_len:]] - lse)
                    top.append(sc.argmax(-1))
                return np.array(out), np.array(top)

            def lc_gen():
                for r in gen_prompts:
                    llm.reset()
                    n = 0
                    for _ in llm.generate(r, temp=0.0, reset=True):
                        n += 1
                        if n == new_tokens:
                            break

            t_score_lc, scored["llama.cpp"] = timed("llama.cpp score", lc_score, reps)
            t_gen_lc, _ = timed("llama.cpp generate", lc_gen, reps)
            results["llama.cpp"] = (n_score_tokens / t_score_lc, n_gen_tokens / t_gen_lc)

    print(f"SmolLM2-135M on {os.cpu_count()} CPU cores; scoring {n_rows} x "
          f"{prefix_len + cont_len} tokens; generation batch {n_rows} x {new_tokens} new tokens")
    ref_lp, ref_top = scored["transformers"]
    rows = {}
    print(f"{'engine':18s} {'score tok/s':>12s} {'gen tok/s':>10s}   vs transformers fp32: "
          f"{'max|sum lp diff|':>16s} {'max|token lp diff|':>18s} {'top-1 agree':>11s}")
    for name, (s, g) in results.items():
        lp, top = scored[name]
        summed = float(np.abs(lp.sum(-1) - ref_lp.sum(-1)).max())
        rows[name] = Row(name, s, float(np.abs(lp - ref_lp).max()),
                         agreement=float(np.mean(top == ref_top)))
        print(f"{name:18s} {s:12.1f} {g:10.1f}   {'':21s}{summed:16.2e} {rows[name].error:18.2e} "
              f"{rows[name].agreement:11.2%}")
    if "llama.cpp" in results:
        print(f"llama.cpp ratio (llama.cpp/transformers scoring): "
              f"{results['llama.cpp'][0] / results['transformers'][0]:.2f}")
        print(f"{ours_name} / llama.cpp scoring: {results[ours_name][0] / results['llama.cpp'][0]:.2f}; "
              f"generation: {results[ours_name][1] / results['llama.cpp'][1]:.2f}")
    print(f"generation ratio ({ours_name}/transformers): "
          f"{results[ours_name][1] / results['transformers'][1]:.2f}")
    bound, agree = TOLERANCE[args.dtype]
    tolerance = f"max |token lp diff| <= {bound:g} to transformers fp32" + (
        f" and top-1 agreement >= {agree:.0%}" if agree else "")
    peers = [r for name, r in rows.items() if name != ours_name]
    for line in ratio_lines(rows[ours_name], peers, at_most(bound, agree), tolerance):
        print(line)


if __name__ == "__main__":
    main()
