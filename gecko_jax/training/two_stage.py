"""Pre-finetuning then fine-tuning: stages run one after another, each a full `gecko train`.

An experiment file names the stages (gin_configs/experiments/wiki_two_stage.gin):

    run_stages.stages = [
        {"name": "prefinetune", "gin_files": ["gin_configs/runs/prefinetune.gin", ...]},
        {"name": "finetune", "gin_files": [...], "init_from": "prefinetune"},
    ]

and `gecko train --gin_file=<that file> --model_dir=RUN` writes

    RUN/config.gin                      the experiment (stage list)
    RUN/<stage>/config.gin              the stage's parsed gin config
    RUN/<stage>/operative_config.gin    every value the stage actually used
    RUN/<stage>/checkpoints/, export/   its orbax checkpoints and model folder
    RUN/stages.json                     per-stage summary

A stage with `init_from` starts from the named stage's exported model (its
final step: train() exports after the last checkpoint), loaded with
trainer.pretrained_model. Each stage is parsed from scratch, so stages share
nothing but what their files and bindings say; rerunning the experiment
resumes each stage from its own checkpoints (a finished stage is a no-op).
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
from typing import Any, Mapping, Sequence

import gin

from gecko_jax.errors import GeckoError

log = logging.getLogger(__name__)


@gin.configurable(denylist=["model_dir", "extra_bindings", "progress"])
def run_stages(model_dir: str | os.PathLike, *,
               stages: Sequence[Mapping[str, Any]] = gin.REQUIRED,
               common_bindings: Sequence[str] = (), extra_bindings: Sequence[str] = (),
               progress: bool = True) -> list[dict]:
    """Runs `stages` in order under MODEL_DIR/<name>. Returns their summaries.

    Args:
      stages: dicts with name, gin_files, optional gin_bindings and init_from
        (the name of an earlier stage whose export initialises this one).
      common_bindings: gin bindings applied to every stage (before its own).
      extra_bindings: bindings applied after the stage's own (the command line's);
        only the init_from model binding comes later.
    """
    from gecko_jax.commands.train import parse_gin
    from gecko_jax.training import trainer

    model_dir = pathlib.Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.gin").write_text(gin.config_str())
    stages = [dict(s) for s in stages]
    names = [s.get("name") for s in stages]
    if not stages or any(not n for n in names) or len(set(names)) != len(names):
        raise GeckoError(f"run_stages.stages: need named, distinct stages, got {names}")
    common, extra = list(common_bindings), list(extra_bindings)
    summaries = []
    for i, stage in enumerate(stages):
        name = stage["name"]
        bindings = common + list(stage.get("gin_bindings", ())) + extra
        init_from = stage.get("init_from")
        if init_from:
            if init_from not in names[:i]:
                raise GeckoError(f"stage {name!r}: init_from {init_from!r} is not an earlier stage")
            export = model_dir / init_from / trainer.EXPORT_DIR
            if not (export / "config.json").is_file():
                raise GeckoError(f"stage {name!r}: {export} holds no exported model")
            bindings += ["train.model_fn = @pretrained_model",
                         f"pretrained_model.folder = {str(export)!r}"]
        log.info("stage %s: %s %s", name, stage.get("gin_files"), bindings)
        parse_gin(list(stage.get("gin_files", ())), bindings)
        summary = trainer.train(model_dir / name, progress=progress)
        (model_dir / name / "operative_config.gin").write_text(gin.operative_config_str())
        summaries.append({"stage": name, "init_from": init_from, "step": summary["step"],
                          "start_step": summary["start_step"], "metrics": summary["metrics"],
                          "export": summary.get("export")})
    (model_dir / "stages.json").write_text(json.dumps(summaries, indent=2) + "\n")
    return summaries


def configured() -> bool:
    """Whether the parsed gin config is a multi-stage experiment."""
    try:
        gin.query_parameter("run_stages.stages")
    except ValueError:
        return False
    return True
