"""One module per `gecko` subcommand; each defines `register(subparsers)`.

Command modules import only argparse-level things at top level, so `gecko --help`
stays fast; the heavy imports (jax, tensorflow, torch) happen inside `run`.
"""
