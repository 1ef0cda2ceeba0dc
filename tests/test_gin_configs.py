"""Every shipped gin file (gecko_jax/gin_configs/**) parses and yields a complete
trainer configuration, without training: its REQUIRED macros bound to small local
values (gs:// paths to memory:// ones), `train`'s bound arguments resolved (every
REQUIRED parameter bound, the mesh valid on 8 devices, the data route set), and the
tower's constructor bound to something that exists here (the MiniLM tower is built;
an LLM tower's weights are only located, not loaded)."""

import inspect
import pathlib

import gin
import pytest

from gecko_jax import gin_files
from gecko_jax.data import mixtures, stream_mixtures  # noqa: F401  (configurables)
from gecko_jax.fret import pipeline
from gecko_jax.recipes import experiment
from gecko_jax.training import llm_tower, trainer  # noqa: F401

SHIPPED = sorted(p.relative_to(gin_files.GIN_CONFIGS).as_posix()
                 for p in gin_files.GIN_CONFIGS.rglob("*.gin"))
ROOT = "gin_configs/"

# What a file is parsed with: the files before it (a model file needs a run file, a
# mixture a model and a run file, ...).
COMPANIONS = {
    "models": (None, ["runs/finetune.gin"]),
    "runs": (["models/minilm.gin"], None),
    "mixtures": (["models/minilm.gin", "runs/finetune.gin"], None),
    "machines": (["models/gemma3_270m.gin", "runs/finetune.gin"], None),
    "experiments": (None, None),
}


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    from gecko_jax.data import sources, training_records

    tmp = tmp_path_factory.mktemp("gin_configs")
    jsonl = tmp / "records.jsonl"
    training_records.write_records(
        jsonl, training_records.wikipedia_section_records(sources.read_wikipedia())[:16])
    return {"tmp": tmp, "jsonl": str(jsonl)}


def _required_values(local) -> dict[str, str]:
    """Small local values for the REQUIRED macros of the shipped files."""
    return {"BATCH_SIZE": "8", "TRAIN_STEPS": "2", "TRAIN_FILES": repr([local["jsonl"]]),
            "FRET_FILES": repr([local["jsonl"]]), "TOWER_SOURCE": repr("gemma3"),
            "CHECKPOINT_DIR": repr(f"memory://gin_configs/{local['tmp'].name}/checkpoints")}


def _macros() -> dict:
    return {key[0]: gin.query_parameter(f"{key[0]}/gin.macro.value")
            for key in gin.config._CONFIG if key[1] == "gin.macro"}


def _parse_bound(files: list[str], bindings: list[str], local) -> list[str]:
    """Parses `files`, then again with every REQUIRED macro (and every gs:// macro)
    bound locally; returns the bindings it added."""
    gin_files.parse(files, bindings)
    values = _required_values(local)
    added = []
    for name, value in _macros().items():
        if repr(value) == "%gin.REQUIRED":
            assert name in values, f"{files}: REQUIRED macro {name} has no local value here"
            added.append(f"{name} = {values[name]}")
        elif isinstance(value, str) and value.startswith("gs://"):
            added.append(f"{name} = {'memory://' + value[len('gs://'):]!r}")
    gin_files.parse(files, list(bindings) + added)
    leftover = [n for n, v in _macros().items() if repr(v) == "%gin.REQUIRED"]
    assert not leftover, f"{files}: REQUIRED macros left unbound: {leftover}"
    return added


def _check_train_config(files: list[str]) -> dict:
    """train()'s bound arguments, resolved: all REQUIRED ones set, a valid mesh, data."""
    bound = gin.get_bindings("train")
    required = [name for name, p in inspect.signature(trainer.train.__wrapped__).parameters.items()
                if p.default is gin.REQUIRED]
    missing = [n for n in required if n not in bound or bound[n] is gin.REQUIRED]
    assert not missing, f"{files}: train() parameters left unbound: {missing}"
    assert all(v is not gin.REQUIRED for v in bound.values()), (files, bound)
    assert bound["batch_size"] > 0 and bound["num_steps"] > 0
    assert set(bound["feature_lengths"]) == {"query", "positive", "negative"}
    mesh = bound.get("mesh_spec", trainer.MeshSpec())
    assert mesh.resolve(8)[0] * mesh.resolve(8)[1] * mesh.resolve(8)[2] == 8
    if bound.get("data_fn") is not None:
        assert callable(bound["data_fn"])
    elif bound.get("train_files"):
        assert all(pathlib.Path(f).is_file() for f in bound["train_files"])
    loss = bound["loss_config"]
    assert len(loss.mrl_dims) == len(loss.mrl_weights) and loss.tau > 0
    return bound


def _check_tower(bound: dict, files: list[str]) -> None:
    model_fn = bound["model_fn"]
    if model_fn is llm_tower.llm_model:
        from gecko_jax.llm import loading

        source = gin.get_bindings("llm_model")["source"]
        assert loading.resolve(source).exists(), (files, source)   # located, not loaded
    else:
        model, tokenizer = model_fn()                               # MiniLM: small, built
        dims = bound["loss_config"].mrl_dims
        assert max(dims) == model.embedding_dim, (files, dims)


def _train_files(name: str) -> list[str]:
    folder = name.split("/")[0]
    assert folder in COMPANIONS, f"{name}: a new gin_configs/ folder; say here how to parse it"
    before, after = COMPANIONS[folder]
    return [ROOT + f for f in (before or [])] + [ROOT + name] + [ROOT + f for f in (after or [])]


def test_every_folder_is_covered():
    assert {n.split("/")[0] for n in SHIPPED} == set(COMPANIONS)
    assert "experiments/pod_gemma3.gin" in SHIPPED and "runs/base.gin" in SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_gin_file_builds_its_config(name, local):
    files = _train_files(name)
    if name == "experiments/fret_64.gin":
        cfg = pipeline.config_from_gin(files, [])
        assert cfg.limit == 64 and cfg.embed_max_length == 128 and cfg.relabel.num_neighbors == 4
        return
    _parse_bound(files, [], local)
    if experiment.configured():
        # Several stages: each stage's own files and bindings make a trainer config.
        stages = gin.query_parameter("run_stages.stages")
        assert [s["name"] for s in stages] == ["prefinetune", "finetune"]
        for stage in stages:
            _parse_bound(stage["gin_files"], stage["gin_bindings"], local)
            _check_tower(_check_train_config(stage["gin_files"]), stage["gin_files"])
        return
    _check_tower(_check_train_config(files), files)


def test_run_files_share_base_and_keep_their_own_settings(local):
    """runs/prefinetune.gin and runs/finetune.gin differ only where the recipe does."""
    got = {}
    for run in ("prefinetune", "finetune"):
        _parse_bound([ROOT + "models/minilm.gin", ROOT + f"runs/{run}.gin"], [], local)
        got[run] = gin.get_bindings("train")
    pft, ft = got["prefinetune"], got["finetune"]
    assert pft["feature_lengths"] == {"query": 32, "positive": 128, "negative": 128}
    assert ft["feature_lengths"] == {"query": 64, "positive": 256, "negative": 256}
    assert not pft["loss_config"].use_hard_negatives and not pft["loss_config"].same_tower
    assert ft["loss_config"].use_hard_negatives and ft["loss_config"].same_tower
    assert (pft["keep_checkpoints"], ft["keep_checkpoints"]) == (2, 3)
    assert "separate_update" not in pft and "separate_update" not in ft


def test_machine_file_is_the_only_source_of_cpu_knobs(local):
    """Model files carry no machine settings; machines/cpu.gin adds them."""
    _parse_bound([ROOT + "models/gemma3_270m.gin", ROOT + "runs/finetune.gin"], [], local)
    assert "separate_update" not in gin.get_bindings("train")
    _parse_bound([ROOT + "models/gemma3_270m.gin", ROOT + "runs/finetune.gin",
                  ROOT + "machines/cpu.gin"], [], local)
    assert gin.get_bindings("train")["separate_update"] is True


def test_pod_experiment_is_a_distributed_fsdp_job(local):
    added = _parse_bound([ROOT + "experiments/pod_gemma3.gin"], [], local)
    assert {b.split(" = ")[0] for b in added} == {"TRAIN_FILES", "CHECKPOINT_DIR", "TOWER_SOURCE"}
    bound = gin.get_bindings("train")
    mesh = bound["mesh_spec"]
    assert mesh.distributed and mesh.fsdp == -1 and mesh.resolve(8) == (1, 8, 1)
    assert bound["checkpoint_dir"].startswith("memory://")
    assert "separate_update" not in bound
    header = (gin_files.GIN_CONFIGS / "experiments/pod_gemma3.gin").read_text()
    for needle in ("gcloud compute tpus tpu-vm ssh", "--worker=all", "srun", "SLURM_PROCID",
                   "gs://"):
        assert needle in header
