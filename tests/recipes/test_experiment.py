"""Pre-finetuning then fine-tuning on the embedded default data, end to end
through `gecko train` and the experiment file (a tiny random BERT, 2 steps), on the
recipe runner (reuse and refusal here; resume and --redo in test_runner.py)."""

import json

import gin
import numpy as np
import pytest

from gecko_jax import cli

TINY = [
    "train.model_fn = @random_model",
    "random_model.config = {'hidden_size': 32, 'num_hidden_layers': 2, "
    "'num_attention_heads': 4, 'intermediate_size': 64, 'max_position_embeddings': 64}",
    "random_model.tokenizer_folder = @minilm_dir()",
    "LossConfig.mrl_dims = None",
    "LossConfig.mrl_weights = None",
    "BATCH_SIZE = 8", "TRAIN_STEPS = 2", "WARMUP_STEPS = 1",
    "QUERY_LENGTH = 16", "DOC_LENGTH = 32",
    "wikipedia_title_body.limit = 48", "wikipedia_sections.limit = 48",
    "bbc_classification.limit = 48",
    "train.checkpoint_every = 1",
]


@pytest.fixture(autouse=True)
def _no_gin_leak():
    """The run leaves its last stage's bindings in gin's global config: drop them."""
    yield
    gin.clear_config()


def test_two_stage_experiment_end_to_end(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "--gin_file=experiments/wiki_two_stage.gin", f"--model_dir={run}",
            "--no-progress"] + [f"--gin_bindings={b}" for b in TINY]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "stage prefinetune: step 2" in out and "stage finetune: step 2" in out

    # On the recipe runner: a rerun reuses both finished stages (nothing trains again)...
    markers = {n: (run / n / "stage.json").stat().st_mtime_ns for n in ("prefinetune", "finetune")}
    assert cli.main(argv) == 0
    assert "stage finetune: step 2" in capsys.readouterr().out
    assert {n: (run / n / "stage.json").stat().st_mtime_ns for n in markers} == markers
    # ...and a changed stage is refused before any compute, naming what changed.
    assert cli.main(argv + ["--gin_bindings=LossConfig.tau = 0.07"]) == 2
    err = capsys.readouterr().err
    assert "prefinetune: gin_bindings" in err and "--redo" in err
    assert {n: (run / n / "stage.json").stat().st_mtime_ns for n in markers} == markers

    assert "run_stages.stages" in (run / "config.gin").read_text()
    stages = json.loads((run / "stages.json").read_text())
    assert [s["stage"] for s in stages] == ["prefinetune", "finetune"]
    assert all(np.isfinite(s["metrics"]["loss"]) for s in stages)
    for name in ("prefinetune", "finetune"):
        stage = run / name
        assert sorted(p.name for p in (stage / "checkpoints").iterdir() if p.name.isdigit()) \
            == ["1", "2"]
        assert (stage / "config.gin").is_file() and (stage / "export" / "config.json").is_file()
    # gin wraps long values onto a continuation line.
    pre, fine = ((run / name / "operative_config.gin").read_text().replace("\\\n    ", "")
                 for name in ("prefinetune", "finetune"))
    # Stage 1: title -> body, in-batch negatives only, single-task batches.
    assert "mixture_data.mixture = 'gecko_prefinetune'" in pre
    assert "LossConfig.use_hard_negatives = False" in pre
    assert "LossConfig.same_tower = False" in pre
    assert "train.model_fn = @random_model" in pre
    # Stage 2: the fine-tuning mixture, initialised from stage 1's final export.
    assert "mixture_data.mixture = 'gecko_finetune'" in fine
    assert "train.model_fn = @pretrained_model" in fine
    assert f"pretrained_model.folder = '{run / 'prefinetune' / 'export'}'" in fine
    assert "LossConfig.use_hard_negatives = True" in fine
    assert stages[1]["init_from"] == "prefinetune"

    # Stage 2 starts from stage 1's weights, not from a fresh init (which with
    # these bindings would equal stage 1's own starting point): its params sit
    # nearer stage 1's export than that init.
    from safetensors.numpy import load_file

    from gecko_jax import assets
    from gecko_jax.models.weights import export_dual_encoder
    from gecko_jax.training import model_fns

    config = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
              "intermediate_size": 64, "max_position_embeddings": 64}
    model, tok = model_fns.random_model(config=config, tokenizer_folder=assets.minilm_dir(), seed=0)
    export_dual_encoder(model, tok, tmp_path / "init", max_length=64)
    folders = (tmp_path / "init", run / "prefinetune" / "export", run / "finetune" / "export")
    init, pft, ft = (load_file(str(f / "model.safetensors")) for f in folders)
    assert sorted(init) == sorted(pft) == sorted(ft)

    def dist(x, y):
        return np.mean([np.abs(x[k] - y[k]).mean() for k in x if x[k].ndim == 2])

    assert dist(pft, init) > 0 and dist(ft, pft) > 0
    assert dist(ft, pft) < 0.7 * dist(ft, init), (dist(ft, pft), dist(ft, init))
