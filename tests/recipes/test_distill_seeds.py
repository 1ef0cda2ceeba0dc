"""The report's over-seeds tables: per-seed paired verdicts, the scaling curve's points
and plot. Rows carry per-item scores the way local_tasks stores them."""

import numpy as np

from gecko_jax.recipes import distill_seeds

TASKS = {"bbc_retrieval": {"type": "retrieval", "main_score": "ndcg_at_10"}}


def _row(scores):
    scores = [float(x) for x in scores]
    return {"ndcg_at_10": float(np.mean(scores)),
            "per_item": {"ids": [f"q{i}" for i in range(len(scores))], "ndcg_at_10": scores}}


def _results(models: dict) -> dict:
    return {m: {"bbc_retrieval": {384: _row(s)}} for m, s in models.items()}


def test_a_change_is_significant_only_when_every_seed_agrees():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.3, 0.7, 200)
    results = _results({
        "base": base,
        "ft": base + 0.1, "ft (seed 1)": base + 0.12,          # clearly up in both
        "noisy": base, "noisy (seed 1)": base + 0.1,            # up in one seed only
        "down": base - 0.05, "down (seed 1)": base - 0.06})
    assert distill_seeds.seed_models(results, "ft") == ["ft", "ft (seed 1)"]
    pairs = lambda m: [(results["base"]["bbc_retrieval"][384], results[s]["bbc_retrieval"][384])  # noqa: E731
                       for s in distill_seeds.seed_models(results, m)]
    assert distill_seeds.seed_change(pairs("ft"), "retrieval", "ndcg_at_10") == \
        "+11.00 [+10.00, +12.00] (+ in every seed)"
    assert distill_seeds.seed_change(pairs("down"), "retrieval", "ndcg_at_10").endswith(
        "(- in every seed)")
    assert distill_seeds.seed_change(pairs("noisy"), "retrieval", "ndcg_at_10").endswith(
        "(not significant in every seed (1+, 0-))")
    assert distill_seeds.spread([0.5, 0.7]) == "60.00 [50.00, 70.00]"


def test_scaling_curve_points_table_and_plot(tmp_path):
    rng = np.random.default_rng(1)
    base = rng.uniform(0.3, 0.7, 100)
    results = _results({"no FRet": base, "no FRet (seed 1)": base + 0.01,
                        "FRet, first 2 records": base + 0.02,
                        "FRet, first 2 records (seed 1)": base + 0.03,
                        "distilled": base + 0.05, "distilled (seed 1)": base + 0.04})
    # A size not below the record count is the default fine-tuning itself: left out.
    points = distill_seeds.scaling_points(results, (2, 5), "no FRet", "distilled", 5)
    assert points == [(0, "no FRet"), (2, "FRet, first 2 records"), (5, "distilled")]
    lines = distill_seeds.scaling_table(results, TASKS, points)
    assert lines[0].startswith("| task | dim | 0 records | 2 records | 5 records | 2 - 0 | 5 - 0 |")
    assert lines[2].startswith("| bbc_retrieval | 384 | ")
    assert "+4.00 [+3.00, +5.00] (+ in every seed)" in lines[2]
    distill_seeds.plot_scaling(results, TASKS, points, tmp_path / "scaling.png")
    assert (tmp_path / "scaling.png").read_bytes()[:4] == b"\x89PNG"


def test_ablation_and_stage_tables_over_seeds():
    rng = np.random.default_rng(2)
    base = rng.uniform(0.3, 0.7, 100)
    results = _results({"start": base, "pft": base + 0.01, "pft (seed 1)": base + 0.02,
                        "ft": base + 0.03, "ft (seed 1)": base + 0.05,
                        "arm": base + 0.04, "arm (seed 1)": base + 0.04})
    stage = distill_seeds.seeds_table(results, TASKS, "pft", "ft", (("start", "base"),))
    assert "| pre-finetuned - base | fine-tuned - base | fine-tuned - pre-finetuned |" in stage[0]
    assert stage[2].count("(+ in every seed)") == 3
    abl = distill_seeds.ablation_seeds_table(results, TASKS, (("(a)", "arm"), ("(d)", "ft")),
                                             "ft", [("arm", "(a)")])
    assert abl[0].endswith("| (d) - (a) |")
    assert "+0.00 [-1.00, +1.00] (not significant in every seed (1+, 1-))" in abl[2]


def test_soup_table_pairs_the_soup_with_every_seed():
    rng = np.random.default_rng(3)
    base = rng.uniform(0.3, 0.7, 100)
    results = _results({"ft": base, "ft (seed 1)": base + 0.02, "soup": base + 0.05})
    lines = distill_seeds.soup_table(results, TASKS, "soup", "ft")
    assert lines[0].startswith("| task | dim | fine-tuned (2 seeds) | soup [95% CI] |")
    assert lines[2].endswith("| +4.00 [+3.00, +5.00] (+ in every seed) |")
