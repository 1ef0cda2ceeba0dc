"""FRet prompts as data: P_QG (query generation), P_QL (query likelihood), P_RC
(relevance classification).

The paper's prompts are unpublished; ours live as JSON files under
`data/prompts/` (one per prompt): instructions, few-shot examples, the template
that renders one example, and the template of the target (the passage or pair
being asked about). Rendering puts the instructions and the examples first, so
the few-shot block is the same leading text in every prompt of a kind: the
teacher engine computes it once and reuses its KV cache while scoring.

Every prompt has an `id` and a `version`; `Prompt.tag` ("fret-qg@1") and a
short hash of the file's content go into every record and the manifest, so a
silent edit of a prompt changes the run's identity (resume refuses to mix them).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib

from gecko_jax.errors import GeckoError, InputError

# Repository data folder: data/prompts/{qg,ql,rc}.json.
PROMPTS_DIR = pathlib.Path(__file__).resolve().parents[2] / "data" / "prompts"
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
    except (KeyError, IndexError, ValueError) as err:
        raise InputError(path, f"template does not render: {err!r}") from None
    return prompt


def load_prompts(folder: str | os.PathLike | None = None) -> PromptSet:
    """The three FRet prompts from `folder` (default: the repository's data/prompts)."""
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
