"""The stages of `gecko distill`: their names, what each reads, and each one's config.

A stage's config is what decides its output; stage_configs chains every stage's
config through the stages it reads (recipes/runner.chain_configs), so a change
anywhere marks that stage and every later one as changed.

    fret, prefinetune, finetune, eval_*           the recipe (recipes/distill.py)
    finetune_no_fret ... eval_prefinetune_long    --ablation: the paper's Table 3 arms
    finetune_fret<N>, eval_fret<N>                fret_scaling: the first N FRet records
    <stage>_s<k>                                  training seed k > 0 of a trained stage
                                                  and its evaluation
    soup, eval_soup                               seeds > 1: the seeds' fine-tuned models
                                                  averaged (a model soup), and its scores
"""

from __future__ import annotations

import re

from gecko_jax.recipes.distill_student import LLM_EVAL_STAGES, PREFINETUNED, get_student

# Every student's report scores its base model in both prompt formats, the
# pre-finetuned and the fine-tuned model (distill_report.stage_table).
STAGES = ("fret", "prefinetune", "finetune", "eval_base", "eval_base_gecko",
          "eval_prefinetuned", "eval_distilled")
# --ablation (the paper's Table 3): fine-tuning (a) without FRet, (b) with FRet's seed
# passage as positive and no hard negative, (c) with the re-labelled positive and no
# hard negative, beside the default (d): the re-labelled positive and the LLM-mined
# hard negative. Same mixture and steps otherwise. (e), the compute-matched control:
# no fine-tuning, its steps spent on more pre-finetuning (prefinetune_steps +
# finetune_steps from the base model): is it the fine-tuning mixture, or just more steps?
ABLATION_STAGES = ("finetune_no_fret", "finetune_seed_positive", "finetune_no_negative",
                   "prefinetune_long", "eval_no_fret", "eval_seed_positive",
                   "eval_no_negative", "eval_prefinetune_long")
INPUTS = {"finetune": ("fret", "prefinetune"), "eval_distilled": ("finetune",),
          "finetune_no_fret": ("prefinetune",),
          "finetune_seed_positive": ("fret", "prefinetune"),
          "finetune_no_negative": ("fret", "prefinetune"),
          "eval_no_fret": ("finetune_no_fret",),
          "eval_no_negative": ("finetune_no_negative",),
          "eval_seed_positive": ("finetune_seed_positive",),
          "eval_prefinetuned": ("prefinetune",),
          "eval_prefinetune_long": ("prefinetune_long",)}
# Shared by every training seed: FRet and the untrained models' scores. Every other
# stage (training, and the evaluation of what it trained) reruns under seed k > 0 as
# <stage>_s<k>.
UNSEEDED = ("fret", "eval_base", "eval_base_gecko", *LLM_EVAL_STAGES)
# With more than one seed: the uniform soup of every seed's fine-tuned model, scored.
SOUP_STAGES = ("soup", "eval_soup")
# Model names in results.json / the report, by evaluation stage.
EVAL_MODELS = {"eval_base": "minilm (base)", "eval_base_gecko": "minilm (base), Gecko prompts",
               "eval_prefinetuned": PREFINETUNED, "eval_distilled": "distilled",
               "eval_no_fret": "no FRet", "eval_seed_positive": "FRet seed positive",
               "eval_no_negative": "FRet re-labelled, no negative",
               "eval_prefinetune_long": "pre-finetuned only, same steps",
               "eval_soup": "soup of the seeds' fine-tuned models",
               **LLM_EVAL_STAGES}
# Routed to FRet (FRetConfig / GenerateConfig / RelabelConfig); every other binding goes
# to both training stages.
FRET_BINDING_PREFIXES = ("FRetConfig.", "GenerateConfig.", "RelabelConfig.", "FilterConfig.")
_SCALING = re.compile(r"(finetune|eval)_fret(\d+)")


def scaling_stages(n: int) -> tuple[str, str]:
    """The data-scaling curve's stages at n FRet records: (fine-tuning, its evaluation)."""
    return f"finetune_fret{n}", f"eval_fret{n}"


def scaling_model(n: int) -> str:
    """The model name of the scaling curve's point at n FRet records."""
    return f"FRet, first {n} records"


def seeded_name(stage: str, seed: int) -> str:
    """Stage `stage` under training seed `seed` (seed 0 keeps the plain name)."""
    return stage if seed == 0 else f"{stage}_s{seed}"


def _is_seeded_kind(stage: str) -> bool:
    return stage not in UNSEEDED and (stage in STAGES or stage in ABLATION_STAGES
                                      or _SCALING.fullmatch(stage) is not None)


def seed_of(stage: str) -> int:
    head, sep, tail = stage.rpartition("_s")
    return int(tail) if sep and tail.isdigit() and _is_seeded_kind(head) else 0


def base_stage(stage: str) -> str:
    return stage.rpartition("_s")[0] if seed_of(stage) else stage


def eval_model_name(stage: str) -> str:
    """The model name an evaluation stage writes to results.json."""
    seed, base = seed_of(stage), base_stage(stage)
    scaling = _SCALING.fullmatch(base)
    name = scaling_model(int(scaling.group(2))) if scaling else EVAL_MODELS[base]
    return f"{name} (seed {seed})" if seed else name


def stage_names(cfg) -> tuple[str, ...]:
    """Every stage of a run in the order it runs: the recipe, the ablation, the scaling
    curve, an LLM student's raw evaluations, then the same trained stages (and their
    evaluations) under each further seed, then the seeds' soup."""
    ablation = ABLATION_STAGES if cfg.ablation else ()
    scaling = tuple(s for n in cfg.fret_scaling for s in scaling_stages(n))
    llm = tuple(LLM_EVAL_STAGES) if get_student(cfg.student).is_llm else ()
    first = STAGES + ablation + scaling + llm
    return first + tuple(seeded_name(s, k) for k in range(1, cfg.seeds)
                         for s in first if s not in UNSEEDED) + (
        SOUP_STAGES if cfg.seeds > 1 else ())


def stage_configs(cfg) -> dict[str, dict]:
    """Each stage's effective config (what decides its output), chained through its inputs."""
    from gecko_jax.recipes import runner
    from gecko_jax.recipes.distill_fret import released_fret_digest

    fret_bind = sorted(b for b in cfg.gin_bindings if b.strip().startswith(FRET_BINDING_PREFIXES))
    train_bind = [b for b in cfg.gin_bindings if not b.strip().startswith(FRET_BINDING_PREFIXES)]
    fret = ({"records_sha256": released_fret_digest(cfg.fret_records),
             "records_limit": cfg.fret_records_limit,
             **({"scorers": list(cfg.fret_scorers)} if cfg.fret_scorers else {}),
             **({"negative": cfg.fret_negative} if cfg.fret_negative else {})}
            if cfg.fret_records else
            {"teacher": cfg.teacher, "corpus_size": cfg.fret_corpus_size,
             "corpus": list(cfg.fret_corpus),
             "limit": cfg.fret_limit, "num_neighbors": cfg.fret_neighbors,
             "embed_max_length": cfg.fret_embed_max_length, "gin_bindings": fret_bind})
    train = {"batch_size": cfg.batch_size, "query_length": cfg.query_length,
             "doc_length": cfg.doc_length, "learning_rate": cfg.learning_rate,
             "title_body": list(cfg.title_body), "gin_bindings": train_bind}
    if cfg.student != "minilm":
        train["student"] = cfg.student
    else:
        train["include_prompt"] = cfg.include_prompt
    # Options at the value every run had before they existed stay out of the stage
    # config, so such a stage's identity (its config's hash) is unchanged.
    if cfg.start_distill:
        train["start_distill"] = cfg.start_distill
    if cfg.prompt_format != "gecko":
        train["prompt_format"] = cfg.prompt_format
    ft_train = {**train, "learning_rate": cfg.finetune_learning_rate or cfg.learning_rate,
                "steps": cfg.finetune_steps}
    ev = {"tasks": list(cfg.tasks), "dims": list(cfg.dims), "limit": cfg.eval_limit,
          "max_length": cfg.eval_max_length}
    own = {"fret": fret, "prefinetune": {**train, "steps": cfg.prefinetune_steps},
           "finetune": ft_train,
           "eval_base": {**ev, "model": "minilm"},
           "eval_base_gecko": {**ev, "model": "minilm", "format": "gecko",
                               **({"include_prompt": cfg.include_prompt}
                                  if cfg.student == "minilm" else {})},
           "eval_distilled": {**ev, "model": "finetune"},
           "finetune_no_fret": {**ft_train, "fret": "none"},
           "finetune_seed_positive": {**ft_train, "fret": "seed_positive"},
           "finetune_no_negative": {**ft_train, "fret": "no_negative"},
           "eval_no_fret": {**ev, "model": "finetune_no_fret"},
           "eval_no_negative": {**ev, "model": "finetune_no_negative"},
           "eval_seed_positive": {**ev, "model": "finetune_seed_positive"},
           "eval_raw": {**ev, "model": f"raw {cfg.student}"},
           "eval_raw_gecko": {**ev, "model": f"raw {cfg.student}", "format": "gecko"},
           "eval_prefinetuned": {**ev, "model": "prefinetune"},
           "prefinetune_long": {**train, "steps": cfg.prefinetune_steps + cfg.finetune_steps},
           "eval_prefinetune_long": {**ev, "model": "prefinetune_long"}}
    inputs = dict(INPUTS)
    for n in cfg.fret_scaling:
        ft, ev_stage = scaling_stages(n)
        own[ft] = {**ft_train, "fret": f"first:{n}"}
        own[ev_stage] = {**ev, "model": ft}
        inputs[ft] = ("fret", "prefinetune")
        inputs[ev_stage] = (ft,)
    finetuned = tuple(seeded_name("finetune", k) for k in range(cfg.seeds))
    own["soup"] = {"models": list(finetuned)}
    own["eval_soup"] = {**ev, "model": "soup"}
    inputs.update(soup=finetuned, eval_soup=("soup",))
    for name in stage_names(cfg):
        k, stage = seed_of(name), base_stage(name)
        if not k:
            continue
        conf = own[stage]
        # A trained stage records its seed; an evaluation, the seeded model it scores.
        own[name] = ({**conf, "model": seeded_name(conf["model"], k)}
                     if stage.startswith("eval_") else {**conf, "seed": k})
        if stage in inputs:
            inputs[name] = tuple(i if i in UNSEEDED else seeded_name(i, k)
                                 for i in inputs[stage])
    own = {name: own[name] for name in stage_names(cfg)}
    return runner.chain_configs(own, {n: i for n, i in inputs.items() if n in own})
