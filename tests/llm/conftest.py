"""Shared teacher models, package-scoped: each loads once while tests/llm runs and is
released when the package is done."""

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
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from gecko_jax.llm.loading import resolve

    path = resolve(name)
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                 dtype=torch.float32).eval()
    return model, tok


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
