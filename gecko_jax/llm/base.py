"""The teacher-LLM interface FRet uses: generate text, score continuations.

Backends: `jax_engine.JaxEngine` (local, the default) and
`openai_compat.OpenAICompatLLM` (vLLM, llama.cpp's server, TGI, Gemini's
OpenAI-compatible endpoint). Each declares what it supports in `capabilities`;
`require` raises a clear error when a caller needs something a backend lacks (for
example prompt log-probs from a chat-only endpoint), so callers can fall back.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Sequence, Union

from gecko_jax.errors import GeckoError

# A prompt is plain text (completion) or chat messages [{"role": ..., "content": ...}].
Prompt = Union[str, list]


@dataclasses.dataclass(frozen=True)
class Capabilities:
    generate: bool = True
    score: bool = True       # log-probs of given continuation tokens (QL, RC)
    chat: bool = False       # accepts message lists (applies a chat template)
    seeded: bool = True      # the same seed gives the same samples


class UnsupportedError(GeckoError):
    """The backend cannot do what was asked (e.g. score on a chat-only endpoint)."""


class LLM(abc.ABC):
    """A text generator and continuation scorer."""

    name: str = "llm"
    capabilities: Capabilities = Capabilities()
    # Whether the model's tokenizer carries a chat template (an instruction-tuned model);
    # None where the backend cannot tell (a remote server).
    has_chat_template: bool | None = None

    def render_chat(self, messages: list) -> str:
        """Chat messages as the model's prompt text, ending with the assistant's turn header."""
        raise UnsupportedError(f"{self.name} cannot render chat messages as text")

    @abc.abstractmethod
    def generate(self, prompts: Sequence[Prompt], max_new_tokens: int = 64,
                 temperature: float = 0.0, top_p: float = 1.0,
                 stop: Sequence[str] | None = None, seed: int = 0) -> list[str]:
        """One completion per prompt, in input order.

        temperature 0 is greedy; otherwise nucleus sampling with `top_p`. The text ends
        before the first stop string, at an end-of-sequence token, or after
        `max_new_tokens` tokens.
        """

    @abc.abstractmethod
    def score(self, prefixes: Sequence[str], continuations: Sequence[str],
              per_token: bool = False) -> list:
        """log P(continuation | prefix) for each pair, summed over the continuation's
        tokens (natural log); with per_token=True a list of per-token log-probs."""

    def require(self, what: str) -> None:
        if not getattr(self.capabilities, what):
            raise UnsupportedError(f"{self.name} does not support {what!r}")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (connections, device memory)."""


def check_pairs(prefixes: Sequence[str], continuations: Sequence[str]) -> None:
    if len(prefixes) != len(continuations):
        raise ValueError(f"{len(prefixes)} prefixes but {len(continuations)} continuations")


def cut_at_stop(text: str, stop: Sequence[str] | None) -> tuple[str, bool]:
    """Text before the earliest stop string, and whether one was found."""
    cut = len(text)
    for s in stop or ():
        i = text.find(s)
        if s and 0 <= i < cut:
            cut = i
    return text[:cut], cut < len(text)
