"""The student tower of `gecko distill`: MiniLM (the default) or a decoder LLM.

    --student minilm    all-MiniLM-L6-v2 (models/minilm.gin), the README's figures
    --student gemma3    Gemma-3-270M, bidirectional, mean pooling, dense head
                        640 -> 2560 -> 640 (models/gemma3_270m.gin)
    --student smollm2   SmolLM2-135M, bidirectional, mean pooling (models/smollm2_135m.gin)

An LLM student starts from the shipped GGUF (dequantised to float32 by
training/llm_tower.llm_model); fine-tuning starts from the pre-finetuned export
(`llm_model.source = <export folder>`). Its run adds two evaluations beside the
MiniLM reference: the raw LLM (bidirectional, mean-pooled, no dense head, no
training, raw texts) and the pre-finetuned model, so the report shows the
Gemini Embedding direction: no training < pre-finetuning < the full recipe.
"""

from __future__ import annotations

import dataclasses

from gecko_jax.errors import GeckoError


@dataclasses.dataclass(frozen=True)
class Student:
    """A student tower: its model gin file and how the report names it."""
    gin_file: str
    label: str
    llm_source: str | None = None   # shipped LLM name; None for the BERT student
    # Machine settings the recipe runs it with (it trains on the CPU).
    machine_gin_files: tuple[str, ...] = ()

    @property
    def is_llm(self) -> bool:
        return self.llm_source is not None

    @property
    def gin_files(self) -> list[str]:
        """The model file, then its machine settings."""
        return [self.gin_file, *self.machine_gin_files]


# The LLM towers' XLA:CPU settings (gradients and update as two compiled calls).
CPU_GIN = "gin_configs/machines/cpu.gin"

STUDENTS = {
    "minilm": Student("gin_configs/models/minilm.gin", "all-MiniLM-L6-v2 (d=384)"),
    "gemma3": Student("gin_configs/models/gemma3_270m.gin",
                      "Gemma-3-270M (bidirectional, mean pooling, dense head 640 -> 2560 -> 640, "
                      "d=640)", llm_source="gemma3", machine_gin_files=(CPU_GIN,)),
    "smollm2": Student("gin_configs/models/smollm2_135m.gin",
                       "SmolLM2-135M (bidirectional, mean pooling, d=576)", llm_source="smollm2",
                       machine_gin_files=(CPU_GIN,)),
}

# The default scale of an LLM student's run: fits about 30 minutes on a 2-core CPU
# (README "gecko distill --student"); each training step costs ~10x a MiniLM step.
LLM_DEFAULTS = {"prefinetune_steps": 30, "finetune_steps": 30, "batch_size": 8,
                "query_length": 32, "doc_length": 64, "learning_rate": 5e-5,
                # Fine-tuning at 1e-5, as the MiniLM student: on the validation tasks
                # 5e-5 left retrieval level with pre-finetuned, 1e-5 raised it (BBC and
                # Wikipedia, docs/results.md).
                "finetune_learning_rate": 1e-5,
                # No title_body here: LLM students take DistillConfig's (Wikipedia and
                # BBC training-pool pairs); on the validation tasks, 2 seeds, the news
                # pairs raised Gemma-3's news retrieval in both seeds, Wikipedia level.
                "eval_limit": 200, "eval_max_length": 64,
                # Gecko prompts: an LLM tower learns its embedding from scratch, and the
                # prompts are how it tells a query from a document (raw: not measured).
                "prompt_format": "gecko"}
# 384: the MiniLM reference row at its full width.
LLM_DIMS = {"gemma3": (640, 384, 256, 128), "smollm2": (576, 384, 256, 128)}

# Evaluation stages an LLM student adds (their model names in results.json): the
# untrained LLM in both prompt formats.
RAW, RAW_GECKO, PREFINETUNED = ("raw LLM (mean-pooled)", "raw LLM, Gecko prompts",
                                "pre-finetuned")
LLM_EVAL_STAGES = {"eval_raw": RAW, "eval_raw_gecko": RAW_GECKO}


def get_student(name: str) -> Student:
    if name not in STUDENTS:
        raise GeckoError(f"unknown student {name!r}: expected one of {sorted(STUDENTS)}")
    return STUDENTS[name]


def student_defaults(name: str) -> dict:
    """DistillConfig fields that differ from the MiniLM defaults for this student."""
    if not get_student(name).is_llm:
        return {}
    return {**LLM_DEFAULTS, "dims": LLM_DIMS[name]}


def init_bindings(name: str, folder) -> list[str]:
    """Gin bindings that start training from the model folder `folder` (an export)."""
    if get_student(name).is_llm:
        return [f"llm_model.source = {str(folder)!r}"]
    return ["train.model_fn = @pretrained_model", f"pretrained_model.folder = {str(folder)!r}"]


def raw_encoder(name: str, max_length: int, batch_size: int = 32):
    """The untrained LLM as an Encoder: bidirectional, mean pooling, no dense head,
    raw texts (no prompts: it was never taught them)."""
    from gecko_jax.encode import Encoder
    from gecko_jax.models.weights import ModelMeta
    from gecko_jax.training.llm_tower import llm_model

    student = get_student(name)
    if not student.is_llm:
        raise GeckoError(f"student {name!r} is not an LLM: it has no raw-LLM row")
    model, tokenizer = llm_model(source=student.llm_source, pooling="mean", dense_dims=())
    meta = ModelMeta(prompt_format="raw", max_length=max_length, source=student.llm_source)
    return Encoder(model, tokenizer, meta, max_length=max_length, batch_size=batch_size)
