"""bench/peers.py: a bench's `ratio` is against the fastest peer within our tolerance."""

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "bench"))

from peers import Row, at_least, at_most, fastest_within, ratio_lines  # noqa: E402

PEERS = [
    Row("st fp32", 10.0, 1.0),
    Row("st bf16", 30.0, 0.9990),  # fastest, but outside a float32 bound
    Row("onnxruntime fp32", 12.0, 0.99999),
    Row("broken", None, None, "unavailable: no module"),
]


def test_the_fastest_peer_within_the_bound_is_chosen():
    assert fastest_within(PEERS, at_least(0.9999)).name == "onnxruntime fp32"
    assert fastest_within(PEERS, at_least(0.998)).name == "st bf16"
    lines = ratio_lines(Row("ours", 24.0, 1.0), PEERS, at_least(0.9999), "min cosine >= 0.9999")
    assert lines[0].startswith("ratio against onnxruntime fp32")
    assert lines[-1] == "ratio 2.000"


def test_differences_are_bounded_from_above_and_no_peer_gives_nan():
    rows = [Row("hf fp32", 800.0, 0.0, agreement=1.0), Row("hf bf16", 2000.0, 0.2, agreement=0.8)]
    assert fastest_within(rows, at_most(0.1)).name == "hf fp32"
    assert fastest_within(rows, at_most(0.25)).name == "hf bf16"
    assert fastest_within(rows, at_most(0.25, min_agreement=0.9)).name == "hf fp32"
    assert fastest_within(rows[1:], at_most(0.1)) is None
    assert ratio_lines(Row("ours", 1.0, 0.0), rows[1:], at_most(0.1), "x")[-1] == "ratio nan"


@pytest.mark.slow
def test_the_onnxruntime_encoding_peer_matches_sentence_transformers(tmp_path):
    """bench/encode.py's onnxruntime side (backend="onnx" or its torch.onnx fallback)
    embeds like sentence-transformers fp32, padding and a length unseen at export included."""
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from encode import onnx_peer
    from gecko_jax import assets

    folder = str(assets.minilm_dir())
    texts = ["a much longer sentence about the weather in London on a rainy day", "short",
             "the cat sat on the mat " * 40]
    ort_model, note = onnx_peer(folder, str(tmp_path), 128)
    ref = SentenceTransformer(folder, device="cpu")
    ref.max_seq_length = 128
    got = ort_model.encode(texts, normalize_embeddings=True)
    want = ref.encode(texts, normalize_embeddings=True)
    assert np.sum(got * want, axis=1).min() > 0.99999, note
