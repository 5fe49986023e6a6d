"""Tests of studies/tasks/lm_eval_humaneval.py and lm_eval_yaml/humaneval_sandboxed.yaml: HumanEval under
lm-eval with every program run in the real sandbox, never in HF evaluate's ``code_eval``.

The escape cases of test_sandbox.py and test_execution.py are driven through lm-eval: the task is built by
``TaskManager(include_path=...)`` over a local fixture, a scripted model returns the crafted completions,
and lm-eval's filter, ``process_results`` and aggregation score them. Only the model's output is the test's.
"""

import ast
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from lm_eval import simple_evaluate
from lm_eval.api.model import LM
from lm_eval.tasks import TaskManager

from studies.tasks.lm_eval_humaneval import TASK_YAML, pass_at_k, write_local_task
from studies.tasks.sandbox import isolation_report
from processes import processes_with

REPORT = isolation_report()
TASK = "humaneval_sandboxed_local"
STOCK = Path(__import__("lm_eval").__file__).parent / "tasks" / "humaneval"

# Two problems in openai/openai_humaneval's schema, written for these tests.
VOWELS = {
    "task_id": "Fixture/0",
    "prompt": "def count_vowels(text: str) -> int:\n    \"\"\"Number of a, e, i, o, u in text (any case).\"\"\"\n",
    "canonical_solution": "    return sum(ch in 'aeiou' for ch in text.lower())\n",
    "test": "def check(candidate):\n    assert candidate('') == 0\n    assert candidate('Banana') == 3\n    assert candidate('AEIOU') == 5\n",
    "entry_point": "count_vowels",
}
RUNNING_MAX = {
    "task_id": "Fixture/1",
    "prompt": "def running_max(values: list) -> list:\n    \"\"\"Maximum of values[:i + 1] for every i.\"\"\"\n",
    "canonical_solution": "    out = []\n    for v in values:\n        out.append(v if not out else max(out[-1], v))\n    return out\n",
    "test": "def check(candidate):\n    assert candidate([]) == []\n    assert candidate([1, 3, 2, 5, 4]) == [1, 3, 3, 5, 5]\n",
    "entry_point": "running_max",
}
GOOD = RUNNING_MAX["canonical_solution"]
WRONG = "    return None\n"


class ScriptedLM(LM):
    """A model whose completions the test chooses, by the document's task_id."""

    def __init__(self, completions):
        super().__init__()
        self.completions = completions

    def generate_until(self, requests, disable_tqdm: bool = False):
        return [self.completions[request.doc["task_id"]] for request in requests]

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError


def write_problems(problems, folder) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "humaneval.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in problems), encoding="utf-8")
    return path


def evaluate_scripted(cases, tmp_path):
    """{case: (problem, completion)} through lm-eval's humaneval_sandboxed: ({case: pass@1}, results row)."""
    problems = [{**problem, "task_id": case} for case, (problem, _) in cases.items()]
    include = write_local_task(write_problems(problems, tmp_path / "data"), tmp_path / "tasks")
    model = ScriptedLM({case: completion for case, (_, completion) in cases.items()})
    out = simple_evaluate(model=model, tasks=[TASK], task_manager=TaskManager(include_path=str(include)),
                          log_samples=True)
    scores = {sample["doc"]["task_id"]: sample["pass@1"] for sample in out["samples"][TASK]}
    return scores, out["results"][TASK]




# Wrong answers that exit with status 0 before or while the tests run (test_execution.py).
EXITS_BEFORE_THE_TESTS = {
    "sys.exit(0) before check": WRONG + "import sys\nsys.exit(0)\n",
    "os._exit(0) before check": WRONG + "import os\nos._exit(0)\n",
    "raise SystemExit inside the tested function": "    raise SystemExit(0)\n",
    "os._exit(0) in an atexit hook": WRONG + "import atexit, os\natexit.register(os._exit, 0)\n",
    "atexit hook then exit before check": WRONG + "import atexit, sys\natexit.register(print, 'ok')\nsys.exit(0)\n",
}


@pytest.mark.integration
def test_escapes_fail_and_correct_completions_pass_through_lm_eval(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_ALLOW_CODE_EVAL", raising=False)  # code_eval would refuse to run
    storm_token = f"humaneval-storm-{secrets.token_hex(6)}"
    world_writable = Path(tempfile.mkdtemp(prefix="humaneval-target-", dir="/tmp"))
    os.chmod(world_writable, 0o777)
    private = tmp_path / "private"
    private.mkdir()
    targets = {"write into a world-writable /tmp folder": world_writable / "escaped.txt",
               "write into the evaluator's folder": private / "escaped.txt"}
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.5)

    cases = {
        "correct count_vowels": (VOWELS, VOWELS["canonical_solution"]),
        "correct running_max": (RUNNING_MAX, GOOD),
        "wrong answer": (RUNNING_MAX, WRONG),
        **{name: (RUNNING_MAX, completion) for name, completion in EXITS_BEFORE_THE_TESTS.items()},
        "infinite loop": (RUNNING_MAX, "    while True:\n        pass\n"),
        "memory hog": (RUNNING_MAX, GOOD + "_block = bytearray(4 * 1024**3)\n"),
        "output past the sandbox's cap": (RUNNING_MAX, GOOD + "print('x' * 100_000)\n"),
    }
    if REPORT.network_namespace:
        cases["connect to the host"] = (RUNNING_MAX, GOOD + (
            "import socket\n"
            f"with socket.create_connection(('127.0.0.1', {listener.getsockname()[1]}), timeout=2) as _s:\n"
            "    _s.sendall(b'hello from the sandbox')\n"))
    for name, target in targets.items():
        needs = REPORT.read_only_view or ("evaluator" in name and REPORT.unprivileged_user)
        if needs:
            cases[name] = (RUNNING_MAX, GOOD + f"open({str(target)!r}, 'w').write('escaped')\n")
    if REPORT.process_limit:
        cases["fork storm"] = (RUNNING_MAX, GOOD + (
            "import os, subprocess, sys\n"
            "for _ in range(3):\n"
            f"    subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)', '{storm_token}'])\n"
            "while True:\n"
            "    try:\n"
            "        os.fork()\n"
            "    except OSError:\n"
            "        pass\n"))
    if REPORT.pid_namespace or REPORT.unprivileged_user:
        cases["kill the evaluator"] = (RUNNING_MAX, GOOD + f"import os, signal\nos.kill({os.getpid()}, signal.SIGKILL)\n")
        cases["kill its own parent"] = (RUNNING_MAX, GOOD + "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n")
    missing = sorted({"connect to the host", "fork storm", "kill the evaluator", *targets} - set(cases))
    if missing:
        print(f"escape cases left out (sandbox layers unavailable: {REPORT.warnings}): {missing}")

    try:
        scores, row = evaluate_scripted(cases, tmp_path)
        with pytest.raises(socket.timeout):  # nothing arrived from the sandbox
            listener.accept()
    finally:
        listener.close()
        shutil.rmtree(world_writable, ignore_errors=True)

    expected = {case: 1.0 if case.startswith("correct") else 0.0 for case in cases}
    assert scores == expected
    assert row["pass@1,create_test"] == pytest.approx(sum(expected.values()) / len(expected))
    assert not any(target.exists() for target in targets.values())
    deadline = time.monotonic() + 3
    while processes_with(storm_token) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_with(storm_token) == []


def test_pass_at_k_runs_each_repeat_and_matches_the_unbiased_estimator():
    reference = RUNNING_MAX["test"] + f"\ncheck({RUNNING_MAX['entry_point']})"
    programs = [RUNNING_MAX["prompt"] + GOOD, RUNNING_MAX["prompt"] + WRONG]
    assert pass_at_k([reference], [programs], k=[1, 2]) == {"pass@1": 0.5, "pass@2": 1.0}
    with pytest.warns(RuntimeWarning, match="pass@4 left out"):
        assert pass_at_k([reference], [programs], k=[1, 4]) == {"pass@1": 0.5}
    with pytest.raises(ValueError, match="check\\(ENTRY_POINT\\)"):
        pass_at_k([RUNNING_MAX["test"]], [programs], k=1)


def _stock_function(name):
    """A function of the stock humaneval utils.py, compiled alone: importing the module loads code_eval."""
    source = (STOCK / "utils.py").read_text()
    (node,) = [n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == name]
    namespace = {}
    exec(compile(ast.Module(body=[node], type_ignores=[]), "stock_utils", "exec"), namespace)
    return namespace[name]


def test_the_task_is_the_stock_humaneval_task_but_for_its_metric():
    from lm_eval.tasks._yaml_loader import load_yaml

    from studies.tasks.lm_eval_humaneval import build_predictions

    stock = load_yaml(STOCK / "humaneval.yaml", resolve_func=False)
    ours = load_yaml(TASK_YAML, resolve_func=False)
    same = ("dataset_path", "output_type", "test_split", "doc_to_text", "doc_to_target", "generation_kwargs",
            "repeats", "num_fewshot")
    assert {key: ours[key] for key in same} == {key: stock[key] for key in same}
    assert stock["unsafe_code"] and not ours["unsafe_code"]
    (stock_metric,), (our_metric,) = stock["metric_list"], ours["metric_list"]
    assert stock_metric["metric"].endswith("utils.pass_at_k") and our_metric["metric"].endswith("lm_eval_humaneval.pass_at_k")
    assert {k: v for k, v in our_metric.items() if k != "metric"} == {k: v for k, v in stock_metric.items() if k != "metric"}
    (stock_filter,), (our_filter,) = stock["filter_list"], ours["filter_list"]
    assert stock_filter["name"] == our_filter["name"] == "create_test"
    resps, docs = [["    return 1\n", "    pass\n"], ["x"]], [VOWELS, RUNNING_MAX]
    assert build_predictions(resps, docs) == _stock_function("build_predictions")(resps, docs)


def test_scoring_in_a_fresh_interpreter_never_imports_evaluate(tmp_path):
    include = write_local_task(write_problems([VOWELS], tmp_path / "data"), tmp_path / "tasks")
    code = (
        "import sys\n"
        "from lm_eval.tasks import TaskManager\n"
        f"task = TaskManager(include_path={str(include)!r}).load([{TASK!r}])['tasks'][{TASK!r}]\n"
        "task.build_all_requests(limit=1)\n"
        "(request,) = task.instances\n"
        "request.resps = [request.doc['canonical_solution']]\n"
        "task.apply_filters()\n"
        "print(task.process_results(request.doc, [request.filtered_resps['create_test']]))\n"
        "print(sorted(m for m in sys.modules if m == 'evaluate' or m.startswith('evaluate.')))\n")
    env = {k: v for k, v in os.environ.items() if k != "HF_ALLOW_CODE_EVAL"}
    env.update(HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-2:] == ["{'pass@1': 1.0}", "[]"]


# A problem whose prompt opens a raw string that its test closes: whatever the model writes (short of
# `\"\"\"`) sits in that string, so check() runs, and it passes only inside the sandbox's throw-away folder.
CANARY = {
    "task_id": "Canary/0",
    "prompt": "def canary():\n    return 1\n\n\nMODEL_OUTPUT = r\"\"\"",
    "canonical_solution": "",
    "test": "\"\"\"\n\nimport os\n\n\ndef check(candidate):\n    assert candidate() == 1\n"
            "    assert os.path.basename(os.getcwd()).startswith('sandbox-')\n"
            "    assert os.environ['HOME'] == os.getcwd()\n",
    "entry_point": "canary",
}


@pytest.mark.integration
def test_arm_mdm_eval_runs_humaneval_sandboxed_on_a_trained_checkpoint(trained_checkpoints, tmp_path):
    include = write_local_task(write_problems([VOWELS, CANARY], tmp_path / "data"), tmp_path / "tasks")
    out = tmp_path / "out"
    script = shutil.which("arm-mdm-eval")
    command = [script] if script else [sys.executable, "-m", "studies.tasks.lm_eval_cli"]
    env = {k: v for k, v in os.environ.items() if k != "HF_ALLOW_CODE_EVAL"}  # code_eval would refuse
    env.update(HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    done = subprocess.run(command + [
        "--model", "arm_mdm", "--model_args", f"checkpoint={trained_checkpoints['arm']}",
        "--tasks", TASK, "--include_path", str(include), "--limit", "2", "--device", "cpu", "--batch_size", "2",
        "--gen_kwargs", "max_gen_toks=16", "--log_samples", "--output_path", str(out)],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "pass@1" in done.stdout and TASK in done.stdout  # lm-eval's table
    assert "programs run in studies.tasks.sandbox" in done.stderr

    (results_file,) = out.rglob("results_*.json")
    pass_at_1 = json.loads(results_file.read_text())["results"][TASK]["pass@1,create_test"]
    (samples_file,) = out.rglob(f"samples_{TASK}_*.jsonl")
    samples = {s["doc"]["task_id"]: s for s in map(json.loads, samples_file.read_text().splitlines())}
    assert set(samples) == {VOWELS["task_id"], CANARY["task_id"]}
    canary = samples[CANARY["task_id"]]
    (completion,) = canary["resps"][0]
    assert canary["filtered_resps"] == [[CANARY["prompt"] + completion]]  # the create_test filter
    if '"""' not in completion:  # the model did not close the string: check() ran, in the sandbox
        assert canary["pass@1"] == 1.0
    assert pass_at_1 == pytest.approx((samples[VOWELS["task_id"]]["pass@1"] + canary["pass@1"]) / 2)
