"""The README's main job, on a subset so it stays fast."""

import re

from gecko_jax import cli


def test_demo_prints_ndcg(capsys):
    assert cli.main(["demo", "--limit", "60", "--max-length", "128"]) == 0
    out = capsys.readouterr().out
    assert "60 queries, 60 documents" in out
    ndcg = float(re.search(r"nDCG@10 = ([0-9.]+)", out).group(1))
    # MiniLM finds most BBC articles from their headline among 60; a broken
    # encoder or label mix-up lands near chance (~0.05).
    assert ndcg > 0.8, out
