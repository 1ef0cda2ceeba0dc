"""`gecko embed` on good and bad input: each failure names the file (and line)."""

import json
import logging
import subprocess
import sys

import numpy as np
import pytest

from gecko_jax import cli


def _embed(tmp_path, minilm_dir, name, content: bytes, *extra):
    src = tmp_path / name
    src.write_bytes(content)
    out = tmp_path / "out.npy"
    # float32 unless a test asks otherwise: the default (`--dtype auto`) is bf16 on a
    # CPU with bf16 dot instructions (test_default_dtype_follows_the_machine).
    dtype = [] if "--dtype" in extra else ["--dtype", "float32"]
    rc = cli.main(["embed", "--model", str(minilm_dir), "--input", str(src), "--output", str(out),
                   "--max-length", "64", *dtype, *extra])
    return rc, out


def test_default_dtype_follows_the_machine(tmp_path, minilm_dir, minilm_encoder):
    from gecko_jax.encode import resolve_compute_dtype

    texts = ["Rates rose again as the bank met.", "A late goal won the cup final.",
             "Shares in the firm fell sharply after the profit warning."] * 30
    rc, out = _embed(tmp_path, minilm_dir, "in.txt", "\n".join(texts).encode(), "--dtype", "auto")
    assert rc == 0
    got, want = np.load(out), minilm_encoder.encode(texts)
    cosine = np.sum(got * want, axis=1)
    assert cosine.min() >= 0.9999, cosine.min()
    if resolve_compute_dtype("auto") == "bfloat16":   # e.g. AVX512-BF16 or AMX + the kernel
        assert np.abs(got - want).max() > 1e-6       # bf16 really ran
    else:
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_jsonl_with_titles_and_queries(tmp_path, minilm_dir, minilm_encoder):
    lines = [{"text": "Rates rose again.", "title": "Economy"}, {"text": "A late goal."}]
    rc, out = _embed(tmp_path, minilm_dir, "in.jsonl",
                     "\n".join(json.dumps(x) for x in lines).encode(), "--format", "gecko")
    assert rc == 0
    want = minilm_encoder.encode(["title: Economy | text: Rates rose again.",
                                  "title: none | text: A late goal."])
    np.testing.assert_allclose(np.load(out), want, atol=1e-5)
    rc, out = _embed(tmp_path, minilm_dir, "q.txt", b"who raised rates\n", "--kind", "query",
                     "--task", "question answering", "--format", "gecko", "--dim", "128")
    emb = np.load(out)
    assert rc == 0 and emb.shape == (1, 128)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)


def test_empty_text_is_embedded_with_a_warning(tmp_path, minilm_dir, caplog):
    with caplog.at_level(logging.WARNING):
        rc, out = _embed(tmp_path, minilm_dir, "in.txt", b"first\n\nthird\n")
    emb = np.load(out)
    assert rc == 0 and emb.shape == (3, 384)
    assert np.all(np.isfinite(emb))
    assert "1 empty texts" in caplog.text


def test_very_long_text_is_truncated_and_counted(tmp_path, minilm_dir, caplog):
    long_text = ("lorem ipsum dolor sit amet " * 4000)[:100_000]
    with caplog.at_level(logging.INFO):
        rc, out = _embed(tmp_path, minilm_dir, "in.txt", (long_text + "\nshort\n").encode())
    assert rc == 0 and np.load(out).shape == (2, 384)
    assert "truncated 1 of 2 texts to 64 tokens" in caplog.text


@pytest.mark.parametrize("name, content, message", [
    ("bad.jsonl", b'{"text": "ok"}\n{"text": oops}\n', "bad.jsonl:2: not valid JSON"),
    ("bad.jsonl", b'{"text": "ok"}\n\n{"body": "x"}\n', 'bad.jsonl:3: each line needs a string field "text"'),
    ("bad.txt", b"fine\nbroken \xff\xfe here\n", "bad.txt:2: invalid UTF-8"),
])
def test_bad_input_names_file_and_line(tmp_path, minilm_dir, capsys, name, content, message):
    rc, _ = _embed(tmp_path, minilm_dir, name, content)
    assert rc == 2
    assert message in capsys.readouterr().err


def test_missing_model_folder_is_one_clear_line(tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("hello\n")
    proc = subprocess.run([sys.executable, "-m", "gecko_jax.cli", "embed", "--model",
                           str(tmp_path / "nope"), "--input", str(src), "--output",
                           str(tmp_path / "o.npy")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "model folder does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr
