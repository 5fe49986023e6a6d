"""The item schema of every downstream task, and a JSONL loader that validates it.

One line of a task file is one item:

- multiple choice: ``{"id", "prompt", "choices": [continuation, ...], "answer": index}``; each
  choice is the exact continuation scored after the prompt (so it carries its leading space,
  e.g. ``" A"`` or ``" Arnsvale"``), and ``answer`` indexes the correct one.
- generation: ``{"id", "prompt", "answer": str}``; ``answer`` is the reference (for GSM8K and
  the toy arithmetic task, the final number).
- code (HumanEval): a generation item that also carries ``"test"`` (the unit-test source defining
  ``check``) and ``"entry_point"`` (the function name); ``answer`` is the canonical solution.

Any other keys are kept in ``extra`` (e.g. the toy world's ``attribute``). A file that breaks the
schema is refused with the file, the line and the field, so a half-written or hand-edited task file
never turns into a silently wrong score.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Union

KINDS = ("multiple_choice", "generation", "code")


class TaskFileError(ValueError):
    """A task file that does not follow the schema; the message names file, line and field."""


@dataclass
class MultipleChoiceItem:
    id: str
    prompt: str
    choices: List[str]
    answer: int
    extra: Dict[str, Any] = field(default_factory=dict)


@dataclass
class GenerationItem:
    id: str
    prompt: str
    answer: str
    extra: Dict[str, Any] = field(default_factory=dict)


@dataclass
class CodeItem:
    id: str
    prompt: str
    answer: str
    test: str
    entry_point: str
    extra: Dict[str, Any] = field(default_factory=dict)


Item = Union[MultipleChoiceItem, GenerationItem, CodeItem]
_FIELDS = {
    "multiple_choice": ("id", "prompt", "choices", "answer"),
    "generation": ("id", "prompt", "answer"),
    "code": ("id", "prompt", "answer", "test", "entry_point"),
}


def parse_item(row: Any, kind: str, where: str = "item") -> Item:
    """Validate one decoded JSON object as an item of ``kind``; ``where`` prefixes errors."""
    if kind not in KINDS:
        raise ValueError(f"unknown task kind {kind!r}; choose one of {KINDS}")
    if not isinstance(row, dict):
        raise TaskFileError(f"{where}: expected a JSON object, got {type(row).__name__}")
    for name in _FIELDS[kind]:
        if name not in row:
            raise TaskFileError(
                f"{where}: missing field {name!r}; a {kind} item needs {list(_FIELDS[kind])}"
            )
    extra = {k: v for k, v in row.items() if k not in _FIELDS[kind]}
    item_id = _string(row, "id", where, allow_number=True)
    prompt = _string(row, "prompt", where)
    if kind == "multiple_choice":
        choices = row["choices"]
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
            raise TaskFileError(f"{where}: field 'choices' must be a list of at least two non-empty strings")
        answer = row["answer"]
        if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
            raise TaskFileError(
                f"{where}: field 'answer' must be an integer index into the {len(choices)} choices, got {answer!r}"
            )
        return MultipleChoiceItem(item_id, prompt, list(choices), answer, extra)
    answer = _string(row, "answer", where, allow_number=True)
    if kind == "generation":
        return GenerationItem(item_id, prompt, answer, extra)
    return CodeItem(item_id, prompt, answer, _string(row, "test", where), _string(row, "entry_point", where), extra)


def _string(row: dict, name: str, where: str, allow_number: bool = False) -> str:
    value = row[name]
    if allow_number and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise TaskFileError(f"{where}: field {name!r} must be a string, got {type(value).__name__}")
    return value


def load_items(path: Union[str, Path], kind: str, limit: int | None = None) -> List[Item]:
    """Read and validate a JSONL task file (blank lines are skipped); at most ``limit`` items."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"task file {path} does not exist")
    items: List[Item] = []
    seen: Dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if limit is not None and len(items) >= limit:
                break
            if not line.strip():
                continue
            where = f"{path}, line {number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise TaskFileError(f"{where}: not valid JSON ({error.msg})") from None
            item = parse_item(row, kind, where)
            if item.id in seen:
                raise TaskFileError(f"{where}: id {item.id!r} repeats the item of line {seen[item.id]}; ids must be unique")
            seen[item.id] = number
            items.append(item)
    if not items:
        raise TaskFileError(f"{path}: holds no items")
    return items


def item_to_dict(item: Item) -> Dict[str, Any]:
    """The JSON object of ``item`` in the file schema (``extra`` keys at top level)."""
    row = {k: v for k, v in vars(item).items() if k != "extra"}
    return {**row, **item.extra}


def write_items(path: Union[str, Path], items: Iterable[Union[Item, dict]]) -> Path:
    """Write items (dataclasses or schema dicts) as JSONL; non-ASCII text is kept readable."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for item in items:
            row = item if isinstance(item, dict) else item_to_dict(item)
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


__all__ = ["KINDS", "TaskFileError", "MultipleChoiceItem", "GenerationItem", "CodeItem", "Item",
           "parse_item", "load_items", "item_to_dict", "write_items"]
