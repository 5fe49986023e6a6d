"""Tests of studies/tasks/lm_eval_model.py, the task YAMLs of studies/tasks/lm_eval_tasks.py and the
suites of studies/tasks/suite.py: the ``arm_mdm`` lm-eval model on tiny checkpoints trained by
``studies.run``."""

import pytest
import torch
from lm_eval import simple_evaluate
from lm_eval.api.instance import Instance
from lm_eval.tasks import TaskManager

from models.sampling import arm_generate, generate as mdm_generate
from studies.tasks.suite import EvalSettings, evaluate_suite
from studies.tasks.lm_eval_model import ArmMdmLM, ModelArgsError
from studies.tasks.lm_eval_tasks import validation_documents, write_task_yamls

MC_TASKS = ("toy_mc", "toy_forward", "toy_reverse")
LIMIT = 6
CFG = {"arm": 0.0, "mdm": 0.5}  # the MDM side exercises unsupervised CFG too


@pytest.fixture(scope="module")
def include_path(toy_data, tmp_path_factory):
    return write_task_yamls(toy_data[0], tmp_path_factory.mktemp("lm_eval_tasks"))


def lm_for(checkpoints, objective, **model_args):
    args = {"mc_samples": 8, "cfg_scale": CFG[objective], "batch_size": 4, "steps": 8, "device": "cpu", **model_args}
    return ArmMdmLM(checkpoint=checkpoints[objective], **args)


def request(kind, args, task="direct", doc_id=0):
    return Instance(request_type=kind, doc={}, arguments=args, idx=0, metadata=(task, doc_id, 1))


@pytest.mark.parametrize("objective", ["arm", "mdm"])
def test_the_suite_logs_lm_evals_scores_of_the_toy_tasks(objective, trained_checkpoints, toy_data, include_path,
                                                         monkeypatch, tmp_path):
    """evaluate_suite (what the training callback calls) against simple_evaluate run directly on the
    task YAMLs: the same per-item scores, lm-eval's metric names, GSM8K-style filters as exact_match
    and exact_match_strict, chance from the items' choices."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    folder, _ = toy_data
    settings = EvalSettings.parse({"batch_size": 4, "max_new_tokens": 8, "steps": 8, "seed": 0})
    lm = lm_for(trained_checkpoints, objective)  # the run's config.yaml leads to the tokenizer
    suite = evaluate_suite(lm, "toyworld", limit=LIMIT, data_dir=folder, settings=settings, keep_records=True)
    assert list(suite) == [*MC_TASKS, "toy_arithmetic"]

    direct = lm_for(trained_checkpoints, objective)
    out = simple_evaluate(model=direct, tasks=[*MC_TASKS, "toy_arithmetic"], limit=LIMIT, log_samples=True,
                          gen_kwargs={"max_gen_toks": 8}, task_manager=TaskManager(include_path=str(include_path)))
    for task in MC_TASKS:
        result = suite[task]
        assert result["kind"] == "multiple_choice" and result["n"] == LIMIT and result["chance"] == 0.25
        assert result["source"] == str(folder.resolve() / "tasks" / f"{task}.jsonl")
        want = sorted(out["samples"][task], key=lambda s: s["doc_id"])
        got = sorted(result["records"], key=lambda s: s["doc_id"])
        assert [[float(r[0][0]) for r in s["resps"]] for s in got] == [[float(r[0][0]) for r in s["resps"]] for s in want]
        for metric in ("acc", "acc_norm", "acc_bytes"):
            assert result["metrics"][metric] == pytest.approx(sum(s[metric] for s in want) / LIMIT)
            assert result["metrics"][metric] == out["results"][task][f"{metric},none"]
    arithmetic = suite["toy_arithmetic"]
    assert arithmetic["kind"] == "generation" and arithmetic["chance"] == 0.0
    for name, filter_name in (("exact_match", "flexible-extract"), ("exact_match_strict", "strict-match")):
        assert arithmetic["metrics"][name] == out["results"]["toy_arithmetic"][f"exact_match,{filter_name}"]
    assert set(arithmetic["metrics"]) == {"exact_match", "exact_match_strict"}


def test_a_task_scores_alike_alone_and_after_others_and_leaves_global_randomness_alone(trained_checkpoints,
                                                                                         toy_data):
    """The MDM's masks come from a per-task generator; lm-eval's global seeding is off, so scoring
    inside training neither depends on what ran before nor moves the training's random streams."""
    import random

    import numpy as np

    folder, _ = toy_data
    lm = lm_for(trained_checkpoints, "mdm")
    torch.manual_seed(7), random.seed(7), np.random.seed(7)
    states = torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()
    everything = evaluate_suite(lm, "toy_mc,toy_reverse", limit=LIMIT, data_dir=folder)
    assert torch.equal(torch.get_rng_state(), states[0]) and random.getstate() == states[1]
    assert (np.random.get_state()[1] == states[2]).all()
    alone = evaluate_suite(lm, "toy_reverse", limit=LIMIT, data_dir=folder)
    assert alone["toy_reverse"]["metrics"] == everything["toy_reverse"]["metrics"]
    import lm_eval.evaluator
    import lm_eval.loggers.utils

    assert lm_eval.evaluator.add_env_info is lm_eval.loggers.utils.add_env_info  # collected once, then given back


def test_per_task_settings_reach_the_model_and_are_restored(trained_checkpoints, toy_data):
    """eval.settings.tasks sets a task's CFG scale for that task alone: the scores equal a model
    built with that scale, and the model's own settings come back afterwards."""
    folder, _ = toy_data
    lm = lm_for(trained_checkpoints, "mdm", cfg_scale=0.0)
    guided = EvalSettings.parse({"tasks": {"toy_mc": {"cfg_scale": 1.0}}})
    with_cfg = evaluate_suite(lm, "toy_mc,toy_forward", limit=LIMIT, data_dir=folder, settings=guided, keep_records=True)
    assert lm.args.cfg_scale == 0.0
    plain = evaluate_suite(lm, "toy_mc,toy_forward", limit=LIMIT, data_dir=folder, keep_records=True)
    reference = evaluate_suite(lm_for(trained_checkpoints, "mdm", cfg_scale=1.0), "toy_mc", limit=LIMIT,
                               data_dir=folder, keep_records=True)

    def scores(result):
        return [s["resps"] for s in sorted(result["records"], key=lambda s: s["doc_id"])]

    assert scores(with_cfg["toy_mc"]) == scores(reference["toy_mc"]) != scores(plain["toy_mc"])
    assert scores(with_cfg["toy_forward"]) == scores(plain["toy_forward"])


def test_an_in_memory_module_scores_as_its_checkpoint(trained_checkpoints, toy_data):
    from models.lightning import LanguageModel
    from studies.data.layout import load_metadata
    from tokenizers import Tokenizer

    folder, _ = toy_data
    module = LanguageModel.load_from_checkpoint(trained_checkpoints["mdm"], map_location="cpu", weights_only=False)
    module.train()
    lm = ArmMdmLM.from_module(module, Tokenizer.from_file(str(folder / "tokenizer.json")),
                              special_ids=load_metadata(folder)["special_ids"], mc_samples=8, batch_size=4)
    context = "Question: Where was Ansel born?\nAnswer:"
    requests = [request("loglikelihood", (context, choice)) for choice in (" Arnsvale", " Blyth")]
    assert lm.loglikelihood(requests) == lm_for(trained_checkpoints, "mdm", cfg_scale=0.0).loglikelihood(requests)
    assert module.training  # the mode it had is restored


@pytest.mark.parametrize("objective", ["arm", "mdm"])
def test_generation_stops_at_the_first_stop_string_and_at_max_gen_toks(objective, trained_checkpoints):
    lm = lm_for(trained_checkpoints, objective, gen_length=12, steps=12)
    context = "Question: Mia has 17 books. How many books does Mia have?\nAnswer:"

    def generate(**gen_kwargs):
        return lm.generate_until([request("generate_until", (context, {"do_sample": False, **gen_kwargs}))])[0]

    full = generate(until=[], max_gen_toks=12)
    assert full
    stop = full[len(full) // 2: len(full) // 2 + 2]
    cut = generate(until=["never seen", stop], max_gen_toks=12)
    assert cut == full[: full.find(stop)] and len(cut) < len(full)
    # max_gen_toks: the first three tokens of the model's own output (an MDM still samples gen_length)
    prompt = [lm.eos_id] + lm.tok_encode(context)
    if objective == "arm":
        ids = arm_generate(lm.model, [prompt], max_new_tokens=3, eos_id=lm.eos_id)[0]
    else:
        ids = mdm_generate(lm.model, [prompt], gen_length=12, steps=12, mask_id=lm.mask_id)[0][len(prompt):][:3]
        ids = ids[: ids.index(lm.eos_id)] if lm.eos_id in ids else ids
    assert generate(until=[], max_gen_toks=3) == lm.tok_decode(ids)


def greedy_case(lm, contexts):
    """(context, continuation text, its ids): ids the model's own greedy decoding produces (no special
    token among them), whose text encodes back to the same ids after the context."""
    for context in contexts:
        prompt = [lm.eos_id] + lm.tok_encode(context)
        for length in (3, 2, 1):
            with torch.no_grad():
                if lm.objective == "arm":
                    ids = list(prompt)
                    for _ in range(length):
                        ids.append(int(lm.model(torch.tensor([ids]))[0, -1].argmax()))
                    answer = ids[len(prompt):]
                else:
                    full = mdm_generate(lm.model, [prompt], gen_length=length, steps=length, mask_id=lm.mask_id)
                    answer = full[0][len(prompt):]
            text = lm.tok_decode(answer)
            if not set(answer) & {lm.eos_id, lm.pad_id, lm.mask_id} and lm.encode_pair(context, text)[1] == answer:
                return context, text, answer
    raise AssertionError("no context whose greedy continuation survives decoding and encoding")


@pytest.mark.parametrize("objective", ["arm", "mdm"])
def test_is_greedy_is_true_for_the_models_own_argmax_and_false_otherwise(objective, trained_checkpoints):
    lm = lm_for(trained_checkpoints, objective, cfg_scale=0.0, check_greedy=True)
    contexts = ["Question: Where was Ansel born?\nAnswer:", "Meet Ansel", "Question: Who works as a baker?\nAnswer:",
                "This is", "He"]
    context, text, answer = greedy_case(lm, contexts)
    other = next(t for t in range(4, 200)
                 if t != answer[-1] and lm.encode_pair(context, lm.tok_decode(answer[:-1] + [t]))[1] == answer[:-1] + [t])
    changed = lm.tok_decode(answer[:-1] + [other])
    (_, greedy), (_, not_greedy) = lm.loglikelihood([request("loglikelihood", (context, text)),
                                                     request("loglikelihood", (context, changed), doc_id=1)])
    assert greedy is True and not_greedy is False
    if objective == "mdm":  # without check_greedy an MDM does not decode, and says so with False
        plain = lm_for(trained_checkpoints, objective, cfg_scale=0.0)
        assert plain.loglikelihood([request("loglikelihood", (context, text))])[0][1] is False


def test_rolling_loglikelihood_is_exact_for_arm_and_a_reproducible_bound_for_mdm(trained_checkpoints, toy_data):
    from models.likelihood import arm_loglikelihood, mdm_nll_bound

    document = " ".join(validation_documents(toy_data[0])[:4])
    arm = lm_for(trained_checkpoints, "arm")
    tokens = arm.tok_encode(document)
    assert len(tokens) > arm.max_len  # several windows
    (rolled,) = arm.loglikelihood_rolling([request("loglikelihood_rolling", (document,))])
    # every token predicted once, from as much of the preceding text as a window holds
    expected, start, window = 0.0, 0, arm.max_len - 1
    while start < len(tokens):
        end = min(start + window, len(tokens))
        context = [arm.eos_id] if start == 0 else tokens[end - arm.max_len:start]
        expected += float(arm_loglikelihood(arm.model, context, tokens[start:end])[0])
        start = end
    assert rolled == pytest.approx(expected, abs=1e-6)
    short = "Meet Ansel."
    (alone,) = arm.loglikelihood_rolling([request("loglikelihood_rolling", (short,))])
    assert alone == pytest.approx(float(arm_loglikelihood(arm.model, [arm.eos_id], arm.tok_encode(short))[0]), abs=1e-9)

    mdm = lm_for(trained_checkpoints, "mdm", cfg_scale=0.0)
    first = mdm.loglikelihood_rolling([request("loglikelihood_rolling", (short,))])
    assert first == mdm.loglikelihood_rolling([request("loglikelihood_rolling", (short,))])  # seeded per document
    bound = -mdm_nll_bound(mdm.model, [mdm.eos_id], mdm.tok_encode(short), mask_id=mdm.mask_id, mc_samples=8,
                           generator=mdm._document_generator("direct", 0, 0))
    assert first[0] == pytest.approx(float(bound), abs=1e-9) and first[0] < 0


def test_bad_model_args_name_the_fix(trained_checkpoints, tmp_path):
    with pytest.raises(ModelArgsError, match=r"unknown model_args key\(s\) \['mc_sample'\].*did you mean mc_samples"):
        ArmMdmLM(checkpoint=trained_checkpoints["arm"], mc_sample=8)
    with pytest.raises(ModelArgsError, match="needs model_args checkpoint=PATH"):
        ArmMdmLM()
    with pytest.raises(ModelArgsError, match="does not exist; pass model_args checkpoint=PATH"):
        ArmMdmLM(checkpoint=str(tmp_path / "nope.ckpt"))
    sharded = tmp_path / "final.ckpt"
    sharded.mkdir()
    with pytest.raises(ModelArgsError, match=r"sharded checkpoint.*python -m studies.consolidate"):
        ArmMdmLM(checkpoint=str(sharded))
    lonely = tmp_path / "lonely.ckpt"
    lonely.write_bytes(open(trained_checkpoints["arm"], "rb").read())
    with pytest.raises(ModelArgsError, match="pass tokenizer=PREPARED_DATA_DIR"):
        ArmMdmLM(checkpoint=str(lonely))
    with pytest.raises(ModelArgsError, match=r"batch_size='auto' is not supported.*--batch_size 16"):
        ArmMdmLM.create_from_arg_string(f"checkpoint={trained_checkpoints['arm']}", {"batch_size": "auto"})
    # lm-eval passes --batch_size/--device beside model_args; a key in both is model_args' value
    lm = ArmMdmLM.create_from_arg_string(f"checkpoint={trained_checkpoints['arm']},batch_size=3,device=cpu",
                                         {"batch_size": 1, "device": "cuda:0", "max_batch_size": None})
    assert lm.args.batch_size == 3 and lm.args.device == "cpu"
