"""FRet throughput: passages per minute of `gecko fret` with the local JAX teacher vs the
same run through a llama.cpp server (the alternative a user would pick for a small GGUF
teacher), on the same passages and prompts.

  python bench/fret.py            # 64 seed passages
  python bench/fret.py --quick    # the default 16-passage config (`gecko distill`'s FRet)
  python bench/fret.py --limit 8 --warm 4 --no-llama-cpp   # one side, smaller
  python bench/fret.py --quick --bf16   # adds the side jax-bf16 (teacher_dtype bfloat16)
  python bench/fret.py --quick --batch-invariant   # adds jax-invariant (row-by-row scoring)

The config is `gecko distill`'s FRet stage: SmolLM2-135M teacher, a 512-passage
Wikipedia-sample corpus, MiniLM retrieving N = 4 neighbours, shards of 8, batches of
16. Each side first runs its first shard once (JAX compiles its shapes; llama.cpp
loads), then the timed run writes into a fresh folder; passages/min is the run's own
figure (corpus embedding + stage 1 + stage 2 + writing, model loading excluded); also
passages per CPU-minute (this process, plus the llama.cpp server's), which other load
on a shared machine disturbs less.
Sides: `jax` (this engine), `jax-bf16` (with --bf16: this engine with FRet's
`teacher_dtype="bfloat16"`; the script prints how many of its records have the same
query, positive and negative as the float32 side's), `llama.cpp` (the same SmolLM2
GGUF file: stage 1 through llama-cpp-python's OpenAI-compatible server on 127.0.0.1
via our OpenAICompatLLM client; stage 2 scored by the same libllama in process,
because the server's only prompt-log-prob route, echo + logprobs, is wrong for
SmolLM2 and sorts the vocabulary in Python per token; see bench/llama_cpp_teacher.py). llama-cpp-python is looked up in
the venv, else in --llama-cpp-site (a `pip install --target` folder of the cached
wheel: scripts/build_llama_cpp.sh builds it); without it the side is skipped with a
message. The last line is `ratio <jax / llama.cpp passages/min>` (`ratio n/a` without
llama.cpp).

To compare with an older engine, run this script on an older commit's tree (the
package is imported from PYTHONPATH; the script itself only loads the teacher):
  git archive <commit> | tar -x -C /tmp/base
  PYTHONPATH=/tmp/base python bench/fret.py --quick --no-llama-cpp
and the same command with this tree on PYTHONPATH, on the same machine.

Measured figures (CPU, load, runs): docs/results.md, "Benchmarks (`bench/`)".
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import platform
import resource
import socket
import subprocess
import sys
import tempfile
import time

from machine import cpu_model


def write_corpus(folder: pathlib.Path, size: int) -> pathlib.Path:
    """`gecko distill`'s FRet corpus: `size` evenly spaced Wikipedia-sample passages."""
    import numpy as np

    from gecko_jax.fret import corpus

    rows = corpus.wikipedia_passages()
    keep = np.unique(np.linspace(0, len(rows) - 1, size).round().astype(int))
    path = folder / "corpus.jsonl"
    corpus.write_corpus([rows[i] for i in keep], path)
    return path


def fret_config(teacher: str, limit: int, teacher_dtype: str = "float32"):
    from gecko_jax.fret.pipeline import FRetConfig
    from gecko_jax.fret.relabel import RelabelConfig

    return FRetConfig(teacher=teacher, limit=limit, shard_size=8, max_batch=16,
                      embed_max_length=128, tfrecord=False, progress=False,
                      teacher_dtype=teacher_dtype, relabel=RelabelConfig(num_neighbors=4))


def cpu_seconds(server_pid: int | None = None) -> float:
    """CPU time of this process (all threads), plus a server process's when given."""
    u = resource.getrusage(resource.RUSAGE_SELF)
    total = u.ru_utime + u.ru_stime
    if server_pid is not None:
        fields = open(f"/proc/{server_pid}/stat").read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def run_side(name, teacher_spec, llm, encoder, corpus, limit, work: pathlib.Path,
             server_pid: int | None = None, warm: int = 8, teacher_dtype: str = "float32") -> dict:
    """Warm-up on the first shard, then the timed run: passages per wall minute and per
    CPU minute (the second is robust to other load on a shared machine)."""
    from gecko_jax.fret.pipeline import run_local

    t = time.perf_counter()
    run_local(fret_config(teacher_spec, warm, teacher_dtype), corpus, work / f"{name}-warm",
              llm=llm, encoder=encoder)
    warm = time.perf_counter() - t
    cpu0 = cpu_seconds(server_pid)
    manifest = run_local(fret_config(teacher_spec, limit, teacher_dtype), corpus, work / name,
                         llm=llm, encoder=encoder)
    cpu = cpu_seconds(server_pid) - cpu0
    ppm = manifest["timing"]["passages_per_min"]
    c = manifest["counts"]
    ppcm = 60 * c["passages"] / cpu
    print(f"  {name}: {ppm:.2f} passages/min, {ppcm:.2f} passages/CPU-min ({c['records']} "
          f"records of {c['passages']} passages; warm-up shard {warm:.0f}s)", file=sys.stderr,
          flush=True)
    return {"ppm": ppm, "ppcm": ppcm, "records": c["records"], "warm_s": warm,
            "pairs": record_pairs(work / name)}


def record_pairs(run_dir: pathlib.Path) -> dict:
    """{query id: (query, positive, negative)} of a run's records (to compare sides)."""
    import json

    out = {}
    for path in sorted((run_dir / "shards").glob("records-*-of-*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            out[r["id"]] = (r["query"], r["positive"]["id"], (r.get("negative") or {}).get("id"))
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def llama_cpp_server(model: pathlib.Path, threads: int, site: str | None = None):
    """`python -m llama_cpp.server` on 127.0.0.1 (generation only: no logits_all);
    yields its base URL and process id. `site`: a folder put first on its PYTHONPATH."""
    import requests

    port = _free_port()
    url = f"http://127.0.0.1:{port}/v1"
    env = dict(os.environ)
    if site:
        env["PYTHONPATH"] = os.pathsep.join([site] + [p for p in [env.get("PYTHONPATH")] if p])
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host",
         "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", str(threads),
         "--model_alias", "smollm2", "--logits_all", "false"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env)
    try:
        deadline = time.time() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError("llama.cpp server exited at start-up")
            try:
                if requests.get(url + "/models", timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            if time.time() > deadline:
                raise RuntimeError("llama.cpp server did not come up")
            time.sleep(0.3)
        yield url, proc.pid
    finally:
        proc.kill()
        proc.wait()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="16 seed passages (default 64)")
    ap.add_argument("--limit", type=int, help="seed passages (overrides --quick's 16)")
    ap.add_argument("--warm", type=int, default=8, help="warm-up passages (default 8)")
    ap.add_argument("--no-llama-cpp", action="store_true")
    ap.add_argument("--no-jax", action="store_true", help="skip the jax side")
    ap.add_argument("--llama-cpp-site", default=os.environ.get("GECKO_LLAMA_CPP_SITE"),
                    help="a folder holding llama_cpp (pip install --target) when the venv "
                         "has none")
    ap.add_argument("--llama-threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--bf16", action="store_true",
                    help="also run the engine with teacher_dtype bfloat16 (side jax-bf16)")
    ap.add_argument("--batch-invariant", action="store_true",
                    help="also run the engine with batch_invariant scoring (side jax-invariant)")
    args = ap.parse_args(argv)
    limit = args.limit or (16 if args.quick else 64)

    import jax.numpy as jnp

    from gecko_jax.fret.pipeline import open_embedder
    from gecko_jax.llm.jax_engine import JaxEngine
    from gecko_jax.llm.loading import resolve

    print(f"CPU: {cpu_model()} ({os.cpu_count()} cores visible); SmolLM2-135M teacher; "
          f"{limit} seed passages, 512-passage corpus, N=4", flush=True)
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_fret_") as tmp:
        work = pathlib.Path(tmp)
        corpus = write_corpus(work, 512)
        encoder = open_embedder(None, 128)
        engine = JaxEngine.load("smollm2", max_batch=16)
        if not args.no_jax:
            results["jax"] = run_side("jax", "smollm2", engine, encoder, corpus, limit, work,
                                      warm=args.warm)
        if args.bf16:
            bf = JaxEngine(engine.config, engine.params, engine.tokenizer, max_batch=16,
                           dtype=jnp.bfloat16, name="smollm2")
            results["jax-bf16"] = run_side("jax-bf16", "smollm2", bf, encoder, corpus, limit,
                                           work, warm=args.warm, teacher_dtype="bfloat16")
        if args.batch_invariant:
            inv = JaxEngine(engine.config, engine.params, engine.tokenizer, max_batch=16,
                            batch_invariant=True, name="smollm2")
            results["jax-invariant"] = run_side("jax-invariant", "smollm2", inv, encoder,
                                                corpus, limit, work, warm=args.warm)
        if not args.no_llama_cpp:
            if args.llama_cpp_site:
                sys.path.append(args.llama_cpp_site)  # after the venv: its numpy wins
            try:
                import llama_cpp  # noqa: F401
                import llama_cpp.server  # noqa: F401
            except ImportError:
                print("llama.cpp side skipped: llama-cpp-python[server] is not installed "
                      "(bash scripts/build_llama_cpp.sh builds and installs it)", flush=True)
            else:
                from llama_cpp_teacher import LlamaCppScorer, LlamaCppTeacher

                from gecko_jax.llm.openai_compat import OpenAICompatLLM

                gguf = resolve("smollm2")
                with llama_cpp_server(gguf, args.llama_threads, args.llama_cpp_site) as (url,
                                                                                       pid):
                    llm = LlamaCppTeacher(OpenAICompatLLM(url),
                                          LlamaCppScorer(gguf, n_threads=args.llama_threads))
                    results["llama.cpp"] = run_side("llama.cpp", "smollm2", llm, encoder, corpus,
                                                    limit, work, server_pid=pid,
                                                    warm=args.warm)
    print(f"{'teacher':12s} {'passages/min':>13s} {'passages/CPU-min':>17s} {'records':>8s}")
    for name, r in results.items():
        print(f"{name:12s} {r['ppm']:13.2f} {r['ppcm']:17.2f} {r['records']:8d}")
    if "jax-invariant" in results and "jax" in results:
        a, b = results["jax-invariant"]["pairs"], results["jax"]["pairs"]
        print(f"jax-invariant vs jax: {sum(a.get(k) == v for k, v in b.items())} of {len(b)} "
              f"records the same; speed {results['jax-invariant']['ppm'] / results['jax']['ppm']:.2f}"
              " of jax's")
    if "jax-bf16" in results and "jax" in results:
        a, b = results["jax-bf16"]["pairs"], results["jax"]["pairs"]
        same_q = [k for k in a if k in b and a[k][0] == b[k][0]]
        same = sum(a[k] == b[k] for k in same_q)
        print(f"jax-bf16 vs jax (float32): {len(same_q)} of {len(b)} records with the same "
              f"query, {same} of them with the same positive and negative")
    if "llama.cpp" in results and "jax" in results:
        print(f"ratio {results['jax']['ppm'] / results['llama.cpp']['ppm']:.2f}")
    else:
        print("ratio n/a (no llama.cpp side)")


if __name__ == "__main__":
    main()
