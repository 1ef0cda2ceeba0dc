"""Staged recipes: one runner (runner.py) for `gecko distill` (distill.py) and for
multi-stage `gecko train` experiments (experiment.py)."""
