"""The wheel works outside the checkout: built from the tracked tree, installed (no
dependencies) into a fresh virtual environment, run from another folder.

The new environment sees the project's dependencies through one .pth line naming the
site-packages of the environment running the tests: a plain path line only appends
that folder to sys.path, so the .pth files inside it (the editable install's finder,
which maps `gecko_jax` to a checkout) are never executed, and the new environment's own
site-packages, holding the wheel, comes first. PYTHONPATH is dropped and the commands
run in a temporary folder, so nothing of the checkout is importable. oneDNN's wheel
keeps its library and headers under the base environment's prefix (GECKO_ONEDNN_ROOT).
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile

import pytest

pytestmark = pytest.mark.slow      # build, install, train 2 steps, FRet on 2 passages

REPO = pathlib.Path(__file__).resolve().parents[1]


def _run(cmd, cwd, env, timeout=900):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def _tracked_tree(dest: pathlib.Path) -> pathlib.Path:
    """The checkout's tracked and untracked-but-not-ignored files (no build leftovers)."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                            "--exclude-standard"], cwd=REPO, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, names):
        src = REPO / name
        if not src.exists() and not src.is_symlink():
            continue                                   # deleted, not yet committed
        out = dest / name
        out.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            out.symlink_to(os.readlink(src))
        else:
            shutil.copy2(src, out)
    return dest


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    t0 = time.time()
    tree = _tracked_tree(tmp / "src")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
          str(tree), "-w", str(tmp / "dist")], cwd=tmp, env=env)
    wheel, = (tmp / "dist").glob("gecko_jax-*.whl")
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp, env=env)
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
          str(wheel)], cwd=tmp, env=env)
    site = pathlib.Path(_run([str(python), "-c", "import sysconfig;print(sysconfig.get_path"
                              "('purelib'))"], cwd=tmp, env=env).stdout.strip())
    (site / "gecko_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    env = dict(env, GECKO_ONEDNN_ROOT=sysconfig.get_path("data"),
               PATH=f"{venv / 'bin'}{os.pathsep}{env['PATH']}")
    print(f"wheel built and installed: {time.time() - t0:.0f} s")
    work = tmp / "elsewhere"
    work.mkdir()
    return dict(wheel=wheel, venv=venv, python=python, env=env, work=work)


def test_wheel_holds_configs_prompts_and_kernel_sources(installed):
    names = set(zipfile.ZipFile(installed["wheel"]).namelist())
    shipped = {p.relative_to(REPO).as_posix() for p in (REPO / "gecko_jax").rglob("*")
               if p.suffix in (".gin", ".json", ".cc", ".h") and "__pycache__" not in p.parts}
    assert shipped <= names, sorted(shipped - names)
    assert {"gecko_jax/gin_configs/experiments/pod_gemma3.gin",
            "gecko_jax/gin_configs/runs/base.gin", "gecko_jax/fret/prompt_files/qg.json",
            "gecko_jax/kernels/attention_common.h"} <= names
    assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE")
               for n in names)


def test_installed_package_is_the_wheel(installed):
    out = _run([str(installed["python"]), "-c",
                "import gecko_jax, gecko_jax.gin_files as g, gecko_jax.fret.prompts as p;"
                "print(gecko_jax.__file__);print(g.GIN_CONFIGS);print(p.PROMPTS_DIR)"],
               cwd=installed["work"], env=installed["env"]).stdout.split()
    assert all(line.startswith(str(installed["venv"])) for line in out), out


def test_gecko_train_two_steps_from_a_shipped_config(installed, tmp_path):
    from gecko_jax.data import sources, training_records

    records = tmp_path / "records.jsonl"
    training_records.write_records(
        records, training_records.wikipedia_section_records(sources.read_wikipedia())[:32])
    run = installed["work"] / "run_train"
    t0 = time.time()
    _run(["gecko", "train", "--gin_file=experiments/minilm_jsonl.gin", f"--model_dir={run}",
          f"--gin_bindings=TRAIN_FILES=[{str(records)!r}]", "--gin_bindings=BATCH_SIZE=8",
          "--gin_bindings=TRAIN_STEPS=2", "--gin_bindings=WARMUP_STEPS=1",
          "--gin_bindings=QUERY_LENGTH=16", "--gin_bindings=DOC_LENGTH=32"],
         cwd=installed["work"], env=installed["env"])
    print(f"gecko train, 2 steps, from the wheel: {time.time() - t0:.0f} s")
    assert (run / "config.gin").is_file()
    check = ("import sys, numpy as np; from sentence_transformers import SentenceTransformer;"
             "e = SentenceTransformer(sys.argv[1], device='cpu').encode(['a puffin', 'a ship']);"
             "print(e.shape[0], e.shape[1], float(np.linalg.norm(e[0])))")
    n, d, norm = _run([str(installed["python"]), "-c", check, str(run / "export")],
                      cwd=installed["work"], env=installed["env"]).stdout.split()[-3:]
    assert (int(n), int(d)) == (2, 384) and abs(float(norm) - 1.0) < 1e-3


def test_gecko_fret_two_passages_with_the_shipped_prompts(installed):
    work, env = installed["work"], installed["env"]
    corpus = work / "corpus.jsonl"
    _run(["gecko", "fret", "corpus", "--source", "wikipedia", "--output", str(corpus)],
         cwd=work, env=env)
    out = work / "fret"
    t0 = time.time()
    _run(["gecko", "fret", "--corpus", str(corpus), "--output", str(out), "--teacher",
          "smollm2", "--limit", "2", "--num-neighbors", "4", "--no-tfrecord", "--no-progress",
          "--gin_file", "experiments/fret_64.gin"], cwd=work, env=env, timeout=1200)
    print(f"gecko fret, 2 passages, from the wheel: {time.time() - t0:.0f} s")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["passages"] == 2
    records = [json.loads(line) for f in manifest["files"]["jsonl"]
               for line in (out / f).read_text().splitlines()]
    assert len(records) == manifest["counts"]["records"] >= 1
    for rec in records:
        assert rec["query"].strip() and rec["positive"]["text"].strip()
    # The wheel's prompt files were used: the same content as the checkout's.
    from gecko_jax.fret import prompts

    assert manifest["prompts"] == prompts.load_prompts().provenance()
