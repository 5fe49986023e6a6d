"""Tests of studies/tasks/schema.py: validated loading of task files."""

import json

import pytest

from studies.tasks.schema import (CodeItem, GenerationItem, MultipleChoiceItem, TaskFileError, load_items,
                                  write_items)


def write_lines(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


MC = {"id": "q1", "prompt": "Question: 2+2?\nAnswer:", "choices": [" 3", " 4"], "answer": 1}


def test_round_trip_keeps_fields_and_extra_keys(tmp_path):
    items = [MultipleChoiceItem("a", "P", [" x", " y", " z"], 2, {"attribute": "year"}),
             GenerationItem("b", "Q", "12"),
             CodeItem("c", "def f():\n", "    return 1\n", "def check(f): assert f() == 1", "f")]
    write_items(tmp_path / "mc.jsonl", items[:1])
    write_items(tmp_path / "gen.jsonl", items[1:2])
    write_items(tmp_path / "code.jsonl", items[2:])
    assert load_items(tmp_path / "mc.jsonl", "multiple_choice") == items[:1]
    assert load_items(tmp_path / "gen.jsonl", "generation") == items[1:2]
    assert load_items(tmp_path / "code.jsonl", "code") == items[2:]


def test_missing_field_names_file_line_and_field(tmp_path):
    bad = {k: v for k, v in MC.items() if k != "choices"}
    path = write_lines(tmp_path / "task.jsonl", [MC, "", bad])
    with pytest.raises(TaskFileError) as error:
        load_items(path, "multiple_choice")
    message = str(error.value)
    assert str(path) in message and "line 3" in message and "'choices'" in message


def test_code_item_needs_test_and_entry_point(tmp_path):
    path = write_lines(tmp_path / "he.jsonl", [{"id": "HumanEval/0", "prompt": "def f():\n", "answer": "  pass",
                                               "test": "def check(c): pass"}])
    with pytest.raises(TaskFileError, match="line 1: missing field 'entry_point'"):
        load_items(path, "code")


@pytest.mark.parametrize("change, fragment", [
    ({"answer": 2}, "index into the 2 choices"),
    ({"answer": True}, "index into"),
    ({"choices": [" only"]}, "at least two"),
    ({"prompt": 3}, "'prompt' must be a string"),
])
def test_invalid_values_are_refused(tmp_path, change, fragment):
    path = write_lines(tmp_path / "t.jsonl", [{**MC, **change}])
    with pytest.raises(TaskFileError, match=fragment):
        load_items(path, "multiple_choice")


def test_bad_json_duplicate_ids_empty_file_and_limit(tmp_path):
    with pytest.raises(TaskFileError, match="line 2: not valid JSON"):
        load_items(write_lines(tmp_path / "a.jsonl", [MC, "{oops"]), "multiple_choice")
    with pytest.raises(TaskFileError, match="repeats the item of line 1"):
        load_items(write_lines(tmp_path / "b.jsonl", [MC, MC]), "multiple_choice")
    with pytest.raises(TaskFileError, match="holds no items"):
        load_items(write_lines(tmp_path / "c.jsonl", [""]), "multiple_choice")
    rows = [{**MC, "id": f"q{i}"} for i in range(5)]
    assert [i.id for i in load_items(write_lines(tmp_path / "d.jsonl", rows), "multiple_choice", limit=2)] == ["q0", "q1"]
    with pytest.raises(FileNotFoundError):
        load_items(tmp_path / "missing.jsonl", "generation")


def test_numeric_generation_answer_is_read_as_text(tmp_path):
    path = write_lines(tmp_path / "g.jsonl", [{"id": 7, "prompt": "Q", "answer": 18}])
    (item,) = load_items(path, "generation")
    assert (item.id, item.answer) == ("7", "18")
