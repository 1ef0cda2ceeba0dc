"""`gecko train`: fine-tune a dual encoder with the Gecko loss, configured by gin.

    gecko train --gin_file=gin_configs/experiments/minilm_jsonl.gin \\
        --gin_bindings="TRAIN_FILES=['data.jsonl']" --model_dir=runs/minilm

Gin files (and their `include`s) are looked up as given, then from the
repository root, then under gin_configs/; configs include each other as
'gin_configs/runs/finetune.gin'.
The run resumes from MODEL_DIR/checkpoints when present and exports the model
to MODEL_DIR/export (`gecko embed --model MODEL_DIR/export` reads it).
"""

from __future__ import annotations

import argparse
import logging
import pathlib

GIN_CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "gin_configs"


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
    p.add_argument("--no-progress", action="store_true", help="no console progress bar")
    p.set_defaults(func=run)


class _DropGinPathNotFound(logging.Filter):
    def filter(self, record) -> bool:
        return not str(record.msg).startswith("Path not found")


def parse_gin(gin_files, gin_bindings) -> None:
    """Parses files + bindings; any unknown configurable/parameter fails here, before compute."""
    import gin

    from gecko_jax.errors import GeckoError
    from gecko_jax.training import trainer  # noqa: F401  (registers the configurables)

    gin.clear_config()
    # Not a bare 'runs/...' include: gin would try to import a package named 'runs'.
    for path in (pathlib.Path.cwd(), GIN_CONFIGS.parent):
        gin.add_config_file_search_path(str(path))
    resolved = []
    for name in gin_files:
        path = pathlib.Path(name)
        for base in (GIN_CONFIGS.parent, GIN_CONFIGS):
            if not path.is_file() and (base / name).is_file():
                path = base / name
        if not path.is_file():
            raise GeckoError(f"{name}: gin file not found (nor under {GIN_CONFIGS})")
        resolved.append(str(path))
    # gin logs an ERROR for every search path an include is not under: hide that noise.
    root = logging.getLogger()
    quiet = _DropGinPathNotFound()
    root.addFilter(quiet)
    try:
        gin.parse_config_files_and_bindings(resolved, list(gin_bindings),
                                            skip_unknown=False, finalize_config=False)
    except (ValueError, KeyError, SyntaxError, IOError) as err:
        raise GeckoError(f"gin config: {err}") from None
    finally:
        root.removeFilter(quiet)


def run(args) -> int:
    parse_gin(args.gin_file, args.gin_bindings)

    from gecko_jax.errors import GeckoError
    from gecko_jax.training import trainer

    from gecko_jax.training import two_stage

    try:
        if two_stage.configured():  # an experiment of several stages (pre-finetune, finetune)
            stages = [b for b in args.gin_bindings if not b.strip().startswith("run_stages.")]
            for s in two_stage.run_stages(args.model_dir, extra_bindings=stages,
                                          progress=not args.no_progress):
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
