"""Stock lm-eval tasks read from local files in their hub schema: ``dataset_path: json`` overrides.

    write_local_overrides({"piqa": {"validation": "piqa.jsonl"}, ...}, OUT_DIR)
    simple_evaluate(model=lm, tasks=["piqa"], task_manager=TaskManager(include_path=str(OUT_DIR)))

Each override is the stock task's YAML of the pinned lm-eval (0.4.13), its includes merged, with
only where the rows come from changed: ``dataset_path: json``, ``dataset_name: null`` and
``dataset_kwargs.data_files`` naming one local JSONL file per split (absolute paths: lm-eval hands
them to ``datasets.load_dataset`` relative to the working directory, not to the YAML). Prompts,
few-shot split and sampler, target delimiters, generation settings, filters and metrics stay the
stock ones, so the items scored are the hub's items if the files hold hub rows. An override keeps
the stock task name; lm-eval indexes ``include_path`` after its own tasks, so the override wins.

One exception: the stock ``humaneval`` scores with HF ``evaluate``'s ``code_eval``, which it loads
from the hub when the task is built and which executes model output outside any sandbox. Its
override keeps the prompt and generation settings but scores with lm-eval's ``bypass`` metric (no
execution), so a run records the generations only; execution belongs in ``studies.tasks.sandbox``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping

# Where each supported stock task's YAML sits in lm-eval's task folder (lm-eval 0.4.13 layout).
STOCK_YAML = {
    "arc_challenge": "arc/arc_challenge.yaml",
    "piqa": "piqa/piqa.yaml",
    "gsm8k": "gsm8k/gsm8k.yaml",
    "humaneval": "humaneval/humaneval.yaml",
}


def stock_yaml(task: str) -> Path:
    """The stock YAML of ``task``: one of STOCK_YAML, ``mmlu_<subject>`` or ``cmmlu_<subject>``."""
    import lm_eval

    tasks = Path(lm_eval.__file__).parent / "tasks"
    if task in STOCK_YAML:
        path = tasks / STOCK_YAML[task]
    elif task.startswith("mmlu_"):
        path = tasks / "mmlu" / "default" / f"{task}.yaml"
    elif task.startswith("cmmlu_"):
        path = tasks / "cmmlu" / f"{task}.yaml"
    else:
        raise ValueError(f"no local override for lm-eval task {task!r}; supported: {sorted(STOCK_YAML)}, "
                         "mmlu_<subject>, cmmlu_<subject>")
    if not path.is_file():
        raise ValueError(f"lm-eval has no task {task!r} (expected {path}); check the subject name")
    return path


def local_task_config(task: str, data_files: Mapping[str, Any]) -> Dict[str, Any]:
    """The stock config of ``task`` (includes merged) reading ``data_files`` ({split: path})."""
    from lm_eval.tasks._yaml_loader import load_yaml

    config = load_yaml(stock_yaml(task), resolve_func=False)
    config.update(dataset_path="json", dataset_name=None,
                  dataset_kwargs={"data_files": {split: str(Path(p).resolve()) for split, p in data_files.items()}})
    if task == "humaneval":
        config.pop("filter_list", None)  # build_predictions: prompt + completion, for code_eval only
        config.update(unsafe_code=False, metric_list=[{"metric": "bypass", "aggregation": "bypass",
                                                       "higher_is_better": True}])
    functions = [s for s in _strings(config) if s.startswith(str(stock_yaml(task).parent) + "/")]
    if functions:  # a `!function` the loader left unresolved: it would not survive the copy
        raise ValueError(f"task {task}: the override cannot carry the Python function(s) {functions}")
    return config


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def write_local_overrides(files: Mapping[str, Mapping[str, Any]], out_dir) -> Path:
    """Write one override YAML per task of ``files`` ({task: {split: path}}) into ``out_dir``;
    returns ``out_dir``, the folder to pass as ``include_path``."""
    import yaml

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for task, data_files in files.items():
        missing = [str(p) for p in data_files.values() if not Path(p).is_file()]
        if missing:
            raise FileNotFoundError(f"task {task}: data file(s) {missing} do not exist")
        text = yaml.safe_dump(local_task_config(task, data_files), allow_unicode=True, sort_keys=False)
        (out_dir / f"{task}.yaml").write_text(text, encoding="utf-8")
    return out_dir


__all__ = ["STOCK_YAML", "stock_yaml", "local_task_config", "write_local_overrides"]
