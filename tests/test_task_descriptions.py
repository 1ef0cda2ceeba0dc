"""One table of task descriptions (unified_format.TASK_DESCRIPTIONS): the training
tasks and the evaluation tasks of a kind use its string, and an exported model
folder carries the same strings as its prompts."""

import json

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
    for mteb_type, kind in mteb_adapter.TASK_TYPE_KINDS.items():
        assert mteb_adapter.TASK_TYPE_STRINGS[mteb_type] == TASK_DESCRIPTIONS[kind]
    assert set(mteb_adapter.TASK_TYPE_KINDS.values()) == set(TASK_DESCRIPTIONS)


def test_exported_folder_prompts_equal_the_table(tmp_path, minilm_dir):
    from sentence_transformers import SentenceTransformer

    from gecko_jax.encode import Encoder
    from gecko_jax.models.weights import export_dual_encoder, load_dual_encoder

    model, tokenizer, _ = load_dual_encoder(minilm_dir)
    folder = export_dual_encoder(model, tokenizer, tmp_path / "export", prompt_format="gecko",
                                 max_length=128)
    prompts = json.loads((folder / "config_sentence_transformers.json").read_text())["prompts"]
    for kind, desc in TASK_DESCRIPTIONS.items():
        assert prompts[kind] == unified_format.query_prefix(desc) == f"task: {desc} | query: "
    cfg = json.loads((folder / "gecko_config.json").read_text())
    assert cfg["task_descriptions"] == TASK_DESCRIPTIONS
    # sentence-transformers' named prompt and gecko_jax's query formatting agree.
    st = SentenceTransformer(str(folder), device="cpu")
    text = "Rugby: England beat Wales"
    ours = Encoder.from_pretrained(folder).encode_queries(
        [text], task=TASK_DESCRIPTIONS["classification"])
    theirs = st.encode([text], prompt_name="classification", normalize_embeddings=True)
    assert abs(float((ours * theirs).sum()) - 1.0) < 1e-4
