"""`gecko distill`: a tiny real run end to end, stage reuse, and changed-config handling."""

import dataclasses
import json
import pathlib

import pytest

from gecko_jax.recipes import distill, distill_fret, distill_stages, runner
from gecko_jax.errors import GeckoError

# Every stage for real (SmolLM2 teacher, MiniLM training, BBC eval) at toy scale.
TINY = distill.DistillConfig(fret_corpus_size=24, fret_limit=2, fret_neighbors=2,
                       fret_embed_max_length=32, prefinetune_steps=2, finetune_steps=2,
                       batch_size=8, query_length=32, doc_length=32, eval_limit=40,
                       eval_max_length=32, dims=(384, 128),
                       # 2 seed passages in a 24-passage corpus: the default round trip
                       # (top 1% -> top 1) and QL floor could leave no record; the
                       # filters have their own tests (tests/fret/test_filters.py).
                       gin_bindings=("FilterConfig.round_trip_fraction = None",
                                     "FilterConfig.ql_floor = None",
                                     # Training on one of the suite's 8 emulated devices:
                                     # a data=8 mesh holds 8 replicas of MiniLM's weights,
                                     # gradients and AdamW moments (~4 GB more, twice the
                                     # time); the sharded trainer has its own tests
                                     # (tests/training).
                                     "MeshSpec.data = 1"))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("distill")
    first = distill.distill(out, TINY, progress=False)
    return out, first


def test_report_covers_every_task_dim_and_model(tiny_run):
    out, first = tiny_run
    assert first["ran"] == list(distill_stages.STAGES)
    results = first["results"]
    assert set(results) == {"minilm (base)", "minilm (base), Gecko prompts", "pre-finetuned",
                            "distilled"}
    for model in results.values():
        assert set(model) == set(distill.TASKS)
        for task in distill.TASKS:
            assert set(model[task]) == {384, 128}
    text = first["report"].read_text()
    table = text.split("## Base vs distilled")[1].split("## Every stage")[0]
    for task in distill.TASKS:
        for dim in (384, 128):
            assert f"| {task} |" in table and f"| {dim} |" in table
    rows = [line for line in table.splitlines() if line.startswith("| bbc_")]
    assert len(rows) == len(distill.TASKS) * 2
    # Every score and change carries its bootstrap interval and a noise label.
    assert all(line.count("[") == 3 and "[n/a]" not in line
               and line.endswith(("| significant |", "| not significant |")) for line in rows)
    # Every stage: base raw / base Gecko / pre-finetuned / fine-tuned, three changes.
    stages = text.split("## Every stage")[1].split("Full metrics")[0]
    rows = [line for line in stages.splitlines() if line.startswith("| bbc_")]
    assert len(rows) == len(distill.TASKS) * 2
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert len(cells) == 10 and all("[" in c for c in cells[3:])
        assert all("significant" in c for c in cells[7:])
    info = json.loads((out / "eval_base_gecko" / "results.json").read_text())["info"]
    assert info["format"] == "gecko"
    # The report says which articles were held out and what each task scored.
    assert ("## Evaluation and validation split" in text
            and "- bbc_retrieval: 40 held-out articles" in text
            and "defaults were chosen on the validation tasks" in text)
    assert "leaves the prompt's tokens out (include_prompt=False)" in text
    split = json.loads((out / "report.json").read_text())["split"]
    assert len(split["scored"]["bbc_clustering"]) == 40
    assert set(split["scored"]["bbc_retrieval"]) <= set(split["held_out"])
    for stage in distill_stages.STAGES:  # each stage's wall time and peak RSS are stated
        marker = first["stages"][stage]
        assert marker["status"] == "done" and marker["wall_s"] >= 0
        assert 0.3 < marker["peak_rss_gib"] < 24
        assert f"| {stage} | {marker['wall_s']:.0f} | {marker['peak_rss_gib']:.2f} | ran |" in text
    # Training stages checkpoint every fifth of their steps, at least 10 apart.
    assert "train.checkpoint_every = 10" in (out / "prefinetune" / "operative_config.gin").read_text()
    for png in ("eval/scores_by_task.png", "eval/score_vs_dim.png", "stage_times.png"):
        assert (out / png).stat().st_size > 1000
    # The exported model is a full model folder and encodes with gecko's Encoder.
    from gecko_jax.encode import Encoder

    enc = Encoder.from_pretrained(out / "model", max_length=32)
    # MiniLM trains (and is exported) on raw texts by default.
    assert enc.meta.prompt_format == "raw" and "stage in raw texts." in text
    assert "mixture_data.prompt_format = 'raw'" in \
        (out / "finetune" / "operative_config.gin").read_text()
    assert enc.encode(["a test sentence"]).shape == (1, 384)
    fret = json.loads((out / "fret" / "stage.json").read_text())["summary"]
    assert fret["passages"] == 2


def test_second_run_reuses_every_stage(tiny_run):
    out, first = tiny_run
    mtimes = {s: (out / s / runner.MARKER).stat().st_mtime_ns for s in distill_stages.STAGES}
    ckpts = sorted(p.name for p in (out / "finetune" / "checkpoints").iterdir())
    second = distill.distill(out, TINY, progress=False)
    assert second["ran"] == []
    assert {s: (out / s / runner.MARKER).stat().st_mtime_ns for s in distill_stages.STAGES} == mtimes
    assert sorted(p.name for p in (out / "finetune" / "checkpoints").iterdir()) == ckpts
    assert second["results"] == first["results"]
    text = second["report"].read_text()
    for stage in distill_stages.STAGES:
        m = first["stages"][stage]
        assert f"| {stage} | {m['wall_s']:.0f} | {m['peak_rss_gib']:.2f} | reused |" in text


# Slow tier: tests/recipes/test_runner.py refuses and redoes a changed stage (naming its
# keys) in the default suite, and test_stage_configs_chain_through_inputs below checks
# which distill stages a change reaches; this reruns the tiny run's evaluations.
@pytest.mark.slow
def test_changed_config_is_refused_then_redone(tiny_run, tmp_path):
    import shutil

    out, first = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    changed = distill.DistillConfig(**{**TINY.__dict__, "eval_limit": 30})
    with pytest.raises(GeckoError, match=r"eval_base: limit: 40 -> 30"):
        distill.distill(copy, changed, progress=False)
    second = distill.distill(copy, changed, redo=True, progress=False)
    # Training stages reused; every evaluation reruns.
    assert second["ran"] == [s for s in distill_stages.STAGES if s.startswith("eval_")]
    assert json.loads((copy / "eval_base" / "stage.json").read_text())["config"]["limit"] == 30


def test_stage_configs_chain_through_inputs():
    """A FRet change reaches fine-tuning and the distilled eval, not the base eval."""
    a = distill_stages.stage_configs(TINY)
    b = distill_stages.stage_configs(distill.DistillConfig(**{**TINY.__dict__, "fret_limit": 3}))
    assert [s for s in distill_stages.STAGES if a[s] != b[s]] == ["fret", "finetune", "eval_distilled"]
    c = distill_stages.stage_configs(distill.DistillConfig(
        **{**TINY.__dict__, "gin_bindings": TINY.gin_bindings + ("RelabelConfig.rrf_k = 60.0",)}))
    assert c["fret"]["gin_bindings"] == sorted(a["fret"]["gin_bindings"]
                                               + ["RelabelConfig.rrf_k = 60.0"])
    assert c["prefinetune"] == a["prefinetune"]
    assert a["prefinetune"]["gin_bindings"] == ["MeshSpec.data = 1"]


def test_seeds_repeat_every_trained_stage_and_its_evaluation():
    """Under seeds > 1 the ablation arms and the scaling curve rerun per seed, each on its
    own seed's pre-finetuned model; FRet and the base evaluations are shared."""
    cfg = dataclasses.replace(TINY, seeds=2, ablation=True, fret_scaling=(1, 3))
    names = cfg.stages
    first = distill_stages.STAGES + distill_stages.ABLATION_STAGES + (
        "finetune_fret1", "eval_fret1", "finetune_fret3", "eval_fret3")
    assert names == first + tuple(f"{s}_s1" for s in first if s not in distill_stages.UNSEEDED) + (
        "soup", "eval_soup")
    assert {"fret_s1", "eval_base_s1", "eval_base_gecko_s1"}.isdisjoint(names)
    own = distill_stages.stage_configs(cfg)
    assert own["finetune_fret3"] == {**own["finetune"], "fret": "first:3"}
    assert own["finetune_no_fret_s1"]["seed"] == 1
    assert set(own["finetune_no_fret_s1"]["inputs"]) == {"prefinetune_s1"}
    assert set(own["finetune_fret1_s1"]["inputs"]) == {"fret", "prefinetune_s1"}
    assert own["eval_fret1_s1"]["model"] == "finetune_fret1_s1"
    assert own["prefinetune_long_s1"] == {**own["prefinetune_long"], "seed": 1}
    assert own["soup"]["models"] == ["finetune", "finetune_s1"]
    assert set(own["soup"]["inputs"]) == {"finetune", "finetune_s1"}
    # Seed 0's configs are those of a one-seed run: finished stages are reused.
    one = distill_stages.stage_configs(dataclasses.replace(cfg, seeds=1))
    assert all(own[s] == one[s] for s in one)
    assert [distill_stages.eval_model_name(s) for s in
            ("eval_fret3", "eval_fret3_s1", "eval_no_fret_s1", "eval_distilled")] == [
        "FRet, first 3 records", "FRet, first 3 records (seed 1)", "no FRet (seed 1)",
        "distilled"]
    assert distill_stages.seed_of("finetune_seed_positive") == 0
    assert distill_stages.seed_of("eval_seed_positive_s2") == 2


def test_marker_mismatch_without_output_is_refused(tmp_path):
    conf = distill_stages.stage_configs(TINY)
    (tmp_path / "prefinetune").mkdir()
    (tmp_path / "prefinetune" / runner.MARKER).write_text(json.dumps(
        {"status": "running", "config": {**conf["prefinetune"], "steps": 99}}))
    with pytest.raises(GeckoError, match="steps: 99 -> 2"):
        runner.check_stages(tmp_path, conf, redo=False)
    assert runner.check_stages(tmp_path, conf, redo=True) == list(distill_stages.STAGES[1:])
    assert not (tmp_path / "prefinetune").exists()


def test_fret_corpus_takes_an_equal_share_of_each_source_and_no_evaluated_article(tmp_path):
    from gecko_jax.data import sources, splits
    from gecko_jax.textio import read_jsonl

    path = distill_fret.fret_corpus(tmp_path, 64, ("wikipedia", "bbc"))
    rows = [obj for _, obj in read_jsonl(path, ("id", "title", "text"))]
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)) == 64
    assert sum(i.startswith("wiki:") for i in ids) == sum(i.startswith("bbc:") for i in ids) == 32
    assert all(len(r["text"].split()) <= distill_fret.FRET_PASSAGE_WORDS for r in rows)
    articles = sources.read_bbc_news(dedup=True)
    evaluated = splits.bbc_held_out_ids(articles) | splits.bbc_validation_ids(articles)
    assert not {i.removeprefix("bbc:") for i in ids if i.startswith("bbc:")} & evaluated
    val_titles = splits.wikipedia_validation_titles(sources.read_wikipedia())
    assert not {r["title"] for r in rows if r["id"].startswith("wiki:")} & val_titles
    with pytest.raises(GeckoError, match="expected some of"):
        distill_fret.fret_corpus(tmp_path, 8, ("wikipedia", "c4"))
    # The sources are part of the FRet stage's config: changing them reruns FRet.
    mixed = dataclasses.replace(TINY, fret_corpus=("wikipedia", "bbc"))
    assert distill_stages.stage_configs(mixed)["fret"] != distill_stages.stage_configs(TINY)["fret"]


def test_cli_registers_distill():
    from gecko_jax.cli import build_parser
    from gecko_jax.commands.distill import config_from_args

    args = build_parser().parse_args(["distill", "--output", "x", "--steps", "5",
                                      "--eval-limit", "0", "--dims", "128,384"])
    cfg = config_from_args(args)
    assert (cfg.prefinetune_steps, cfg.finetune_steps, cfg.eval_limit, cfg.dims) == \
        (5, 5, None, (384, 128))
    assert pathlib.Path(args.output).name == "x"
    assert cfg.fret_corpus == ("wikipedia",)
    mixed = build_parser().parse_args(["distill", "--output", "x", "--fret-corpus", "bbc,wikipedia"])
    assert config_from_args(mixed).fret_corpus == ("bbc", "wikipedia")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["distill", "--output", "x", "--fret-corpus", "c4"])
    # Fine-tuning runs at its own learning rate; the stage configs carry each one.
    own = distill_stages.stage_configs(dataclasses.replace(cfg, ablation=True))
    assert own["prefinetune"]["learning_rate"] == cfg.learning_rate == 3e-5
    assert own["finetune"]["learning_rate"] == cfg.finetune_learning_rate == 1e-5
    assert own["prefinetune_long"]["learning_rate"] == 3e-5
    one = config_from_args(build_parser().parse_args(
        ["distill", "--output", "x", "--learning-rate", "2e-5"]))
    assert distill_stages.stage_configs(one)["finetune"]["learning_rate"] == 2e-5
    # No preset: the DistillConfig defaults (but for what the flags above set).
    plain = config_from_args(build_parser().parse_args(["distill", "--output", "x"]))
    assert plain == distill.DistillConfig()


def test_start_distill_reaches_both_training_stages_and_their_identity():
    from gecko_jax.cli import build_parser
    from gecko_jax.commands.distill import config_from_args

    cfg = config_from_args(build_parser().parse_args(
        ["distill", "--output", "x", "--prompt-format", "gecko", "--start-distill", "0.5"]))
    own = distill_stages.stage_configs(cfg)
    off = distill_stages.stage_configs(dataclasses.replace(cfg, start_distill=0.0))
    for stage in ("prefinetune", "finetune"):
        assert own[stage]["start_distill"] == 0.5 and "start_distill" not in off[stage]
        assert runner.config_hash(own[stage]) != runner.config_hash(off[stage])
    assert "LossConfig.start_distill = 0.5" in distill.prefinetune_gin(own["prefinetune"])[1]
    _, bindings = distill.finetune_gin(own["finetune"], [], 0)
    assert "LossConfig.start_distill = 0.5" in bindings
    assert not any("start_distill" in b for b in distill.finetune_gin(off["finetune"], [], 0)[1])
    # LLM towers pool the prompt, so there is no prompt to strip: refused, not ignored.
    with pytest.raises(GeckoError, match="start distillation.*gemma3"):
        config_from_args(build_parser().parse_args(
            ["distill", "--output", "x", "--student", "gemma3", "--start-distill", "1"]))


def test_prompt_format_reaches_both_training_stages_and_their_identity():
    from gecko_jax.cli import build_parser
    from gecko_jax.commands.distill import config_from_args

    def parse(*flags):
        return config_from_args(build_parser().parse_args(["distill", "--output", "x", *flags]))

    raw, gecko = parse(), parse("--prompt-format", "gecko")
    assert (raw.prompt_format, gecko.prompt_format) == ("raw", "gecko")
    assert parse("--student", "gemma3").prompt_format == "gecko"
    own, plain = distill_stages.stage_configs(raw), distill_stages.stage_configs(gecko)
    for stage in ("prefinetune", "finetune"):
        assert own[stage]["prompt_format"] == "raw" and "prompt_format" not in plain[stage]
    bind = "mixture_data.prompt_format = 'raw'"
    assert bind in distill.prefinetune_gin(own["prefinetune"])[1]
    assert bind in distill.finetune_gin(own["finetune"], [], 0)[1]
    assert not any("prompt_format" in b for b in distill.finetune_gin(plain["finetune"], [], 0)[1])
    # Evaluation stages score what the exports declare: only their inputs differ.
    drop = lambda conf: {k: v for k, v in conf.items() if k != "inputs"}  # noqa: E731
    assert drop(own["eval_distilled"]) == drop(plain["eval_distilled"])
    assert own["eval_distilled"]["inputs"] != plain["eval_distilled"]["inputs"]
    with pytest.raises(GeckoError, match="add --prompt-format gecko"):
        parse("--start-distill", "1")
    with pytest.raises(GeckoError, match="prompt format"):
        dataclasses.replace(gecko, prompt_format="plain")


def test_title_body_corpora_reach_both_training_stages_and_their_identity():
    from gecko_jax.cli import build_parser
    from gecko_jax.commands.distill import config_from_args

    def parse(*flags):
        return config_from_args(build_parser().parse_args(["distill", "--output", "x", *flags]))

    both, wiki = parse(), parse("--title-body", "wikipedia")
    assert both.title_body == ("wikipedia", "bbc") and wiki.title_body == ("wikipedia",)
    own, alone = distill_stages.stage_configs(both), distill_stages.stage_configs(wiki)
    for stage in ("prefinetune", "finetune"):
        assert runner.config_hash(own[stage]) != runner.config_hash(alone[stage])
    # The gin tables hold the news pairs; leaving them out empties their optional task.
    assert "bbc_title_body.limit = 0" in distill.prefinetune_gin(alone["prefinetune"])[1]
    assert "bbc_title_body.limit = 0" in distill.finetune_gin(alone["finetune"], [], 0)[1]
    assert not any("bbc_title_body.limit" in b
                   for b in distill.prefinetune_gin(own["prefinetune"])[1]
                   + distill.finetune_gin(own["finetune"], [], 0)[1])
    assert parse("--student", "gemma3").title_body == ("wikipedia", "bbc")
    assert parse("--student", "gemma3", "--title-body", "wikipedia").title_body == \
        ("wikipedia",)
    with pytest.raises(SystemExit):
        parse("--title-body", "bbc")
    with pytest.raises(GeckoError, match="title_body"):
        dataclasses.replace(both, title_body=("c4",))


def test_reference_preset_sets_its_scale_and_flags_win():
    from gecko_jax.cli import build_parser
    from gecko_jax.commands.distill import config_from_args

    ref = config_from_args(build_parser().parse_args(
        ["distill", "--output", "x", "--preset", "reference",
         "--gin_bindings", "MeshSpec.data = 1"]))
    assert (ref.fret_limit, ref.fret_corpus_size, ref.fret_neighbors) == (1000, 0, 20)
    assert (ref.prefinetune_steps, ref.finetune_steps, ref.seeds, ref.ablation) == \
        (300, 300, 3, True)
    own = distill_stages.stage_configs(ref)
    assert own["fret"]["gin_bindings"] == ["FRetConfig.teacher_dtype = 'bfloat16'",
                                           "RelabelConfig.negative = 'rank:20'"]
    assert own["prefinetune"]["gin_bindings"] == ["MeshSpec.data = 1"]
    assert {"prefinetune_s2", "finetune_s2", "finetune_no_fret", "finetune_no_fret_s2",
            "finetune_fret125_s1", "eval_fret500_s2"} <= set(own)
    assert ref.fret_scaling == (125, 250, 500)
    off = config_from_args(build_parser().parse_args(
        ["distill", "--output", "x", "--preset", "reference", "--fret-scaling", "none"]))
    assert off.fret_scaling == () and "finetune_fret125" not in off.stages
    assert not config_from_args(build_parser().parse_args(
        ["distill", "--output", "x", "--preset", "reference", "--no-ablation"])).ablation
    with pytest.raises(SystemExit):
        build_parser().parse_args(["distill", "--output", "x", "--fret-scaling", "0,5"])
    quick = config_from_args(build_parser().parse_args(
        ["distill", "--output", "x", "--preset", "reference", "--fret-limit", "8",
         "--seeds", "1", "--steps", "4"]))
    assert (quick.fret_limit, quick.seeds, quick.prefinetune_steps, quick.fret_neighbors) == \
        (8, 1, 4, 20)
    with pytest.raises(GeckoError, match="needs --fret-records"):
        config_from_args(build_parser().parse_args(
            ["distill", "--output", "x", "--fret-records-limit", "5"]))


@pytest.mark.slow   # two or more extra training stages: minutes on 2 cores
def test_ablation_adds_three_finetunes_and_reuses_the_default_run(tiny_run, tmp_path):
    """--ablation on a finished default run: the default stages are reused, (a) no-FRet,
    (b) seed-positive and (c) no-negative fine-tunes run, and the report holds the
    Table 3 comparison."""
    import shutil

    out, first = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    cfg = distill.DistillConfig(**{**TINY.__dict__, "ablation": True})
    result = distill.distill(copy, cfg, progress=False)
    assert result["ran"] == list(distill_stages.ABLATION_STAGES)
    assert set(result["results"]) == {"minilm (base)", "minilm (base), Gecko prompts",
                                      "pre-finetuned", "distilled", "no FRet",
                                      "FRet seed positive", "FRet re-labelled, no negative",
                                      "pre-finetuned only, same steps"}
    # (d), the compute-matched control: pre-finetuning for the steps of both stages.
    long = json.loads((copy / "prefinetune_long" / runner.MARKER).read_text())
    assert long["summary"]["step"] == TINY.prefinetune_steps + TINY.finetune_steps
    ft = {s: json.loads((copy / s / runner.MARKER).read_text())["summary"]
          for s in ("finetune", "finetune_no_fret", "finetune_seed_positive",
                    "finetune_no_negative")}
    assert ft["finetune_no_fret"]["fret_records"] == 0
    assert ft["finetune_seed_positive"]["fret_records"] == ft["finetune"]["fret_records"] >= 1
    # (b)'s records: the seed passage itself as positive, no hard negative.
    corpus = {json.loads(line)["id"]: json.loads(line)
              for line in (copy / "fret" / "corpus.jsonl").read_text().splitlines()}
    for line in (copy / "finetune_seed_positive" / "seed_positive.jsonl").read_text().splitlines():
        rec = json.loads(line)
        assert rec["positive"]["text"] == corpus[rec["seed_passage_id"]]["text"]
        assert rec["negative"] is None
    # (c)'s records: the re-labelled records' positives, no hard negative.
    default = {json.loads(line)["id"]: json.loads(line)
               for f in json.loads((copy / "fret" / runner.MARKER).read_text())["summary"]["files"]
               for line in pathlib.Path(f).read_text().splitlines()}
    no_neg = [json.loads(line) for line in
              (copy / "finetune_no_negative" / "no_negative.jsonl").read_text().splitlines()]
    assert len(no_neg) == ft["finetune"]["fret_records"]
    for rec in no_neg:
        assert rec["positive"] == default[rec["id"]]["positive"] and rec["negative"] is None
    text = result["report"].read_text()
    table = text.split("## Ablation")[1].split("Full metrics")[0]
    rows = [line for line in table.splitlines() if line.startswith("| bbc_")]
    assert len(rows) == len(distill.TASKS) * 2
    assert all(line.count("significant") == 4 for line in rows)
    # A second seed and a scaling point on top: every arm reruns from seed 1's
    # pre-finetuned model; the first record alone is the curve's middle point.
    more = dataclasses.replace(cfg, seeds=2, fret_scaling=(1,))
    result = distill.distill(copy, more, progress=False)
    assert result["ran"] == ["finetune_fret1", "eval_fret1"] + [
        f"{s}_s1" for s in distill_stages.STAGES[1:] + distill_stages.ABLATION_STAGES
        + ("finetune_fret1", "eval_fret1") if s not in distill_stages.UNSEEDED] + [
        "soup", "eval_soup"]
    marker = lambda s: json.loads((copy / s / runner.MARKER).read_text())  # noqa: E731
    assert marker("finetune_fret1")["summary"]["fret_records"] == 1
    assert len((copy / "finetune_fret1" / "first_1.jsonl").read_text().splitlines()) == 1
    assert set(marker("finetune_no_fret_s1")["config"]["inputs"]) == {"prefinetune_s1"}
    ops = (copy / "finetune_no_fret_s1" / "operative_config.gin").read_text()
    assert "prefinetune_s1/export" in ops and "train.seed = 1" in ops
    text = result["report"].read_text()
    assert "(d) - (a)" in text.split("Over 2 seeds (each arm")[1]
    scaling = text.split("## Data scaling")[1]
    assert "| 0 records | 1 records |" in scaling and "(scaling.png)" in scaling
    assert (copy / "scaling.png").stat().st_size > 0
    assert "soup - each seed's fine-tuned" in text


def test_fret_records_from_a_finished_run_replace_the_teacher(tiny_run, tmp_path):
    """--fret-records: the fret stage takes a finished FRet run's records (its first N)
    instead of running the teacher; the stage's identity is the records' digest."""
    from gecko_jax.fret import record_shards

    out, _ = tiny_run
    folder = out / "fret" / "run"
    lines = [line for path in record_shards.record_paths(folder)
             for line in path.read_text().splitlines() if line.strip()]
    assert lines
    cfg = distill.DistillConfig(**{**TINY.__dict__, "fret_records": str(folder),
                                   "fret_records_limit": 1})
    conf = distill_stages.stage_configs(cfg)["fret"]
    assert conf == {"records_sha256": distill_fret.released_fret_digest(folder), "records_limit": 1}
    summary = distill_fret.take_fret_records(folder, 1, tmp_path)
    assert (tmp_path / "records.jsonl").read_text().splitlines() == lines[:1]
    assert summary["records"] == 1 and summary["files"] == [str(tmp_path / "records.jsonl")]
    assert summary["released"]["records_in_set"] == len(lines)
    # The tiny run's 24-passage corpus is not the shipped Wikipedia corpus: no seed
    # passages to fall back on, so no corpus file for the seed-positive arm.
    assert not (tmp_path / "corpus.jsonl").exists()
    with pytest.raises(GeckoError, match="cannot take"):
        distill_fret.take_fret_records(folder, len(lines) + 1, tmp_path)
    # Re-selection needs the corpus the records were drawn from.
    with pytest.raises(GeckoError, match="cannot be re-selected"):
        distill_fret.take_fret_records(folder, None, tmp_path, scorers=("ql",))
    assert distill_stages.stage_configs(dataclasses.replace(cfg, fret_scorers=("ql",)))["fret"][
        "scorers"] == ["ql"]


@pytest.mark.slow   # two or more extra training stages: minutes on 2 cores
def test_seeds_rerun_training_and_report_mean_min_max(tiny_run, tmp_path):
    """--seeds 2 on a finished default run: seed 0's stages are reused, pre-finetuning
    and fine-tuning rerun under seed 1 (a different model), and the report gives mean
    [min, max] over seeds and each change's verdict over every seed's interval."""
    import shutil

    out, _ = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    cfg = distill.DistillConfig(**{**TINY.__dict__, "seeds": 2})
    result = distill.distill(copy, cfg, progress=False)
    assert result["ran"] == ["prefinetune_s1", "finetune_s1", "eval_prefinetuned_s1",
                             "eval_distilled_s1", "soup", "eval_soup"]
    assert {"distilled (seed 1)", "pre-finetuned (seed 1)"} <= set(result["results"])
    conf = json.loads((copy / "finetune_s1" / runner.MARKER).read_text())["config"]
    assert conf["seed"] == 1
    a, b = (result["results"][m]["bbc_retrieval"][384]["ndcg_at_10"]
            for m in ("distilled", "distilled (seed 1)"))
    assert a != b
    text = result["report"].read_text()
    section = text.split("## Over 2 training seeds")[1].split("Full metrics")[0]
    table, soup = section.split("The seeds' fine-tuned models averaged")
    rows = [line for line in table.splitlines() if line.startswith("| bbc_")]
    assert len(rows) == len(distill.TASKS) * 2
    assert len([line for line in soup.splitlines() if line.startswith("| bbc_")]) == len(rows)
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert all(c.count("[") == 1 for c in cells[3:])
        assert all("every seed" in c for c in cells[5:])


# An LLM student (SmolLM2-135M from the shipped GGUF) through every stage at toy scale;
# FRet is the default tiny run's (same FRet config: the stage is reused, not rerun).
# One device, as TINY: a data=8 mesh would hold 8 replicas of the LLM's float32 weights,
# gradients and AdamW moments (~17 GB for SmolLM2-135M).
TINY_LLM = distill.DistillConfig(**{**TINY.__dict__, "student": "smollm2", "prompt_format": "gecko",
                                    "dims": (576, 384, 128), "learning_rate": 5e-5})


def test_llm_student_stages_and_configs(tmp_path):
    """The MiniLM default's stage configs carry no student key (its runs stay reusable);
    an LLM student adds the raw and pre-finetuned evaluations."""
    a = distill_stages.stage_configs(TINY)
    assert all("student" not in conf for conf in a.values())
    b = distill_stages.stage_configs(TINY_LLM)
    assert TINY_LLM.stages == distill_stages.STAGES + ("eval_raw", "eval_raw_gecko")
    assert b["fret"] == a["fret"] and b["prefinetune"]["student"] == "smollm2"
    assert set(b["eval_prefinetuned"]["inputs"]) == {"prefinetune"}
    from gecko_jax.cli import build_parser
    from gecko_jax.commands.distill import config_from_args
    from gecko_jax.recipes.distill_student import LLM_DEFAULTS

    cfg = config_from_args(build_parser().parse_args(
        ["distill", "--output", "x", "--student", "gemma3", "--batch-size", "4"]))
    assert cfg.student == "gemma3" and cfg.batch_size == 4 and cfg.dims[0] == 640
    assert cfg.finetune_steps == LLM_DEFAULTS["finetune_steps"]
    assert cfg.eval_limit == LLM_DEFAULTS["eval_limit"]
    assert distill_stages.stage_configs(cfg)["finetune"]["learning_rate"] == 1e-5 < cfg.learning_rate


@pytest.mark.slow
def test_llm_student_runs_every_stage_and_reports_each_row(tiny_run, tmp_path):
    import shutil

    from gecko_jax.recipes.distill_student import PREFINETUNED, RAW, RAW_GECKO

    out, _ = tiny_run
    shutil.copytree(out / "fret", tmp_path / "fret")
    result = distill.distill(tmp_path, TINY_LLM, progress=False)
    assert result["ran"] == [s for s in TINY_LLM.stages if s != "fret"]
    results = result["results"]
    assert set(results) == {RAW, RAW_GECKO, PREFINETUNED, "distilled", "minilm (base)",
                            "minilm (base), Gecko prompts"}
    for task in distill.TASKS:
        assert set(results[RAW][task]) == set(results["distilled"][task]) == {576, 384, 128}
        assert set(results["minilm (base)"][task]) == {384, 128}  # no 576-d MiniLM
    text = result["report"].read_text()
    assert "student SmolLM2-135M" in text
    table = text.split("## Raw LLM -> pre-finetuned -> fine-tuned")[1].split("Full metrics")[0]
    rows = [line for line in table.splitlines() if line.startswith("| bbc_")]
    assert len(rows) == len(distill.TASKS) * 3
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert all("[" in c for c in cells[3:7])  # raw, raw Gecko, pre-finetuned, fine-tuned
        assert ("[" in cells[7]) == (cells[2] != "576")      # MiniLM: no 576-d cell
        assert all("significant" in c for c in cells[8:10])  # the two paired changes
    # The fine-tuned LLM encodes with gecko's Encoder from OUT/model.
    from gecko_jax.encode import Encoder

    enc = Encoder.from_pretrained(result["model"], max_length=32)
    assert enc.meta.prompt_format == "gecko" and enc.encode(["a text"]).shape == (1, 576)
    pft = json.loads((tmp_path / "prefinetune" / "stage.json").read_text())
    assert pft["config"]["student"] == "smollm2"
