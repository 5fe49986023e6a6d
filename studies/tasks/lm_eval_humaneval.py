"""HumanEval under lm-evaluation-harness, with every program executed in our sandbox.

lm-eval's stock ``humaneval`` task scores pass@k with HF ``evaluate``'s ``code_eval``, which runs
model output in a plain subprocess of the evaluator (hence its ``HF_ALLOW_CODE_EVAL=1`` and lm-eval's
``--confirm_run_unsafe_code``). The task ``humaneval_sandboxed`` (``lm_eval_yaml/humaneval_sandboxed.yaml``)
is the stock task with the same prompt, target, generation settings and ``create_test`` filter, but
its metric is :func:`pass_at_k` here, a drop-in for the stock ``utils.pass_at_k`` that sends each
program through :func:`studies.tasks.execution.evaluate_completions`, i.e. the sandbox
(:mod:`studies.tasks.sandbox`) with the token attestation that ``check`` returned. ``code_eval`` is
never imported.

lm-eval hands the metric, per document, ``references=[test + "\\ncheck(ENTRY_POINT)"]`` (the task's
``doc_to_target``) and ``predictions=[[prompt + completion, ...]]`` (the filter), one string per
repeat. The program run is ``prediction + "\\n" + test + "\\ncheck(ENTRY_POINT)\\n"``: character for
character what :func:`studies.tasks.execution.build_program` builds from the problem and the
completion, and what ``code_eval`` would have run, plus a final newline.

    arm-mdm-eval --model arm_mdm --model_args checkpoint=RUN/checkpoints/final.ckpt \\
        --tasks humaneval_sandboxed --include_path studies/tasks/lm_eval_yaml --device cuda --batch_size 16

For items in a local file (``openai/openai_humaneval``'s schema, JSON lines), :func:`write_local_task`
writes a YAML that includes ``humaneval_sandboxed.yaml`` and overrides ``dataset_path``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Dict, List, Union

# A child of lm-eval's logger, so lm-eval's handler and --verbosity (or LMEVAL_LOG_LEVEL) apply.
logger = logging.getLogger("lm_eval.humaneval_sandboxed")

TASK_YAML = Path(__file__).parent / "lm_eval_yaml" / "humaneval_sandboxed.yaml"
_CHECK_CALL = re.compile(r"check\(([A-Za-z_][A-Za-z0-9_]*)\)")
_announced = False


def build_predictions(resps: List[List[str]], docs: List[dict]) -> List[List[str]]:
    """The stock ``create_test`` filter (lm_eval/tasks/humaneval/utils.py): prompt + each completion.

    Restated, not imported: importing the stock ``utils`` loads ``code_eval`` and runs a test program
    through it at import time."""
    return [[doc["prompt"] + r for r in resp] for resp, doc in zip(resps, docs)]


def pass_at_k(references: Sequence[str], predictions: Sequence[Sequence[str]],
              k: Union[int, Sequence[int], None] = None, *, timeout_s: float = 10.0,
              memory_mb: int = 1024, max_workers: int = 2) -> Dict[str, float]:
    """Mean unbiased pass@k (Chen et al. 2021, eq. 1) over problems, every program run in the sandbox.

    Same arguments and result as the stock ``utils.pass_at_k`` over ``code_eval``: ``references[i]``
    is problem i's ``test`` followed by the line ``check(ENTRY_POINT)``, ``predictions[i]`` its
    programs without the tests (prompt + completion), ``k`` an int or a list. Returns
    ``{"pass@1": ..., ...}``; a k above some problem's sample count is left out with a warning, as
    ``code_eval`` leaves it out. ``timeout_s``, ``memory_mb`` and ``max_workers`` are those of
    :func:`studies.tasks.execution.evaluate_completions` (its defaults; a task YAML may set them
    in its ``metric_list`` entry).
    """
    from studies.tasks.execution import evaluate_completions

    if k is None:
        raise ValueError("pass_at_k needs k (an int or a list of ints), e.g. `k: [1]` in the task's metric_list")
    ks = [k] if isinstance(k, int) else list(k)
    if len(references) != len(predictions):
        raise ValueError(f"{len(references)} references for {len(predictions)} prediction lists; "
                         "lm-eval passes one of each per document")
    problems = [_problem(i, reference) for i, reference in enumerate(references)]
    completions = [[predictions[i]] if isinstance(predictions[i], str) else list(predictions[i])
                   for i in range(len(problems))]
    _announce()
    report = evaluate_completions(problems, completions, ks=ks, timeout_s=timeout_s,
                                  memory_mb=memory_mb, max_workers=max_workers)
    for entry in report["per_problem"]:
        logger.debug("sandboxed HumanEval program(s) for %s: %s", entry["task_id"], entry["statuses"])
    return {name: value for name, value in report.items() if name.startswith("pass@")}


def write_local_task(data_file: Union[str, Path], out_dir: Union[str, Path],
                     task: str = "humaneval_sandboxed_local") -> Path:
    """Write ``OUT_DIR/TASK.yaml``: ``humaneval_sandboxed`` over a local JSON-lines file of problems
    (``task_id``, ``prompt``, ``canonical_solution``, ``test``, ``entry_point``, as in
    ``openai/openai_humaneval``); returns ``out_dir``, the folder to pass as ``--include_path``."""
    data_file, out_dir = Path(data_file).resolve(), Path(out_dir)
    if not data_file.is_file():
        raise FileNotFoundError(f"{data_file} does not exist; give a JSON-lines file of HumanEval problems")
    out_dir.mkdir(parents=True, exist_ok=True)
    text = (f"include: {json.dumps(str(TASK_YAML))}\ntask: {task}\ndataset_path: json\n"
            f"dataset_kwargs:\n  data_files:\n    test: {json.dumps(str(data_file))}\n")
    (out_dir / f"{task}.yaml").write_text(text, encoding="utf-8")
    return out_dir


def _problem(index: int, reference: str) -> dict:
    """The problem that ``execution.build_program(problem, prediction)`` turns into exactly
    ``prediction + "\\n" + reference + "\\n"``: an empty prompt (the filter already prepended it)."""
    if not isinstance(reference, str):
        raise ValueError(f"reference {index} must be a str (test + check call), got {type(reference).__name__}")
    test, _, call = reference.rpartition("\n")
    match = _CHECK_CALL.fullmatch(call.strip())
    if match is None:
        raise ValueError(f"reference {index} must end with the line `check(ENTRY_POINT)`, as the humaneval "
                         f"task's doc_to_target `{{{{test}}}}\\ncheck({{{{entry_point}}}})` writes it; "
                         f"its last line is {call[-80:]!r}")
    return {"task_id": f"lm-eval reference {index} ({match.group(1)})", "prompt": "", "test": test,
            "entry_point": match.group(1)}


def _announce() -> None:
    """Say once per process which sandbox layers run the programs (a missing layer is never silent)."""
    global _announced
    if _announced:
        return
    _announced = True
    from studies.tasks.sandbox import isolation_report

    report = isolation_report()
    layers = ("pid_namespace", "network_namespace", "read_only_view", "unprivileged_user", "process_limit")
    logger.info("humaneval_sandboxed: programs run in studies.tasks.sandbox (%s), not in code_eval",
                ", ".join(f"{layer}={getattr(report, layer)}" for layer in layers))
    for message in report.warnings:
        logger.warning("humaneval_sandboxed: sandbox degraded: %s", message)
