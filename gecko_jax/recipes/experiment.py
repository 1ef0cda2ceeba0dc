"""Multi-stage `gecko train` experiments (pre-finetuning -> fine-tuning) on the recipe runner.

An experiment file names the stages (gin_configs/experiments/wiki_two_stage.gin):

    run_stages.stages = [
        {"name": "prefinetune", "gin_files": ["gin_configs/runs/prefinetune.gin", ...]},
        {"name": "finetune", "gin_files": [...], "init_from": "prefinetune"},
    ]

and `gecko train --gin_file=<that file> --model_dir=RUN` writes

    RUN/config.gin                      the experiment (stage list)
    RUN/<stage>/stage.json              the runner's marker (config, status, summary)
    RUN/<stage>/config.gin              the stage's parsed gin config
    RUN/<stage>/operative_config.gin    every value the stage actually used
    RUN/<stage>/checkpoints/, export/   its orbax checkpoints and model folder
    RUN/stages.json                     per-stage summary

A stage with `init_from` starts from the named stage's exported model (its final
step: train() exports after the last checkpoint), loaded with
model_fns.pretrained_model, and is one of that stage's dependents for the runner.
Each stage is parsed from scratch (every stage's config is parsed and checked
before any trains), so stages share nothing but what their files and bindings
say. A stage's config is its parsed gin config; rerunning the experiment reuses
finished stages, resumes a running one from its checkpoints, refuses a finished
stage whose config changed (naming it), and `redo` reruns from the first changed stage.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
from typing import Any, Mapping, Sequence

import gin

from gecko_jax.errors import GeckoError
from gecko_jax.recipes import runner

log = logging.getLogger(__name__)


def _parsed_config(files: Sequence[str], bindings: Sequence[str]) -> str:
    """The gin config a stage trains with (parse errors surface before any compute)."""
    from gecko_jax.training import trainer

    trainer.parse_gin(list(files), list(bindings))
    return gin.config_str()


def _init_bindings(model_dir: pathlib.Path, init_from: str | None) -> list[str]:
    from gecko_jax.training import trainer

    if not init_from:
        return []
    export = model_dir / init_from / trainer.EXPORT_DIR
    return ["train.model_fn = @pretrained_model", f"pretrained_model.folder = {str(export)!r}"]


@gin.configurable(denylist=["model_dir", "extra_bindings", "progress", "redo"])
def run_stages(model_dir: str | os.PathLike, *,
               stages: Sequence[Mapping[str, Any]] = gin.REQUIRED,
               common_bindings: Sequence[str] = (), extra_bindings: Sequence[str] = (),
               progress: bool = True, redo: bool = False) -> list[dict]:
    """Runs `stages` in order under MODEL_DIR/<name>. Returns their summaries.

    Args:
      stages: dicts with name, gin_files, optional gin_bindings and init_from
        (the name of an earlier stage whose export initialises this one).
      common_bindings: gin bindings applied to every stage (before its own).
      extra_bindings: bindings applied after the stage's own (the command line's);
        only the init_from model binding comes later.
      redo: rerun the first stage whose config changed and every later one.
    """
    from gecko_jax.training import trainer

    model_dir = pathlib.Path(model_dir)
    experiment = gin.config_str()
    stages = [dict(s) for s in stages]
    names = [s.get("name") for s in stages]
    if not stages or any(not n for n in names) or len(set(names)) != len(names):
        raise GeckoError(f"run_stages.stages: need named, distinct stages, got {names}")
    common, extra = list(common_bindings), list(extra_bindings)
    recipe = []
    for i, stage in enumerate(stages):
        name, init_from = stage["name"], stage.get("init_from")
        if init_from and init_from not in names[:i]:
            raise GeckoError(f"stage {name!r}: init_from {init_from!r} is not an earlier stage")
        files = list(stage.get("gin_files", ()))
        bindings = common + list(stage.get("gin_bindings", ())) + extra
        # The init binding names a folder of this run: its identity is the input's hash.
        config = {"gin_files": files, "gin_bindings": bindings, "init_from": init_from,
                  "gin_config": _parsed_config(files, bindings)}

        def run(stage_dir, _done, files=files, bindings=bindings, name=name,
                init_from=init_from):
            bindings = bindings + _init_bindings(model_dir, init_from)
            if init_from:
                export = model_dir / init_from / trainer.EXPORT_DIR
                if not (export / "config.json").is_file():
                    raise GeckoError(f"stage {name!r}: {export} holds no exported model")
            log.info("stage %s: %s %s", name, files, bindings)
            trainer.parse_gin(files, bindings)
            summary = trainer.train(stage_dir, progress=progress)
            (stage_dir / "operative_config.gin").write_text(gin.operative_config_str())
            return {"stage": name, "init_from": init_from, "step": summary["step"],
                    "start_step": summary["start_step"], "metrics": summary["metrics"],
                    "export": summary.get("export")}

        recipe.append(runner.Stage(name, config, run, (init_from,) if init_from else ()))
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.gin").write_text(experiment)
    result = runner.run_recipe(model_dir, recipe, redo=redo, progress=progress,
                               derived=("stages.json",), desc="train")
    summaries = [result["stages"][n]["summary"] for n in names]
    (model_dir / "stages.json").write_text(json.dumps(summaries, indent=2) + "\n")
    return summaries


def configured() -> bool:
    """Whether the parsed gin config is a multi-stage experiment."""
    try:
        gin.query_parameter("run_stages.stages")
    except ValueError:
        return False
    return True
