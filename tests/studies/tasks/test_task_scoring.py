"""Tests of studies/tasks/scoring.py and studies/evaluate.py with adapters whose outputs we control."""

import json
import math

import pytest

from studies.evaluate import evaluate_suite, format_table
from studies.tasks.scoring import choice_bytes, exact_match, extract_final_number, normalize_number


class FakeAdapter:
    """Log-likelihoods from a table keyed by (prompt, continuation); generations keyed by prompt."""

    def __init__(self, loglik=None, outputs=None):
        self.loglik, self.outputs, self.calls = loglik or {}, outputs or {}, []

    def loglikelihood(self, requests):
        self.calls.append(list(requests))
        return [self.loglik[r] for r in requests]

    def generate(self, contexts, *, max_new_tokens, stop=(), temperature=None):
        self.calls.append((list(contexts), max_new_tokens, tuple(stop)))
        return [self.outputs[c] for c in contexts]


def write_task(folder, name, rows):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_mmlu_style_acc_and_acc_norm(tmp_path):
    """acc takes the largest log-likelihood, acc_norm the largest per byte: they disagree exactly
    where a long choice has the larger total but the smaller per-byte log-likelihood."""
    rows = [
        # long correct choice: total -12 over 12 bytes beats -3 over 1 byte only per byte
        {"id": "1", "prompt": "P1", "choices": [" a", " abcdefghijkl"], "answer": 1},
        # equal lengths: both metrics agree, and both are right
        {"id": "2", "prompt": "P2", "choices": [" x", " y", " z"], "answer": 2},
        # short correct choice with the larger total: acc right, acc_norm wrong
        {"id": "3", "prompt": "P3", "choices": [" no", " a much longer choice"], "answer": 0},
        # both wrong
        {"id": "4", "prompt": "P4", "choices": [" p", " q"], "answer": 0},
    ]
    loglik = {("P1", " a"): -3.0, ("P1", " abcdefghijkl"): -12.0,
              ("P2", " x"): -5.0, ("P2", " y"): -4.0, ("P2", " z"): -1.0,
              ("P3", " no"): -4.0, ("P3", " a much longer choice"): -5.0,
              ("P4", " p"): -9.0, ("P4", " q"): -1.0}
    write_task(tmp_path, "mmlu", rows)
    adapter = FakeAdapter(loglik)
    result = evaluate_suite(adapter, "mmlu", tasks_dir=tmp_path, keep_records=True)["mmlu"]
    assert result["n"] == 4 and result["kind"] == "multiple_choice"
    # acc: items 2, 3 right; acc_norm: item 1 (-1/12 > -3/1), item 2 right; item 3 (-4/2 < -5/20) wrong
    assert result["metrics"] == {"acc": 0.5, "acc_norm": 0.5}
    per_item = {r["id"]: (r["acc"], r["acc_norm"]) for r in result["records"]}
    assert per_item == {"1": (0.0, 1.0), "2": (1.0, 1.0), "3": (1.0, 0.0), "4": (0.0, 0.0)}
    assert result["chance"] == pytest.approx((0.5 + 1 / 3 + 0.5 + 0.5) / 4)
    assert result["source"] == str(tmp_path / "mmlu.jsonl")
    assert "acc_norm" in format_table({"mmlu": result})


def test_acc_norm_counts_utf8_bytes_without_the_delimiter():
    assert choice_bytes(" A") == 1 and choice_bytes(" 北京") == 6 and choice_bytes("ab") == 2
    assert choice_bytes(" ") == 1  # never divides by zero


def test_limit_takes_the_first_items(tmp_path):
    rows = [{"id": str(i), "prompt": f"P{i}", "choices": [" a", " b"], "answer": i % 2} for i in range(6)]
    write_task(tmp_path, "piqa", rows)
    loglik = {(f"P{i}", c): (-1.0 if c == " a" else -2.0) for i in range(6) for c in (" a", " b")}
    result = evaluate_suite(FakeAdapter(loglik), "piqa", tasks_dir=tmp_path, limit=3)["piqa"]
    assert result["n"] == 3 and result["metrics"]["acc"] == pytest.approx(2 / 3)  # items 0, 2 have answer a
    with pytest.raises(ValueError, match="limit must be a positive"):
        evaluate_suite(FakeAdapter(loglik), "piqa", tasks_dir=tmp_path, limit=0)


@pytest.mark.parametrize("text, flexible, strict", [
    ("3 + 4 = 7. The answer is 7.", "7", "7"),
    ("Natalia sold 48/2 = 24 clips.\n#### 72", "72", "72"),
    ("so she has $1,250.00 left", "1250", None),
    ("the total is -3 degrees", "-3", None),
    ("The answer is: 18", "18", "18"),
    ("the answer is 0.50, not 2", "0.5", "0.5"),
    ("no digits at all", None, None),
    ("12 apples, then 5 more, 17 in all. Question: what", "17", None),
])
def test_final_number_extraction(text, flexible, strict):
    assert extract_final_number(text) == flexible
    assert extract_final_number(text, strict=True) == strict


def test_numbers_compare_by_value():
    assert normalize_number("2,000") == "2000" and normalize_number("7.") == "7" and normalize_number("x") is None
    assert exact_match("1000", "1,000") == 1.0 and exact_match("18", "18.0") == 1.0
    assert exact_match(None, "3") == 0.0 and exact_match("4", "3") == 0.0


def test_gsm8k_style_generation_scoring(tmp_path):
    rows = [{"id": "a", "prompt": "Qa", "answer": "7"}, {"id": "b", "prompt": "Qb", "answer": "1,000"},
            {"id": "c", "prompt": "Qc", "answer": "12"}]
    outputs = {"Qa": " 3 + 4 = 7. The answer is 7.", "Qb": " 500 * 2 = 1000 pens", "Qc": " #### 13"}
    write_task(tmp_path, "gsm8k", rows)
    adapter = FakeAdapter(outputs=outputs)
    result = evaluate_suite(adapter, "gsm8k", tasks_dir=tmp_path)["gsm8k"]
    assert result["metrics"]["exact_match"] == pytest.approx(2 / 3)  # a (marked), b (last number)
    assert result["metrics"]["exact_match_strict"] == pytest.approx(1 / 3)  # only a has a marker and is right
    contexts, max_new, stop = adapter.calls[0]
    assert contexts == ["Qa", "Qb", "Qc"] and max_new == 256 and "Question:" in stop
    assert result["chance"] == 0.0 and not math.isnan(result["metrics"]["exact_match"])


HUMANEVAL_ITEMS = [
    {"id": "HumanEval/0", "prompt": "def add(a, b):\n", "answer": "    return a + b\n",
     "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n", "entry_point": "add"},
    {"id": "HumanEval/1", "prompt": "def neg(x):\n", "answer": "    return -x\n",
     "test": "def check(candidate):\n    assert candidate(4) == -4\n", "entry_point": "neg"},
]


def test_humaneval_completions_are_executed_and_scored(tmp_path):
    write_task(tmp_path, "humaneval", HUMANEVAL_ITEMS)
    outputs = {"def add(a, b):\n": "    return a + b\n", "def neg(x):\n": "    return x\n"}  # second is wrong
    adapter = FakeAdapter(outputs=outputs)
    result = evaluate_suite(adapter, "humaneval", tasks_dir=tmp_path, keep_records=True)["humaneval"]
    assert result["kind"] == "code" and result["n"] == 2
    assert result["metrics"] == {"pass@1": 0.5}
    assert [r["correct"] for r in result["records"]] == [1, 0]
    _, max_new, stop = adapter.calls[0]
    assert max_new == 512 and "\ndef" in stop


def test_pass_at_k_settings_are_checked(tmp_path):
    from studies.tasks.adapter import EvalSettings

    write_task(tmp_path, "humaneval", HUMANEVAL_ITEMS)
    with pytest.raises(ValueError, match="num_samples=1"):
        evaluate_suite(FakeAdapter(), "humaneval", tasks_dir=tmp_path, settings=EvalSettings(pass_k=(10,)))
    with pytest.raises(ValueError, match="temperature > 0"):
        evaluate_suite(FakeAdapter(), "humaneval", tasks_dir=tmp_path, settings=EvalSettings(num_samples=2))
