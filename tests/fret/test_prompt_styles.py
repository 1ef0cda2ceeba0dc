"""Prompt styles per teacher kind: chat turns for SmolLM2-135M-Instruct (its GGUF carries a
chat template), completion text for Gemma-3-270M (a base model: no template), with the
real tokenizers of both shipped teachers."""

import collections

import pytest

from gecko_jax.errors import GeckoError
from gecko_jax.fret import prompts as prompts_lib
from gecko_jax.fret.pipeline import make_renderer, resolve_prompt_style

PASSAGE = "The Amazon river carries more water than any other river on Earth."


@pytest.fixture(scope="module")
def tokenizers_():
    from gecko_jax.llm.loading import load_decoder

    return {name: load_decoder(name)[2] for name in ("smollm2", "gemma3")}


def test_style_is_detected_from_the_model_and_can_be_overridden():
    from gecko_jax.llm.loading import has_chat_template

    assert has_chat_template("smollm2") and not has_chat_template("gemma3")
    assert resolve_prompt_style("auto", "smollm2") == "chat"
    assert resolve_prompt_style("auto", "gemma3") == "completion"
    assert resolve_prompt_style("completion", "smollm2") == "completion"
    assert resolve_prompt_style("chat", "gemma3") == "chat"   # refused once the teacher loads
    with pytest.raises(GeckoError, match="prompt style"):
        resolve_prompt_style("instruct", "smollm2")
    # A server's model id (no tokenizer to read): instruction models by name.
    for name, style in [("SmolLM2-135M-Instruct", "chat"), ("gemma-3-270m-it", "chat"),
                        ("google/gemma-3-270m", "completion"), ("llama-3-8b-chat", "chat"),
                        ("Qwen2.5-0.5B", "completion")]:
        assert prompts_lib.style_from_model(None, name) == style, name


def test_chat_teacher_gets_chat_turns(tokenizers_, prompts):
    tok = tokenizers_["smollm2"]
    r = prompts_lib.Renderer("chat", lambda m: tok.apply_chat_template(m))
    text, prefix = r.qg(prompts.qg, PASSAGE)
    n_ex = len(prompts.qg.spec["examples"])
    # Our instructions replace SmolLM2's default system turn; one user/assistant pair per
    # example, the passage as the last user turn, the reply opened with the JSON prefix.
    assert text.startswith("<|im_start|>system\nWrite a retrieval task")
    assert "You are a helpful AI assistant" not in text
    assert text.count("<|im_start|>user\n") == n_ex + 1
    assert text.count("<|im_start|>assistant\n") == n_ex + 1
    assert text.endswith(f"<|im_start|>user\nPassage: {PASSAGE}<|im_end|>\n"
                         f"<|im_start|>assistant\n" + '{"task": "')
    assert prefix == '{"task": "'
    ex = prompts.qg.spec["examples"][0]
    assert (f'<|im_start|>assistant\n{{"task": "{ex["task"]}", "query": "{ex["query"]}"}}'
            f"<|im_end|>") in text
    ids = tok.encode(text)
    im_start = tok.tokenizer.token_to_id("<|im_start|>")
    assert ids[0] == im_start and ids.count(im_start) == 2 * n_ex + 3  # special, one id each
    # QL: the query is the assistant's turn; RC: bare labels, one token each.
    pre, cont = r.ql(prompts.ql, PASSAGE, "longest river")
    assert pre.endswith("Query:<|im_end|>\n<|im_start|>assistant\n") and cont == "longest river"
    assert r.rc(prompts.rc, "q", PASSAGE).endswith("Relevant:<|im_end|>\n<|im_start|>assistant\n")
    yes, no = r.labels(prompts.rc)
    assert (yes, no) == ("yes", "no")
    assert len(tok.encode(yes, add_bos=False)) == len(tok.encode(no, add_bos=False)) == 1
    # Every prompt of a kind shares the leading few-shot turns (the engine caches them).
    other, _ = r.qg(prompts.qg, "Another passage.")
    shared = text[:text.rindex("<|im_start|>user")]
    assert other.startswith(shared) and len(shared) > 0.8 * len(text) - len(PASSAGE)


def test_base_teacher_gets_completion_text(tokenizers_, prompts):
    tok = tokenizers_["gemma3"]
    assert tok.chat_template is None
    text, prefix = prompts_lib.COMPLETION.qg(prompts.qg, PASSAGE)
    assert text == prompts_lib.qg_prompt(prompts.qg, PASSAGE)
    assert text.startswith("Write a retrieval task") and text.endswith(
        f"Passage: {PASSAGE}\n" + '{"task": "')
    assert "<start_of_turn>" not in text and "<|im_start|>" not in text
    ids = tok.encode(text)
    assert ids[0] == tok.bos_id and tok.tokenizer.token_to_id("<start_of_turn>") not in ids
    assert prompts_lib.COMPLETION.labels(prompts.rc) == (" yes", " no")
    assert prompts_lib.COMPLETION.ql(prompts.ql, PASSAGE, "q") == prompts_lib.ql_pair(
        prompts.ql, PASSAGE, "q")


def test_chat_endpoint_gets_messages_and_scores_in_completion_form(prompts):
    """Behind /v1/chat/completions (no template to render here) query generation sends
    messages; QL/RC need prompt log-probs, which only /completions has."""
    r = prompts_lib.Renderer("chat", None)
    msgs, prefix = r.qg(prompts.qg, PASSAGE)
    assert prefix == "" and msgs[0]["role"] == "system"
    assert [m["role"] for m in msgs[1:]] == ["user", "assistant"] * len(
        prompts.qg.spec["examples"]) + ["user"]
    assert msgs[-1]["content"] == f"Passage: {PASSAGE}"
    assert r.ql(prompts.ql, PASSAGE, "q") == prompts_lib.ql_pair(prompts.ql, PASSAGE, "q")
    assert r.labels(prompts.rc) == (" yes", " no")


@pytest.mark.slow
@pytest.mark.parametrize("name,style", [("smollm2", "chat"), ("gemma3", "completion")])
def test_each_teacher_writes_parseable_queries_in_its_style(name, style, wiki_rows, prompts):
    """Real generation: each shipped teacher, in the style detected for it, turns two
    Wikipedia passages into (task, query) pairs that parse and pass stage 1's checks."""
    from gecko_jax.fret import generate as generate_lib
    from gecko_jax.fret.pipeline import open_teacher

    llm = open_teacher(name, max_batch=8)
    assert resolve_prompt_style("auto", name) == style
    renderer = make_renderer(style, llm)
    assert renderer.style == style
    if style == "completion":
        with pytest.raises(GeckoError, match="no chat template"):
            make_renderer("chat", llm)
    passages = [(r["id"], r["text"]) for r in wiki_rows[:2]]
    counts = collections.Counter()
    gens = generate_lib.generate_queries(llm, passages, prompts.qg,
                                         generate_lib.GenerateConfig(max_attempts=3), seed=0,
                                         counts=counts, renderer=renderer)
    assert len(gens) == 2, counts
    for g in gens:
        assert g.task.strip() and len(g.query.split()) >= 2
