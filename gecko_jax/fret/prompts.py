"""FRet prompts as data: P_QG (query generation), P_QL (query likelihood), P_RC
(relevance classification).

The paper's prompts are unpublished; ours ship as package data, JSON files under
`gecko_jax/fret/prompt_files/` (one per prompt): instructions, few-shot examples, the template
that renders one example, and the template of the target (the passage or pair
being asked about). Rendering puts the instructions and the examples first, so
the few-shot block is the same leading text in every prompt of a kind: the
teacher engine computes it once and reuses its KV cache while scoring.

Prompt styles: a base (pretrained) teacher such as Gemma-3-270M continues text, so it
gets the completion form above. A chat (instruction-tuned) teacher such as
SmolLM2-135M-Instruct was trained on chat turns, so `Renderer` turns the same file into
messages: the instructions as the system turn, each few-shot example as a user turn
(the rendered target) and an assistant turn (the rest of the rendered example), the
target as the last user turn; the model's chat template renders them, and the reply
(or the scored continuation) is the assistant's turn. `resolve_style` picks the style
from the teacher (a chat template in its tokenizer/GGUF metadata, or an instruction
model's name behind an HTTP server) unless it is set.

Every prompt has an `id` and a `version`; `Prompt.tag` ("fret-qg@1") and a
short hash of the file's content go into every record and the manifest, so a
silent edit of a prompt changes the run's identity (resume refuses to mix them).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.resources
import json
import os
import pathlib
import re
from typing import Callable

from gecko_jax.errors import GeckoError, InputError

# Package data: prompt_files/{qg,ql,rc}.json beside this module (in a checkout and in
# an installed wheel alike).
PROMPTS_DIR = pathlib.Path(str(importlib.resources.files("gecko_jax.fret") / "prompt_files"))
KINDS = {"qg": "query_generation", "ql": "query_likelihood", "rc": "relevance_classification"}
_REQUIRED = {
    "qg": ("instructions", "example_template", "target_template", "response_prefix", "examples"),
    "ql": ("instructions", "example_template", "target_template", "continuation_template",
           "examples"),
    "rc": ("instructions", "example_template", "target_template", "labels", "examples"),
}


@dataclasses.dataclass(frozen=True)
class Prompt:
    """One few-shot prompt, loaded from JSON.

    `spec` holds the raw file content (templates, examples, options).
    """
    id: str
    version: int
    kind: str
    spec: dict
    sha: str  # first 12 hex digits of sha256 over the canonical JSON

    @property
    def tag(self) -> str:
        return f"{self.id}@{self.version}"

    def provenance(self) -> dict:
        return {"id": self.id, "version": self.version, "sha": self.sha}

    @property
    def few_shot(self) -> str:
        """Instructions + rendered examples: the shared leading block of every prompt."""
        tmpl = self.spec["example_template"]
        return self.spec["instructions"] + "".join(tmpl.format(**ex) for ex in self.spec["examples"])

    def option(self, name: str, default=None):
        return self.spec.get(name, default)


@dataclasses.dataclass(frozen=True)
class PromptSet:
    qg: Prompt
    ql: Prompt
    rc: Prompt

    def provenance(self) -> dict:
        return {"qg": self.qg.provenance(), "ql": self.ql.provenance(), "rc": self.rc.provenance()}


def load_prompt(path: str | os.PathLike, kind: str) -> Prompt:
    """Reads and checks one prompt file of the given kind ('qg', 'ql' or 'rc')."""
    path = pathlib.Path(path)
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise InputError(path, f"cannot read prompt file ({err.strerror})") from None
    except json.JSONDecodeError as err:
        raise InputError(path, f"not valid JSON ({err.msg})", err.lineno) from None
    if not isinstance(spec, dict):
        raise InputError(path, "a prompt file holds one JSON object")
    for key in ("id", "version", *_REQUIRED[kind]):
        if key not in spec:
            raise InputError(path, f"prompt has no {key!r}")
    if spec.get("kind", KINDS[kind]) != KINDS[kind]:
        raise InputError(path, f"prompt kind is {spec.get('kind')!r}, expected {KINDS[kind]!r}")
    if not isinstance(spec["version"], int):
        raise InputError(path, "prompt 'version' must be an integer")
    sha = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    prompt = Prompt(str(spec["id"]), spec["version"], kind, spec, sha)
    try:  # render once so a template/example mismatch fails at load, naming the file
        prompt.few_shot
        _render_target(prompt, passage="p", query="q", task="t")
        chat_messages(prompt, passage="p", query="q", task="t")
    except (KeyError, IndexError, ValueError) as err:
        raise InputError(path, f"template does not render: {err!r}") from None
    return prompt


def load_prompts(folder: str | os.PathLike | None = None) -> PromptSet:
    """The three FRet prompts from `folder` (default: the shipped prompt_files/)."""
    folder = pathlib.Path(folder) if folder else PROMPTS_DIR
    if not folder.is_dir():
        raise GeckoError(f"{folder}: prompt folder not found (expected qg.json, ql.json, rc.json)")
    return PromptSet(*(load_prompt(folder / f"{k}.json", k) for k in ("qg", "ql", "rc")))


def _render_target(prompt: Prompt, **fields) -> str:
    return prompt.spec["target_template"].format(**fields)


# -- rendering -------------------------------------------------------------------------

def qg_prompt(prompt: Prompt, passage: str) -> str:
    """P_QG for one seed passage; the completion continues `response_prefix`."""
    return prompt.few_shot + _render_target(prompt, passage=passage) + prompt.spec["response_prefix"]


def ql_pair(prompt: Prompt, passage: str, query: str) -> tuple[str, str]:
    """(prefix, continuation) whose score is log P_LLM(query | passage, P_QL)."""
    return (prompt.few_shot + _render_target(prompt, passage=passage),
            prompt.spec["continuation_template"].format(query=query))


def rc_prefix(prompt: Prompt, query: str, passage: str) -> str:
    """P_RC for one (query, passage) pair; continue it with `rc_labels`."""
    return prompt.few_shot + _render_target(prompt, query=query, passage=passage)


def rc_labels(prompt: Prompt) -> tuple[str, str]:
    """(positive label, negative label) continuations, e.g. (' yes', ' no')."""
    labels = prompt.spec["labels"]
    return labels["positive"], labels["negative"]


def example_queries(prompt: Prompt) -> set[str]:
    """Queries shown in the few-shot block (a weak model that copies one is filtered)."""
    return {str(ex.get("query", "")).strip().lower() for ex in prompt.spec["examples"]}


# -- prompt styles -----------------------------------------------------------------------

STYLES = ("auto", "chat", "completion")
_INSTRUCT_NAME = re.compile(r"instruct|chat|(^|[-_/])it($|[-_./])", re.I)


def style_from_model(has_chat_template: bool | None, name: str = "") -> str:
    """'chat' for an instruction-tuned model, else 'completion'.

    A chat template in the model's tokenizer (GGUF `tokenizer.chat_template`, HF
    `tokenizer_config.json`) decides when known; otherwise the name (e.g. a server's
    model id): "Instruct", "chat" or an "-it" part mark an instruction model.
    """
    if has_chat_template is not None:
        return "chat" if has_chat_template else "completion"
    return "chat" if _INSTRUCT_NAME.search(name or "") else "completion"


def _split_example(prompt: Prompt, ex: dict) -> tuple[str, str]:
    """(user turn, assistant turn) of one few-shot example: the rendered target, and the
    rest of the rendered example."""
    full = prompt.spec["example_template"].format(**ex)
    user = prompt.spec["target_template"].format(**{"passage": "", "query": "", "task": "",
                                                    **ex})
    if not full.startswith(user):
        raise ValueError(f"example_template does not start with target_template "
                         f"(needed for chat turns): {full[:60]!r}")
    return user.strip(), full[len(user):].strip()


def chat_messages(prompt: Prompt, **target) -> list[dict]:
    """The prompt as chat turns: system (instructions), user/assistant per example, user
    (the target)."""
    msgs = [{"role": "system", "content": prompt.spec["instructions"].strip()}]
    for ex in prompt.spec["examples"]:
        user, answer = _split_example(prompt, ex)
        msgs += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    msgs.append({"role": "user", "content": _render_target(prompt, **target).strip()})
    return msgs


@dataclasses.dataclass(frozen=True)
class Renderer:
    """Renders P_QG / P_QL / P_RC in one style.

    style: 'completion' (plain text, for base models) or 'chat' (chat turns).
    chat_text: renders messages as the model's prompt text, ending with the assistant
      turn's header (the teacher's chat template). None with style 'chat': the backend
      takes message lists (an OpenAI-compatible /chat/completions endpoint); then query
      generation sends messages without the response prefix, and QL / RC stay in
      completion form (prompt log-probs exist only on /completions).
    """
    style: str = "completion"
    chat_text: Callable[[list], str] | None = None

    def __post_init__(self):
        if self.style not in ("chat", "completion"):
            raise ValueError(f"prompt style {self.style!r}: use chat or completion")

    @property
    def _chat_scores(self) -> bool:
        return self.style == "chat" and self.chat_text is not None

    def qg(self, prompt: Prompt, passage: str):
        """(P_QG as text or messages, the text the reply continues)."""
        if self.style == "completion":
            return qg_prompt(prompt, passage), prompt.spec["response_prefix"]
        msgs = chat_messages(prompt, passage=passage)
        if self.chat_text is None:
            return msgs, ""
        return self.chat_text(msgs) + prompt.spec["response_prefix"], prompt.spec["response_prefix"]

    def ql(self, prompt: Prompt, passage: str, query: str) -> tuple[str, str]:
        """(prefix, continuation) of log P(query | passage, P_QL)."""
        if not self._chat_scores:
            return ql_pair(prompt, passage, query)
        prefix = self.chat_text(chat_messages(prompt, passage=passage))
        return prefix, prompt.spec["continuation_template"].format(query=query).strip()

    def rc(self, prompt: Prompt, query: str, passage: str) -> str:
        if not self._chat_scores:
            return rc_prefix(prompt, query, passage)
        return self.chat_text(chat_messages(prompt, query=query, passage=passage))

    def labels(self, prompt: Prompt) -> tuple[str, str]:
        """(positive, negative) label continuations; no leading space in an assistant turn."""
        yes, no = rc_labels(prompt)
        return (yes.strip(), no.strip()) if self._chat_scores else (yes, no)


COMPLETION = Renderer("completion")
