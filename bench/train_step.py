"""Train-step throughput: gecko_jax (JAX, Gecko loss) vs sentence-transformers (torch, MNRL).

Same model (all-MiniLM-L6-v2), same batch (32 queries of 64 tokens, 32 positives
+ 32 hard negatives of 256 tokens, real Wikipedia text filling every position),
same loss shape (MultipleNegativesRankingLoss = softmax over all positives and all
hard negatives, scale 20 = our tau 0.05, no same-tower term), AdamW lr 2e-5.
Each side runs in its own subprocess so its peak RSS is its own.

    python bench/train_step.py            # full: batch 32, q64 / d256, 3 timed steps, 2 rounds
    python bench/train_step.py --quick    # batch 8, q32 / d128, 2 timed steps (< 1 min)
    python bench/train_step.py --quick --student gemma3
    python bench/train_step.py --quick --dtype bfloat16   # both sides in bf16 (below)
    python bench/train_step.py --large    # batch 256, q64 / d256: GradCache (chunk 32) vs
                                          # CachedMultipleNegativesRankingLoss (mini-batch 32)

`--large`: a contrastive batch too big for a plain step on this machine; ours runs
the exact full-batch gradient with GradCache (`--grad-cache 32`: towers 32 rows at
a time), theirs sentence-transformers' `CachedMultipleNegativesRankingLoss` with
`mini_batch_size=32` (the same GradCache algorithm, same batch and loss).

`--student gemma3`: the shipped Gemma-3-270M as a bidirectional tower with
EmbeddingGemma's dense head (640 -> 2560 -> 640), exported once in EmbeddingGemma's
sentence-transformers layout; ours trains that folder with the Gecko trainer,
sentence-transformers trains `SentenceTransformer(folder)` (Gemma3TextModel with
use_bidirectional_attention) on the same batch.

`--dtype bfloat16`: ours with `LayerOptions(compute_dtype='bfloat16')` (bf16 matmul
operands, float32 activations, softmax, parameters and AdamW state; on a CPU with
AVX512-BF16/AMX the oneDNN kernels of gecko_jax/kernels), theirs under
`torch.autocast("cpu", dtype=torch.bfloat16)` (bf16 matmuls, float32 parameters and
optimizer), the mixed precision a torch user would pick. Both print the first step's
loss so that the two precisions can be compared with float32's.

Last line: `ratio <ours examples/s / theirs examples/s>`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import time

from machine import describe


def _texts(n: int, words: int) -> list[str]:
    from gecko_jax.data import sources

    out = []
    for art in sources.read_wikipedia():
        for sec in art.sections:
            toks = sec.text.split()
            for start in range(0, len(toks) - words, words):
                out.append(" ".join(toks[start:start + words]))
    return out[:n]


def _batch(args):
    """Queries, positives, negatives long enough to fill their token budgets."""
    texts = _texts(3 * args.batch, max(args.doc_len, 40))
    b = args.batch
    return texts[:b], texts[b:2 * b], texts[2 * b:3 * b]


def run_ours(args) -> dict:
    import jax
    import numpy as np

    from gecko_jax import assets
    from gecko_jax.tokenization import pad_batch
    from gecko_jax.models.layer_stack import LayerOptions, set_options
    from gecko_jax import partitioning
    from gecko_jax.training import grad_cache, model_fns, optimizers, train_step

    queries, positives, negatives = _batch(args)
    if args.student == "gemma3":
        from gecko_jax.training import llm_tower

        model, tok = llm_tower.llm_model(source=args.folder, dense_dims=GEMMA_DENSE)
    else:
        model, tok = model_fns.pretrained_model(folder=assets.minilm_dir())
    if args.dtype != "float32":
        set_options(model, LayerOptions(compute_dtype=args.dtype))
    sched = optimizers.learning_rate_schedule(peak_value=2e-5, total_steps=1000)
    opt = optimizers.make_optimizer(schedule=sched, clip_norm=None, weight_decay=0.01)
    mesh = partitioning.make_mesh(partitioning.MeshSpec(data=1), devices=jax.devices()[:1])
    loss_cfg = train_step.LossConfig(tau=0.05, same_tower=False, all_hard_negatives=True,
                                  mask_duplicates=False)
    chunk = args.our_chunk or args.grad_cache
    tr = train_step.Trainer(model, opt, mesh, loss_cfg,
                            grad_cache=grad_cache.GradCache(chunk_size=chunk),
                            separate_update=args.separate_update == "on")
    batch = {}
    for name, texts, length in (("query", queries, args.query_len),
                                ("positive", positives, args.doc_len),
                                ("negative", negatives, args.doc_len)):
        ids, mask = pad_batch(tok.encode(texts, length), length, tok.pad_id)
        batch[f"{name}_ids"], batch[f"{name}_mask"] = ids, mask
    t0 = time.perf_counter()
    first_loss = None
    if args.warmup:
        first_loss = float(tr.step(batch)["loss"])     # compile + first step
    else:                                              # compile only: every step is timed
        gbatch = partitioning.host_to_global(batch, mesh)
        tr._step_fn = jax.jit(
            tr._train_step, in_shardings=(tr.state_shardings, tr.batch_shardings(batch)),
            out_shardings=(tr.state_shardings, partitioning.replicated(mesh)),
            donate_argnums=(0,)).lower(tr.state, gbatch).compile()
        mem = tr._step_fn.memory_analysis()
        need = (mem.temp_size_in_bytes + mem.argument_size_in_bytes) / 2 ** 30
        if need > 0.8 * _available_gib():   # a shared machine: do not start what cannot fit
            raise SystemExit(f"ours needs {need:.1f} GiB of XLA buffers, more than 80% of "
                             f"the {_available_gib():.1f} GiB available; lower --our-chunk")
    compile_s = time.perf_counter() - t0
    times, cpu = [], []
    for _ in range(args.steps):
        t0, c0 = time.perf_counter(), time.process_time()
        float(tr.step(batch)["loss"])
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"compile_s": compile_s, "step_s": float(np.median(times)),
            "step_cpu_s": float(np.median(cpu)), "first_loss": first_loss,
            "tokens": {k: int(v.sum()) for k, v in batch.items() if k.endswith("mask")}}


def _available_gib() -> float:
    with open("/proc/meminfo") as f:
        info = dict(line.split(":", 1) for line in f)
    return int(info["MemAvailable"].split()[0]) / 2 ** 20


def run_theirs(args) -> dict:
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer, losses

    from gecko_jax import assets

    torch.manual_seed(0)
    queries, positives, negatives = _batch(args)
    folder = args.folder if args.student == "gemma3" else assets.minilm_dir()
    model = SentenceTransformer(str(folder), device="cpu", model_kwargs={"dtype": torch.float32})
    model.train()
    if args.grad_cache:
        loss_fn = losses.CachedMultipleNegativesRankingLoss(model, scale=20.0,
                                                            mini_batch_size=args.grad_cache)
    else:
        loss_fn = losses.MultipleNegativesRankingLoss(model, scale=20.0)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.01)

    def features(texts, length):
        model.max_seq_length = length
        return model.tokenize(texts)

    feats = [features(queries, args.query_len), features(positives, args.doc_len),
             features(negatives, args.doc_len)]
    labels = torch.arange(args.batch)

    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if args.dtype == "bfloat16"
                else contextlib.nullcontext())

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast:
            loss = loss_fn([dict(f) for f in feats], labels)
        loss.backward()
        opt.step()
        return float(loss)

    t0 = time.perf_counter()
    first_loss = step() if args.warmup else None
    first_s = time.perf_counter() - t0
    times, cpu = [], []
    for _ in range(args.steps):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"compile_s": first_s, "step_s": float(np.median(times)),
            "step_cpu_s": float(np.median(cpu)), "first_loss": first_loss,
            "tokens": {n: int(f["attention_mask"].sum()) for n, f in
                       zip(("query", "positive", "negative"), feats)},
            "threads": torch.get_num_threads()}


GEMMA_DENSE = (2560, 640)
STUDENTS = {"minilm": "MiniLM-L6", "gemma3": "Gemma-3-270M bidirectional + dense 640-2560-640"}


def export_student(args) -> None:
    """The initial Gemma-3 embedder, exported once; both sides train this folder."""
    from gecko_jax.models.llm_export import export_llm_encoder
    from gecko_jax.training import llm_tower

    model, tok = llm_tower.llm_model(source="gemma3", dense_dims=GEMMA_DENSE, seed=0)
    export_llm_encoder(model, tok, args.folder, max_length=max(args.doc_len, args.query_len))


def _side(args) -> None:
    if args.side == "export":
        return export_student(args)
    out = run_ours(args) if args.side == "ours" else run_theirs(args)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out["peak_rss_mib"] = usage.ru_maxrss / 1024
    out["cpu_s_total"] = usage.ru_utime + usage.ru_stime  # load-robust side figure
    out["examples_per_s"] = args.batch / out["step_s"]
    print("RESULT " + json.dumps(out), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small batch and lengths (< 1 min)")
    p.add_argument("--large", action="store_true",
                   help="batch 256 with GradCache chunk 32 vs CachedMultipleNegativesRankingLoss")
    p.add_argument("--grad-cache", type=int, default=None,
                   help="chunk / mini-batch size: ours GradCache.chunk_size, theirs "
                        "CachedMultipleNegativesRankingLoss(mini_batch_size); 0 = plain step")
    p.add_argument("--our-chunk", type=int, default=0,
                   help="our GradCache.chunk_size when it differs from --grad-cache (the "
                        "gradient is the same for any chunk: only memory and speed change)")
    p.add_argument("--no-warmup", dest="warmup", action="store_false",
                   help="time every step (ours compiled ahead of time; default with --large)")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--query-len", type=int, default=None)
    p.add_argument("--doc-len", type=int, default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--rounds", type=int, default=None,
                   help="alternate ours/theirs subprocesses this many times; best step wins")
    p.add_argument("--student", choices=("minilm", "gemma3"), default="minilm",
                   help="the tower both sides train (default: all-MiniLM-L6-v2)")
    p.add_argument("--separate-update", choices=("auto", "on", "off"), default="auto",
                   help="our step as two compiled calls, gradients then update "
                        "(Trainer.separate_update; auto: on for the LLM tower, as its gin config)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                   help="compute dtype of both sides (bfloat16: mixed precision, see above)")
    p.add_argument("--side", choices=("ours", "theirs", "export"), help=argparse.SUPPRESS)
    p.add_argument("--folder", help=argparse.SUPPRESS)
    args = p.parse_args()
    q = args.quick
    if args.large:
        args.batch = args.batch or 256
        args.steps = args.steps or 1
        args.rounds = args.rounds or 1
        args.grad_cache = 32 if args.grad_cache is None else args.grad_cache
        args.warmup = False   # a step takes minutes here: no untimed warm-up step
    args.grad_cache = args.grad_cache or 0
    args.batch = args.batch or (8 if q else 32)
    args.query_len = args.query_len or (32 if q else 64)
    args.doc_len = args.doc_len or (128 if q else 256)
    args.steps = args.steps or (2 if q else 3)
    args.rounds = args.rounds or (1 if q else 2)
    if args.separate_update == "auto":
        args.separate_update = "on" if args.student == "gemma3" else "off"
    if args.side:
        return _side(args)

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    # One CPU device: the bench measures one host's step, not emulated sharding.
    env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split()
                                if "force_host_platform_device_count" not in f)
    # Rounds alternate the two sides, and each side keeps its fastest round, so that
    # load from other processes on a shared machine cannot favour either side.
    common = ["--batch", str(args.batch), "--query-len", str(args.query_len),
              "--doc-len", str(args.doc_len), "--steps", str(args.steps),
              "--student", args.student, "--grad-cache", str(args.grad_cache),
              "--our-chunk", str(args.our_chunk), "--separate-update", args.separate_update,
              "--dtype", args.dtype]
    common += [] if args.warmup else ["--no-warmup"]
    tmp = None
    if args.student == "gemma3":
        import tempfile

        tmp = tempfile.TemporaryDirectory(prefix="bench_gemma_")
        common += ["--folder", os.path.join(tmp.name, "student")]
        proc = subprocess.run([sys.executable, __file__, "--side", "export"] + common,
                              capture_output=True, text=True, env=env)
        if proc.returncode:
            sys.exit(f"export failed:\n{proc.stderr[-3000:]}")
    results = {}
    # In bf16 the torch side runs twice, under autocast and in float32: the ratio is
    # against the faster of the two (autocast can be the slower on small batches).
    sides = [("ours", "ours", args.dtype), ("theirs", "theirs", args.dtype)]
    if args.dtype != "float32":
        sides.append(("theirs-fp32", "theirs", "float32"))
    for _ in range(args.rounds):
        for key, side, dtype in sides:
            cmd = [sys.executable, __file__, "--side", side] + common + ["--dtype", dtype]
            # The peer runs with glibc's default allocator, as a sentence-transformers
            # user has it, even where GECKO_MALLOC_TUNING=1 is set for ours.
            side_env = env if side == "ours" else dict(env, GECKO_MALLOC_TUNING="0")
            proc = subprocess.run(cmd, capture_output=True, text=True, env=side_env)
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode or not line:
                sys.exit(f"{side} failed:\n{proc.stderr[-3000:]}")
            result = json.loads(line[-1][len("RESULT "):])
            if key not in results or result["step_s"] < results[key]["step_s"]:
                results[key] = result
    print(describe())
    print(f"batch {args.batch}, query {args.query_len} / doc {args.doc_len} tokens, "
          f"1 hard negative, AdamW, {STUDENTS[args.student]}, {args.dtype} compute "
          f"(median of {args.steps} steps, "
          f"best of {args.rounds} alternating rounds)")
    ours_name = "gecko_jax (2 calls)" if args.separate_update == "on" else "gecko_jax (jit)"
    names = (("ours", ours_name), ("theirs", "sentence-transformers MNRL"))
    if args.dtype != "float32":
        names = (("ours", f"{ours_name} bf16"), ("theirs", "s-t MNRL bf16 autocast"),
                 ("theirs-fp32", "s-t MNRL float32"))
    if args.grad_cache:
        names = (("ours", f"gecko_jax GradCache {args.our_chunk or args.grad_cache}"),
                 ("theirs", f"s-t CachedMNRL {args.grad_cache}"))
    def first_label(side):
        return "first step" if args.warmup else ("compile" if side == "ours" else "setup")

    for side, name in names:
        r = results[side]
        print(f"{name:28s} {r['examples_per_s']:7.2f} examples/s  step {r['step_s']:.2f}s  "
              f"{first_label(side)} {r['compile_s']:.1f}s  process CPU {r['cpu_s_total']:.0f}s  "
              f"step CPU {r['step_cpu_s']:.0f}s  peak RSS {r['peak_rss_mib']:.0f} MiB  "
              f"tokens {r['tokens']}"
              + (f"  first-step loss {r['first_loss']:.4f}" if r.get("first_loss") else ""))
    print("load average " + " ".join(f"{x:.1f}" for x in os.getloadavg()))
    peer = max((k for k in results if k != "ours"), key=lambda k: results[k]["examples_per_s"])
    cpu_ratio = results[peer]['step_cpu_s'] / results['ours']['step_cpu_s']
    print(f"CPU-seconds per step, theirs / ours: {cpu_ratio:.2f} (less load-sensitive)")
    if peer != "theirs":
        print(f"ratio against {dict(names)[peer]}, the faster peer")
    print(f"ratio {results['ours']['examples_per_s'] / results[peer]['examples_per_s']:.2f}")


if __name__ == "__main__":
    main()
