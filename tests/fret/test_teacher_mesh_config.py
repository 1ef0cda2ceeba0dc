"""FRetConfig.teacher_mesh through the config path (gin binding -> config_from_gin ->
run_local -> open_teacher): on an emulated 8-device CPU mesh the run's records equal a
one-device run's (same queries, positives, negatives; scores within float rounding, and
bit for bit with FRetConfig.teacher_batch_invariant).

Runs in a subprocess: the 8 host devices must be set before JAX starts."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import dataclasses, gc, json, pathlib, sys
    import jax
    from gecko_jax.fret import pipeline
    from gecko_jax.fret.corpus import wikipedia_passages
    from tests.fret.conftest import tiny_config

    assert len(jax.devices()) == 8
    out = pathlib.Path(sys.argv[1])
    corpus = out / "wiki.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\\n" for r in wikipedia_passages(words=40)[:24]))
    base = tiny_config(limit=2, shard_size=2, num_neighbors=2)
    result = {}
    inv = "FRetConfig.teacher_batch_invariant = True"
    for name, bindings in (("one", []), ("mesh", ["FRetConfig.teacher_mesh = 'data=8'"]),
                           ("one_inv", [inv]),
                           ("mesh_inv", ["FRetConfig.teacher_mesh = 'data=8'", inv])):
        gin_cfg = pipeline.config_from_gin((), bindings)
        cfg = dataclasses.replace(base, teacher_mesh=gin_cfg.teacher_mesh,
                                  teacher_batch_invariant=gin_cfg.teacher_batch_invariant)
        pipeline.run_local(cfg, corpus, out / name)
        engine = pipeline.teacher_for(cfg)
        leaf = jax.tree.leaves(engine.params)[0]
        recs = [json.loads(x) for f in sorted((out / name).glob("shards/records-*.jsonl"))
                for x in f.read_text().splitlines()]
        result[name] = {"invariant": engine.batch_invariant,
                        "mesh": dict(engine.mesh.shape) if engine.mesh is not None else None,
                        "param_devices": len(leaf.sharding.device_set), "records": recs}
        del engine, leaf
        pipeline._CACHE.clear()   # one teacher at a time (8 replicas each on a mesh)
        gc.collect()
    print("RESULT " + json.dumps(result))
""")


def _numbers(x, path=""):
    """Flatten a record into (path, value) pairs."""
    if isinstance(x, dict):
        for k, v in sorted(x.items()):
            yield from _numbers(v, f"{path}.{k}")
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from _numbers(v, f"{path}[{i}]")
    else:
        yield path, x


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_teacher_mesh_from_config_equals_one_device(tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], env=env, cwd=root,
                          capture_output=True, text=True, timeout=1800)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    out = json.loads(lines[-1][len("RESULT "):])
    assert out["one"]["mesh"] is None and out["one"]["param_devices"] == 1
    assert out["mesh"]["mesh"] == {"data": 8, "fsdp": 1, "model": 1}
    assert out["mesh"]["param_devices"] == 8
    one, mesh = out["one"]["records"], out["mesh"]["records"]
    assert len(one) == len(mesh) > 0
    worst = 0.0
    for a, b in zip(one, mesh):
        fa, fb = list(_numbers(a)), list(_numbers(b))
        assert [p for p, _ in fa] == [p for p, _ in fb]
        for (p, x), (_, y) in zip(fa, fb):
            if isinstance(x, float) and isinstance(y, float):
                worst = max(worst, abs(x - y))
                assert abs(x - y) < 1e-4, p
            else:
                assert x == y, p  # texts, ids, ranks, positive / negative choices
    print(f"records equal; max score difference {worst:.2e}")
    # FRetConfig.teacher_batch_invariant: the mesh's records equal one device's bit for bit
    assert out["mesh_inv"]["invariant"] and out["mesh_inv"]["param_devices"] == 8
    assert out["one_inv"]["invariant"] and not out["mesh"]["invariant"]
    assert out["mesh_inv"]["records"] == out["one_inv"]["records"]


def test_teacher_mesh_config_is_checked():
    from gecko_jax.fret.pipeline import FRetConfig, parse_mesh

    assert parse_mesh("data=-1") == {"data": -1}
    assert parse_mesh("data=4, model=2") == {"data": 4, "model": 2}
    for bad in ("", "data", "rows=2", "data=0", "data=2,data=2"):
        with pytest.raises(ValueError, match="teacher mesh"):
            FRetConfig(teacher_mesh=bad)
    with pytest.raises(ValueError, match="teacher_dtype"):
        FRetConfig(teacher_dtype="float16")
