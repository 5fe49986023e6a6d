"""Invariants of the toy world: asked facts are in the corpus, answers unique, no reverse statements."""

import json
import re
from collections import Counter

import pytest

from studies.data.config import ToyWorldConfig
from studies.data.toyworld import BIO_TEMPLATES, generate


@pytest.fixture(scope="module")
def world():
    return generate(ToyWorldConfig())  # the defaults, as studies use them


def _sentences(world):
    """Biography sentences of the training corpus (documents that are not question/answer text)."""
    for doc in world.train_documents:
        if not doc.startswith("Question:"):
            yield from re.split(r"(?<=\.) (?=[A-Z])", doc)


def _person_by_name(world):
    return {p.name: p for p in world.people}


def test_default_sizes_are_modest(world):
    chars = sum(len(d) for d in world.train_documents)
    assert 100_000 < chars < 3_000_000
    cfg = ToyWorldConfig()
    held_out = sum(not p.in_qa for p in world.people)
    assert held_out == round(cfg.num_people * (1 - cfg.qa_fraction))
    people_items = min(cfg.task_items, held_out)
    assert {name: len(items) for name, items in world.tasks.items()} == {
        "toy_forward": people_items, "toy_reverse": people_items, "toy_mc": people_items,
        "toy_arithmetic": cfg.task_items}


def test_same_seed_same_world_and_different_seed_differs():
    a, b = generate(ToyWorldConfig(seed=3, num_people=50)), generate(ToyWorldConfig(seed=3, num_people=50))
    c = generate(ToyWorldConfig(seed=4, num_people=50))
    assert a.train_documents == b.train_documents and a.tasks == b.tasks
    assert a.train_documents != c.train_documents


def test_every_biography_sentence_starts_with_the_persons_name(world):
    names = _person_by_name(world)
    sentences = list(_sentences(world))
    assert len(sentences) == len(world.people) * ToyWorldConfig().bios_per_person * len(BIO_TEMPLATES)
    for sentence in sentences:
        first_two = " ".join(sentence.split()[:2]).removesuffix("'s")
        assert first_two in names, sentence


def test_reverse_questions_never_appear_in_the_corpus(world):
    corpus = "\n".join(world.train_documents + world.validation_documents)
    assert "Who was born in" not in corpus
    assert "Who " not in corpus


def test_every_asked_fact_is_stated_in_biographies_of_that_person(world):
    names = _person_by_name(world)
    facts = Counter()  # (name, value) pairs stated by biography sentences
    for sentence in _sentences(world):
        name = " ".join(sentence.split()[:2]).removesuffix("'s")
        person = names[name]
        for attr in ("city", "year", "profession", "employer", "university"):
            if re.search(rf"\b{re.escape(person.value(attr))}\b", sentence):
                facts[(name, attr)] += 1
    # each fact is stated once per biography, in several different templates
    for p in world.people:
        for attr in ("city", "year", "profession", "employer", "university"):
            assert facts[(p.name, attr)] >= ToyWorldConfig().bios_per_person
    for task in ("toy_forward", "toy_mc", "toy_reverse"):
        for item in world.tasks[task]:
            correct = item["choices"][item["answer"]].strip()
            name = correct if task == "toy_reverse" else re.search(r"(?:was|does|did) (\w+ \w+)", item["prompt"]).group(1)
            person = names[name]
            asked = "city" if task == "toy_forward" else item.get("attribute", "city")
            if task == "toy_reverse":
                assert f"{person.city} in {person.year}" in item["prompt"]
                assert facts[(name, "city")] and facts[(name, "year")]
            else:
                assert person.value(asked) == correct


def test_several_templates_state_each_fact():
    world = generate(ToyWorldConfig(num_people=20, bios_per_person=3))
    person = world.people[0]
    forms = set()
    for sentence in _sentences(world):
        if sentence.startswith(person.name) and person.city in sentence:
            forms.add(sentence.replace(person.name, "X").replace(person.city, "C"))
    assert len(forms) >= 3


def test_reverse_answers_are_unique_in_the_world(world):
    births = Counter((p.city, p.year) for p in world.people)
    assert max(births.values()) == 1
    for item in world.tasks["toy_reverse"]:
        city, year = re.search(r"born in (\w+) in (\d+)\?", item["prompt"]).groups()
        matching = [p.name for p in world.people if p.city == city and p.year == int(year)]
        assert [" " + n for n in matching] == [item["choices"][item["answer"]]]


def test_multiple_choice_items_have_four_distinct_choices_with_one_correct(world):
    names = _person_by_name(world)
    for task in ("toy_forward", "toy_reverse", "toy_mc"):
        for item in world.tasks[task]:
            assert len(item["choices"]) == 4 and len(set(item["choices"])) == 4
            assert 0 <= item["answer"] < 4 and all(c.startswith(" ") for c in item["choices"])
            assert item["prompt"].startswith("Question: ") and item["prompt"].endswith("\nAnswer:")
            if task == "toy_forward":  # distractor cities are never the asked person's own city
                name = re.search(r"was (\w+ \w+) born", item["prompt"]).group(1)
                wrong = [c.strip() for i, c in enumerate(item["choices"]) if i != item["answer"]]
                assert names[name].city not in wrong


def test_tasks_ask_only_about_people_without_qa_pairs_in_the_corpus(world):
    qa_names = {p.name for p in world.people if p.in_qa}
    qa_docs = "\n".join(d for d in world.train_documents if d.startswith("Question:"))
    asked = {c.strip() for item in world.tasks["toy_reverse"] for c in [item["choices"][item["answer"]]]}
    assert asked and not asked & qa_names
    for name in asked:
        assert name not in qa_docs
    # the QA format the tasks use is taught in the corpus on the other people
    assert sum(f"Question: Where was {n} born?" in qa_docs for n in qa_names) == len(qa_names)


def test_arithmetic_task_problems_are_held_out_and_answers_are_correct(world):
    corpus = set(d.split("\nAnswer:")[0] for d in world.train_documents)
    for item in world.tasks["toy_arithmetic"]:
        assert item["prompt"].removesuffix("\nAnswer:") not in corpus
        numbers = [int(x) for x in re.findall(r"\d+", item["prompt"])]
        if "boxes" in item["prompt"]:
            expected = numbers[0] * numbers[1]
        elif "gives away" in item["prompt"] and "more" in item["prompt"]:
            expected = numbers[0] + numbers[1] - numbers[2]
        elif "gives away" in item["prompt"]:
            expected = numbers[0] - numbers[1]
        else:
            expected = numbers[0] + numbers[1]
        assert item["answer"] == str(expected)
    worked = [d for d in world.train_documents if "The answer is" in d]
    assert len(worked) == ToyWorldConfig().num_arithmetic
    for doc in worked[:50]:
        steps = re.findall(r"(\d+) ([-+*]) (\d+) = (\d+)", doc)
        for a, op, b, result in steps:
            assert eval(f"{a} {op} {b}") == int(result)


def test_task_files_written_by_prepare_match_the_schema(toy_dir):
    meta = json.loads((toy_dir / "metadata.json").read_text())
    assert set(meta["tasks"]) == {"toy_mc", "toy_forward", "toy_reverse", "toy_arithmetic"}
    for name, info in meta["tasks"].items():
        items = [json.loads(line) for line in (toy_dir / info["file"]).read_text().splitlines()]
        assert len(items) == info["items"] > 0
        for item in items:
            assert isinstance(item["id"], str) and isinstance(item["prompt"], str)
            if info["type"] == "multiple_choice":
                assert isinstance(item["answer"], int) and len(item["choices"]) == 4
            else:
                assert isinstance(item["answer"], str) and item["answer"].lstrip("-").isdigit()


def test_too_many_people_is_a_clear_error():
    with pytest.raises(ValueError, match="num_people"):
        generate(ToyWorldConfig(num_people=5000))
