"""Model soups: exported folders and one run's checkpoints, through `gecko soup`.

Real exported folders (tiny BERT towers with the MiniLM tokenizer and a dense
projection; the tiny Gemma-3 LLM tower), a real 2-step training run with orbax
checkpoints, numpy as the reference.
"""

import json
import pathlib

import numpy as np
import pytest
from safetensors.numpy import load_file

from gecko_jax import assets, cli
from gecko_jax.errors import GeckoError
from gecko_jax.models import soup
from gecko_jax.models.weights import export_dual_encoder
from gecko_jax.training import model_fns, trainer
from gecko_jax.training.checkpoint_soup import soup_checkpoints
from tests.training.conftest import TINY_BERT


def _export(folder, seed, config=TINY_BERT):
    model, tok = model_fns.random_model(config=config, tokenizer_folder=assets.minilm_dir(),
                                      projection_dim=16, seed=seed)
    return export_dual_encoder(model, tok, folder)


def _tensors(folder):
    folder = pathlib.Path(folder)
    return {f"{p.relative_to(folder)}:{k}": v for p in sorted(folder.rglob("*.safetensors"))
            for k, v in load_file(str(p)).items()}


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("soup")
    return _export(root / "a", 0), _export(root / "b", 1), root


def test_soup_of_a_model_with_itself_is_that_model(two_runs, tmp_path):
    a, _, _ = two_runs
    out = soup.soup_folders([a, a, a], tmp_path / "self")
    ta, to = _tensors(a), _tensors(out)
    assert set(ta) == set(to) and any(k.startswith("2_Dense") for k in ta)
    for k in ta:
        assert to[k].dtype == ta[k].dtype
        np.testing.assert_array_equal(to[k], ta[k])     # bit-exact
    for f in a.rglob("*"):
        if f.is_file() and f.suffix != ".safetensors":
            assert (out / f.relative_to(a)).read_bytes() == f.read_bytes()


def test_soup_of_two_runs_is_their_numpy_mean(two_runs, tmp_path):
    a, b, _ = two_runs
    assert cli.main(["soup", "--output", str(tmp_path / "ab"), str(a), str(b)]) == 0
    ta, tb, to = _tensors(a), _tensors(b), _tensors(tmp_path / "ab")
    for k in ta:
        assert not np.array_equal(ta[k], tb[k]) or "bias" in k or "LayerNorm" in k
        np.testing.assert_array_max_ulp(to[k], np.mean([ta[k], tb[k]], axis=0), maxulp=1)
        np.testing.assert_array_equal(to[k], ((ta[k].astype(np.float64) + tb[k]) / 2).astype(np.float32))
    record = json.loads((tmp_path / "ab" / soup.SOUP_RECORD).read_text())
    assert record["weights"] == [0.5, 0.5]


def test_weighted_soup(two_runs, tmp_path):
    a, b, _ = two_runs
    # The CLI form of the module's example: weights before the folders.
    assert cli.main(["soup", "--output", str(tmp_path / "w"), "--weights", "3,1", str(a), str(b)]) == 0
    ta, tb, to = _tensors(a), _tensors(b), _tensors(tmp_path / "w")
    for k in ta:
        np.testing.assert_allclose(to[k], 0.75 * ta[k] + 0.25 * tb[k], rtol=0, atol=1e-7)


def test_mismatched_folder_refused_naming_the_parameter(two_runs, tmp_path, capsys):
    a, _, root = two_runs
    wide = _export(root / "wide", 2, dict(TINY_BERT, intermediate_size=96))
    with pytest.raises(GeckoError, match=r"parameter 'encoder\.layer\.0\.intermediate\.dense\."):
        soup.soup_folders([a, wide], tmp_path / "bad")
    assert cli.main(["soup", "--output", str(tmp_path / "bad"), str(a), str(wide)]) == 2
    assert "intermediate.dense" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    with pytest.raises(GeckoError, match="weights"):
        soup.soup_folders([a, a], tmp_path / "bad", weights=[1])


def _tiny_two_step_bindings() -> list[str]:
    """A random tiny BERT on MiniLM's tokenizer, 2 steps, a checkpoint after each."""
    bert = "{" + ", ".join(f"'{k}': {v}" for k, v in TINY_BERT.items()) + "}"
    return ["BATCH_SIZE = 8", "TRAIN_STEPS = 2", "QUERY_LENGTH = 16", "DOC_LENGTH = 32",
            "WARMUP_STEPS = 1", "train.model_fn = @random_model",
            f"random_model.config = {bert}",
            f"random_model.tokenizer_folder = '{assets.minilm_dir()}'",
            "train.checkpoint_every = 1", "MeshSpec.data = 1"]


def test_soup_of_run_checkpoints(tmp_path, wiki_jsonl):
    """A real 2-step run; soup(ckpt 2) is the run's final export, soup(1, 2) their mean."""
    from gecko_jax.training.trainer import parse_gin

    parse_gin(["gin_configs/runs/finetune.gin"],
              [f"TRAIN_FILES = ['{wiki_jsonl}']", *_tiny_two_step_bindings()])
    run = tmp_path / "run"
    trainer.train(run, progress=False)
    ckpt = run / "checkpoints"
    assert cli.main(["soup", "--output", str(tmp_path / "s2"), str(ckpt / "2"), str(ckpt / "2")]) == 0
    final, s2 = _tensors(run / "export"), _tensors(tmp_path / "s2")
    assert set(final) == set(s2)
    # The run's export and the soup both declare the document length trained at.
    for folder in (run / "export", tmp_path / "s2"):
        assert json.loads((folder / "sentence_bert_config.json").read_text()) \
            ["max_seq_length"] == 32
    for k in final:
        np.testing.assert_array_equal(s2[k], final[k])
    assert cli.main(["soup", "--output", str(tmp_path / "s12"), str(ckpt / "1"), str(ckpt / "2")]) == 0
    s1 = _tensors(soup_checkpoints([ckpt / "1"], tmp_path / "s1"))  # step 1, same export path
    s12 = _tensors(tmp_path / "s12")
    for k in final:
        np.testing.assert_array_equal(s12[k], ((s1[k].astype(np.float64) + s2[k]) / 2)
                                      .astype(np.float32))
    assert any(not np.array_equal(s1[k], s2[k]) for k in final)
    with pytest.raises(GeckoError, match="one run"):
        other = tmp_path / "other" / "checkpoints" / "1"
        other.mkdir(parents=True)
        soup_checkpoints([ckpt / "1", other], tmp_path / "bad")


def test_raw_format_run_exports_and_soups_as_raw(tmp_path):
    """A real 2-step run on a raw-format mixture: its export and the soup of its
    checkpoints both declare raw, so `gecko embed` gives them prompt-free texts."""
    from gecko_jax.encode import Encoder
    from gecko_jax.training.trainer import parse_gin

    parse_gin(["gin_configs/runs/base.gin"], [
        "import gecko_jax.data.mixtures", "train.data_fn = @mixture_data",
        "mixture_data.mixture = 'gecko_raw_soup'",
        "mixture_data.task_sources = {'gecko_raw_wiki': @wikipedia_sections}",
        "mixture_data.rates = {'gecko_raw_wiki': 1.0}", "wikipedia_sections.limit = 32",
        "mixture_data.prompt_format = 'raw'", *_tiny_two_step_bindings()])
    run = tmp_path / "run"
    trainer.train(run, progress=False)
    soup_checkpoints([run / "checkpoints" / "1", run / "checkpoints" / "2"], tmp_path / "s")
    for folder in (run / "export", tmp_path / "s"):
        assert json.loads((folder / "gecko_config.json").read_text())["prompt_format"] == "raw"
        assert Encoder.from_pretrained(folder).meta.prompt_format == "raw"
