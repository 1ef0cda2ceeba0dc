"""Which peer a bench's `ratio` is against: the fastest one whose error is within ours.

A bench measures several peers a user could pick (fp32, bf16, ONNX Runtime, ...),
each with a rate and an error against the fp32 reference. Comparing with a peer
that is faster only because it is less exact would not be fair to either side, so
the ratio is taken against the fastest peer whose error passes the tolerance our
own path is held to (its test's bound).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence


@dataclasses.dataclass(frozen=True)
class Row:
    """One measured side. rate/error are None when the side could not run (`note` says
    why); `agreement` is an optional second measure (top-1 agreement of an LM)."""

    name: str
    rate: float | None
    error: float | None
    note: str = ""
    agreement: float | None = None


Accept = Callable[[Row], bool]


def at_least(bound: float) -> Accept:
    """Accept errors measured as a similarity (min cosine): higher is closer."""
    return lambda row: row.error >= bound


def at_most(bound: float, min_agreement: float | None = None) -> Accept:
    """Accept errors measured as a difference (|log-prob| diff): lower is closer; with
    `min_agreement`, the row's agreement must also reach it."""
    return lambda row: row.error <= bound and (
        min_agreement is None or (row.agreement is not None and row.agreement >= min_agreement))


def fastest_within(peers: Sequence[Row], accept: Accept) -> Row | None:
    """The fastest peer that ran and that `accept`s; None if there is none."""
    ok = [p for p in peers if p.rate is not None and p.error is not None and accept(p)]
    return max(ok, key=lambda p: p.rate, default=None)


def ratio_lines(ours: Row, peers: Sequence[Row], accept: Accept,
                tolerance: str) -> list[str]:
    """The closing lines: which peer was chosen and why, then `ratio <ours/peer>`."""
    peer = fastest_within(peers, accept)
    if peer is None:
        return [f"no peer within {tolerance}", "ratio nan"]
    return [f"ratio against {peer.name}: the fastest peer within {tolerance}",
            f"ratio {ours.rate / peer.rate:.3f}"]
