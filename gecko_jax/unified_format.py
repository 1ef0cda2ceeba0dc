"""The Gecko unified format (paper, appendix B): the one place its templates live.

    query side:     task: {task} | query: {text}
    document side:  title: {title} | text: {text}      (title `none` when absent)

Symmetric targets (NLI, STS, classification) use the query side. The encode
API, the data layer, the seqio preprocessors (TF string ops built from the same
templates by `template_pieces`) and the exported sentence-transformers prompts
all format through this module.
"""

from __future__ import annotations

import string

# One task description per task kind (the paper's prompt strings, GECKO.md appendix B).
# Training tasks and evaluation tasks of a kind both take theirs from here, and model
# exports carry the table (sentence-transformers prompts, gecko_config.json), so
# training, `gecko eval`, `gecko embed`, sentence-transformers and the MTEB adapter
# put the same words before a text of that kind. FRet records keep the task the
# teacher wrote for each query.
TASK_DESCRIPTIONS = {
    "retrieval": "search result",
    "classification": "classification",
    "clustering": "clustering",
    "similarity": "sentence similarity",
}
DEFAULT_TASK = TASK_DESCRIPTIONS["retrieval"]

# The task kind of each MTEB task type (mteb's `TaskMetadata.type` strings). The MTEB
# adapter formats a task of that type with its kind's description, and exported
# folders name a prompt after each type, so mteb's own sentence-transformers wrapper
# picks the same strings (retrieval types take the `query`/`document` prompts).
MTEB_TASK_TYPE_KINDS = {
    "Retrieval": "retrieval",
    "Reranking": "retrieval",
    "InstructionRetrieval": "retrieval",
    "Classification": "classification",
    "MultilabelClassification": "classification",
    "Clustering": "clustering",
    "STS": "similarity",
    "PairClassification": "similarity",
    "Summarization": "similarity",
    "BitextMining": "similarity",
}
NO_TITLE = "none"
QUERY_TEMPLATE = "task: {task} | query: {text}"
DOCUMENT_TEMPLATE = "title: {title} | text: {text}"


def task_description(kind: str) -> str:
    """The description of a task kind (TASK_DESCRIPTIONS); unknown kinds are an error."""
    if kind not in TASK_DESCRIPTIONS:
        raise ValueError(f"unknown task kind {kind!r}; known: {sorted(TASK_DESCRIPTIONS)}")
    return TASK_DESCRIPTIONS[kind]


def template_pieces(template: str) -> list[tuple[str, str | None]]:
    """A template as (literal text, field name or None) pieces, in order.

    `"task: {task} | query: {text}"` -> [("task: ", "task"), (" | query: ", "text")].
    The seqio preprocessor joins the same pieces with tf.strings.join.
    """
    return [(literal, field) for literal, field, _, _ in string.Formatter().parse(template)]


def _title(title: str | None) -> str:
    return title if title else NO_TITLE


def query_prefix(task: str = DEFAULT_TASK) -> str:
    """What precedes the query text: `task: {task} | query: `."""
    return QUERY_TEMPLATE.format(task=task, text="")


def document_prefix(title: str | None = None) -> str:
    """What precedes the document text: `title: {title or none} | text: `."""
    return DOCUMENT_TEMPLATE.format(title=_title(title), text="")


def format_query(text: str, task: str = DEFAULT_TASK) -> str:
    """Gecko query side: `task: {task} | query: {text}`."""
    return QUERY_TEMPLATE.format(task=task, text=text)


def format_document(text: str, title: str | None = None) -> str:
    """Gecko asymmetric document side: `title: {title} | text: {text}` (title `none`)."""
    return DOCUMENT_TEMPLATE.format(title=_title(title), text=text)


def prompt_markers() -> tuple[str, ...]:
    """The words that end each template's prompt, before its text: `| query:` and
    `| text:`. A tower that leaves the prompt out of its pooling (include_prompt=False)
    pools the tokens after the first marker in a sequence (models/dual_encoder.py)."""
    return tuple(pieces[-1][0].rstrip() for pieces in
                 (template_pieces(QUERY_TEMPLATE), template_pieces(DOCUMENT_TEMPLATE)))


PROMPT_FORMATS = ("gecko", "raw")


def check_prompt_format(prompt_format: str) -> str:
    """'gecko' (the templates above) or 'raw' (bare texts, for prompt-naive base models)."""
    if prompt_format not in PROMPT_FORMATS:
        raise ValueError(f"unknown prompt format {prompt_format!r} (gecko or raw)")
    return prompt_format


def format_queries(texts, task: str, prompt_format: str) -> list[str]:
    """Query texts in `prompt_format` (raw: the texts unchanged)."""
    if check_prompt_format(prompt_format) == "raw":
        return list(texts)
    return [format_query(t, task) for t in texts]


def format_documents(texts, titles, prompt_format: str) -> list[str]:
    """Document texts (titles: one per text, or None) in `prompt_format`."""
    texts = list(texts)
    if titles is not None and len(titles) != len(texts):
        raise ValueError(f"{len(titles)} titles for {len(texts)} texts")
    if check_prompt_format(prompt_format) == "raw":
        return texts
    titles = titles if titles is not None else [None] * len(texts)
    return [format_document(t, title) for t, title in zip(texts, titles)]
