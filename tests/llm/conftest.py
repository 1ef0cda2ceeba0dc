"""Shared teacher models, package-scoped: each loads once while tests/llm runs and is
released when the package is done."""

import pathlib

import pytest

# Three real prompts per model (test_vs_transformers.py's greedy check uses all three).
PROMPTS = {
    "smollm2": ["The capital of France is", "Here is a recipe for pancakes:",
                "Question: What is the boiling point of water?\nAnswer:"],
    "gemma3": ["The capital of France is", "Here is a recipe for pancakes:",
               "Question: What is the boiling point of water?\nAnswer:"],
}


def _load_engine(name):
    from gecko_jax.llm.jax_engine import JaxEngine

    return JaxEngine.load(name, max_batch=8)


def _load_torch(name):
    """transformers' own reading of the shipped GGUF (model in float32, tokenizer).

    transformers converts a GGUF in ~45 s (Gemma-3: its 262k-piece tokenizer and the
    de-quantisation); the converted model and tokenizer are saved once, by
    transformers, under GECKO_CACHE/transformers_gguf/ (keyed by the GGUF's name, size
    and mtime and the transformers version) and read back in seconds. The reference
    stays transformers' conversion: the saved tensors are exactly the loaded ones.
    """
    import torch
    import transformers
    from safetensors.torch import load_model
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from gecko_jax.llm.loading import gguf_cache_folder, resolve

    path = resolve(name)
    ours = gguf_cache_folder(path)
    folder = (ours.parent.parent / "transformers_gguf"
              / f"{ours.name}-transformers-{transformers.__version__}")
    if not (folder / "model.safetensors").is_file():
        _save_transformers_conversion(path, folder)
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder),
                                             dtype=torch.float32)
    load_model(model, folder / "model.safetensors")
    return model.eval(), tok


def _save_transformers_conversion(path, folder):
    import shutil
    import tempfile

    import torch
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                 dtype=torch.float32)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(dir=folder.parent, prefix=".tmp-"))
    try:
        model.config.to_json_file(tmp / "config.json")
        tok.save_pretrained(tmp)
        save_model(model, str(tmp / "model.safetensors"))   # tied weights saved once
        tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


_CACHE = {}


def _get(kind, name):
    if (kind, name) not in _CACHE:
        _CACHE[kind, name] = (_load_engine if kind == "engine" else _load_torch)(name)
    return _CACHE[kind, name]


@pytest.fixture(scope="package", autouse=True)
def _release_models():
    yield
    _CACHE.clear()


@pytest.fixture(scope="package")
def smollm2_engine():
    return _get("engine", "smollm2")


@pytest.fixture(scope="package")
def gemma3_engine():
    return _get("engine", "gemma3")


@pytest.fixture(scope="package")
def get_model():
    """get_model(kind, name): kind 'engine' (ours) or 'torch' (transformers, tokenizer)."""
    return _get
