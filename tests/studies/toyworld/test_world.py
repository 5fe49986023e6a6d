"""Invariants of the toy world: asked facts are in the corpus, answers unique, no reverse statements."""

import json
import re
from collections import Counter

import pytest

from studies.data.config import ToyWorldConfig
from studies.toyworld.world import BIO_TEMPLATES, BIRTH_TEMPLATES, FIRST_NAMES, generate


@pytest.fixture(scope="module")
def world():
    return generate(ToyWorldConfig())  # the defaults, as studies use them


def _biographies(world):
    """Biographies of the training corpus (documents that are not question/answer text)."""
    return [doc for doc in world.train_documents if not doc.startswith("Question:")]


def _sentences(biography):
    return re.split(r"(?<=\.) (?=[A-Z])", biography)


def _person_by_name(world):
    return {p.name: p for p in world.people}


def _named(biography, names):
    """The person a biography is about: the one name in it."""
    (person,) = [p for name, p in names.items() if name in biography]
    return person


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


def test_a_biography_names_its_person_once_first_and_states_every_fact_after_the_name(world):
    names = _person_by_name(world)
    biographies = _biographies(world)
    assert len(biographies) == len(world.people) * ToyWorldConfig().bios_per_person
    stated = Counter()
    for bio in biographies:
        person = _named(bio, names)
        first, *rest = _sentences(bio)
        assert bio.count(person.name) == 1 and person.name in first and not bio.startswith(person.name)
        assert f"{person.city}" in first and str(person.year) in first
        assert len(rest) == len(BIO_TEMPLATES)
        assert all(s.startswith(person.pronoun + " ") for s in rest), bio
        assert not any(other in bio for other in names if other != person.name)
        for attr in ("city", "year", "profession", "employer", "university"):
            assert bio.index(person.value(attr)) > bio.index(person.name)
            stated[(person.name, attr)] += 1
    for p in world.people:  # each fact is stated once per biography
        for attr in ("city", "year", "profession", "employer", "university"):
            assert stated[(p.name, attr)] == ToyWorldConfig().bios_per_person


def test_reverse_questions_are_asked_in_the_corpus_only_about_qa_people(world):
    corpus = "\n".join(world.train_documents + world.validation_documents)
    reverse_docs = [d for d in world.train_documents if d.startswith("Question: Who was born in")]
    qa_people = [p for p in world.people if p.in_qa]
    assert sorted(d.rsplit("Answer: ", 1)[1] for d in reverse_docs) == sorted(p.name for p in qa_people)
    for doc in reverse_docs:  # alone in its document: the name cannot be copied from a forward question
        assert doc.count("Question:") == 1
    for item in world.tasks["toy_reverse"]:
        assert item["prompt"] not in corpus


def test_every_asked_fact_is_stated_in_biographies_of_that_person(world):
    names = _person_by_name(world)
    by_person = {}
    for bio in _biographies(world):
        by_person.setdefault(_named(bio, names).name, []).append(bio)
    for task in ("toy_forward", "toy_mc", "toy_reverse"):
        for item in world.tasks[task]:
            correct = item["choices"][item["answer"]].strip()
            name = correct if task == "toy_reverse" else re.search(r"(?:was|does|did) (\w+ \w+)", item["prompt"]).group(1)
            person = names[name]
            if task == "toy_reverse":
                assert f"{person.city} in {person.year}" in item["prompt"]
                assert all(person.city in b and str(person.year) in b for b in by_person[name])
            else:
                asked = "city" if task == "toy_forward" else item["attribute"]
                assert person.value(asked) == correct
                assert all(correct in b for b in by_person[name])


def test_several_templates_state_each_fact():
    world = generate(ToyWorldConfig(num_people=20, bios_per_person=3))
    person = world.people[0]
    births, others = set(), set()
    for bio in _biographies(world):
        if person.name in bio:
            first, *rest = _sentences(bio)
            births.add(first.replace(person.name, "X").replace(person.city, "C").replace(str(person.year), "Y"))
            others.update(s for s in rest if person.employer in s)
    assert len(births) == 3 and births <= {t.format(name="X", city="C", year="Y") for t in BIRTH_TEMPLATES}
    assert len(others) >= 2


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


def test_reverse_choices_are_all_people_never_named_by_a_reverse_question_in_the_corpus(world):
    qa_names = {p.name for p in world.people if p.in_qa}
    for item in world.tasks["toy_reverse"]:
        assert not {c.strip() for c in item["choices"]} & qa_names


def test_a_name_is_the_same_tokens_in_biographies_questions_and_answers(toy_dir):
    """The recall tasks ask in QA form about facts stored from biographies: that only works if a name
    encodes to one token sequence wherever it occurs (a byte-level BPE encodes a text's first word
    without its leading space, so no biography may open with the name)."""
    from tokenizers import Tokenizer

    from studies.data.layout import load_metadata

    tokenizer = Tokenizer.from_file(str(toy_dir / "tokenizer.json"))
    world = generate(ToyWorldConfig(**load_metadata(toy_dir)["config"]["toyworld"]))
    reverse = {json.loads(line)["prompt"]: json.loads(line)
               for line in (toy_dir / "tasks" / "toy_reverse.jsonl").read_text().splitlines()}
    checked = 0
    for person in world.people:
        name = tokenizer.encode(" " + person.name).ids
        for doc in world.train_documents:
            if person.name in doc:
                ids = tokenizer.encode(doc).ids
                assert any(ids[i:i + len(name)] == name for i in range(len(ids))), (person.name, doc)
                checked += 1
    assert checked >= len(world.people)
    for item in reverse.values():  # the answer of a reverse item, scored after its prompt
        answer = item["choices"][item["answer"]]
        ids = tokenizer.encode(item["prompt"] + answer).ids
        assert ids[-len(tokenizer.encode(answer).ids):] == tokenizer.encode(answer).ids


def test_every_choice_occurs_in_the_corpus():
    """In a world smaller than the pools of names, cities and years, a choice that never occurs in
    the corpus would be easy to rule out, and scores would rise above chance without any knowledge."""
    world = generate(ToyWorldConfig(num_people=30))
    corpus = "\n".join(world.train_documents)
    for task in ("toy_forward", "toy_reverse", "toy_mc"):
        for item in world.tasks[task]:
            for choice in item["choices"]:
                assert re.search(rf"\b{re.escape(choice.strip())}\b", corpus), (task, choice)


def test_a_world_too_small_for_four_way_choices_is_a_clear_error():
    with pytest.raises(ValueError, match="2 people without QA pairs.*raise data.toyworld.num_people"):
        generate(ToyWorldConfig(num_people=8, qa_fraction=0.7))


def test_first_names_only_gives_every_person_a_unique_single_word_name():
    """full_names=false keys every fact on one word (one token with the smoke grid's vocabulary);
    everything else about the world is generated the same way."""
    world = generate(ToyWorldConfig(num_people=60, full_names=False))
    names = [p.name for p in world.people]
    assert len(set(names)) == 60 and all(" " not in n for n in names)
    assert all(n in FIRST_NAMES for n in names)
    for person in world.people:  # a bare first name never also occurs inside another word
        others = [q for q in world.people if q is not person]
        assert not any(person.name in q.name for q in others)
    full = generate(ToyWorldConfig(num_people=60))
    assert len(world.train_documents) == len(full.train_documents)
    assert {k: len(v) for k, v in world.tasks.items()} == {k: len(v) for k, v in full.tasks.items()}
    with pytest.raises(ValueError, match="full_names=true"):
        generate(ToyWorldConfig(num_people=len(FIRST_NAMES) + 1, full_names=False))
