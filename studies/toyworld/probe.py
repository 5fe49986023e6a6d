"""In-biography probes: which toy-world facts a trained model has stored, and in which direction.

The toy-world tasks ask questions ("Question: Where was X born?\\nAnswer:"). Answering one needs two
things: the fact stored in the weights, and the skill of extracting a stored fact in question form,
which the corpus teaches only on the QA people (Allen-Zhu & Li, "Physics of Language Models:
Part 3.1"). A model can have the first without the second. The probes measure the first: each takes
a training biography of a task person (one whose facts the corpus states only in biographies), hides
a fact of its opening sentence ("Meet X, who was born in C in Y."), and ranks the four choices of the
matching task by the model's score for each choice put in place:

- ``bio_city``: the birth city, the rest of the biography visible (the forward direction, in place);
- ``bio_city_without_year``: the city with the birth year hidden too, so it must come from the name;
- ``bio_city_without_name``: the city with the name hidden too, so it can only come from the other
  facts (year, profession, ...): an association between facts that no question can use;
- ``bio_name``: the name, with city, year and the later sentences visible (the reverse direction, in
  place; its choices are those of ``toy_reverse``).

Two probes ask the trained QA documents back (memorisation, not extraction): ``qa_city``
("Where was X born?") and ``qa_name`` ("Who was born in C in Y?") about the QA people. Two more ask
the questions of ``toy_forward`` and ``toy_reverse`` against every candidate instead of four:
``forward_all_cities`` (every birth city in the world) and ``reverse_all_names`` (every task person).
With 40 four-way items a task's accuracy has a standard error near 0.07 at chance; the rank of the
correct answer among all candidates is a steadier measure of the same knowledge.

Every probe reports ``acc`` (the correct choice ranked first), ``chance`` (the mean of 1/choices) and
``rank``: the correct choice's rank among the item's choices scaled to [0, 1] (0 first, 1 last), whose
mean is 0.5 for a model that knows nothing.

Scoring. An MDM scores a hidden span by masking it, together with whatever else the probe hides, and
summing log p(token | visible tokens) over the span in one pass: for a one-token span (every name,
city and year with the smoke grid's vocabulary) this is exactly log p(fact | rest); for a longer
span it is the all-masked term of LLaDA eq. 6. An ARM conditions only on the text to the left of the
span, so its score is log p(span | prefix): its ``bio_name`` sees nothing but the words before the
name, and the ``without`` probes, which hide words to the left of the city in some templates, are
not defined for it (``None``).

Command line: ``python -m studies.toyworld.probe --checkpoint CKPT [--data-dir DIR] [--limit N] [--out FILE]``
prints the table of every probe (the prepared toy world is found from the run's ``config.yaml``
unless ``--data-dir`` names it).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from models.objective_names import ARM
from studies.text_table import render_table

BIO_PROBES = {  # name: (the fact hidden and scored, the other facts hidden too)
    "bio_city": ("city", ()),
    "bio_city_without_year": ("city", ("year",)),
    "bio_city_without_name": ("city", ("name",)),
    "bio_name": ("name", ()),
}
QA_PROBES = {"qa_city": "toy_forward", "qa_name": "toy_reverse"}  # the task whose prompt format is asked
POOL_PROBES = ("forward_all_cities", "reverse_all_names")
PROBES = tuple(BIO_PROBES) + tuple(QA_PROBES) + POOL_PROBES


@dataclass(frozen=True)
class Item:
    """One ranking: ``texts[k]`` is the document with choice k in place; ``spans[k]`` the character
    span of that choice; ``hidden[k]`` the spans hidden as well (MDM only); ``answer`` the index."""

    probe: str
    texts: Tuple[str, ...]
    spans: Tuple[Tuple[int, int], ...]
    hidden: Tuple[Tuple[Tuple[int, int], ...], ...]
    answer: int


def birth_spans(document: str, person) -> Dict[str, Tuple[int, int]]:
    """Character spans of the name, birth city and birth year in a biography's opening sentence."""
    end = document.index(".")  # names, cities and years hold no full stop
    spans = {}
    for attribute, value in (("name", person.name), ("city", person.city), ("year", str(person.year))):
        match = re.search(rf"\b{re.escape(value)}\b", document[:end])
        if match is None:
            raise ValueError(f"the opening sentence of {document!r} does not state {attribute} {value!r}")
        spans[attribute] = match.span()
    return spans


def _biographies(world, person) -> List[str]:
    """The training biographies of ``person`` (they open with the birth sentence, which names them)."""
    pattern = re.compile(rf"\b{re.escape(person.name)}\b")
    return [d for d in world.train_documents
            if not d.startswith("Question:") and pattern.search(d[: d.index(".")])]


def _bio_items(probe: str, document: str, person, choices: Sequence[str], answer: int) -> Item:
    target, also_hidden = BIO_PROBES[probe]
    spans = birth_spans(document, person)
    start, end = spans[target]
    texts, targets, hidden = [], [], []
    for choice in choices:
        value = choice.strip()
        text = document[:start] + value + document[end:]
        shift = len(value) - (end - start)
        moved = tuple((a + shift, b + shift) if a >= end else (a, b) for a, b in (spans[h] for h in also_hidden))
        texts.append(text)
        targets.append((start, start + len(value)))
        hidden.append(moved)
    return Item(probe, tuple(texts), tuple(targets), tuple(hidden), answer)


def _answer_item(probe: str, prompt: str, choices: Sequence[str], correct: str) -> Item:
    """A question scored on its answer: ``prompt`` followed by each choice after a space."""
    texts = tuple(f"{prompt} {c}" for c in choices)
    spans = tuple((len(prompt) + 1, len(prompt) + 1 + len(c)) for c in choices)
    return Item(probe, texts, spans, tuple(() for _ in choices), list(choices).index(correct))


def build_items(world, per_probe: Optional[int] = None) -> Dict[str, List[Item]]:
    """The items of every probe, from a generated ``studies.toyworld.world.ToyWorld``.

    Biography probes use every training biography of each task person (``toy_forward`` and
    ``toy_reverse`` list them, with their choices); QA probes ask every QA person. ``per_probe``
    caps the items of each probe.
    """
    from .world import QA_FORMAT, QUESTIONS, REVERSE_QUESTION

    asked = {QA_FORMAT.format(question=QUESTIONS["city"].format(name=p.name)): p for p in world.people}
    reverse = {item["id"].split("/")[1]: item for item in world.tasks["toy_reverse"]}
    # Item i of toy_forward and of toy_reverse ask about the same person.
    pairs = [(entry, reverse[entry["id"].split("/")[1]]) for entry in world.tasks["toy_forward"]]
    items: Dict[str, List[Item]] = {probe: [] for probe in PROBES}
    for entry, backward in pairs:
        person = asked[entry["prompt"]]
        for document in _biographies(world, person):
            for probe, (target, _) in BIO_PROBES.items():
                task = backward if target == "name" else entry
                items[probe].append(_bio_items(probe, document, person, task["choices"], task["answer"]))

    # The QA people are asked their trained questions, with four choices drawn like the tasks' (the
    # other values of the attribute in the world, and other QA people's names).
    qa_people = [p for p in world.people if p.in_qa]
    cities = sorted({p.city for p in world.people})
    for k, person in enumerate(qa_people):
        for probe, prompt, correct, pool in (
            ("qa_city", QA_FORMAT.format(question=QUESTIONS["city"].format(name=person.name)), person.city, cities),
            ("qa_name", QA_FORMAT.format(question=REVERSE_QUESTION.format(city=person.city, year=person.year)),
             person.name, [q.name for q in qa_people]),
        ):
            rng = random.Random(f"{probe}/{k}")
            choices = rng.sample([v for v in pool if v != correct], 3) + [correct]
            rng.shuffle(choices)
            items[probe].append(_answer_item(probe, prompt, choices, correct))

    # The task questions against every candidate: all birth cities, all task people.
    names = [backward["choices"][backward["answer"]].strip() for _, backward in pairs]
    for entry, backward in pairs:
        for probe, task, pool in (("forward_all_cities", entry, cities), ("reverse_all_names", backward, names)):
            items[probe].append(_answer_item(probe, task["prompt"], pool, task["choices"][task["answer"]].strip()))
    if per_probe is not None:
        items = {probe: rows[:per_probe] for probe, rows in items.items()}
    return items


@dataclass
class ProbeModel:
    """What the probes read of a trained model: its backbone, objective, tokenizer and special ids.
    Every text starts with EOS, the token that precedes each document in training."""

    model: object
    tokenizer: object
    objective: str
    eos_id: int
    mask_id: Optional[int]
    pad_id: int = 0

    @property
    def max_len(self) -> Optional[int]:
        config = getattr(self.model, "config", None)
        return getattr(config, "max_seq_len", None)

    @classmethod
    def from_checkpoint(cls, checkpoint, data_dir, device: str = "cpu") -> "ProbeModel":
        from studies.tasks.lm_eval_model import ModelArgs, load_checkpoint

        module, tokenizer, ids = load_checkpoint(ModelArgs(checkpoint=str(checkpoint), tokenizer=str(data_dir),
                                                           device=device))
        return cls(module.model, tokenizer, module.objective, int(ids["eos"]), module.mask_id, int(ids.get("pad", 0)))


def _token_positions(offsets: Sequence[Tuple[int, int]], span: Tuple[int, int]) -> List[int]:
    """Indices of the tokens whose characters overlap ``span`` (a leading space belongs to its word)."""
    start, end = span
    return [i for i, (a, b) in enumerate(offsets) if a < end and b > start and b > a]


def score_item(scorer, item: Item) -> Optional[List[float]]:
    """log-score of each choice in place (see the module docstring), or None where undefined."""
    import torch

    from models.likelihood import arm_nll, model_device, run_padded

    if scorer.objective == ARM and any(item.hidden):
        return None
    rows, targets = [], []
    for text, span, hidden in zip(item.texts, item.spans, item.hidden):
        encoding = scorer.tokenizer.encode(text, add_special_tokens=False)
        ids, offsets = [scorer.eos_id] + list(encoding.ids), [(0, 0)] + list(encoding.offsets)
        target = _token_positions(offsets, span)
        if not target or target != list(range(target[0], target[-1] + 1)):
            raise ValueError(f"choice span {span} of {text!r} is not a contiguous run of tokens")
        if scorer.objective == ARM:
            rows.append((ids[: target[0]], ids[target[0]: target[-1] + 1]))
            continue
        positions = target + [p for h in hidden for p in _token_positions(offsets, h)]
        if scorer.max_len and len(ids) > scorer.max_len:  # the text after the facts is cut to fit
            if max(positions) >= scorer.max_len:
                raise ValueError(f"the probed facts of {text!r} lie beyond the model's {scorer.max_len} positions")
            ids = ids[: scorer.max_len]
        masked = list(ids)
        for position in positions:
            masked[position] = scorer.mask_id
        rows.append(masked)
        targets.append([(p, ids[p]) for p in target])
    with torch.no_grad():
        if scorer.objective == ARM:
            nll = arm_nll(scorer.model, [p for p, _ in rows], [a for _, a in rows], pad_id=scorer.pad_id)
            return (-nll).tolist()
        log_probs = run_padded(scorer.model, rows, model_device(scorer.model), scorer.pad_id).log_softmax(-1)
    return [float(sum(log_probs[k, p, token] for p, token in picks)) for k, picks in enumerate(targets)]


def relative_rank(scores: Sequence[float], answer: int) -> float:
    """Rank of ``scores[answer]`` among all scores, scaled to [0, 1]: 0 when it is the highest, 1 when
    it is the lowest; ties count half (so a model that scores every choice alike gets 0.5)."""
    above = sum(s > scores[answer] for s in scores)
    tied = sum(s == scores[answer] for s in scores) - 1
    return (above + tied / 2) / (len(scores) - 1)


def run_probes(scorer, world, per_probe: Optional[int] = None) -> Dict[str, dict]:
    """{probe: {"acc", "chance", "rank", "n"}}: the fraction of items whose correct choice scores highest
    (ties lose), the mean of 1/choices, the mean ``relative_rank``; acc and rank are None where a probe
    is undefined for the model."""
    from studies.tasks.lm_eval_model import eval_mode

    results = {}
    with eval_mode(scorer.model):
        for probe, items in build_items(world, per_probe).items():
            scores = [score_item(scorer, item) for item in items]
            entry = {"acc": None, "chance": None, "rank": None, "n": len(items)}
            if items:
                entry["chance"] = sum(1 / len(item.texts) for item in items) / len(items)
            if items and scores[0] is not None:
                ranks = [relative_rank(s, item.answer) for s, item in zip(scores, items)]
                entry["acc"] = sum(r == 0 for r in ranks) / len(ranks)
                entry["rank"] = sum(ranks) / len(ranks)
            results[probe] = entry
    return results


def load_world(data_dir: Path):
    """Regenerate the toy world a prepared folder was built from, and check it is the same world."""
    from studies.data.config import ToyWorldConfig
    from studies.data.layout import load_metadata

    from .world import GENERATOR_VERSION, generate

    metadata = load_metadata(data_dir)
    config = metadata.get("config", {})
    if metadata.get("source") != "toyworld" or "toyworld" not in config:
        raise SystemExit(f"error: {data_dir} is not a prepared toy world; the probes need the toy world's biographies")
    if config.get("toyworld_version") != GENERATOR_VERSION:
        raise SystemExit(
            f"error: {data_dir} was generated by toy-world generator version {config.get('toyworld_version')}, "
            f"this code generates version {GENERATOR_VERSION}; check out the code version the run logged"
        )
    world = generate(ToyWorldConfig(**config["toyworld"]))
    stored = [json.loads(line) for line in (Path(data_dir) / "tasks" / "toy_forward.jsonl").read_text().splitlines()]
    if stored != world.tasks["toy_forward"]:
        raise SystemExit(f"error: the regenerated toy world differs from the one prepared in {data_dir}")
    return world


def format_table(results: Dict[str, dict]) -> str:
    rows = []
    for probe, entry in results.items():
        acc, chance, rank = ("n/a" if entry[k] is None else f"{entry[k]:.3f}" for k in ("acc", "chance", "rank"))
        rows.append([probe, acc, chance, rank, entry["n"]])
    return render_table(["probe", "acc", "chance", "rank (chance 0.5)", "n"], rows, markdown=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m studies.toyworld.probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a Lightning checkpoint of a LanguageModel")
    parser.add_argument("--data-dir", default=None, help="its prepared toy world (default: from the run's config.yaml)")
    parser.add_argument("--limit", type=int, default=None, help="items per probe (default: all)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--device", default="cpu")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    from studies.checkpoint_inputs import resolve_checkpoint

    args = _parser().parse_args(argv)
    checkpoint, _, data_dir = resolve_checkpoint(args.checkpoint, args.data_dir)
    if not (data_dir / "metadata.json").is_file():
        raise SystemExit(f"error: {data_dir} holds no prepared data (metadata.json); pass the prepared toy world "
                         "as --data-dir")
    world = load_world(data_dir)

    scorer = ProbeModel.from_checkpoint(checkpoint, data_dir, device=args.device)
    results = run_probes(scorer, world, args.limit)
    print(format_table(results), flush=True)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"checkpoint": str(checkpoint), "objective": scorer.objective,
                                   "probes": results}, indent=2))
        print(f"wrote {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
