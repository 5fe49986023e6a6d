"""Tests of studies/tasks/lm_eval_model.py (and the task YAMLs of studies/tasks/lm_eval_tasks.py):
the ``arm_mdm`` lm-eval model on tiny checkpoints trained by ``studies.run``, against today's
hand-written scorer (``studies.evaluate.evaluate_suite``) item by item."""

import pytest
import torch
from lm_eval import simple_evaluate
from lm_eval.api.instance import Instance
from lm_eval.tasks import TaskManager

from models.sampling import arm_generate, generate as mdm_generate
from studies.evaluate import evaluate_suite
from studies.tasks.adapter import EvalSettings, load_checkpoint_adapter
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
def test_per_item_scores_match_the_hand_written_scorer(objective, trained_checkpoints, toy_data, include_path,
                                                       monkeypatch, tmp_path):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    folder, _ = toy_data
    settings = EvalSettings.parse({"batch_size": 4, "max_new_tokens": 8, "steps": 8, "seed": 0})
    adapter = load_checkpoint_adapter(trained_checkpoints[objective], folder, mc_samples=8, cfg_scale=CFG[objective],
                                      settings=settings)
    today = evaluate_suite(adapter, "toyworld", limit=LIMIT, tasks_dir=folder / "tasks", keep_records=True)

    lm = lm_for(trained_checkpoints, objective)  # the run's config.yaml leads to the tokenizer
    out = simple_evaluate(model=lm, tasks=[*MC_TASKS, "toy_arithmetic"], limit=LIMIT, log_samples=True,
                          gen_kwargs={"max_gen_toks": 8}, task_manager=TaskManager(include_path=str(include_path)))
    for task in MC_TASKS:
        samples = sorted(out["samples"][task], key=lambda s: s["doc_id"])
        records = today[task]["records"]
        assert len(samples) == len(records) == LIMIT
        for sample, record in zip(samples, records):
            assert sample["doc"]["id"] == record["id"]
            lls = [float(resp[0][0]) for resp in sample["resps"]]
            if objective == "arm":  # exact likelihoods, the same floating-point operations
                assert lls == record["loglikelihoods"], record["id"]
            else:  # the same seed draws the same masks
                assert lls == pytest.approx(record["loglikelihoods"], abs=1e-6), record["id"]
            assert sample["acc"] == record["acc"]
            assert sample["acc_bytes"] == record["acc_norm"]  # normalised by UTF-8 bytes without the space
            assert sample["acc_norm"] == record["acc_norm"]  # the same here: ASCII choices
        metrics = out["results"][task]
        assert metrics["acc,none"] == pytest.approx(today[task]["metrics"]["acc"])

    generated = {s["doc_id"]: s for s in out["samples"]["toy_arithmetic"] if s["filter"] == "flexible-extract"}
    strict = {s["doc_id"]: s for s in out["samples"]["toy_arithmetic"] if s["filter"] == "strict-match"}
    for doc_id, record in enumerate(today["toy_arithmetic"]["records"]):
        assert generated[doc_id]["resps"][0][0] == record["output"], record["id"]
        assert generated[doc_id]["exact_match"] == record["exact_match"]
        assert strict[doc_id]["exact_match"] == record["exact_match_strict"]


def test_an_in_memory_module_scores_as_its_checkpoint(trained_checkpoints, toy_data):
    from models.lightning import LanguageModel
    from studies.data.prepare import load_metadata
    from studies.tasks.adapter import load_tokenizer

    folder, _ = toy_data
    module = LanguageModel.load_from_checkpoint(trained_checkpoints["mdm"], map_location="cpu", weights_only=False)
    module.train()
    lm = ArmMdmLM.from_module(module, load_tokenizer(folder / "tokenizer.json"),
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
    assert first == mdm.loglikelihood_rolling([request("loglikelihood_rolling", (short,))])  # seeded per task
    bound = -mdm_nll_bound(mdm.model, [mdm.eos_id], mdm.tok_encode(short), mask_id=mdm.mask_id, mc_samples=8,
                           generator=mdm._generator("direct"))
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
