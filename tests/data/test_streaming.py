"""The streaming input path: seqio Tasks over sharded FRet files, batched tokenisation,
per-host shards, mixture rates, the checkpointed iterator position, bad input."""

import collections
import dataclasses
import json
import re

import numpy as np
import pytest
import seqio
import tensorflow as tf
import tokenizers

from gecko_jax import assets, unified_format
from gecko_jax.data import (mixtures, sources, stream_batches, streaming, tasks,
                            training_records)
from gecko_jax.data.feature_converters import DualEncoderFeatureConverter, task_feature_lengths
from gecko_jax.errors import GeckoError

LENGTHS = {"query": 16, "positive": 32, "negative": 32}


@pytest.fixture(scope="module")
def records():
    """Real Wikipedia section pairs, each query made unique (rows are then identifiable)."""
    recs = training_records.wikipedia_section_records(sources.read_wikipedia())[:480]
    return [dataclasses.replace(r, query=f"{r.query} ({i})") for i, r in enumerate(recs)]


def _shards(folder, recs, n):
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"records-{i:05d}-of-{n:05d}.jsonl" for i in range(n)]
    for i, p in enumerate(paths):
        training_records.write_records(p, recs[i::n])
    return paths


def _rows(batches) -> list[tuple]:
    """Every row of model-feature batches as one hashable tuple."""
    out = []
    for b in batches:
        keys = sorted(b)
        for i in range(len(b[keys[0]])):
            out.append(tuple(np.concatenate([np.atleast_1d(b[k][i]) for k in keys]).tolist()))
    return out


def _one_epoch(name, shard=None) -> list[tuple]:
    ds = seqio.get_mixture_or_task(name).get_dataset(
        sequence_length=LENGTHS, split="train", shuffle=False, num_epochs=1, shard_info=shard,
        use_cached=False, try_in_mem_cache=False)
    ds = DualEncoderFeatureConverter()(ds, task_feature_lengths(LENGTHS))
    return _rows(ds.batch(64).as_numpy_iterator())


def test_converter_is_seqios_own_call():
    assert DualEncoderFeatureConverter.__call__ is seqio.FeatureConverter.__call__


def test_batched_tokenisation_equals_hf_tokenizers_on_real_texts():
    texts = [unified_format.QUERY_TEMPLATE.format(task="search result", text=a.title)
             for a in sources.read_wikipedia()[:40]]
    texts += [a.body[:1500] for a in sources.read_bbc_news(dedup=True)[:100]]   # > 128 tokens
    texts += ["Zürich — naïve café, 東京 and emoji 🙂", "", "  spaces  "]
    vocab = tasks.vocabulary(str(assets.minilm_dir()))
    got = vocab.encode_tf(tf.constant(texts))
    hf = tokenizers.Tokenizer.from_file(str(assets.minilm_dir() / "tokenizer.json"))
    hf.no_padding()                  # the file pads / truncates to 128; ids are unpadded
    hf.no_truncation()
    want = [e.ids for e in hf.encode_batch(texts)]
    assert got.to_list() == want
    from transformers import AutoTokenizer      # what sentence-transformers users run

    st = AutoTokenizer.from_pretrained(str(assets.minilm_dir()))
    assert st(texts)["input_ids"] == want
    assert vocab.encode_tf(tf.constant(texts[3])).numpy().tolist() == want[3]


def test_stream_holds_exactly_the_in_memory_rows(tmp_path, records):
    files = _shards(tmp_path / "jsonl", records, 3)
    streaming.register_streaming_task("t_stream_rows", files, assets.minilm_dir())
    tasks.register_jsonl_task("t_memory_rows", {"train": files}, assets.minilm_dir())
    mem = tasks.load_examples("t_memory_rows", "train", LENGTHS)
    assert sorted(_one_epoch("t_stream_rows")) == sorted(_rows([mem]))


def test_tfrecord_shards_give_the_jsonl_rows(tmp_path, records):
    from gecko_jax.data.fret_records import TF_FEATURES

    recs = records[:96]
    files = _shards(tmp_path / "jsonl", recs, 2)
    tfr = []
    for i, path in enumerate(files):
        tfr.append(tmp_path / f"records-{i:05d}-of-00002.tfrecord")
        with tf.io.TFRecordWriter(str(tfr[-1])) as w:
            for rec in training_records.read_records(path):
                neg = rec.negative or training_records.Document(text="")
                fields = dict(id=rec.id, task=rec.task, query=rec.query, seed_passage_id="",
                              positive_title=rec.positive.title, positive_text=rec.positive.text,
                              negative_title=neg.title, negative_text=neg.text)
                feats = {k: tf.train.Feature(bytes_list=tf.train.BytesList(
                    value=[fields[k].encode()])) for k in TF_FEATURES}
                w.write(tf.train.Example(features=tf.train.Features(feature=feats))
                        .SerializeToString())
    streaming.register_streaming_task("t_jsonl", files, assets.minilm_dir())
    streaming.register_streaming_task("t_tfrecord", tfr, assets.minilm_dir())
    assert sorted(_one_epoch("t_tfrecord")) == sorted(_one_epoch("t_jsonl"))


@pytest.mark.parametrize("num_files", [8, 1])      # shard by file / by element
def test_two_hosts_read_disjoint_halves_of_one_host(tmp_path, records, num_files):
    files = _shards(tmp_path / "jsonl", records[:240], num_files)
    name = f"t_hosts_{num_files}"       # a task name names one file list
    streaming.register_streaming_task(name, files, assets.minilm_dir())
    one = _one_epoch(name)
    halves = [_one_epoch(name, seqio.ShardInfo(i, 2)) for i in range(2)]
    assert not set(halves[0]) & set(halves[1])
    assert sorted(halves[0] + halves[1]) == sorted(one)
    assert abs(len(halves[0]) - len(halves[1])) <= 30 * (num_files == 8) + 1
    # The training streams: each host's first epoch of batches stays in its half.
    for i in range(2):
        ds = stream_batches.host_dataset(name, feature_lengths=LENGTHS, batch_size=16,
                                         seed=0, process_index=i, process_count=2)
        rows = _rows(ds.take(len(halves[i]) // 8).as_numpy_iterator())
        assert set(rows) <= set(halves[i])


def _mixture(tmp_path, records, rates):
    names = []
    for j, task in enumerate(rates):
        recs = [dataclasses.replace(r, task=task) for r in records[j * 100:(j + 1) * 100]]
        files = _shards(tmp_path / f"task{j}", recs, 2)
        names.append(f"t_mix_{j}_{tmp_path.name}")      # a task name names one file list
        streaming.register_streaming_task(names[-1], files, assets.minilm_dir())
    mixture = mixtures.register_mixture(f"t_mix_{tmp_path.name}",
                                        dict(zip(names, rates.values()))).name
    vocab = tasks.vocabulary(str(assets.minilm_dir()))
    # The task word sits at query_ids[:, 3]: [CLS] task : <word> ...
    word = {vocab.encode(f"task: {t}")[3]: j for j, t in enumerate(rates)}
    return np.array(list(rates.values())) / sum(rates.values()), word, mixture


def _within_4_sigma(counts, n, p):
    sigma = np.sqrt(n * p * (1 - p))
    assert np.all(np.abs(counts - n * p) <= 4 * sigma), (counts, n * p, sigma)


# 100 batches of 8: the 4-sigma bounds are about +-20% of each task's expected count.
@pytest.mark.parametrize("steps", [100, pytest.param(1000, marks=pytest.mark.slow)])
def test_mixture_rates_and_single_task_batches(tmp_path, records, steps):
    p, word, mixture = _mixture(tmp_path, records, {"alpha": 5.0, "beta": 3.0, "gamma": 2.0})
    b = 8
    ds = stream_batches.host_dataset(mixture, feature_lengths=LENGTHS, batch_size=b, seed=1)
    rows = np.concatenate([x["query_ids"][:, 3] for x in ds.take(steps).as_numpy_iterator()])
    _within_4_sigma(np.bincount([word[w] for w in rows], minlength=3), steps * b, p)

    per_host = []
    for i in range(2):
        ds = stream_batches.host_dataset(mixture, feature_lengths=LENGTHS, batch_size=b,
                                         seed=1, process_index=i, process_count=2,
                                         single_task_batches=True)
        per_host.append([{word[w] for w in x["query_ids"][:, 3]}
                         for x in ds.take(steps).as_numpy_iterator()])
    assert all(len(s) == 1 for h in per_host for s in h)          # one task per batch
    assert per_host[0] == per_host[1]                             # the same task on every host
    batch_tasks = [s.pop() for s in per_host[0]]
    _within_4_sigma(np.bincount(batch_tasks, minlength=3), steps, p)


def test_position_restores_the_exact_stream(tmp_path, records):
    files = _shards(tmp_path / "jsonl", records[:200], 4)
    streaming.register_streaming_task("t_pos", files, assets.minilm_dir())
    kw = dict(feature_lengths=LENGTHS, batch_size=16, seed=3, process_index=1, process_count=2,
              files=files)
    a = stream_batches.stream_batches("t_pos", **kw)
    for s in range(7):
        a.batch(s)
    a.save_position(tmp_path / "pos", 7)
    want = [a.batch(s) for s in range(7, 20)]       # crosses an epoch of this host's half
    b = stream_batches.stream_batches("t_pos", **kw)
    b.restore_position(tmp_path / "pos", 7)
    got = [b.batch(s) for s in range(7, 20)]
    assert all(np.array_equal(w[k], g[k]) for w, g in zip(want, got) for k in w)
    assert sorted(p.name for p in (tmp_path / "pos" / "step_0000000007").iterdir()) == [
        "process_00001-of-00002"]
    with pytest.raises(GeckoError, match="no data position for process 0 of 2"):
        stream_batches.stream_batches("t_pos", **{**kw, "process_index": 0}).restore_position(
            tmp_path / "pos", 7)
    with pytest.raises(GeckoError, match="read in order"):
        b.batch(3)
    # A file changed after the save: its offsets and read-ahead rows no longer match.
    with open(files[2], "a") as f:
        f.write(open(files[2]).readline())
    with pytest.raises(stream_batches.DataChanged,
                       match=rf"{re.escape(str(files[2]))}: size \d+ -> \d+ bytes changed since "
                             "the data position of step 7"):
        stream_batches.stream_batches("t_pos", **kw).restore_position(tmp_path / "pos", 7)


@pytest.mark.parametrize("bad, message", [
    ("{not json", r"records-00003-of-00008\.jsonl:5: not valid JSON"),
    (json.dumps({"positive": {"text": "x"}}), r"records-00003-of-00008\.jsonl:5: record has no 'query'"),
])
def test_bad_line_in_shard_3_of_8_names_file_and_line(tmp_path, records, bad, message):
    files = _shards(tmp_path / "jsonl", records[:160], 8)
    lines = files[3].read_text().splitlines()
    lines[4] = bad
    files[3].write_text("\n".join(lines) + "\n")
    name = f"t_bad_{tmp_path.name}"     # a task name names one file list
    streaming.register_streaming_task(name, files, assets.minilm_dir())
    batches = stream_batches.stream_batches(name, feature_lengths=LENGTHS, batch_size=8,
                                            seed=0)
    with pytest.raises(GeckoError, match=message):
        for s in range(100):
            batches.batch(s)


def _held_out_shards(tmp_path, records, bbc_articles):
    """Shards where some records carry held-out BBC texts (as query, positive or negative)
    and the others do not (Wikipedia pairs and training-pool BBC bodies): the expected
    kept query texts and all queries."""
    from gecko_jax.data import splits

    held_ids = splits.bbc_held_out_ids(bbc_articles)
    held = [a for a in bbc_articles if a.id in held_ids][:12]
    train_pool = splits.bbc_training_articles(bbc_articles)[:4]
    Doc, Rec = training_records.Document, training_records.FRetRecord
    keep = list(records[:40]) + [
        Rec(f"pool{i}", "search result", f"about {a.category} ({i})", Doc(a.body, a.headline))
        for i, a in enumerate(train_pool)]
    w = records[40:52]
    drop = (
        [Rec(f"q{i}", "search result", held[i].headline, w[i].positive) for i in range(4)]
        + [Rec(f"p{i}", "search result", f"{w[i].query} (p)", Doc(held[i].body))
           for i in range(4, 8)]
        + [Rec(f"n{i}", "search result", f"{w[i].query} (n)", w[i].positive,
               Doc(held[i].body[:400], "a title")) for i in range(8, 12)])
    recs = [r for pair in zip(keep, drop + [None] * len(keep)) for r in pair if r]
    files = _shards(tmp_path / "held", recs, 3)
    return files, [r.query for r in keep], [r.query for r in drop]


def test_stream_drops_records_touching_held_out_bbc_texts(tmp_path, records, bbc_articles):
    from gecko_jax.data import mixtures

    files, kept, dropped = _held_out_shards(tmp_path, records, bbc_articles)
    ids = lambda qs: set(tasks.text_id(tf.constant(qs)).numpy().tolist())   # noqa: E731
    for on in (True, False):
        task = streaming.register_streaming_task(f"t_held_{on}", files, assets.minilm_dir(),
                                                 exclude_eval_test=on)
        ds = task.get_dataset(
            sequence_length=LENGTHS, split="train", shuffle=False, num_epochs=1,
            use_cached=False, try_in_mem_cache=False)
        got = [int(x["query_text_id"]) for x in ds.as_numpy_iterator()]
        assert len(got) == len(set(got))
        assert set(got) == (ids(kept) if on else ids(kept + dropped))
    # The same records as the in-memory paths' exclusion (one definition of the split):
    # the mixture source (which `train.streaming = False` reads) and the JSONL task.
    assert sorted(ex.query for ex in mixtures.jsonl_examples(files)) == sorted(kept)
    tasks.register_jsonl_task("t_held_memory", {"train": files}, assets.minilm_dir())
    mem = tasks.load_examples("t_held_memory", "train", LENGTHS)
    assert set(mem["query_text_id"].tolist()) == ids(kept)


def test_streaming_mixture_data_mixes_file_sets_and_memory_sources(tmp_path, records):
    from gecko_jax.data import mixtures, stream_mixtures
    from gecko_jax.tokenization import Tokenizer

    sets = {}
    for j, task in enumerate(("alpha", "beta")):
        recs = [dataclasses.replace(r, task=task) for r in records[j * 100:(j + 1) * 100]]
        sets[f"t_sm_{task}"] = _shards(tmp_path / task, recs, 2)
    sets["t_sm_alpha"] = str(tmp_path / "alpha" / "records-*-of-00002.jsonl")     # a glob
    rates = {"t_sm_alpha": 2.0, "t_sm_beta": 1.0, "t_sm_bbc": 1.0}
    kw = dict(tokenizer=Tokenizer.from_folder(assets.minilm_dir()), feature_lengths=LENGTHS,
              batch_size=8, seed=0, mixture="t_sm", file_sets=sets, rates=rates,
              task_sources={"t_sm_bbc": lambda: mixtures.bbc_classification(limit=64)})
    vocab = tasks.vocabulary(str(assets.minilm_dir()))
    word = {vocab.encode(f"task: {t}")[3]: t for t in ("alpha", "beta", mixtures.BBC_TASK)}
    batches = stream_mixtures.streaming_mixture_data(**kw)
    assert len(batches.files) == 4
    seen = collections.Counter(word[w] for s in range(30)
                               for w in batches.batch(s)["query_ids"][:, 3])
    assert set(seen) == set(word.values()), seen
    single = stream_mixtures.streaming_mixture_data(**kw, single_task_batches=True)
    assert all(len({word[w] for w in single.batch(s)["query_ids"][:, 3]}) == 1
               for s in range(10))
    with pytest.raises(GeckoError, match="matches no file"):
        stream_mixtures.streaming_mixture_data(**{**kw, "file_sets": {
            **sets, "t_sm_beta": str(tmp_path / "nothing-*.jsonl")}})
