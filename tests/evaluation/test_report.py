"""Reports: JSON, Markdown and PNG plots for several models side by side."""

import json

import numpy as np
import pytest
from PIL import Image

from gecko_jax.evaluation import report

TASKS = {
    "bbc_retrieval": {"type": "retrieval", "main_score": "ndcg_at_10", "gecko_task": "search result"},
    "bbc_classification": {"type": "classification", "main_score": "accuracy",
                           "gecko_task": "classification"},
    "bbc_clustering": {"type": "clustering", "main_score": "v_measure", "gecko_task": "clustering"},
}


def _results(seed, dims):
    rng = np.random.default_rng(seed)
    return {t: {d: {info["main_score"]: float(rng.uniform(0.3, 0.99)), "f1": 0.5}
                for d in dims} for t, info in TASKS.items()}


def test_two_model_report_renders(tmp_path):
    results = {"minilm": _results(0, [384, 128, 64]), "gecko-minilm": _results(1, [384, 128, 64])}
    models = {"minilm": {"format": "raw"}, "gecko-minilm": {"format": "gecko"}}
    paths = report.write_report(tmp_path, results, TASKS, models)

    for key in ("scores_by_task", "score_vs_dim"):
        with Image.open(paths[key]) as img:  # real PNGs, decodable, not tiny
            img.load()
            assert img.format == "PNG" and img.size[0] > 400 and img.size[1] > 200
            # Not a blank canvas: the plot drew in several colours.
            assert len(img.convert("RGB").getcolors(maxcolors=1 << 20)) > 20

    md = paths["markdown"].read_text()
    header = next(line for line in md.splitlines() if line.startswith("| task |"))
    assert "minilm" in header and "gecko-minilm" in header
    for task, info in TASKS.items():
        for dim in (384, 128, 64):
            row = next(line for line in md.splitlines()
                       if line.startswith(f"| {task} | {info['main_score']} | {dim} |"))
            for model in results:  # every model's score appears in its column
                assert f"{100 * results[model][task][dim][info['main_score']]:.2f}" in row

    data = report.load_results(paths["json"])
    assert set(data["models"]) == set(models) and set(data["tasks"]) == set(TASKS)
    assert data["results"]["gecko-minilm"]["bbc_clustering"][64]["v_measure"] == pytest.approx(
        results["gecko-minilm"]["bbc_clustering"][64]["v_measure"])
    json.loads(paths["json"].read_text())  # plain JSON


def test_missing_cells_show_dash(tmp_path):
    results = {"a": _results(0, [384, 64]), "b": {"bbc_retrieval": {384: {"ndcg_at_10": 0.5}}}}
    md = report.to_markdown(results, TASKS, {"a": {}, "b": {}})
    assert "| bbc_clustering | v_measure | 64 |" in md
    row = next(line for line in md.splitlines() if line.startswith("| bbc_clustering | v_measure | 64"))
    assert row.rstrip().endswith("| - |")
    report.write_report(tmp_path, results, TASKS, {"a": {}, "b": {}})
