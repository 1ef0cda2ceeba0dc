"""Paths as pods use them: the same trainer / export / reader code on local paths and on
an fsspec `memory://` filesystem (the object-store stand-in; gecko_jax/paths.py).

orbax cannot write memory:// (its arrays go through tensorstore, whose kvstores orbax
maps are local files and gs://), so the memory:// run keeps its checkpoints in a
local folder (train.checkpoint_dir); everything else of the run lives in memory://.
"""

import json
import uuid

import numpy as np
import pytest
from safetensors.numpy import load as load_safetensors

from gecko_jax import gin_files, paths, textio
from gecko_jax.data import formatting, sources, training_records
from gecko_jax.data.batching import StepIndexedBatches
from gecko_jax.errors import InputError
from gecko_jax.tokenization import pad_batch
from tests.training.conftest import tiny_model_fn


def _memory_dir() -> str:
    return f"memory://gecko-test-{uuid.uuid4().hex[:8]}"


def test_readers_and_writers_on_memory_uri(tmp_path):
    root = _memory_dir()
    # JSONL: errors name the URI and the line.
    bad = paths.as_path(f"{root}/data/bad.jsonl")
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_text('{"text": "a"}\n\nnot json\n')
    with pytest.raises(InputError, match=rf"{root}/data/bad.jsonl:3: not valid JSON"):
        list(textio.read_jsonl(bad))
    with pytest.raises(InputError, match="no such JSONL file"):
        list(textio.read_jsonl(f"{root}/missing.jsonl"))
    # Atomic JSON write: straight to the object, read back.
    textio.atomic_write_json(f"{root}/out/x.json", {"b": 1, "a": [2]})
    assert json.loads(paths.as_path(f"{root}/out/x.json").read_text()) == {"a": [2], "b": 1}
    assert textio.remove_partials(f"{root}/out") == 0
    # FRet records round trip, the same on a local file.
    recs = training_records.wikipedia_section_records(sources.read_wikipedia())[:5]
    for target in (f"{root}/records.jsonl", tmp_path / "records.jsonl"):
        assert training_records.write_records(target, recs) == 5
        assert list(training_records.read_records(target)) == recs
    # A gin file on memory:// that includes another one there.
    paths.as_path(f"{root}/base.gin").write_text("train.batch_size = 7\n")
    paths.as_path(f"{root}/run.gin").write_text(
        f"include '{root}/base.gin'\ntrain.num_steps = 3\n")
    from gecko_jax.training import trainer  # noqa: F401  (registers train)
    import gin

    gin_files.parse([f"{root}/run.gin"], [])
    assert gin.query_parameter("train.batch_size") == 7
    assert gin.query_parameter("train.num_steps") == 3
    gin.clear_config()


def _data_fn(jsonl):
    """Tokenised FRet records read from `jsonl` (local or URI) through training_records."""
    def data_fn(tokenizer, feature_lengths, batch_size, seed, process_index, process_count):
        examples = [formatting.from_record(r) for r in training_records.read_records(jsonl)]
        texts = dict(zip(("query", "positive", "negative"),
                         zip(*[formatting.format_texts(e) for e in examples])))
        cols = {}
        for name, length in feature_lengths.items():
            ids, mask = pad_batch(tokenizer.encode(list(texts[name]), length), length,
                                  tokenizer.pad_id)
            cols[f"{name}_ids"], cols[f"{name}_mask"] = (np.asarray(ids, np.int32),
                                                         np.asarray(mask, np.int32))
        return StepIndexedBatches(cols, batch_size, seed=seed, process_index=process_index,
                                  process_count=process_count)
    return data_fn


def _train(model_dir, jsonl, checkpoint_dir=None):
    from gecko_jax.training import trainer

    return trainer.train(
        str(model_dir), model_fn=tiny_model_fn(), data_fn=_data_fn(str(jsonl)),
        feature_lengths={"query": 8, "positive": 16, "negative": 16}, batch_size=8,
        num_steps=2, checkpoint_every=1, log_every=1, progress=False,
        checkpoint_dir=None if checkpoint_dir is None else str(checkpoint_dir))


def test_train_export_and_load_on_memory_uri_equal_local(tmp_path, wiki_records):
    from gecko_jax.models.weights import load_dual_encoder

    root = _memory_dir()
    local_jsonl = tmp_path / "pairs.jsonl"
    training_records.write_records(local_jsonl, wiki_records[:32])
    training_records.write_records(f"{root}/data/pairs.jsonl", wiki_records[:32])

    local = _train(tmp_path / "run", local_jsonl)
    remote = _train(f"{root}/run", f"{root}/data/pairs.jsonl", tmp_path / "remote_ckpt")

    assert remote["losses"] == local["losses"]
    assert remote["export"] == f"{root}/run/export"
    run = paths.as_path(f"{root}/run")
    for name in ("config.gin", "train_summary.json", "export/gecko_config.json",
                 "export/modules.json", "export/tokenizer.json"):
        assert (run / name).is_file(), name
    assert [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()] \
        == [1, 2]
    assert sorted(p.name for p in (tmp_path / "remote_ckpt").iterdir()) == ["1", "2"]
    # The exported weights are the same bytes' worth of tensors as the local export.
    ours = load_safetensors((run / "export" / "model.safetensors").read_bytes())
    ref = load_safetensors((tmp_path / "run" / "export" / "model.safetensors").read_bytes())
    assert ours.keys() == ref.keys()
    assert all(np.array_equal(ours[k], ref[k]) for k in ref)
    # ... and the memory:// export loads back (through a local copy).
    model, _, meta = load_dual_encoder(f"{root}/run/export")
    assert meta.source == f"{root}/run/export" and meta.prompt_format == "gecko"
    emb = np.asarray(model.backbone.word_embeddings.embedding[...])
    np.testing.assert_array_equal(emb, ref["embeddings.word_embeddings.weight"])


def test_publish_folder_local_rename_and_uri_upload_marker_last(tmp_path):
    import fsspec

    def staged(name):
        folder = tmp_path / name
        (folder / "1_Pooling").mkdir(parents=True)
        (folder / "1_Pooling" / "config.json").write_text("{}")
        (folder / paths.COMPLETE_MARKER).write_text('{"x": 1}')
        (folder / "z.txt").write_text("z")
        return folder

    local = paths.publish_folder(staged("a"), tmp_path / "out")
    assert sorted(p.name for p in local.iterdir()) == ["1_Pooling", "gecko_config.json", "z.txt"]
    assert not (tmp_path / "a").exists()
    root = _memory_dir()
    remote = paths.publish_folder(staged("b"), f"{root}/out")
    keys = [k for k in fsspec.filesystem("memory").store if k.startswith(f"/{root[9:]}/out/")]
    assert [k.rsplit("/out/", 1)[1] for k in keys] == ["1_Pooling/config.json", "z.txt",
                                                       "gecko_config.json"]
    assert str(remote) == f"{root}/out" and not (tmp_path / "b").exists()
    back = paths.local_folder(f"{root}/out")
    assert (back / "1_Pooling" / "config.json").read_text() == "{}"
    # A local atomic write leaves no temporary file behind.
    paths.write_bytes_atomic(tmp_path / "w" / "f.bin", b"x")
    assert [p.name for p in (tmp_path / "w").iterdir()] == ["f.bin"]
