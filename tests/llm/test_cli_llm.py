"""`gecko llm` end to end on the shipped SmolLM2."""

import json

from gecko_jax import cli


def test_llm_score_and_generate_cli(capsys, smollm2_engine):
    rc = cli.main(["llm", "score", "--model", "smollm2", "--prefix", "The capital of France is",
                   "--continuation", " Paris.", "--continuation", " Rome."])
    assert rc == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    ours = smollm2_engine.score(["The capital of France is"] * 2, [" Paris.", " Rome."])
    assert all(abs(r["logprob"] - x) < 1e-5 for r, x in zip(rows, ours))
    assert rows[0]["logprob"] > rows[1]["logprob"]
    rc = cli.main(["llm", "generate", "--model", "smollm2", "--prompt",
                   "The capital of France is", "--max-new-tokens", "4", "--stop", "."])
    assert rc == 0
    assert json.loads(capsys.readouterr().out)["text"] == " Paris"


def test_llm_cli_reports_missing_model(capsys):
    assert cli.main(["llm", "score", "--model", "missing.gguf", "--prefix", "a",
                     "--continuation", "b"]) == 2
    assert "no such model" in capsys.readouterr().err
