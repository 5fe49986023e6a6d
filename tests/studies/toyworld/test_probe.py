"""Tests of studies/toyworld/probe.py: the in-biography probes of a toy-world model."""

import dataclasses
import json

import pytest
import torch
from tokenizers import Tokenizer

from models.config import preset
from models.transformer import Transformer
from studies.data.config import ToyWorldConfig
from studies.toyworld import probe
from studies.toyworld.world import GENERATOR_VERSION, generate

from ..conftest import SMALL_WORLD


@pytest.fixture(scope="module")
def world():
    return generate(ToyWorldConfig(**SMALL_WORLD))


@pytest.fixture(scope="module")
def tokenizer(toy_data):
    return Tokenizer.from_file(str(toy_data[0] / "tokenizer.json"))


def adapter_for(model, tokenizer, meta, objective):
    ids = meta["special_ids"]
    return probe.ProbeModel(model, tokenizer, objective, eos_id=ids["eos"], mask_id=ids["mask"], pad_id=ids["pad"])


def test_items_put_each_choice_in_place_of_a_fact_of_a_training_biography(world):
    items = probe.build_items(world)
    corpus = set(world.train_documents)
    task_people = [p for p in world.people if not p.in_qa][: len(world.tasks["toy_forward"])]
    assert len(items["bio_city"]) == len(task_people) * SMALL_WORLD["bios_per_person"]
    for name in probe.BIO_PROBES:
        assert len(items[name]) == len(items["bio_city"])
        for item in items[name]:
            assert item.texts[item.answer] in corpus  # the correct choice gives back the training text
            for text, (start, end), hidden in zip(item.texts, item.spans, item.hidden):
                assert text[:start].startswith(item.texts[item.answer][:start])
                assert text[start:end] in {t[s:e] for t, (s, e) in zip(item.texts, item.spans)}
                assert len(hidden) == len(probe.BIO_PROBES[name][1])
                for a, b in hidden:  # the hidden span is the same fact, wherever the choice moved it
                    assert text[a:b] == item.texts[item.answer][slice(*item.hidden[item.answer][0])]
    city_choices = {e["prompt"]: e["choices"] for e in world.tasks["toy_forward"]}
    first = items["bio_city"][0]
    assert any([" " + first.texts[k][slice(*first.spans[k])] for k in range(4)] == c for c in city_choices.values())

    qa_people = [p for p in world.people if p.in_qa]
    for name in probe.QA_PROBES:
        assert len(items[name]) == len(qa_people)
        for item in items[name]:  # a trained question and answer, as the corpus states it
            assert len(set(item.texts)) == 4
            assert any(item.texts[item.answer] in doc for doc in world.train_documents if doc.startswith("Question:"))
    cities = {p.city for p in world.people}
    for name, pool in (("forward_all_cities", cities), ("reverse_all_names", {p.name for p in task_people})):
        assert len(items[name]) == len(task_people)
        for item, task in zip(items[name], world.tasks["toy_forward" if "cities" in name else "toy_reverse"]):
            assert {t[slice(*span)] for t, span in zip(item.texts, item.spans)} == pool
            assert item.texts[item.answer] == task["prompt"] + task["choices"][task["answer"]]
    assert {len(rows) for rows in probe.build_items(world, per_probe=3).values()} == {3}


def test_relative_rank_is_zero_for_the_top_choice_one_for_the_last_and_half_for_a_flat_model():
    assert probe.relative_rank([3.0, 1.0, 2.0], 0) == 0.0
    assert probe.relative_rank([3.0, 1.0, 2.0], 1) == 1.0
    assert probe.relative_rank([3.0, 1.0, 2.0], 2) == 0.5
    assert probe.relative_rank([0.0] * 5, 3) == 0.5


class Oracle(torch.nn.Module):
    """An 'MDM' that knows the training corpus: at the masked positions of a masked training text it
    puts all its mass on the true tokens; anywhere else its logits are flat."""

    def __init__(self, truths, vocab, mask_id):
        super().__init__()
        self.truths, self.vocab, self.mask_id = truths, vocab, mask_id
        self.weight = torch.nn.Parameter(torch.zeros(1))  # so the adapter finds a device

    def forward(self, ids, key_padding_mask=None):
        logits = torch.zeros(ids.shape[0], ids.shape[1], self.vocab)
        for row, sequence in enumerate(ids.tolist()):
            if key_padding_mask is not None:
                sequence = sequence[: int(key_padding_mask[row].sum())]
            for position, token in self.truths.get(tuple(sequence), {}).items():
                logits[row, position, token] = 30.0
        return logits


def _oracle_truths(items, tokenizer, meta):
    """{masked ids of a correct text: {masked position: true token}} for every probe item."""
    eos, mask = meta["special_ids"]["eos"], meta["special_ids"]["mask"]
    truths = {}
    for item in items:
        text = item.texts[item.answer]
        encoding = tokenizer.encode(text, add_special_tokens=False)
        ids, offsets = [eos] + encoding.ids, [(0, 0)] + list(encoding.offsets)
        spans = [item.spans[item.answer], *item.hidden[item.answer]]
        masked_positions = [i for i, (a, b) in enumerate(offsets) for s, e in spans if a < e and b > s and b > a]
        masked = [mask if i in masked_positions else t for i, t in enumerate(ids)]
        target = [i for i, (a, b) in enumerate(offsets)
                  if a < item.spans[item.answer][1] and b > item.spans[item.answer][0] and b > a]
        truths[tuple(masked)] = {i: ids[i] for i in target}
    return truths


def test_an_mdm_that_knows_the_corpus_scores_every_probe_perfectly(world, tokenizer, toy_data):
    _, meta = toy_data
    items = probe.build_items(world, per_probe=12)
    truths = _oracle_truths([i for rows in items.values() for i in rows], tokenizer, meta)
    adapter = adapter_for(Oracle(truths, meta["vocab_size"], meta["special_ids"]["mask"]), tokenizer, meta, "mdm")
    results = probe.run_probes(adapter, world, per_probe=12)
    assert set(results) == set(probe.PROBES)
    assert all(entry["acc"] == 1.0 and entry["rank"] == 0.0 and entry["n"] == 12 for entry in results.values()), results
    assert results["bio_city"]["chance"] == 0.25
    assert results["forward_all_cities"]["chance"] == pytest.approx(1 / len({p.city for p in world.people}))

    # The same oracle given one position off would be at chance: the masked positions are exact.
    shifted = {key: {p - 1: t for p, t in value.items()} for key, value in truths.items()}
    adapter = adapter_for(Oracle(shifted, meta["vocab_size"], meta["special_ids"]["mask"]), tokenizer, meta, "mdm")
    assert probe.run_probes(adapter, world, per_probe=12)["bio_city"]["acc"] < 1.0


def test_mdm_scores_are_masked_log_probs_and_arm_scores_condition_on_the_prefix(world, tokenizer, toy_data):
    _, meta = toy_data
    eos, mask = meta["special_ids"]["eos"], meta["special_ids"]["mask"]
    item = probe.build_items(world, per_probe=1)["bio_city_without_year"][0]
    torch.manual_seed(0)
    mdm = Transformer(preset("tiny", vocab_size=meta["vocab_size"], causal=False)).eval()
    scores = probe.score_item(adapter_for(mdm, tokenizer, meta, "mdm"), item)
    for k, text in enumerate(item.texts):
        encoding = tokenizer.encode(text, add_special_tokens=False)
        ids, offsets = [eos] + encoding.ids, [(0, 0)] + list(encoding.offsets)
        (s, e), (hs, he) = item.spans[k], item.hidden[k][0]
        city = [i for i, (a, b) in enumerate(offsets) if a < e and b > s]
        year = [i for i, (a, b) in enumerate(offsets) if a < he and b > hs]
        assert tokenizer.decode([ids[i] for i in year]).strip() == text[hs:he]
        masked = torch.tensor([[mask if i in city + year else t for i, t in enumerate(ids)]])
        log_probs = mdm(masked).detach().log_softmax(-1)[0]
        assert scores[k] == pytest.approx(float(sum(log_probs[i, ids[i]] for i in city)), abs=1e-5)

    arm = Transformer(preset("tiny", vocab_size=meta["vocab_size"], causal=True)).eval()
    arm_adapter = adapter_for(arm, tokenizer, meta, "arm")
    assert probe.score_item(arm_adapter, item) is None  # hiding the year is undefined for a left-to-right model
    item = probe.build_items(world, per_probe=1)["bio_city"][0]
    scores = probe.score_item(arm_adapter, item)
    for k, text in enumerate(item.texts):
        prefix = [eos] + tokenizer.encode(text[: item.spans[k][0]], add_special_tokens=False).ids
        whole = [eos] + tokenizer.encode(text, add_special_tokens=False).ids
        city = whole[len(prefix): len(whole) - len(tokenizer.encode(text[item.spans[k][1]:]).ids)]
        log_probs = arm(torch.tensor([whole])).detach().log_softmax(-1)[0]
        expected = sum(float(log_probs[len(prefix) - 1 + j, t]) for j, t in enumerate(city))
        assert scores[k] == pytest.approx(expected, abs=1e-5)


def test_cli_probes_a_checkpoint_and_refuses_data_it_cannot_probe(tmp_path, toy_data, world_config, capsys):
    from studies.config import BudgetConfig, EvalConfig, RunConfig, TrackingConfig, TrainerConfig
    from studies.run import run

    data = world_config(toy_data[0].parent)
    cfg = RunConfig(
        name="probe", objective="mdm", out_dir=str(tmp_path / "run"), model=preset("tiny", max_seq_len=64, causal=False), data=data,
        trainer=TrainerConfig(seq_len=32, global_batch_size=2, micro_batch_size=2, precision="32-true",
                              accelerator="cpu", num_workers=0, val_batches=1, progress_bar=False),
        budget=BudgetConfig(steps=2), eval=EvalConfig(suite="none"), tracking=TrackingConfig(enabled=False),
    )
    checkpoint = run(cfg)["checkpoint"]
    out = tmp_path / "probes.json"
    assert probe.main(["--checkpoint", checkpoint, "--limit", "4", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert all(f"| {name} |" in printed for name in probe.PROBES)
    report = json.loads(out.read_text())
    assert report["objective"] == "mdm"
    assert all(entry["n"] == 4 and 0.0 <= entry["acc"] <= 1.0 and 0.0 <= entry["rank"] <= 1.0
               for entry in report["probes"].values())

    other = tmp_path / "other"
    other.mkdir()
    (other / "metadata.json").write_text(json.dumps({"source": "files", "config": {}}))
    with pytest.raises(SystemExit, match="not a prepared toy world"):
        probe.main(["--checkpoint", checkpoint, "--data-dir", str(other)])
    metadata = json.loads((toy_data[0] / "metadata.json").read_text())
    metadata["config"]["toyworld_version"] = -1
    (other / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(SystemExit, match="generator version -1"):
        probe.main(["--checkpoint", checkpoint, "--data-dir", str(other)])
    metadata["config"]["toyworld"] = dataclasses.asdict(ToyWorldConfig(**{**SMALL_WORLD, "seed": 1}))
    metadata["config"]["toyworld_version"] = GENERATOR_VERSION
    (other / "metadata.json").write_text(json.dumps(metadata))
    (other / "tasks").mkdir()
    (other / "tasks" / "toy_forward.jsonl").write_text((toy_data[0] / "tasks" / "toy_forward.jsonl").read_text())
    with pytest.raises(SystemExit, match="differs from the one prepared"):
        probe.main(["--checkpoint", checkpoint, "--data-dir", str(other)])
