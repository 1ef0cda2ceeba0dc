"""`gecko eval` end to end: two real models, every task and dim, report files."""

import json

import pytest
from PIL import Image

from gecko_jax import cli

pytest.importorskip("mteb")


@pytest.fixture(scope="module")
def gecko_format_minilm(tmp_path_factory):
    """MiniLM re-exported as a Gecko-format model folder: a second, real model."""
    from gecko_jax import assets
    from gecko_jax.models.weights import export_dual_encoder, load_dual_encoder

    model, tokenizer, _ = load_dual_encoder(assets.minilm_dir())
    folder = tmp_path_factory.mktemp("models") / "minilm-gecko"
    export_dual_encoder(model, tokenizer, folder, prompt_format="gecko", max_length=128)
    return folder


def test_two_model_eval_report(tmp_path, gecko_format_minilm, capsys):
    out = tmp_path / "report"
    rc = cli.main(["eval", "--model", "minilm", "--model", str(gecko_format_minilm),
                   "--tasks", "bbc_retrieval,bbc_classification,bbc_clustering",
                   "--dims", "384,64", "--limit", "25", "--max-length", "128",
                   "--output", str(out)])
    assert rc == 0
    data = json.loads((out / "report.json").read_text())
    assert set(data["models"]) == {"minilm", "minilm-gecko"}
    assert data["models"]["minilm"]["format"] == "raw"
    assert data["models"]["minilm-gecko"]["format"] == "gecko"
    for model in ("minilm", "minilm-gecko"):
        for task, main in (("bbc_retrieval", "ndcg_at_10"), ("bbc_classification", "accuracy"),
                           ("bbc_clustering", "v_measure")):
            for dim in ("384", "64"):
                assert 0.0 <= data["results"][model][task][dim][main] <= 1.0
    # Gecko prompts change the embeddings, so the two models' scores are not all equal.
    assert data["results"]["minilm"] != data["results"]["minilm-gecko"]
    md = (out / "report.md").read_text()
    for task in ("bbc_retrieval", "bbc_classification", "bbc_clustering"):
        for dim in (384, 64):
            assert f"| {task} |" in md and f"| {dim} |" in md
    for png in ("scores_by_task.png", "score_vs_dim.png"):
        with Image.open(out / png) as img:
            img.load()
            assert img.format == "PNG" and img.size[0] > 400
    assert "wrote" in capsys.readouterr().out


def test_unknown_task_lists_known_ones(tmp_path, capsys):
    rc = cli.main(["eval", "--model", "minilm", "--tasks", "bbc_retrieval,bbc_sentiment",
                   "--output", str(tmp_path)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "unknown task 'bbc_sentiment'" in err
    assert "bbc_retrieval, bbc_classification, bbc_clustering" in err


def test_broken_beir_qrels_line_via_cli(tmp_path, capsys):
    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text('{"_id": "d1", "title": "", "text": "a text"}\n')
    (folder / "queries.jsonl").write_text('{"_id": "q1", "text": "a query"}\n')
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\n")
    rc = cli.main(["eval", "--model", "minilm", "--tasks", f"beir:{folder}",
                   "--output", str(tmp_path / "out")])
    assert rc == 2
    err = capsys.readouterr().err
    assert f"{folder / 'qrels' / 'test.tsv'}:2:" in err and "3 tab-separated fields" in err


def test_bad_dims(tmp_path, capsys):
    rc = cli.main(["eval", "--model", "minilm", "--dims", "384,abc", "--output", str(tmp_path)])
    assert rc == 2 and "--dims" in capsys.readouterr().err
