"""The request types of ``studies.tasks.lm_eval_model.ArmMdmLM`` on tiny untrained models:
tokenization of a (context, continuation) pair, likelihoods against the model's own logits,
generation cut at stop strings and EOS, ``EvalSettings`` parsing, and the toy-world suite end to end
through ``studies.tasks.suite.evaluate_suite`` for both objectives."""

import dataclasses
import json
import shutil
from types import SimpleNamespace

import pytest
import torch
from lm_eval.api.instance import Instance
from tokenizers import Tokenizer

from models.config import preset
from models.lightning import LanguageModel
from studies.tasks.lm_eval_model import ArmMdmLM, cut_at_stop, split_pair
from studies.tasks.suite import TASKS, EvalSettings, evaluate_suite

MC_TASKS = ("toy_mc", "toy_forward", "toy_reverse")


@pytest.fixture(scope="module")
def tokenizer(toy_data):
    folder, _ = toy_data
    return Tokenizer.from_file(str(folder / "tokenizer.json"))


@pytest.fixture
def hf_cache(monkeypatch, tmp_path):
    """lm-eval reads the toy task files through `datasets`: keep its cache out of the home folder."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))


def tiny(objective, meta, seed=0, **overrides):
    """An untrained tiny ``LanguageModel`` of ``objective`` over the toy world's vocabulary, in eval mode."""
    torch.manual_seed(seed)
    config = preset("tiny", vocab_size=meta["vocab_size"], causal=objective == "arm", **overrides)
    module = LanguageModel(dataclasses.asdict(config), objective, total_steps=1, tokens_per_step=1,
                           mask_id=meta["special_ids"]["mask"])
    return module.eval()


def make_lm(module, tokenizer, meta, **model_args):
    return ArmMdmLM.from_module(module, tokenizer, special_ids=meta["special_ids"], **model_args)


def request(kind, args, task="direct", doc_id=0):
    return Instance(request_type=kind, doc={}, arguments=args, idx=0, metadata=(task, doc_id, 1))


def test_continuation_tokens_are_those_of_running_text(tokenizer, toy_data):
    _, meta = toy_data
    lm = make_lm(tiny("arm", meta), tokenizer, meta)
    context, continuation = lm.encode_pair("Question: Where was Ansel born?\nAnswer: ", "Arnsvale")
    whole = tokenizer.encode("Question: Where was Ansel born?\nAnswer: Arnsvale").ids
    assert context[0] == meta["special_ids"]["eos"]  # every context starts like a packed document
    assert context[1:] + continuation == whole
    assert tokenizer.decode(continuation) == " Arnsvale"  # the trailing space moved to the continuation
    # split_pair is the same split without the leading EOS
    assert split_pair(lm.tok_encode, "Question: Where was Ansel born?\nAnswer: ", "Arnsvale") == (context[1:],
                                                                                               continuation)


def test_arm_loglikelihood_is_the_sum_of_next_token_log_probs(tokenizer, toy_data):
    _, meta = toy_data
    module = tiny("arm", meta)
    lm = make_lm(module, tokenizer, meta)
    pairs = [("Question: In which year was Ansel born?\nAnswer:", " 1950"), ("Question: Hi\nAnswer:", " no")]
    scores = lm.loglikelihood([request("loglikelihood", pair, doc_id=i) for i, pair in enumerate(pairs)])
    assert len(scores) == len(pairs)
    for (context, continuation), (score, is_greedy) in zip(pairs, scores):
        ctx, cont = lm.encode_pair(context, continuation)
        with torch.no_grad():
            log_probs = module.model(torch.tensor([ctx + cont]))[0].double().log_softmax(-1)
        direct = sum(log_probs[len(ctx) - 1 + i, token] for i, token in enumerate(cont))
        greedy = all(int(log_probs[len(ctx) - 1 + i].argmax()) == token for i, token in enumerate(cont))
        assert score == pytest.approx(float(direct), abs=1e-4)
        assert is_greedy == greedy


def test_mdm_single_token_continuation_is_the_exact_masked_log_prob(tokenizer, toy_data):
    _, meta = toy_data
    module = tiny("mdm", meta)
    lm = make_lm(module, tokenizer, meta, mc_samples=8)
    context = "Question: Where is it?\nAnswer:"
    continuation = next(text for text in map(tokenizer.decode, ([i] for i in range(4, meta["vocab_size"])))
                        if text.startswith(" ") and len(text) > 1 and len(tokenizer.encode(text).ids) == 1)
    ctx, cont = lm.encode_pair(context, continuation)
    assert len(cont) == 1
    ((score, is_greedy),) = lm.loglikelihood([request("loglikelihood", (context, continuation))])
    with torch.no_grad():
        logits = module.model(torch.tensor([ctx + [meta["special_ids"]["mask"]]]))[0, -1].double()
    assert score == pytest.approx(float(logits.log_softmax(-1)[cont[0]]), abs=1e-4)
    assert is_greedy is False  # no greedy check without check_greedy
    # a multi-token continuation uses mc_samples Monte Carlo samples, reproducibly: every request batch
    # starts from the task's seeded generator
    multi = [request("loglikelihood", (context, " Brightmoor College"))]
    assert len(lm.encode_pair(context, " Brightmoor College")[1]) > 1
    first = lm.loglikelihood(multi)
    assert lm.loglikelihood(multi) == first and first[0][0] < 0


def test_a_choice_longer_than_the_context_is_a_clear_error(tmp_path, tokenizer, toy_data, hf_cache):
    folder, meta = toy_data
    lm = make_lm(tiny("arm", meta, max_seq_len=16), tokenizer, meta)
    long_choice = " " + " ".join(["Arnsvale Brightmoor Caldera"] * 6)
    row = {"id": "too-long", "prompt": "Question: Where?\nAnswer:", "choices": [" A", long_choice], "answer": 0}
    data_dir = tmp_path / "prepared"  # a prepared folder whose only task file holds the long choice
    (data_dir / "tasks").mkdir(parents=True)
    shutil.copyfile(folder / "metadata.json", data_dir / "metadata.json")
    (data_dir / "tasks" / "toy_forward.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(ValueError, match=r"has \d+ tokens but the model's context is 16 positions"):
        evaluate_suite(lm, "toy_forward", data_dir=data_dir)
    with pytest.raises(ValueError, match="leaves no room for a prompt"):
        lm.generate_until([request("generate_until", ("Question: Hi\nAnswer:", {"until": [], "max_gen_toks": 16}))])


class ScriptedModel(torch.nn.Module):
    """Logits whose argmax spells ``script`` after a prompt of ``prompt_len`` tokens: position t
    predicts token t + 1 (causal) or token t (bidirectional mask predictor)."""

    def __init__(self, script, prompt_len, vocab, causal, max_seq_len=64):
        super().__init__()
        self.script, self.prompt_len, self.vocab, self.causal = script, prompt_len, vocab, causal
        self.config = SimpleNamespace(max_seq_len=max_seq_len)
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
    gen_kwargs = {"until": ["\n\n", "Question:"], "max_gen_toks": 16, "do_sample": False}
    for script, expected in ((stop_script, " 3 + 4 = 7."), (eos_script, " The answer is 7.")):
        model = ScriptedModel(script + [eos] * 8, prompt_len, meta["vocab_size"], causal=objective == "arm")
        module = SimpleNamespace(model=model, objective=objective, mask_id=meta["special_ids"]["mask"])
        lm = make_lm(module, tokenizer, meta, steps=8)
        (text,) = lm.generate_until([request("generate_until", (context, gen_kwargs))])
        assert text == expected


def test_cut_at_stop_takes_the_earliest_stop():
    assert cut_at_stop("a\nb Question: c\n\nd", ["\n\n", "Question:"]) == "a\nb "
    assert cut_at_stop("abc", []) == "abc" and cut_at_stop("abc", [""]) == "abc"


def test_eval_settings_parse_and_reject_unknown_keys():
    settings = EvalSettings.parse({"steps": 32, "block_length": 8, "batch_size": 4, "temperature": 0.8,
                                   "task_files": {"mmlu_anatomy": {"test": "m.jsonl"}}})
    assert (settings.generation.steps, settings.generation.block_length, settings.generation.temperature) == (32, 8, 0.8)
    assert settings.batch_size == 4 and settings.task_files == {"mmlu_anatomy": {"test": "m.jsonl"}}
    # generation keys may also sit under generation:
    nested = EvalSettings.parse({"generation": {"steps": 32, "block_length": 8, "temperature": 0.8}, "batch_size": 4})
    assert nested.generation == settings.generation
    with pytest.raises(ValueError, match=r"unknown eval.settings key\(s\) \['blocklength'\]"):
        EvalSettings.parse({"blocklength": 8})
    for gone in ("num_samples", "pass_k", "timeout"):  # the hand-written HumanEval scorer's keys
        with pytest.raises(ValueError, match=rf"unknown eval.settings key\(s\) \['{gone}'\]"):
            EvalSettings.parse({gone: 1})
    with pytest.raises(ValueError, match=r"task_files.mmlu must map splits to files"):
        EvalSettings.parse({"task_files": {"mmlu": "m.jsonl"}})
    overridden = EvalSettings.parse({"tasks": {"arc_challenge": {"cfg_scale": 0}}})
    assert overridden.task(TASKS["arc_challenge"]).cfg_scale == 0
    assert TASKS["arc_challenge"].cfg_scale == 0.5 and overridden.task(TASKS["piqa"]) == TASKS["piqa"]
    with pytest.raises(ValueError, match="unknown task 'nosuch'"):
        EvalSettings.parse({"tasks": {"nosuch": {}}})
    with pytest.raises(ValueError, match=r"tasks.piqa: unknown key\(s\) \['shots'\]"):
        EvalSettings.parse({"tasks": {"piqa": {"shots": 1}}})
    for key, value, wanted in (("num_fewshot", -1, "an integer of at least 0"), ("num_fewshot", 1.5, "an integer"),
                               ("mc_samples", 0, "an integer of at least 1"), ("cfg_scale", -0.5, "a number of at least 0")):
        with pytest.raises(ValueError, match=rf"tasks.piqa.{key}={value} must be {wanted}"):
            EvalSettings.parse({"tasks": {"piqa": {key: value}}})


@pytest.mark.parametrize("objective", ["arm", "mdm"])
def test_toyworld_suite_end_to_end_on_an_untrained_model(objective, tokenizer, toy_data, hf_cache):
    folder, meta = toy_data
    module = tiny(objective, meta)
    module.train()  # as during training: scoring runs in eval mode and gives the mode back
    settings = EvalSettings.parse({"max_new_tokens": 8, "steps": 4, "batch_size": 8})
    lm = make_lm(module, tokenizer, meta, mc_samples=2, **settings.model_args())
    defaults = lm.args
    results = evaluate_suite(lm, "toyworld", limit=3, data_dir=folder, settings=settings)
    assert list(results) == ["toy_mc", "toy_forward", "toy_reverse", "toy_arithmetic"]
    for name, result in results.items():
        assert {"kind", "metrics", "n", "chance", "source", "seconds"} <= set(result), (name, result)
        assert result["n"] == 3
        assert result["seconds"] >= 0
        assert result["source"].endswith(f"tasks/{name}.jsonl"), result["source"]
        assert all(0.0 <= value <= 1.0 for value in result["metrics"].values()), (name, result)
    for name in MC_TASKS:
        assert results[name]["kind"] == "multiple_choice"
        assert set(results[name]["metrics"]) == {"acc", "acc_norm", "acc_bytes"}
        assert results[name]["chance"] == 0.25
    assert results["toy_arithmetic"]["kind"] == "generation"
    assert set(results["toy_arithmetic"]["metrics"]) == {"exact_match", "exact_match_strict"}
    assert results["toy_arithmetic"]["chance"] == 0.0
    assert module.model.training is True
    assert lm.args == defaults  # the per-task settings are undone
