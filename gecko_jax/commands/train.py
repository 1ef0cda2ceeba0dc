"""`gecko train`: fine-tune a dual encoder with the Gecko loss, configured by gin.

    gecko train --gin_file=gin_configs/experiments/minilm_jsonl.gin \\
        --gin_bindings="TRAIN_FILES=['data.jsonl']" --model_dir=runs/minilm

Gin files (and their `include`s) are looked up as given, then among the shipped
configs (package data: 'gin_configs/runs/finetune.gin' or 'runs/finetune.gin', from
a checkout or an installed wheel); configs include each other as
'gin_configs/runs/finetune.gin'. An experiment file of several stages
(gin_configs/experiments/wiki_two_stage.gin) runs them in order on the recipe
runner: a rerun reuses finished stages; --redo reruns from the first changed one.
The run resumes from MODEL_DIR/checkpoints when present and exports the model
to MODEL_DIR/export (`gecko embed --model MODEL_DIR/export` reads it).
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="fine-tune a dual encoder (Gecko loss, gin configs)",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gin_file", "--gin-file", action="append", default=[], required=True,
                   help="gin config file (repeatable; later files override earlier ones)")
    p.add_argument("--gin_bindings", "--gin-bindings", action="append", default=[],
                   help="one gin binding, e.g. 'train.num_steps=100' (repeatable)")
    p.add_argument("--model_dir", "--model-dir", required=True,
                   help="run folder: config.gin, checkpoints, TensorBoard events, export/")
    p.add_argument("--redo", action="store_true",
                   help="multi-stage experiments: rerun the first stage whose config changed "
                        "and every later one")
    p.add_argument("--no-progress", action="store_true", help="no console progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from gecko_jax.errors import GeckoError
    from gecko_jax.recipes import experiment
    from gecko_jax.training import trainer

    trainer.parse_gin(args.gin_file, args.gin_bindings)
    try:
        if experiment.configured():  # an experiment of several stages (pre-finetune, finetune)
            stages = [b for b in args.gin_bindings if not b.strip().startswith("run_stages.")]
            for s in experiment.run_stages(args.model_dir, extra_bindings=stages,
                                           progress=not args.no_progress, redo=args.redo):
                print(f"stage {s['stage']}: step {s['step']}; loss "
                      f"{s['metrics'].get('loss', float('nan')):.4f}; export {s['export']}")
            return 0
        summary = trainer.train(args.model_dir, progress=not args.no_progress)
    except ValueError as err:
        if "Required bindings" in str(err) or "gin.REQUIRED" in str(err) or "macro" in str(err):
            raise GeckoError(f"gin config: {err}") from None
        raise
    metrics = summary.get("metrics", {})
    print(f"trained to step {summary['step']} (from {summary['start_step']}); "
          f"loss {metrics.get('loss', float('nan')):.4f} "
          f"accuracy {metrics.get('accuracy', float('nan')):.3f}")
    if "export" in summary:
        print(f"exported to {summary['export']}")
    return 0
