"""`gecko soup`: average fine-tuned models that share an architecture (a model soup).

    gecko soup --output runs/soup runs/seed0/export runs/seed1/export
    gecko soup --output runs/x/soup runs/x/checkpoints/800 runs/x/checkpoints/1000
    gecko soup --output runs/soup --weights 2,1 runs/a/export runs/b/export

Inputs are exported model folders (any tower) or checkpoint folders of ONE run
(RUN/checkpoints/<step>); the output is a model folder like the inputs'. Uniform
weights unless --weights is given (normalised to sum to 1). Models whose
parameters differ in name or shape are refused, naming the parameter.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("soup", help="average exported models (or one run's checkpoints)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", metavar="MODEL_DIR",
                   help="exported model folders, or RUN/checkpoints/<step> folders of one run")
    p.add_argument("--output", required=True, help="output model folder")
    # One comma-separated value, not nargs="+": a list of numbers would swallow the
    # model folders that follow it.
    p.add_argument("--weights", type=_weights, default=None,
                   help="comma-separated mixing weights, one per model (default: uniform)")
    p.set_defaults(func=run)


def _weights(text: str) -> list[float]:
    try:
        return [float(w) for w in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 2,1; got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    from gecko_jax.errors import GeckoError
    from gecko_jax.models.soup import soup_folders
    from gecko_jax.training.checkpoint_soup import is_checkpoint, soup_checkpoints

    kinds = {is_checkpoint(m) for m in args.models}
    if len(kinds) > 1:
        raise GeckoError("soup: mix of checkpoints and exported folders; give one kind")
    if kinds.pop():
        out = soup_checkpoints(args.models, args.output, args.weights)
    else:
        out = soup_folders(args.models, args.output, args.weights)
    print(f"soup of {len(args.models)} models -> {out}")
    return 0
