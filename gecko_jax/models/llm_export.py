"""LLM embedders in and out: the EmbeddingGemma sentence-transformers layout.

A Gemma-3 tower exports as EmbeddingGemma ships:

    config.json, model.safetensors   Gemma3TextModel, use_bidirectional_attention: true
    tokenizer.json (+ config)        BOS added by the tokenizer itself
    1_Pooling/                       mean (or last-token) pooling
    2_Dense/, 3_Dense/, ...          the bias-free dense head, one folder per layer
    N_Normalize/                     L2 norm
    modules.json, sentence_bert_config.json, config_sentence_transformers.json
                                     (the Gecko prompts as sentence-transformers prompts)
    gecko_config.json                what gecko_jax needs to load it back

so `SentenceTransformer(folder)` loads it with no custom code (transformers >= 4.57).
A Llama-family tower is written in the same layout, but transformers has no
bidirectional switch for Llama: `SentenceTransformer` would run it causally.
Load those with `load_llm_encoder` (gecko_jax) instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np

from gecko_jax import paths, unified_format
from gecko_jax.errors import GeckoError
from gecko_jax.lm_tokenizer import LMTokenizer
from gecko_jax.models import decoder as dec
from gecko_jax.models.llm_encoder import LLMEncoder, llm_encoder_from_params
from gecko_jax.models.weights import GECKO_CONFIG, export_staging, finish_st_folder, write_json
from gecko_jax.tokenization import Tokenizer

IDENTITY = "torch.nn.modules.linear.Identity"


# ----------------------------------------------------------------------- tokenizer
def write_embedder_tokenizer(lm_tok: LMTokenizer, folder: str | os.PathLike,
                             append_eos: bool = False) -> pathlib.Path:
    """tokenizer.json whose post-processor adds BOS as the LM does (Gemma: yes), and
    EOS after the text with `append_eos` (what last-token pooling embedders read).

    The dual encoder's data pipeline and sentence-transformers both tokenise with
    `add_special_tokens=True`, so these rules must live in the tokenizer file.
    """
    import tokenizers
    from tokenizers import processors

    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = tokenizers.Tokenizer.from_str(lm_tok.tokenizer.to_str())
    tok.no_padding()
    tok.no_truncation()
    bos = lm_tok.token(lm_tok.bos_id) if lm_tok.bos_id is not None else None
    eos = lm_tok.token(lm_tok.eos_id) if append_eos and lm_tok.eos_id is not None else None
    if append_eos and not eos:
        raise GeckoError("append_eos: the LM tokenizer has no EOS token")
    head = [bos] if lm_tok.add_bos and bos else []
    tail = [eos] if eos else []
    if head or tail:
        specials = ([(bos, lm_tok.bos_id)] if head else []) + ([(eos, lm_tok.eos_id)] if tail else [])
        tok.post_processor = processors.TemplateProcessing(
            single=" ".join(head + ["$A"] + tail),
            pair=" ".join(head + ["$A"] + tail + ["$B"] + tail), special_tokens=specials)
        # (pair: "<bos> $A $B" without EOS; with EOS, transformers' template)
    else:
        tok.post_processor = None
    tok.save(str(folder / "tokenizer.json"))
    name = lambda i: None if i is None else lm_tok.token(i)  # noqa: E731
    write_json(folder / "tokenizer_config.json", {
        "tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": bool(lm_tok.add_bos and bos),
        "add_eos_token": bool(eos), "bos_token": name(lm_tok.bos_id), "eos_token": name(lm_tok.eos_id),
        "pad_token": name(lm_tok.pad_id), "padding_side": "right",
        "model_max_length": 1_000_000})
    return folder


def embedder_tokenizer(lm_tok: LMTokenizer, cache_dir: str | os.PathLike | None = None,
                       append_eos: bool = False) -> Tokenizer:
    """The LM's tokenizer as a gecko_jax Tokenizer (cached folder keyed by content)."""
    text = lm_tok.tokenizer.to_str() + f"|bos={lm_tok.bos_id}:{lm_tok.add_bos}|pad={lm_tok.pad_id}"
    if append_eos:  # (the key of a tokenizer without EOS stays as it was)
        text += f"|eos={lm_tok.eos_id}"
    key = hashlib.sha1(text.encode()).hexdigest()[:16]
    root = pathlib.Path(cache_dir or os.environ.get("GECKO_CACHE", "~/.cache/gecko_jax")).expanduser()
    folder = root / "embedder_tokenizers" / key
    if not (folder / "tokenizer_config.json").exists():
        tmp = folder.with_name(f"{key}.partial{os.getpid()}")
        write_embedder_tokenizer(lm_tok, tmp, append_eos=append_eos)
        try:
            os.replace(tmp, folder)
        except OSError:  # another process won the race
            shutil.rmtree(tmp, ignore_errors=True)
    return Tokenizer.from_folder(folder)


# --------------------------------------------------------------------------- export
def hf_text_config(cfg: dec.DecoderConfig) -> dict:
    """config.json of the bidirectional tower (Gemma3TextModel / LlamaModel)."""
    d = cfg.to_hf_dict()
    d.pop("torch_dtype", None)
    d["dtype"] = "float32"
    q = d.get("query_pre_attn_scalar")
    if isinstance(q, float) and q.is_integer():  # GGUF stores it as a float; transformers wants int
        d["query_pre_attn_scalar"] = int(q)
    if cfg.is_gemma:
        # transformers >= 4.57: with this flag the mask is bidirectional, and local
        # layers see |i - j| < sliding_window // 2 + 1 (decoder.bidirectional_window).
        d.update(architectures=["Gemma3TextModel"], use_bidirectional_attention=True)
    else:
        d.update(architectures=["LlamaModel"])
    return d


def export_llm_encoder(model: LLMEncoder, tokenizer: Tokenizer, folder: str | os.PathLike,
                       prompt_format: str = "gecko", max_length: int = 2048,
                       default_task: str = unified_format.DEFAULT_TASK):
    """Writes the EmbeddingGemma sentence-transformers layout (see the module doc)."""
    from safetensors.numpy import save_file

    cfg = model.config
    tmp = export_staging(folder)      # local; published below (local or a URI)
    state = dec.params_to_hf(cfg, jax.tree.map(_to_numpy, model.backbone.params()))
    # The bare text model's names (Gemma3TextModel / LlamaModel): no "model." prefix.
    state = {k.removeprefix("model."): np.ascontiguousarray(v, np.float32)
             for k, v in state.items() if k != "lm_head.weight"}
    save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    write_json(tmp / "config.json", hf_text_config(cfg))
    tokenizer.save(tmp)

    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling",
                "type": "sentence_transformers.models.Pooling"}]
    d = cfg.hidden_size
    write_json(tmp / "1_Pooling" / "config.json", {
        "word_embedding_dimension": d, "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": model.pooling == "mean", "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False, "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": model.pooling == "last",
        "include_prompt": model.include_prompt})
    din = d
    for layer in model.dense:
        i = len(modules)
        path = f"{i}_Dense"
        kernel = _to_numpy(layer.kernel.get_value())  # [in, out]
        modules.append({"idx": i, "name": str(i), "path": path,
                        "type": "sentence_transformers.models.Dense"})
        write_json(tmp / path / "config.json", {
            "in_features": din, "out_features": int(kernel.shape[1]), "bias": False,
            "activation_function": IDENTITY})
        save_file({"linear.weight": np.ascontiguousarray(kernel.T, np.float32)},
                  str(tmp / path / "model.safetensors"), metadata={"format": "pt"})
        din = int(kernel.shape[1])
    finish_st_folder(tmp, modules, max_length=max_length, prompt_format=prompt_format,
                     default_task=default_task,
                     gecko_config={"embedding_dim": model.embedding_dim, "tower": "llm",
                                   "architecture": cfg.architecture, "bidirectional": True,
                                   "pooling": model.pooling})
    return paths.publish_folder(tmp, folder)


def _to_numpy(x) -> np.ndarray:
    return np.asarray(x, np.float32)


# ----------------------------------------------------------------------------- load
def _read_json(path: pathlib.Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise GeckoError(f"{path}: not valid JSON ({err})") from None


def is_llm_folder(folder: str | os.PathLike) -> bool:
    """Whether `folder` holds a decoder-LLM tower (Gemma-3 / Llama config.json)."""
    path = paths.as_path(folder) / "config.json"
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text()).get("model_type") in ("gemma3_text", "llama")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False


def load_llm_encoder(folder: str | os.PathLike, dtype=jnp.float32):
    """An exported LLM embedder folder -> (LLMEncoder, Tokenizer, gecko_config dict)."""
    from safetensors.numpy import load_file

    folder = paths.local_folder(folder)      # URIs: a local copy
    for name in ("config.json", "model.safetensors", "modules.json", "tokenizer.json"):
        if not (folder / name).is_file():
            raise GeckoError(f"{folder}: no {name} (not an exported LLM embedder)")
    hf_cfg = _read_json(folder / "config.json")
    try:
        cfg = dec.DecoderConfig.from_hf_dict(hf_cfg)
    except (KeyError, ValueError) as err:
        raise GeckoError(f"{folder}/config.json: {err}") from None
    state = load_file(str(folder / "model.safetensors"))
    try:
        params = dec.hf_to_params(cfg, state)
    except KeyError as err:
        raise GeckoError(f"{folder}/model.safetensors: {err}") from None
    pooling, kernels, include_prompt = "mean", [], True
    for m in _read_json(folder / "modules.json"):
        kind = m["type"].rsplit(".", 1)[-1]
        if kind == "Pooling":
            pc = _read_json(folder / m["path"] / "config.json")
            pooling = "last" if pc.get("pooling_mode_lasttoken") else "mean"
            include_prompt = bool(pc.get("include_prompt", True))
        elif kind == "Dense":
            dc = _read_json(folder / m["path"] / "config.json")
            if dc.get("bias") or dc.get("activation_function", IDENTITY) != IDENTITY:
                raise GeckoError(f"{folder / m['path']}: only bias-free identity Dense layers "
                                 "(EmbeddingGemma's head) are supported")
            kernels.append(load_file(str(folder / m["path"] / "model.safetensors"))["linear.weight"].T)
    tokenizer = Tokenizer.from_folder(folder)
    model = llm_encoder_from_params(
        cfg, params, pooling=pooling, dense_kernels=kernels, dtype=dtype,
        prompt_markers=() if include_prompt else tokenizer.prompt_markers)
    meta = _read_json(folder / GECKO_CONFIG) if (folder / GECKO_CONFIG).is_file() else {}
    return model, tokenizer, meta
