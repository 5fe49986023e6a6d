"""The toy world: a synthetic corpus and downstream tasks for studies that run on a laptop CPU.

From a seed it generates fictional people with five facts each (birth city, birth year, profession,
employer, university), biographies that state every fact in several sentence templates, question/
answer pairs for a subset of people, and arithmetic word problems with worked answers. It follows
the "bioS" design of Allen-Zhu & Li, "Physics of Language Models: Part 3.1" (2023): several
biographies per person with varied templates and a shuffled order of the later sentences, plus QA
pairs for part of the people, so that a model can learn to *extract* facts of the others in the QA
format.

A biography opens by introducing the person and their birth ("Meet X, who was born in C in Y."); the
other sentences start with a pronoun. So the name occurs once per biography and every fact follows
it: read left to right, the corpus only ever states "name -> fact", never "fact -> name".

Tasks (written as JSONL in the schema of ``studies/tasks``), all about people whose facts appear
only in biographies (never in QA form):

- ``toy_forward`` (multiple choice, 4 cities): "Question: Where was X born?".
- ``toy_reverse`` (multiple choice, 4 names): "Question: Who was born in C in Y?". (C, Y) is unique
  in the world. The QA people are asked this reverse question in the corpus too (each in its own
  document), so both question formats are taught and only the direction of the stored fact differs
  between the two tasks. This probes the reversal curse (Berglund et al. 2023; inverse knowledge
  search in Allen-Zhu & Li, Part 3.2): a left-to-right model has never been trained to produce a
  name from a city and year, while a masked-diffusion model learns to fill in the masked name of
  "Meet [name], who was born in C in Y." whenever the name is masked; LLaDA (Nie et al. 2025, Sec. 4) reports
  that MDMs suffer less from the curse.
- ``toy_mc`` (MMLU-like, 4 choices): birth year, profession, employer or university.
- ``toy_arithmetic`` (GSM8K-like generation): held-out word problems (operands never seen together
  in the corpus); ``answer`` is the final number. The corpus teaches the worked format
  "a + b = s. The answer is s." so a scorer extracts the number after "The answer is".
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List

from studies.data.config import ToyWorldConfig

# Part of a prepared toy world's cache key: raise it whenever a change here changes the generated text,
# so that a folder prepared by an older generator is never reused for a newer one.
GENERATOR_VERSION = 4

FIRST_NAMES = (
    "Alaric Brenna Cosmo Delphine Eamon Fenella Gideon Halcyon Isolde Jasper Kestrel Linnea Magnus "
    "Nerys Orrin Petra Quillon Rosalind Soren Tamsin Ulric Vesna Wystan Xanthe Yorick Zinnia Ansel "
    "Bettina Caspian Dagny Evander Fiora Gareth Hollis Ingrid Jago Katya Lucan Mireille Niall "
    "Aurelia Barnaby Cordelia Dorian Elspeth Florian Griselda Horatio Imogen Jericho Kerensa Leopold "
    "Marisol Nicasio Ottoline Percival Quintessa Roderick Seraphina Thaddeus Ursula Valentin Winifred "
    "Xavier Yseult Zebedee Agatha Bertram Clementine Desmond Eudora Fitzroy Gwendolyn Hamish Ignatius "
    "Jocasta Kasimir Lavinia Montague Octavia"
).split()
LAST_NAMES = (
    "Ashdown Blackwood Carraway Dunmore Ellery Fairweather Greaves Holloway Ivers Jessop Kinsella "
    "Lockhart Marchbank Norcross Oakhurst Pendleton Quarrie Ravenscroft Stanwick Thorne Underhill "
    "Vantwest Whitlock Yardley Zeller Abernethy Birchall Coldwell Drayton Everleigh Fenwick Galbraith "
    "Hartigan Inglewood Jarrow Kettering Langdale Merriman Northam Ormsby"
).split()
CITIES = (
    "Arnsvale Brightmoor Caldera Dunhaven Elmsford Farrowgate Glenmere Harrowby Ironbridge Juniper "
    "Kingsreach Lowmarsh Millbrook Northwick Oxmere Pinecrest Queensholm Redcliff Saltmarsh Thornbury "
    "Umberfield Valewood Westerly Yarrowby Zephyrton Amberley Blyth Corbridge Dovecote Eastwold"
).split()
PROFESSIONS = (
    "architect baker carpenter dentist engineer farmer geologist historian illustrator journalist "
    "librarian mechanic nurse optician pharmacist pilot sculptor surveyor tailor translator "
    "veterinarian welder astronomer chemist"
).split()
EMPLOYERS = (
    "Arcwell Industries|Bramble Foods|Cobalt Systems|Driftwood Press|Ember Logistics|Foxglove Health|"
    "Granite Bank|Harbor Energy|Indigo Textiles|Juno Aerospace|Kiln Ceramics|Lumen Optics|"
    "Meridian Rail|Nimbus Software|Orchard Farms|Pillar Insurance|Quartz Mining|Russet Brewing|"
    "Sable Shipping|Tidewater Labs"
).split("|")
UNIVERSITIES = (
    "Arnsvale University|Brightmoor College|Caldera Institute|Dunhaven University|Elmsford Academy|"
    "Glenmere University|Harrowby College|Ironbridge Polytechnic|Kingsreach University|"
    "Millbrook College|Northwick Institute|Oxmere University"
).split("|")
YEARS = tuple(range(1900, 2000))

# The first sentence of every biography introduces the person and states the birth (city and year);
# the other sentences refer back with a pronoun, so the name occurs once per biography and every fact
# follows it. The name is never a document's first word: a byte-level BPE encodes a word at the start
# of a text without the leading space it has everywhere else, so a name opening its biography would be
# a different token sequence from the same name in a question or an answer.
BIRTH_TEMPLATES = (
    "Meet {name}, who was born in {city} in {year}.",
    "This is {name}, born in the city of {city} in the year {year}.",
    "The story of {name} begins in {city} in {year}.",
    "Here is {name}, who came into the world in {year} in {city}.",
)
BIO_TEMPLATES: Dict[str, tuple] = {
    "profession": (
        "{pronoun} works as {article} {profession}.",
        "{pronoun} is {article} {profession} by trade.",
        "{pronoun} earns a living as {article} {profession}.",
    ),
    "employer": (
        "{pronoun} is employed by {employer}.",
        "{pronoun} works for {employer}.",
        "{pronoun} draws a salary from {employer}.",
    ),
    "university": (
        "{pronoun} studied at {university}.",
        "{pronoun} graduated from {university}.",
        "{pronoun} is an alumnus of {university}.",
    ),
}
# Forward questions (asked from the name); the QA documents and the tasks share them.
QUESTIONS = {
    "city": "Where was {name} born?",
    "year": "In which year was {name} born?",
    "profession": "What does {name} do for a living?",
    "employer": "Which company does {name} work for?",
    "university": "Where did {name} study?",
}
REVERSE_QUESTION = "Who was born in {city} in {year}?"
QA_FORMAT = "Question: {question}\nAnswer:"
ITEMS = "apples marbles stamps books coins shells pencils cards".split()
ACTORS = "Tom Ann Raj Mia Leo Zoe Sam Eva Ben Ivy".split()


@dataclass(frozen=True)
class Person:
    name: str
    city: str
    year: int
    profession: str
    employer: str
    university: str
    in_qa: bool
    pronoun: str  # "He" or "She": the later sentences of a biography refer back with it

    def value(self, attribute: str) -> str:
        return str(getattr(self, attribute))


@dataclass
class ToyWorld:
    people: List[Person]
    train_documents: List[str]
    validation_documents: List[str]
    tasks: Dict[str, List[dict]] = field(default_factory=dict)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _biography(person: Person, birth: str, templates: Dict[str, str], rng: random.Random) -> str:
    """The birth sentence (with the name) first, then the other facts in a shuffled order."""
    fields = dict(name=person.name, city=person.city, year=person.year, pronoun=person.pronoun,
                  article=_article(person.profession), profession=person.profession,
                  employer=person.employer, university=person.university)
    rest = [templates[attr].format(**fields) for attr in BIO_TEMPLATES]
    rng.shuffle(rest)
    return " ".join([birth.format(**fields)] + rest)


def _qa_documents(person: Person, rng: random.Random) -> List[str]:
    """Every forward question about the person in one document, and the reverse question alone.

    The reverse question is its own document so that its answer (the name) cannot be copied from a
    forward question earlier in the same context.
    """
    pairs = [
        QA_FORMAT.format(question=QUESTIONS[attr].format(name=person.name)) + " " + person.value(attr)
        for attr in QUESTIONS
    ]
    rng.shuffle(pairs)
    reverse = QA_FORMAT.format(question=REVERSE_QUESTION.format(city=person.city, year=person.year))
    return ["\n\n".join(pairs), reverse + " " + person.name]


def _arithmetic_keys(max_operand: int) -> List[tuple]:
    """Every distinct problem shape and operand tuple; the corpus and the tasks draw disjoint subsets."""
    n = range(1, max_operand + 1)
    keys = [("add", a, b, 0) for a in n for b in n]
    keys += [("sub", a, b, 0) for a in n for b in n if a > b]
    keys += [("mul", a, b, 0) for a in range(2, 11) for b in range(2, 11)]
    keys += [("two", a, b, c) for a in n for b in n for c in n if c <= a + b]
    return keys


def _arithmetic(key: tuple, rng: random.Random) -> tuple:
    """Render a problem: (question text, worked answer, final number)."""
    kind, a, b, c = key
    who, item = rng.choice(ACTORS), rng.choice(ITEMS)
    if kind == "add":
        q = f"{who} has {a} {item}. {who} gets {b} more {item}. How many {item} does {who} have now?"
        return q, f"{a} + {b} = {a + b}. The answer is {a + b}.", a + b
    if kind == "sub":
        q = f"{who} has {a} {item}. {who} gives away {b} {item}. How many {item} does {who} have left?"
        return q, f"{a} - {b} = {a - b}. The answer is {a - b}.", a - b
    if kind == "mul":
        q = f"{who} has {a} boxes with {b} {item} in each box. How many {item} does {who} have in total?"
        return q, f"{a} * {b} = {a * b}. The answer is {a * b}.", a * b
    s = a + b
    q = (f"{who} has {a} {item}. {who} gets {b} more {item} and then gives away {c} {item}. "
         f"How many {item} does {who} have left?")
    return q, f"{a} + {b} = {s}. {s} - {c} = {s - c}. The answer is {s - c}.", s - c


def _make_people(cfg: ToyWorldConfig, rng: random.Random) -> List[Person]:
    names = [f"{f} {l}" for f in FIRST_NAMES for l in LAST_NAMES] if cfg.full_names else list(FIRST_NAMES)
    births = [(c, y) for c in CITIES for y in YEARS]
    if cfg.num_people > min(len(names), len(births)):
        hint = "" if cfg.full_names else " (first names only: full_names=false), or set full_names=true"
        raise ValueError(
            f"toyworld.num_people={cfg.num_people} exceeds the {min(len(names), len(births))} people "
            f"with unique names and unique (birth city, birth year) pairs; lower it{hint}"
        )
    names = rng.sample(names, cfg.num_people)
    births = rng.sample(births, cfg.num_people)
    num_qa = max(1, round(cfg.qa_fraction * cfg.num_people))
    return [
        Person(name, city, year, rng.choice(PROFESSIONS), rng.choice(EMPLOYERS),
               rng.choice(UNIVERSITIES), in_qa=i < num_qa, pronoun=rng.choice(("He", "She")))
        for i, (name, (city, year)) in enumerate(zip(names, births))
    ]


def _choices(correct: str, pool, rng: random.Random) -> tuple:
    """Four distinct choices (the correct one among three distractors) and the answer index."""
    distractors = rng.sample(sorted({str(p) for p in pool} - {correct}), 3)
    choices = distractors + [correct]
    rng.shuffle(choices)
    return [" " + c for c in choices], choices.index(correct)


def _person_tasks(people: List[Person], cfg: ToyWorldConfig, rng: random.Random) -> Dict[str, List[dict]]:
    unseen = [p for p in people if not p.in_qa]
    held_out = unseen[: cfg.task_items]
    # Distractors are values that some person in the world has, so every choice occurs in the corpus:
    # a model that knows only which values occur is at chance.
    pools = {attr: sorted({q.value(attr) for q in people}) for attr in QUESTIONS}
    if len(unseen) < 4:
        raise ValueError(
            f"toyworld: {len(unseen)} people without QA pairs, too few for four-way reverse choices; "
            "raise data.toyworld.num_people or lower data.toyworld.qa_fraction"
        )
    for attr, pool in pools.items():
        if len(pool) < 4:
            raise ValueError(
                f"toyworld: only {len(pool)} distinct values of {attr!r} among {len(people)} people, too "
                "few for four-way choices; raise data.toyworld.num_people"
            )
    forward, reverse, mc = [], [], []
    for i, p in enumerate(held_out):
        choices, answer = _choices(p.city, pools["city"], rng)
        prompt = QA_FORMAT.format(question=QUESTIONS["city"].format(name=p.name))
        forward.append({"id": f"toy_forward/{i}", "prompt": prompt, "choices": choices, "answer": answer})

        # Distractors are other people without QA pairs: every choice is then a name the corpus never
        # gives as the answer to a reverse question, so a model that learned only which names answer
        # reverse questions in the corpus is at chance, neither above nor below it.
        others = [q.name for q in unseen if q.name != p.name]
        choices, answer = _choices(p.name, others, rng)
        prompt = QA_FORMAT.format(question=REVERSE_QUESTION.format(city=p.city, year=p.year))
        reverse.append({"id": f"toy_reverse/{i}", "prompt": prompt, "choices": choices, "answer": answer})

        attr = rng.choice(["year", "profession", "employer", "university"])
        choices, answer = _choices(p.value(attr), pools[attr], rng)
        prompt = QA_FORMAT.format(question=QUESTIONS[attr].format(name=p.name))
        mc.append({"id": f"toy_mc/{i}", "prompt": prompt, "choices": choices, "answer": answer,
                   "attribute": attr})
    return {"toy_forward": forward, "toy_reverse": reverse, "toy_mc": mc}


def generate(cfg: ToyWorldConfig) -> ToyWorld:
    """Build the whole world from ``cfg.seed``: people, train/validation documents and tasks."""
    rng = random.Random(cfg.seed)
    people = _make_people(cfg, rng)

    train: List[str] = []
    for p in people:
        # Cycle through shuffled templates so each fact is stated in several different forms.
        births = rng.sample(BIRTH_TEMPLATES, len(BIRTH_TEMPLATES))
        cycles = {a: rng.sample(t, len(t)) for a, t in BIO_TEMPLATES.items()}
        for k in range(cfg.bios_per_person):
            chosen = {a: cycles[a][k % len(cycles[a])] for a in BIO_TEMPLATES}
            train.append(_biography(p, births[k % len(births)], chosen, rng))
        if p.in_qa:
            train.extend(_qa_documents(p, rng))

    keys = _arithmetic_keys(cfg.max_operand)
    needed = cfg.task_items + cfg.validation_arithmetic + cfg.num_arithmetic
    if needed > len(keys):
        raise ValueError(
            f"toyworld asks for {needed} distinct arithmetic problems but max_operand="
            f"{cfg.max_operand} allows {len(keys)}; raise max_operand or lower num_arithmetic"
        )
    rng.shuffle(keys)
    task_keys = keys[: cfg.task_items]
    val_keys = keys[cfg.task_items: cfg.task_items + cfg.validation_arithmetic]
    train_keys = keys[cfg.task_items + cfg.validation_arithmetic: needed]
    for key in train_keys:
        question, worked, _ = _arithmetic(key, rng)
        train.append(QA_FORMAT.format(question=question) + " " + worked)
    rng.shuffle(train)

    validation: List[str] = []
    for _ in range(cfg.validation_bios):
        p = rng.choice(people)
        chosen = {a: rng.choice(t) for a, t in BIO_TEMPLATES.items()}
        validation.append(_biography(p, rng.choice(BIRTH_TEMPLATES), chosen, rng))
    for key in val_keys:
        question, worked, _ = _arithmetic(key, rng)
        validation.append(QA_FORMAT.format(question=question) + " " + worked)

    tasks = _person_tasks(people, cfg, rng)
    arithmetic = []
    for i, key in enumerate(task_keys):
        question, _, result = _arithmetic(key, rng)
        arithmetic.append({"id": f"toy_arithmetic/{i}", "prompt": QA_FORMAT.format(question=question),
                           "answer": str(result)})
    tasks["toy_arithmetic"] = arithmetic
    return ToyWorld(people, train, validation, tasks)


def write_tasks(world: ToyWorld, folder: Path) -> Dict[str, dict]:
    """Write ``folder/NAME.jsonl`` per task; return {name: {"file", "type", "items"}} for metadata."""
    folder.mkdir(parents=True, exist_ok=True)
    index = {}
    for name, items in world.tasks.items():
        path = folder / f"{name}.jsonl"
        with open(path, "w") as f:
            for item in items:
                f.write(json.dumps(item) + "\n")
        kind = "multiple_choice" if items and "choices" in items[0] else "generation"
        index[name] = {"file": f"tasks/{name}.jsonl", "type": kind, "items": len(items)}
    return index
