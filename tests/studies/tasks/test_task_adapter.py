"""Tests of studies/tasks/adapter.py: tokenization, likelihood and generation requests, and an
end-to-end evaluation of the toy-world suite on untrained tiny models of both objectives."""

import json

import pytest
import torch

from models.config import preset
from models.transformer import Transformer
from studies.evaluate import evaluate_suite
from studies.tasks.adapter import EvalSettings, ModelAdapter, cut_at_stop, load_tokenizer


@pytest.fixture(scope="module")
def tokenizer(toy_data):
    folder, _ = toy_data
    return load_tokenizer(folder / "tokenizer.json")


def tiny(objective, vocab, seed=0, **overrides):
    torch.manual_seed(seed)
    return Transformer(preset("tiny", vocab_size=vocab, causal=objective == "arm", **overrides)).eval()


def make_adapter(model, tokenizer, meta, objective, **kwargs):
    ids = meta["special_ids"]
    return ModelAdapter(model, tokenizer, objective=objective, eos_id=ids["eos"], mask_id=ids["mask"],
                        pad_id=ids["pad"], **kwargs)


def test_continuation_tokens_are_those_of_running_text(tokenizer, toy_data):
    _, meta = toy_data
    adapter = make_adapter(tiny("arm", meta["vocab_size"]), tokenizer, meta, "arm")
    context, continuation = adapter.encode_pair("Question: Where was Ansel born?\nAnswer: ", "Arnsvale")
    whole = tokenizer.encode("Question: Where was Ansel born?\nAnswer: Arnsvale").ids
    assert context[0] == meta["special_ids"]["eos"]  # every context starts like a packed document
    assert context[1:] + continuation == whole
    assert tokenizer.decode(continuation) == " Arnsvale"  # the trailing space moved to the continuation


def test_arm_loglikelihood_is_the_sum_of_next_token_log_probs(tokenizer, toy_data):
    _, meta = toy_data
    model = tiny("arm", meta["vocab_size"])
    adapter = make_adapter(model, tokenizer, meta, "arm")
    requests = [("Question: In which year was Ansel born?\nAnswer:", " 1950"), ("Question: Hi\nAnswer:", " no")]
    scores = adapter.loglikelihood(requests)
    for (context, continuation), score in zip(requests, scores):
        ctx, cont = adapter.encode_pair(context, continuation)
        ids = torch.tensor([ctx + cont])
        with torch.no_grad():
            log_probs = model(ids)[0].double().log_softmax(-1)
        direct = sum(log_probs[len(ctx) - 1 + i, token] for i, token in enumerate(cont))
        assert score == pytest.approx(float(direct), abs=1e-4)


def test_mdm_single_token_continuation_is_the_exact_masked_log_prob(tokenizer, toy_data):
    _, meta = toy_data
    model = tiny("mdm", meta["vocab_size"])
    adapter = make_adapter(model, tokenizer, meta, "mdm", mc_samples=8)
    context = "Question: Where is it?\nAnswer:"
    continuation = next(text for text in map(tokenizer.decode, ([i] for i in range(4, meta["vocab_size"])))
                        if text.startswith(" ") and len(text) > 1 and len(tokenizer.encode(text).ids) == 1)
    ctx, cont = adapter.encode_pair(context, continuation)
    assert len(cont) == 1
    (score,) = adapter.loglikelihood([(context, continuation)])
    with torch.no_grad():
        logits = model(torch.tensor([ctx + [meta["special_ids"]["mask"]]]))[0, -1].double()
    assert score == pytest.approx(float(logits.log_softmax(-1)[cont[0]]), abs=1e-4)
    # a multi-token continuation uses mc_samples Monte Carlo samples and is reproducible after reseeding
    adapter.reseed(5)
    first = adapter.loglikelihood([(context, " Brightmoor College")])
    adapter.reseed(5)
    assert adapter.loglikelihood([(context, " Brightmoor College")]) == first and first[0] < 0


def test_a_choice_longer_than_the_context_is_a_clear_error(tmp_path, tokenizer, toy_data):
    _, meta = toy_data
    model = tiny("arm", meta["vocab_size"], max_seq_len=16)
    adapter = make_adapter(model, tokenizer, meta, "arm")
    long_choice = " " + " ".join(["Arnsvale Brightmoor Caldera"] * 6)
    row = {"id": "too-long", "prompt": "Question: Where?\nAnswer:", "choices": [" A", long_choice], "answer": 0}
    (tmp_path / "toy_forward.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(ValueError, match=r"too-long.*context is 16 positions"):
        evaluate_suite(adapter, "toy_forward", tasks_dir=tmp_path)
    with pytest.raises(ValueError, match="leaves no room for a prompt"):
        adapter.generate(["Question: Hi\nAnswer:"], max_new_tokens=16)


class ScriptedModel(torch.nn.Module):
    """Logits whose argmax spells ``script`` after a prompt of ``prompt_len`` tokens: position t
    predicts token t + 1 (causal) or token t (bidirectional mask predictor)."""

    def __init__(self, script, prompt_len, vocab, causal):
        super().__init__()
        self.script, self.prompt_len, self.vocab, self.causal = script, prompt_len, vocab, causal
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, tokens, key_padding_mask=None):
        batch, length = tokens.shape
        logits = torch.zeros(batch, length, self.vocab)
        for t in range(length):
            k = t + 1 - self.prompt_len if self.causal else t - self.prompt_len
            if 0 <= k < len(self.script):
                logits[:, t, self.script[k]] = 10.0 + k * 0.01
        return logits


@pytest.mark.parametrize("objective", ["arm", "mdm"])
def test_generation_is_cut_at_stop_sequences_and_eos(objective, tokenizer, toy_data):
    _, meta = toy_data
    eos = meta["special_ids"]["eos"]
    context = "Question: Tom has 3 apples. How many?\nAnswer:"
    prompt_len = 1 + len(tokenizer.encode(context).ids)
    stop_script = tokenizer.encode(" 3 + 4 = 7.\n\nQuestion: next").ids
    eos_script = tokenizer.encode(" The answer is 7.").ids + [eos] + tokenizer.encode(" junk").ids
    settings = EvalSettings.parse({"steps": 8})
    for script, expected in ((stop_script, " 3 + 4 = 7."), (eos_script, " The answer is 7.")):
        model = ScriptedModel(script + [eos] * 8, prompt_len, meta["vocab_size"], causal=objective == "arm")
        adapter = make_adapter(model, tokenizer, meta, objective, settings=settings)
        (text,) = adapter.generate([context], max_new_tokens=16, stop=["\n\n", "Question:"])
        assert text == expected


def test_cut_at_stop_takes_the_earliest_stop():
    assert cut_at_stop("a\nb Question: c\n\nd", ["\n\n", "Question:"]) == "a\nb "
    assert cut_at_stop("abc", []) == "abc" and cut_at_stop("abc", [""]) == "abc"


def test_eval_settings_parse_and_reject_unknown_keys():
    settings = EvalSettings.parse({"steps": 32, "block_length": 8, "batch_size": 4, "task_files": {"mmlu": "m.jsonl"},
                                   "pass_k": [1, 10], "num_samples": 10, "temperature": 0.8})
    assert (settings.generation.steps, settings.generation.block_length, settings.generation.temperature) == (32, 8, 0.8)
    assert settings.pass_k == (1, 10) and settings.task_files == {"mmlu": "m.jsonl"}
    with pytest.raises(ValueError, match=r"unknown eval.settings key\(s\) \['blocklength'\]"):
        EvalSettings.parse({"blocklength": 8})


@pytest.mark.parametrize("objective", ["arm", "mdm"])
def test_toyworld_suite_end_to_end_on_an_untrained_model(objective, tokenizer, toy_data):
    folder, meta = toy_data
    model = tiny(objective, meta["vocab_size"])
    settings = EvalSettings.parse({"max_new_tokens": 8, "steps": 4, "batch_size": 8})
    adapter = make_adapter(model, tokenizer, meta, objective, mc_samples=2, settings=settings)
    results = evaluate_suite(adapter, "toyworld", limit=3, tasks_dir=folder / "tasks")
    assert list(results) == ["toy_mc", "toy_forward", "toy_reverse", "toy_arithmetic"]
    for name, result in results.items():
        assert result["n"] == 3
        assert all(0.0 <= value <= 1.0 for value in result["metrics"].values()), (name, result)
    assert set(results["toy_mc"]["metrics"]) == {"acc", "acc_norm"} and results["toy_mc"]["chance"] == 0.25
    assert set(results["toy_arithmetic"]["metrics"]) == {"exact_match", "exact_match_strict"}
    assert model.training is False
