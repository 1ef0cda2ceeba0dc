"""A batch of 1,024 on one CPU host: GradCache trains it, the plain step cannot.

MiniLM-L6 (shipped assets), 1,024 queries of 64 tokens, 1,024 positives + 1,024
hard negatives of 256 tokens (overlapping windows of real Wikipedia text filling
every position), Gecko loss with in-batch and hard negatives, AdamW.

For each of (plain step, GradCache chunk C) a subprocess builds the jitted train
step and asks XLA for its buffer sizes (`compiled.memory_analysis()`: arguments,
outputs, temporaries). The plain step is only compiled, never run (its
temporaries exceed this machine's memory); the GradCache step is run for
`--steps` steps and its peak RSS (getrusage) and seconds/step are printed.

    python bench/grad_cache_memory.py                 # batch 1024, chunk 32, 2 steps
    python bench/grad_cache_memory.py --batch 64 --chunk 16 --steps 1   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

from machine import describe

GIB = 1024 ** 3


def _texts(n: int, words: int, stride: int) -> list[str]:
    from gecko_jax.data import sources

    out = []
    for art in sources.read_wikipedia():
        toks = " ".join(sec.text for sec in art.sections).split()
        for start in range(0, len(toks) - words, stride):
            out.append(" ".join(toks[start:start + words]))
            if len(out) == n:
                return out
    raise SystemExit(f"only {len(out)} windows of {words} words; lower --stride")


def _available_gib() -> float:
    with open("/proc/meminfo") as f:
        info = dict(line.split(":", 1) for line in f)
    return int(info["MemAvailable"].split()[0]) * 1024 / GIB


def _side(args) -> dict:
    import jax

    from gecko_jax import assets
    from gecko_jax.tokenization import pad_batch
    from gecko_jax import partitioning
    from gecko_jax.training import grad_cache, model_fns, optimizers, train_step

    b = args.batch
    texts = _texts(3 * b, 220, args.stride)
    model, tok = model_fns.pretrained_model(folder=assets.minilm_dir())
    sched = optimizers.learning_rate_schedule(peak_value=2e-5, total_steps=1000)
    opt = optimizers.make_optimizer(schedule=sched, clip_norm=None, weight_decay=0.01)
    mesh = partitioning.make_mesh(partitioning.MeshSpec(data=1), devices=jax.devices()[:1])
    loss_cfg = train_step.LossConfig(tau=0.05, same_tower=True, mask_duplicates=False)
    chunk = args.chunk if args.side == "grad_cache" else 0
    tr = train_step.Trainer(model, opt, mesh, loss_cfg, grad_cache=grad_cache.GradCache(chunk))
    batch = {}
    for i, (name, length) in enumerate((("query", args.query_len), ("positive", args.doc_len),
                                        ("negative", args.doc_len))):
        ids, mask = pad_batch(tok.encode(texts[i * b:(i + 1) * b], length), length, tok.pad_id)
        batch[f"{name}_ids"], batch[f"{name}_mask"] = ids, mask
    gbatch = partitioning.host_to_global(batch, mesh)
    fn = jax.jit(tr._train_step,
                 in_shardings=(tr.state_shardings, tr.batch_shardings(batch)),
                 out_shardings=(tr.state_shardings, partitioning.replicated(mesh)),
                 donate_argnums=(0,))
    t0 = time.perf_counter()
    compiled = fn.lower(tr.state, gbatch).compile()
    mem = compiled.memory_analysis()
    out = {"side": args.side, "chunk": chunk, "compile_s": time.perf_counter() - t0,
           "xla_argument_gib": mem.argument_size_in_bytes / GIB,
           "xla_output_gib": mem.output_size_in_bytes / GIB,
           "xla_temp_gib": mem.temp_size_in_bytes / GIB,
           "tokens": {k: int(v.sum()) for k, v in batch.items() if k.endswith("mask")}}
    print("ANALYSIS " + json.dumps(out), flush=True)
    if args.side == "grad_cache" and args.steps:
        # A shared machine: never start a step whose buffers do not fit what is free.
        limit = args.max_temp_gib or 0.8 * _available_gib()
        if out["xla_temp_gib"] + out["xla_argument_gib"] > limit:
            raise SystemExit(f"GradCache buffers {out['xla_temp_gib']:.1f} GiB > {limit:.1f} GiB "
                             "(--max-temp-gib, default 80% of MemAvailable): not run; "
                             "lower --chunk")
        tr._step_fn = compiled
        times, losses = [], []
        for _ in range(args.steps):
            t0 = time.perf_counter()
            losses.append(float(tr.step(batch)["loss"]))
            times.append(time.perf_counter() - t0)
        out.update(step_s=times, losses=losses)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out["peak_rss_gib"] = usage.ru_maxrss * 1024 / GIB
    out["cpu_s_total"] = usage.ru_utime + usage.ru_stime
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--query-len", type=int, default=64)
    p.add_argument("--doc-len", type=int, default=256)
    p.add_argument("--chunk", type=int, default=32, help="GradCache.chunk_size")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--stride", type=int, default=64, help="words between text windows")
    p.add_argument("--max-temp-gib", type=float, default=None,
                   help="do not run the GradCache step if its XLA buffers exceed this "
                        "(default: 80%% of MemAvailable)")
    p.add_argument("--side", choices=("plain", "grad_cache"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.side:
        print("RESULT " + json.dumps(_side(args)), flush=True)
        return

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split()
                                if "force_host_platform_device_count" not in f)
    common = [a for a in sys.argv[1:]]
    results = {}
    for side in ("plain", "grad_cache"):
        proc = subprocess.run([sys.executable, __file__, "--side", side] + common,
                              capture_output=True, text=True, env=env)
        for ln in proc.stdout.splitlines():
            if ln.startswith("ANALYSIS "):
                print(ln, flush=True)
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not line:
            sys.exit(f"{side} failed:\n{proc.stderr[-3000:]}")
        results[side] = json.loads(line[-1][len("RESULT "):])
        print(line[-1], flush=True)
    print(describe())
    print(f"batch {args.batch}, query {args.query_len} / doc {args.doc_len} tokens, 1 hard "
          "negative, MiniLM-L6, Gecko loss (in-batch + hard + same-tower negatives), AdamW")
    pl, gc = results["plain"], results["grad_cache"]
    print(f"plain step      XLA temporaries {pl['xla_temp_gib']:8.1f} GiB + arguments "
          f"{pl['xla_argument_gib']:.2f} GiB (compiled only, not run)")
    print(f"GradCache {gc['chunk']:<5d} XLA temporaries {gc['xla_temp_gib']:8.1f} GiB + arguments "
          f"{gc['xla_argument_gib']:.2f} GiB")
    if not args.steps:
        return
    print(f"GradCache {gc['chunk']:<5d} ran {len(gc['step_s'])} steps: "
          f"{', '.join(f'{s:.0f}' for s in gc['step_s'])} s/step (compiled before: "
          f"{gc['compile_s']:.0f} s), losses "
          f"{', '.join(f'{x:.4f}' for x in gc['losses'])}, peak RSS {gc['peak_rss_gib']:.1f} GiB")


if __name__ == "__main__":
    main()
