"""HF-format BERT folders in, HF/sentence-transformers folders out.

A folder we export loads with `transformers.AutoModel.from_pretrained` and with
`sentence_transformers.SentenceTransformer`, and carries `gecko_config.json`
recording the prompt format the model expects (see gecko_jax.encode).
Folders may be local or URIs (gs://, memory://): read through a local copy, written
locally then published (gecko_jax/paths.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import tempfile

import jax.numpy as jnp
import numpy as np
from flax import nnx

from gecko_jax import paths, unified_format
from gecko_jax.errors import GeckoError
from gecko_jax.models.bert import BertConfig, BertEncoder
from gecko_jax.models.dual_encoder import DualEncoder
from gecko_jax.tokenization import Tokenizer

GECKO_CONFIG = "gecko_config.json"
DENSE_DIR = "2_Dense"


@dataclasses.dataclass
class ModelMeta:
    """What a model folder says about how to use it."""

    prompt_format: str = "raw"  # "gecko" for models trained with Gecko prompts
    max_length: int = 512
    default_task: str = unified_format.DEFAULT_TASK
    source: str = ""


def _param_table(model: DualEncoder):
    """(hf tensor name, nnx Param, transpose?) for every backbone tensor."""
    bb = model.backbone
    rows = [
        ("embeddings.word_embeddings.weight", bb.word_embeddings.embedding, False),
        ("embeddings.position_embeddings.weight", bb.position_embeddings.embedding, False),
        ("embeddings.token_type_embeddings.weight", bb.token_type_embeddings.embedding, False),
        ("embeddings.LayerNorm.weight", bb.embedding_norm.scale, False),
        ("embeddings.LayerNorm.bias", bb.embedding_norm.bias, False),
    ]
    for i, layer in enumerate(bb.layers):
        p = f"encoder.layer.{i}."
        for hf, mod in (("attention.self.query", layer.query), ("attention.self.key", layer.key),
                        ("attention.self.value", layer.value),
                        ("attention.output.dense", layer.attention_out),
                        ("intermediate.dense", layer.intermediate), ("output.dense", layer.output)):
            rows += [(p + hf + ".weight", mod.kernel, True), (p + hf + ".bias", mod.bias, False)]
        for hf, norm in (("attention.output.LayerNorm", layer.attention_norm),
                         ("output.LayerNorm", layer.output_norm)):
            rows += [(p + hf + ".weight", norm.scale, False), (p + hf + ".bias", norm.bias, False)]
    return rows


def _read_json(path: pathlib.Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise GeckoError(f"{path}: not valid JSON ({err})") from None


def _canonical_name(name: str) -> str:
    for prefix in ("bert.", "model."):
        if name.startswith(prefix):
            name = name[len(prefix):]
    return name.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta",
                                                                       "LayerNorm.bias")


def read_meta(folder: pathlib.Path) -> ModelMeta:
    meta = ModelMeta(source=str(folder))
    if (folder / GECKO_CONFIG).is_file():
        cfg = _read_json(folder / GECKO_CONFIG)
        for f in dataclasses.fields(ModelMeta):
            if f.name in cfg and f.name != "source":
                setattr(meta, f.name, cfg[f.name])
    elif (folder / "sentence_bert_config.json").is_file():
        meta.max_length = int(_read_json(folder / "sentence_bert_config.json")
                              .get("max_seq_length", meta.max_length))
    return meta


def load_dual_encoder(folder: str | os.PathLike, dtype=jnp.float32):
    """Loads an HF BERT folder (config.json + model.safetensors) as a DualEncoder.

    A `2_Dense` sentence-transformers module becomes the projection.
    Returns (model, tokenizer, meta).
    """
    from safetensors.numpy import load_file

    source = os.fspath(folder) if paths.is_remote(folder) else str(pathlib.Path(folder))
    folder = paths.local_folder(folder)      # URIs: a local copy
    if not folder.is_dir():
        raise GeckoError(f"{folder}: model folder does not exist")
    if not (folder / "config.json").is_file():
        raise GeckoError(f"{folder}: no config.json (expected an HF-format BERT folder)")
    hf_config = _read_json(folder / "config.json")
    if hf_config.get("model_type", "bert") not in ("bert", "roberta", "xlm-roberta"):
        raise GeckoError(f"{folder}/config.json: model_type {hf_config.get('model_type')!r} "
                         "is not a BERT-family encoder")
    weights_path = folder / "model.safetensors"
    if not weights_path.is_file():
        raise GeckoError(f"{folder}: no model.safetensors")
    try:
        tensors = {_canonical_name(k): v for k, v in load_file(str(weights_path)).items()}
    except Exception as err:  # safetensors raises its own error types
        raise GeckoError(f"{weights_path}: cannot be read as safetensors ({err})") from None
    tokenizer = Tokenizer.from_folder(folder)
    try:
        config = BertConfig.from_hf_dict(hf_config)
    except TypeError as err:
        raise GeckoError(f"{folder}/config.json: {err}") from None

    dense = None
    if (folder / DENSE_DIR / "config.json").is_file():
        dense = load_file(str(folder / DENSE_DIR / "model.safetensors"))
    projection_dim = None if dense is None else dense["linear.weight"].shape[0]
    with nnx.use_eager_sharding(False):
        # Abstract parameters (shapes only): every one is overwritten below, so
        # skip the cost of a random initialisation.
        model = nnx.eval_shape(lambda: DualEncoder(
            BertEncoder(config, dtype=dtype), projection_dim=projection_dim,
            prompt_markers=() if pooling_includes_prompt(folder) else tokenizer.prompt_markers))
    missing = []
    for name, param, transpose in _param_table(model):
        if name not in tensors:
            missing.append(name)
            continue
        value = tensors[name].T if transpose else tensors[name]
        if value.shape != param.get_value().shape:
            raise GeckoError(f"{weights_path}: tensor {name} has shape {value.shape}, "
                             f"config.json implies {param.get_value().shape}")
        param.set_value(jnp.asarray(value, dtype=jnp.float32))
    if missing:
        raise GeckoError(f"{weights_path}: missing {len(missing)} tensors, e.g. {missing[:3]}")
    if dense is not None:
        model.projection.kernel.set_value(jnp.asarray(dense["linear.weight"].T))
        model.projection.bias.set_value(jnp.asarray(dense["linear.bias"]))
    meta = read_meta(folder)
    meta.source = source
    return model, tokenizer, meta


def pooling_includes_prompt(folder: pathlib.Path) -> bool:
    """sentence-transformers' Pooling `include_prompt` of a folder (True when absent:
    a plain HF or sentence-transformers folder pools every token)."""
    for m in (_read_json(folder / "modules.json") if (folder / "modules.json").is_file() else []):
        if m.get("type", "").endswith("Pooling"):
            path = folder / m.get("path", "") / "config.json"
            if path.is_file():
                return bool(_read_json(path).get("include_prompt", True))
    return True


def write_json(path: pathlib.Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n")


def finish_st_folder(tmp: pathlib.Path, modules: list[dict], *, max_length: int,
                     prompt_format: str, default_task: str, gecko_config: dict) -> None:
    """The end of every exported folder (BERT or LLM tower): a Normalize module after
    `modules`, modules.json, sentence_bert_config.json, the Gecko templates as the
    sentence-transformers prompts, and gecko_config.json (format, templates, and the
    tower's own `gecko_config` entries)."""
    i = len(modules)
    modules.append({"idx": i, "name": str(i), "path": f"{i}_Normalize",
                    "type": "sentence_transformers.models.Normalize"})
    (tmp / f"{i}_Normalize").mkdir()
    write_json(tmp / "modules.json", modules)
    write_json(tmp / "sentence_bert_config.json",
                {"max_seq_length": max_length, "do_lower_case": False})
    # The query and document sides, then one named prompt per MTEB task type outside
    # retrieval (`encode(..., prompt_name="Classification")`), each holding its kind's
    # description from the table training and evaluation use: mteb's
    # sentence-transformers wrapper looks prompts up by type and falls back to
    # `query` / `document`, which retrieval types take.
    descriptions = unified_format.TASK_DESCRIPTIONS
    prompts = ({"query": unified_format.query_prefix(default_task),
                "document": unified_format.document_prefix(None),
                **{mteb_type: unified_format.query_prefix(descriptions[kind])
                   for mteb_type, kind in unified_format.MTEB_TASK_TYPE_KINDS.items()
                   if kind != "retrieval"}}
               if prompt_format == "gecko" else {})
    write_json(tmp / "config_sentence_transformers.json", {
        "prompts": prompts, "default_prompt_name": None, "similarity_fn_name": "cosine"})
    write_json(tmp / GECKO_CONFIG, {
        "prompt_format": prompt_format, "max_length": max_length, "default_task": default_task,
        "task_descriptions": dict(unified_format.TASK_DESCRIPTIONS),
        **gecko_config,
        "query_template": unified_format.QUERY_TEMPLATE,
        "document_template": unified_format.DOCUMENT_TEMPLATE})


def export_dual_encoder(model: DualEncoder, tokenizer: Tokenizer, folder: str | os.PathLike,
                        prompt_format: str = "gecko", max_length: int = 512,
                        default_task: str = unified_format.DEFAULT_TASK):
    """Writes a folder that transformers and sentence-transformers both load.

    The sentence-transformers prompts hold the Gecko templates with the default
    task; gecko_config.json records the format so gecko_jax formats any task.
    """
    from safetensors.numpy import save_file

    tmp = export_staging(folder)
    tensors = {name: np.ascontiguousarray(np.asarray(p[...], np.float32).T if t
                                          else np.asarray(p[...], np.float32))
               for name, p, t in _param_table(model)}
    save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    write_json(tmp / "config.json", model.backbone.cfg.to_hf_dict())
    tokenizer.save(tmp)

    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    d = model.backbone.hidden_size
    write_json(tmp / "1_Pooling" / "config.json", {
        "word_embedding_dimension": d, "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False, "include_prompt": model.include_prompt})
    if model.projection is not None:
        modules.append({"idx": 2, "name": "2", "path": DENSE_DIR,
                        "type": "sentence_transformers.models.Dense"})
        write_json(tmp / DENSE_DIR / "config.json", {
            "in_features": d, "out_features": model.projection_dim, "bias": True,
            "activation_function": "torch.nn.modules.linear.Identity"})
        save_file({"linear.weight": np.ascontiguousarray(np.asarray(model.projection.kernel[...]).T),
                   "linear.bias": np.asarray(model.projection.bias[...])},
                  str(tmp / DENSE_DIR / "model.safetensors"), metadata={"format": "pt"})
    finish_st_folder(tmp, modules, max_length=max_length, prompt_format=prompt_format,
                     default_task=default_task,
                     gecko_config={"embedding_dim": model.embedding_dim})
    return paths.publish_folder(tmp, folder)


def export_staging(folder: str | os.PathLike) -> pathlib.Path:
    """A fresh local folder to build an export of `folder` in (paths.publish_folder
    moves it into place): a sibling for local folders, a temporary one for URIs."""
    if paths.is_remote(folder):
        return pathlib.Path(tempfile.mkdtemp(prefix="gecko_export_"))
    folder = pathlib.Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp
