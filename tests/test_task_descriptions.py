"""One table of task descriptions (unified_format.TASK_DESCRIPTIONS): the training
tasks and the evaluation tasks of a kind use its string, and an exported model
folder carries the same strings as its prompts."""

import json

import numpy as np
import pytest

from gecko_jax import unified_format
from gecko_jax.unified_format import TASK_DESCRIPTIONS


def test_training_and_evaluation_take_descriptions_from_the_table():
    from gecko_jax.data import formatting, mixtures
    from gecko_jax.evaluation import mteb_adapter
    from gecko_jax.evaluation.local_tasks import LOCAL_TASKS

    assert {e.task for e in mixtures.bbc_classification(limit=10)} == {
        TASK_DESCRIPTIONS["classification"]}
    assert {e.task for e in mixtures.wikipedia_title_body(limit=10)} == {
        TASK_DESCRIPTIONS["retrieval"]}
    assert {e.task for e in mixtures.wikipedia_sections(limit=10)} == {
        TASK_DESCRIPTIONS["retrieval"]}
    assert {e.task for e in mixtures.bbc_title_body(limit=10)} == {
        TASK_DESCRIPTIONS["retrieval"]}
    nli = formatting.nli_examples([("a man plays", "a man makes music", "entailment")])
    assert nli[0].task == TASK_DESCRIPTIONS["similarity"]
    for task in LOCAL_TASKS.values():
        assert task.gecko_task == TASK_DESCRIPTIONS[task.type], task.name
    for mteb_type, kind in unified_format.MTEB_TASK_TYPE_KINDS.items():
        assert mteb_adapter.TASK_TYPE_STRINGS[mteb_type] == TASK_DESCRIPTIONS[kind]
    assert set(unified_format.MTEB_TASK_TYPE_KINDS.values()) == set(TASK_DESCRIPTIONS)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, minilm_dir):
    """MiniLM exported in the Gecko format: a folder as training writes it."""
    from gecko_jax.models.weights import export_dual_encoder, load_dual_encoder

    model, tokenizer, _ = load_dual_encoder(minilm_dir)
    return export_dual_encoder(model, tokenizer, tmp_path_factory.mktemp("st") / "export",
                               prompt_format="gecko", max_length=128)


def test_exported_folder_prompts_equal_the_table(exported):
    from sentence_transformers import SentenceTransformer

    from gecko_jax.encode import Encoder

    folder = exported
    prompts = json.loads((folder / "config_sentence_transformers.json").read_text())["prompts"]
    assert prompts["query"] == "task: search result | query: "
    assert prompts["document"] == "title: none | text: "
    for mteb_type, kind in unified_format.MTEB_TASK_TYPE_KINDS.items():
        if kind != "retrieval":
            desc = TASK_DESCRIPTIONS[kind]
            assert prompts[mteb_type] == unified_format.query_prefix(desc) == f"task: {desc} | query: "
    cfg = json.loads((folder / "gecko_config.json").read_text())
    assert cfg["task_descriptions"] == TASK_DESCRIPTIONS
    # sentence-transformers' named prompt and gecko_jax's query formatting agree.
    st = SentenceTransformer(str(folder), device="cpu")
    text = "Rugby: England beat Wales"
    ours = Encoder.from_pretrained(folder).encode_queries(
        [text], task=TASK_DESCRIPTIONS["classification"])
    theirs = st.encode([text], prompt_name="Classification", normalize_embeddings=True)
    assert abs(float((ours * theirs).sum()) - 1.0) < 1e-4


def test_mteb_sentence_transformers_wrapper_picks_the_tables_prompts(exported):
    """mteb's own wrapper (`mteb.get_model(folder)`'s route) embeds each task type of an
    exported folder with the prompt gecko_jax's MTEB adapter gives that type."""
    pytest.importorskip("mteb")
    import warnings

    import mteb
    from mteb.models.sentence_transformer_wrapper import SentenceTransformerEncoderWrapper
    from mteb.types import PromptType
    from sentence_transformers import SentenceTransformer

    from gecko_jax.encode import Encoder
    from gecko_jax.evaluation import mteb_adapter

    folder = exported
    with warnings.catch_warnings():
        # mteb warns of, and drops, prompt names that are no task type, task name or side.
        warnings.filterwarnings("error", message="Some prompts")
        wrapper = SentenceTransformerEncoderWrapper(
            SentenceTransformer(str(folder), device="cpu"))
    sides = {"Retrieval": [PromptType.query, PromptType.document],
             "Classification": [None], "Clustering": [None], "STS": [None],
             "PairClassification": [None]}
    tasks = {t.metadata.type: t for t in mteb.get_tasks(task_types=list(sides), languages=["eng"])}
    for mteb_type, prompt_types in sides.items():
        meta = tasks[mteb_type].metadata
        for prompt_type in prompt_types:
            if prompt_type == PromptType.document:
                expected = unified_format.document_prefix(None)
            else:
                expected = unified_format.query_prefix(mteb_adapter.TASK_TYPE_STRINGS[mteb_type])
            name = wrapper.get_prompt_name(meta, prompt_type)
            assert wrapper.model_prompts[name] == expected, (mteb_type, prompt_type)
    # The vectors agree with gecko_jax's Encoder for the same task string.
    text = "Rugby: England beat Wales"
    from datasets import Dataset
    from torch.utils.data import DataLoader

    batches = DataLoader(Dataset.from_dict({"text": [text]}), batch_size=1)
    theirs = wrapper.encode(batches, task_metadata=tasks["STS"].metadata,
                            hf_split="test", hf_subset="default", prompt_type=None)
    ours = Encoder.from_pretrained(folder).encode_queries(
        [text], task=TASK_DESCRIPTIONS["similarity"])
    assert abs(float((ours * np.asarray(theirs)).sum()) - 1.0) < 1e-4
