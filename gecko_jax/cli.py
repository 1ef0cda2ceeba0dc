"""The `gecko` console script: dispatches to gecko_jax.commands.<name>."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from gecko_jax.errors import GeckoError

# Subcommand name -> module under gecko_jax.commands defining register(subparsers).
COMMANDS = {
    "embed": "embed",
    "train": "train",
    "eval": "eval",
    "llm": "llm",
    "fret": "fret",
    "distill": "distill",
    "soup": "soup",
    "cache": "cache",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gecko", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS.values():
        importlib.import_module(f"gecko_jax.commands.{module}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("jax", "absl", "tensorflow", "orbax", "urllib3", "apache_beam"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except GeckoError as err:
        print(f"gecko {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gecko {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
