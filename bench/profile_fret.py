"""Where the time of a FRet run goes with the local JAX teacher: wall time per jitted
engine call kind (prefill, decode chunks, scoring, ...), per pipeline stage, the
engine's own `stats` counters, and the calls that met a new shape (compiles) in the
timed run.

  python bench/profile_fret.py --limit 16 --warm 8      # bench/fret.py --quick's run

Same config as bench/fret.py (SmolLM2-135M, 512-passage corpus, N = 4, shards of 8).
To profile an older engine, run this script with an older commit's tree first on
PYTHONPATH (as bench/fret.py's docstring shows); jitted calls that engine lacks or
adds beyond ENGINE_CALLS are left out or not timed.
"""

from __future__ import annotations

import argparse
import collections
import pathlib
import sys
import tempfile
import time

import jax

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from fret import fret_config, write_corpus  # noqa: E402
from machine import describe  # noqa: E402

ENGINE_CALLS = ("_prefill", "_prefill_after", "_decode", "_take_rows", "_prefill_shared",
                "_prefix_form", "_score_full", "_score_after")


def _shape_key(args, kwargs):
    def one(a):
        return (tuple(a.shape), str(a.dtype)) if hasattr(a, "shape") else None
    return tuple(one(a) for a in args) + tuple(sorted((k, str(v)) for k, v in kwargs.items()))


def instrument(engine, times: collections.Counter, calls: collections.Counter,
               new_shapes: collections.Counter, seen: set):
    """Wraps the engine's jitted calls with blocking timers (per call kind)."""
    for name in ENGINE_CALLS:
        fn = getattr(engine, name, None)
        if fn is None:
            continue

        def timed(*args, _fn=fn, _name=name, **kwargs):
            key = (_name, _shape_key(args, kwargs))
            t = time.perf_counter()
            out = jax.block_until_ready(_fn(*args, **kwargs))
            dt = time.perf_counter() - t
            times[_name] += dt
            calls[_name] += 1
            if key not in seen:
                seen.add(key)
                new_shapes[_name] += 1
                times[_name + " (new shape)"] += dt
            return out

        setattr(engine, name, timed)


def instrument_stages(stage_times: collections.Counter):
    """Times generate_queries, score_candidates and the query/corpus embedding calls."""
    from gecko_jax.fret import generate, pipeline, relabel

    def wrap(mod, name, label):
        fn = getattr(mod, name)

        def timed(*a, **k):
            t = time.perf_counter()
            out = fn(*a, **k)
            stage_times[label] += time.perf_counter() - t
            return out

        setattr(mod, name, timed)

    wrap(generate, "prompt_generate", "stage 1 generate calls")
    wrap(relabel, "checked_scores", "stage 2 score calls")
    wrap(pipeline, "embed_queries", "query embedding")
    wrap(pipeline, "corpus_embeddings", "corpus embedding")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--limit", type=int, default=16)
    ap.add_argument("--warm", type=int, default=8)
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                    help="the engine's compute dtype (FRet's teacher_dtype)")
    args = ap.parse_args(argv)

    import jax.numpy as jnp

    from gecko_jax.fret.pipeline import open_embedder, run_local
    from gecko_jax.llm.jax_engine import JaxEngine

    print(describe(), flush=True)
    engine = JaxEngine.load("smollm2", max_batch=16, dtype=jnp.dtype(args.dtype))
    times, calls, new_shapes = collections.Counter(), collections.Counter(), collections.Counter()
    seen: set = set()
    instrument(engine, times, calls, new_shapes, seen)
    stage_times: collections.Counter = collections.Counter()
    instrument_stages(stage_times)
    compile_s = collections.Counter()

    def on_event(event, seconds, **_):
        if event.startswith("/jax/core/compile/"):
            compile_s[event.rsplit("/", 1)[1]] += seconds

    jax.monitoring.register_event_duration_secs_listener(on_event)
    with tempfile.TemporaryDirectory(prefix="prof_fret_") as tmp:
        work = pathlib.Path(tmp)
        corpus = write_corpus(work, 512)
        encoder = open_embedder(None, 128)
        t = time.perf_counter()
        run_local(fret_config("smollm2", args.warm, args.dtype), corpus, work / "warm", llm=engine,
                  encoder=encoder)
        print(f"warm-up ({args.warm} passages): {time.perf_counter() - t:.1f}s", flush=True)
        for c in (times, calls, new_shapes, stage_times, engine.stats, compile_s):
            c.clear()
        t = time.perf_counter()
        m = run_local(fret_config("smollm2", args.limit, args.dtype), corpus, work / "run", llm=engine,
                      encoder=encoder)
        wall = time.perf_counter() - t
    print(f"timed run: {wall:.1f}s, {m['timing']['passages_per_min']} passages/min, "
          f"{m['counts'].get('records')} records")
    print("stages:")
    for k, v in stage_times.most_common():
        print(f"  {k:28s} {v:7.2f}s")
    print("engine calls (blocking wall time):")
    for k, v in times.most_common():
        base = k.split(" ")[0]
        n = calls[base] if "(" not in k else new_shapes[base]
        print(f"  {k:28s} {v:7.2f}s  {n:4d} calls")
    print("compiling in the timed run (tracing, lowering, XLA):",
          ", ".join(f"{k} {v:.2f}s" for k, v in compile_s.most_common()) or "none")
    print("stats:", dict(engine.stats))
    counts = m["counts"]
    print("counts:", {k: v for k, v in counts.items() if not k.startswith("parse_failure:")})


if __name__ == "__main__":
    main()
