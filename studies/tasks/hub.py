"""Converters from the Hugging Face hub schema of each paper task to the item schema of ``schema.py``.

Prompts follow lm-evaluation-harness (Gao et al.; Biderman et al. 2024, "Lessons from the
trenches"), which LLaDA used for most of its base-model numbers:

- MMLU (``cais/mmlu``): header "The following are multiple choice questions (with answers) about
  {subject}.\\n\\n", then each shot and the question as "{question}\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer:"
  (shots followed by " {letter}\\n\\n"); continuations " A", " B", " C", " D". Shots: the first k
  rows of the ``dev`` split of the same subject (lm-eval's ``first_n`` sampler).
- CMMLU (``haonan-li/cmmlu``): the same layout with lm-eval's Chinese wording ("答案：" for
  "Answer:"); the header omits the subject name (lm-eval translates it to Chinese).
- ARC-Challenge (``allenai/ai2_arc``) and PIQA (``ybisk/piqa``): cloze style,
  "Question: {question}\\nAnswer:" with each full answer text as the continuation (" {text}").
- GSM8K (``openai/gsm8k``): "Question: {question}\\nAnswer:" after k worked examples from ``train``
  ("Question: ..\\nAnswer: {worked solution ending in #### N}\\n\\n"), the same k for every item
  (drawn with a fixed seed); the reference is the number after "####".
- HumanEval (``openai/openai_humaneval``): the function signature and docstring as the prompt; the
  completion is executed against ``test`` (``check(entry_point)``).

Each converter maps one hub row (a dict) and the few-shot rows chosen for it to one item dict.
"""

from __future__ import annotations

import random
from typing import Callable, Dict, List, Optional, Sequence

LETTERS = "ABCDEFGHIJ"
MMLU_HEADER = "The following are multiple choice questions (with answers) about {subject}.\n\n"
CMMLU_HEADER = "以下是单项选择题，请直接给出正确答案的选项。\n\n"

Row = Dict
Converter = Callable[[Row, int, Sequence[Row]], Dict]


def _lettered(question: str, options: Sequence[str], answer_word: str) -> str:
    lines = [question.strip()] + [f"{LETTERS[i]}. {str(o).strip()}" for i, o in enumerate(options)]
    return "\n".join(lines) + f"\n{answer_word}"


# ----------------------------------------------------------------------------- MMLU / CMMLU


def _mmlu_text(row: Row) -> str:
    return _lettered(row["question"], row["choices"], "Answer:")


def _mmlu_answer(row: Row) -> int:
    answer = row["answer"]
    return LETTERS.index(answer) if isinstance(answer, str) else int(answer)


def convert_mmlu(row: Row, index: int, shots: Sequence[Row] = ()) -> Dict:
    subject = str(row.get("subject", "")).replace("_", " ").strip() or "general knowledge"
    demos = "".join(f"{_mmlu_text(s)} {LETTERS[_mmlu_answer(s)]}\n\n" for s in shots)
    n = len(row["choices"])
    return {
        "id": f"mmlu/{row.get('subject', 'all')}/{index}",
        "prompt": MMLU_HEADER.format(subject=subject) + demos + _mmlu_text(row),
        "choices": [f" {LETTERS[i]}" for i in range(n)],
        "answer": _mmlu_answer(row),
        "subject": row.get("subject", ""),
    }


def _cmmlu_text(row: Row) -> str:
    return _lettered(row["Question"], [row[k] for k in "ABCD"], "答案：")


def convert_cmmlu(row: Row, index: int, shots: Sequence[Row] = ()) -> Dict:
    demos = "".join(f"{_cmmlu_text(s)} {s['Answer'].strip()}\n\n" for s in shots)
    answer = str(row["Answer"]).strip()
    if answer not in "ABCD" or not answer:
        raise ValueError(f"CMMLU row {index} has answer {answer!r}; expected one of A, B, C, D")
    return {
        "id": f"cmmlu/{row.get('subject', 'all')}/{index}",
        "prompt": CMMLU_HEADER + demos + _cmmlu_text(row),
        "choices": [" A", " B", " C", " D"],
        "answer": "ABCD".index(answer),
        "subject": row.get("subject", ""),
    }


# ----------------------------------------------------------------------------- cloze tasks


def _cloze(question: str) -> str:
    return f"Question: {question.strip()}\nAnswer:"


def _arc_answer(row: Row, index: int) -> int:
    labels = [str(label) for label in row["choices"]["label"]]
    key = str(row["answerKey"])
    if key not in labels:
        raise ValueError(f"ARC row {row.get('id', index)}: answerKey {key!r} is not among the labels {labels}")
    return labels.index(key)


def convert_arc(row: Row, index: int, shots: Sequence[Row] = ()) -> Dict:
    texts = row["choices"]["text"]
    demos = "".join(f"{_cloze(s['question'])} {s['choices']['text'][_arc_answer(s, -1)].strip()}\n\n" for s in shots)
    return {
        "id": f"arc_challenge/{row.get('id', index)}",
        "prompt": demos + _cloze(row["question"]),
        "choices": [f" {t.strip()}" for t in texts],
        "answer": _arc_answer(row, index),
    }


def convert_piqa(row: Row, index: int, shots: Sequence[Row] = ()) -> Dict:
    label = int(row["label"])
    if label not in (0, 1):
        raise ValueError(f"PIQA row {index} has label {label}; the test split is unlabeled, use validation")
    demos = "".join(f"{_cloze(s['goal'])} {s['sol' + str(int(s['label']) + 1)].strip()}\n\n" for s in shots)
    return {
        "id": f"piqa/{index}",
        "prompt": demos + _cloze(row["goal"]),
        "choices": [f" {row['sol1'].strip()}", f" {row['sol2'].strip()}"],
        "answer": label,
    }


# ----------------------------------------------------------------------------- generation


def gsm8k_reference(worked_answer: str) -> str:
    """The final number of a GSM8K solution: what follows "####", commas removed."""
    if "####" not in worked_answer:
        raise ValueError(f"GSM8K answer has no '####' final-number marker: {worked_answer[-80:]!r}")
    return worked_answer.split("####")[-1].strip().replace(",", "")


def convert_gsm8k(row: Row, index: int, shots: Sequence[Row] = ()) -> Dict:
    demos = "".join(f"{_cloze(s['question'])} {s['answer'].strip()}\n\n" for s in shots)
    return {
        "id": f"gsm8k/{index}",
        "prompt": demos + _cloze(row["question"]),
        "answer": gsm8k_reference(row["answer"]),
    }


def convert_humaneval(row: Row, index: int, shots: Sequence[Row] = ()) -> Dict:
    return {
        "id": str(row["task_id"]),
        "prompt": row["prompt"],
        "answer": row["canonical_solution"],
        "test": row["test"],
        "entry_point": row["entry_point"],
    }


CONVERTERS: Dict[str, Converter] = {
    "mmlu": convert_mmlu,
    "cmmlu": convert_cmmlu,
    "arc_challenge": convert_arc,
    "piqa": convert_piqa,
    "gsm8k": convert_gsm8k,
    "humaneval": convert_humaneval,
}


# ----------------------------------------------------------------------------- few-shot


def choose_shots(pool: Sequence[Row], k: int, *, group_key: Optional[str] = None, row: Optional[Row] = None,
                 sampler: str = "first_n", seed: int = 1234) -> List[Row]:
    """The k demonstration rows for ``row``: from the rows of ``pool`` that share ``row[group_key]``
    (the subject, for MMLU/CMMLU) or from all of ``pool``; either the first k (``first_n``) or k
    drawn with ``random.Random(seed)`` (``random``), the same k for every item."""
    if k <= 0:
        return []
    candidates = list(pool)
    if group_key is not None and row is not None and group_key in row:
        candidates = [r for r in candidates if r.get(group_key) == row[group_key]]
    if len(candidates) < k:
        raise ValueError(
            f"{k}-shot prompting needs {k} demonstration rows but the few-shot split has {len(candidates)}"
            + (f" for {group_key}={row.get(group_key)!r}" if group_key and row else "")
        )
    if sampler == "first_n":
        return candidates[:k]
    if sampler == "random":
        return random.Random(seed).sample(candidates, k)
    raise ValueError(f"unknown few-shot sampler {sampler!r}; choose first_n or random")


def convert_rows(task: str, rows: Sequence[Row], *, fewshot_pool: Sequence[Row] = (), num_fewshot: int = 0,
                 group_key: Optional[str] = None, sampler: str = "first_n", seed: int = 1234) -> List[Dict]:
    """Convert hub rows of ``task`` to item dicts, each with its few-shot demonstrations."""
    if task not in CONVERTERS:
        raise ValueError(f"no hub converter for task {task!r}; known: {sorted(CONVERTERS)}")
    convert = CONVERTERS[task]
    fixed = None
    items = []
    for index, row in enumerate(rows):
        if group_key is None:
            if fixed is None:
                fixed = choose_shots(fewshot_pool, num_fewshot, sampler=sampler, seed=seed)
            shots = fixed
        else:
            shots = choose_shots(fewshot_pool, num_fewshot, group_key=group_key, row=row, sampler=sampler, seed=seed)
        items.append(convert(row, index, shots))
    return items


__all__ = ["CONVERTERS", "convert_rows", "choose_shots", "gsm8k_reference", "convert_mmlu", "convert_cmmlu",
           "convert_arc", "convert_piqa", "convert_gsm8k", "convert_humaneval", "LETTERS"]
