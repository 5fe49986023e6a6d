"""The downstream suites, each task an lm-eval task with LLaDA's settings, and their evaluation.

A suite task is logged as ``eval/{name}/{metric}``; ``lm_eval_task`` is the lm-eval task or group
that scores it, through ``lm_eval.simple_evaluate`` with the in-memory model
(``studies.tasks.lm_eval_model.ArmMdmLM``). lm-eval owns prompts, few-shot sampling, filters and
metrics; this module says which task, with how many shots and which MDM settings, and turns
lm-eval's result rows into the logged names.

``paper6`` follows LLaDA's base-model evaluation (Nie et al. 2025, Table 1, App. B.6, and its
``eval_llada.py`` runs): MMLU 5-shot, ARC-C 0-shot, CMMLU 5-shot, PIQA 0-shot, GSM8K 4-shot,
HumanEval 0-shot; unsupervised CFG 0.5 for ARC-C and PIQA and 0 elsewhere; one Monte Carlo sample
for MMLU and CMMLU (single-token answers), ``eval.mc_samples`` (LLaDA: 128) elsewhere. HumanEval
runs as ``humaneval_sandboxed``: the stock task with every program executed in
``studies.tasks.sandbox``. ``toyworld`` is the toy world's four tasks, read from the prepared data
folder (``studies.tasks.lm_eval_tasks``).

Metric names are lm-eval's, with one suffix per filter where a task has several: GSM8K's
``flexible-extract`` match is ``exact_match`` and its ``strict-match`` is ``exact_match_strict``.
``acc_norm`` is lm-eval's (log-likelihood over the continuation's length in characters) and
``acc_bytes`` its UTF-8-byte variant. The first metric of a task is the one it is reported by.

Randomness: the MDM masks come from a generator per document and sampling noise from one per task
(``studies.tasks.lm_eval_model``); lm-eval's global seeding is switched off and Python's and
NumPy's global states are restored afterwards, so an evaluation inside training leaves the
training's random streams untouched; few-shot draws use lm-eval's own fixed seed (1234), as a
stock ``lm_eval`` run does.

Under torch.distributed every rank scores lm-eval's shard of the documents (``ArmMdmLM`` reports
the rank and world size and gathers over the process group); rank 0 aggregates and the result is
broadcast, so every rank returns the same numbers.
"""

from __future__ import annotations

import difflib
import json
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

KINDS = ("multiple_choice", "generation", "code")
HUMANEVAL_TASK = "humaneval_sandboxed"
FEWSHOT_SEED = 1234  # lm-eval's default fewshot_random_seed
# A filter's suffix on the metric name; "none" (no filter) and HumanEval's create_test add nothing.
FILTER_SUFFIX = {"none": "", "create_test": "", "flexible-extract": "", "strict-match": "_strict"}


@dataclass(frozen=True)
class SuiteTask:
    """One logged task: the lm-eval task behind it and LLaDA's settings for it."""

    name: str  # logged as eval/{name}/{metric}
    lm_eval_task: str  # an lm-eval task or group
    kind: str  # multiple_choice | generation | code
    metrics: Tuple[str, ...]  # logged metric names; the first is the one the task is reported by
    chance: float  # score of uniform guessing over the nominal number of choices (0 for generation)
    num_fewshot: int = 0
    cfg_scale: Optional[float] = None  # MDM unsupervised CFG (None: eval.cfg_scale)
    mc_samples: Optional[int] = None  # Monte Carlo samples of the MDM bound (None: eval.mc_samples)
    stock_folder: Optional[str] = None  # the task's folder under lm_eval/tasks (None: this project's YAML)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"task {self.name}: kind {self.kind!r} is not one of {KINDS}")


MC = "multiple_choice"
TOY_MC_METRICS = ("acc", "acc_norm", "acc_bytes")
TASKS: Dict[str, SuiteTask] = {
    task.name: task
    for task in (
        SuiteTask("mmlu", "mmlu", MC, ("acc",), 0.25, 5, cfg_scale=0.0, mc_samples=1, stock_folder="mmlu/default"),
        SuiteTask("arc_challenge", "arc_challenge", MC, ("acc", "acc_norm"), 0.25, 0, cfg_scale=0.5,
                  stock_folder="arc"),
        SuiteTask("cmmlu", "cmmlu", MC, ("acc", "acc_norm"), 0.25, 5, cfg_scale=0.0, mc_samples=1,
                  stock_folder="cmmlu"),
        SuiteTask("piqa", "piqa", MC, ("acc", "acc_norm"), 0.5, 0, cfg_scale=0.5, stock_folder="piqa"),
        SuiteTask("gsm8k", "gsm8k", "generation", ("exact_match", "exact_match_strict"), 0.0, 4, cfg_scale=0.0,
                  stock_folder="gsm8k"),
        SuiteTask("humaneval", HUMANEVAL_TASK, "code", ("pass@1",), 0.0, 0, cfg_scale=0.0),
        SuiteTask("toy_mc", "toy_mc", MC, TOY_MC_METRICS, 0.25),
        SuiteTask("toy_forward", "toy_forward", MC, TOY_MC_METRICS, 0.25),
        SuiteTask("toy_reverse", "toy_reverse", MC, TOY_MC_METRICS, 0.25),
        SuiteTask("toy_arithmetic", "toy_arithmetic", "generation", ("exact_match", "exact_match_strict"), 0.0),
    )
}

SUITES: Dict[str, Tuple[str, ...]] = {
    "paper6": ("mmlu", "arc_challenge", "cmmlu", "piqa", "gsm8k", "humaneval"),
    "toyworld": ("toy_mc", "toy_forward", "toy_reverse", "toy_arithmetic"),
}
TOY_TASKS = frozenset(SUITES["toyworld"])


def suite_tasks(suite: str) -> List[SuiteTask]:
    """The tasks of a named suite, or of a comma-separated list of task names (e.g. "mmlu,piqa")."""
    if suite in SUITES:
        return [TASKS[name] for name in SUITES[suite]]
    names = [s.strip() for s in suite.split(",") if s.strip()]
    unknown = [n for n in names if n not in TASKS]
    if not names or unknown:
        close = [m for n in unknown for m in difflib.get_close_matches(n, TASKS, n=1)]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"unknown suite {suite!r}{hint}: give one of {sorted(SUITES)} or a comma-separated list "
                         f"of tasks from {sorted(TASKS)}")
    return [TASKS[n] for n in names]


# ----------------------------------------------------------------------------- settings


@dataclass
class GenerationSettings:
    """How generation runs. ``steps`` and ``block_length`` default to the generation length (one
    block, one token per step: LLaDA's best-quality setting); ``max_new_tokens`` replaces every
    task's ``max_gen_toks``; temperature 0 is greedy for both objectives."""

    steps: Optional[int] = None
    block_length: Optional[int] = None
    remasking: str = "low_confidence"
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: Optional[int] = None


TASK_OVERRIDES = ("num_fewshot", "cfg_scale", "mc_samples")


@dataclass
class EvalSettings:
    """The free-form ``eval.settings`` section, typed; an unknown key is an error.

    ``task_files`` reads stock lm-eval tasks from local files in their hub schema:
    ``{lm-eval task: {split: path}}`` (e.g. ``{piqa: {validation: piqa.jsonl}}``, an MMLU subject as
    ``mmlu_<subject>``), through ``studies.tasks.lm_eval_overrides``. ``tasks`` replaces a suite
    task's settings: ``{arc_challenge: {cfg_scale: 0}}`` (keys ``num_fewshot``, ``cfg_scale``,
    ``mc_samples``)."""

    generation: GenerationSettings = field(default_factory=GenerationSettings)
    batch_size: int = 16
    seed: int = 0
    estimator: str = "stratified"
    task_files: Dict[str, Dict[str, str]] = field(default_factory=dict)
    tasks: Dict[str, Dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def parse(cls, settings: Optional[Mapping[str, Any]]) -> "EvalSettings":
        """From a plain dict (or OmegaConf mapping); generation keys may sit at top level too."""
        from omegaconf import DictConfig, OmegaConf

        raw = dict(OmegaConf.to_container(settings) if isinstance(settings, DictConfig) else (settings or {}))
        generation = dict(raw.pop("generation", {}) or {})
        gen_keys = {f.name for f in fields(GenerationSettings)}
        for key in list(raw):
            if key in gen_keys:
                generation[key] = raw.pop(key)
        known = {f.name for f in fields(cls)} - {"generation"}
        unknown = sorted(set(raw) - known | set(generation) - gen_keys)
        if unknown:
            raise ValueError(f"unknown eval.settings key(s) {unknown}; known: {sorted(known)} and generation keys "
                             f"{sorted(gen_keys)}")
        for task, splits in (raw.get("task_files") or {}).items():
            if not isinstance(splits, Mapping):
                raise ValueError(f"eval.settings.task_files.{task} must map splits to files in the task's hub schema, "
                                 f"e.g. {{test: {task}.jsonl}}; got {splits!r}")
        for task, override in (raw.get("tasks") or {}).items():
            if task not in TASKS:
                raise ValueError(f"eval.settings.tasks names unknown task {task!r}; known: {sorted(TASKS)}")
            bad = sorted(set(override or {}) - set(TASK_OVERRIDES))
            if bad:
                raise ValueError(f"eval.settings.tasks.{task}: unknown key(s) {bad}; known: {list(TASK_OVERRIDES)}")
            for key, least in (("num_fewshot", 0), ("mc_samples", 1), ("cfg_scale", 0)):
                value = (override or {}).get(key)
                if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                          or value < least or (key != "cfg_scale" and value != int(value))):
                    raise ValueError(f"eval.settings.tasks.{task}.{key}={value!r} must be "
                                     f"{'a number' if key == 'cfg_scale' else 'an integer'} of at least {least}")
        return cls(generation=GenerationSettings(**generation), **raw)

    def model_args(self) -> Dict[str, Any]:
        """The ``ArmMdmLM`` model_args these settings set."""
        g = self.generation
        return {"batch_size": self.batch_size, "seed": self.seed, "estimator": self.estimator, "steps": g.steps,
                "block_length": g.block_length, "remasking": g.remasking, "gen_length": g.max_new_tokens}

    def gen_kwargs(self) -> Dict[str, Any]:
        """What replaces the tasks' ``generation_kwargs`` (only what was set)."""
        g, kwargs = self.generation, {}
        if g.max_new_tokens:
            kwargs["max_gen_toks"] = g.max_new_tokens
        if g.temperature:
            kwargs.update(temperature=g.temperature, do_sample=True)
        if g.top_p != 1.0:
            kwargs["top_p"] = g.top_p
        return kwargs

    def task(self, task: SuiteTask) -> SuiteTask:
        """``task`` with this run's overrides."""
        return replace(task, **(self.tasks.get(task.name) or {}))

    def suite(self, suite: str) -> List[SuiteTask]:
        """The tasks of ``suite`` (``suite_tasks``) with this run's overrides."""
        return [self.task(t) for t in suite_tasks(suite)]


# ----------------------------------------------------------------------------- lm-eval tasks


class SuiteTasks:
    """The lm-eval ``TaskManager`` for a suite: only the folders its tasks live in are indexed
    (lm-eval's whole task tree takes seconds to index), local task files as overrides last so they
    win. Holds the folder of written YAMLs for as long as it lives."""

    def __init__(self, tasks: List[SuiteTask], *, data_dir=None, task_files: Optional[Mapping] = None):
        import lm_eval
        from lm_eval.tasks import TaskManager

        from studies.tasks.lm_eval_tasks import TEMPLATES, write_task_yamls

        self._scratch = tempfile.TemporaryDirectory(prefix="arm-mdm-eval-tasks-")
        scratch = Path(self._scratch.name)
        stock = Path(lm_eval.__file__).parent / "tasks"
        paths = sorted({str(stock / t.stock_folder) for t in tasks if t.stock_folder})
        if any(t.name == "humaneval" for t in tasks):
            paths.append(str(TEMPLATES))
        if any(t.name in TOY_TASKS for t in tasks):
            if data_dir is None:
                raise ValueError("the toy-world tasks need the prepared toy-world folder (its tasks/ holds their items)")
            paths.append(str(write_task_yamls(data_dir, scratch / "toyworld", validation=False)))
        task_files = dict(task_files or {})
        humaneval = task_files.pop(HUMANEVAL_TASK, None)
        if humaneval is not None:  # problems in openai/openai_humaneval's schema, its one split
            from studies.tasks.lm_eval_humaneval import write_local_task

            if set(humaneval) != {"test"}:
                raise ValueError(f"eval.settings.task_files.{HUMANEVAL_TASK} takes one split, test; got {sorted(humaneval)}")
            paths.append(str(write_local_task(humaneval["test"], scratch / "humaneval", task=HUMANEVAL_TASK)))
        if task_files:
            from studies.tasks.lm_eval_overrides import write_local_overrides

            paths.append(str(write_local_overrides(task_files, scratch / "local")))
        self.manager = TaskManager(include_path=paths, include_defaults=False)

    def close(self) -> None:
        self._scratch.cleanup()


def _leaves(out: Mapping[str, Any], name: str) -> List[str]:
    subtasks = (out.get("group_subtasks") or {}).get(name)
    if not subtasks:
        return [name]
    return [leaf for sub in subtasks for leaf in _leaves(out, sub)]


def metric_name(key: str) -> Optional[str]:
    """The logged name of lm-eval's result key ``metric,filter`` (None for stderr and non-metrics)."""
    if "," not in key:
        return None
    metric, filter_name = key.split(",", 1)
    if metric.endswith("_stderr"):
        return None
    suffix = FILTER_SUFFIX.get(filter_name, f"_{filter_name}")
    return metric + suffix


def task_result(task: SuiteTask, out: Mapping[str, Any], seconds: float, keep_records: bool) -> Dict[str, Any]:
    """{"kind", "metrics", "n", "chance", "source", "seconds"[, "records"]} from simple_evaluate's output."""
    row = out["results"][task.lm_eval_task]
    found = {name: float(value) for key, value in row.items()
             if (name := metric_name(key)) is not None and isinstance(value, (int, float))}
    metrics = {name: found.pop(name) for name in task.metrics if name in found}  # the task's order first
    metrics.update(found)
    leaves = _leaves(out, task.lm_eval_task)
    n = sum(int(out["n-samples"][leaf]["effective"]) for leaf in leaves)
    samples = [s for leaf in leaves for s in out["samples"].get(leaf, [])]
    chance = task.chance
    if task.kind == MC:  # one entry per document and filter: count each document once
        choices = {(leaf, s["doc_id"]): len(s["arguments"]) for leaf in leaves for s in out["samples"].get(leaf, [])}
        if choices:
            chance = sum(1.0 / k for k in choices.values()) / len(choices)
    configs = out.get("configs") or {}
    sources = sorted({_source(configs.get(leaf) or {}) for leaf in leaves})
    result = {"kind": task.kind, "metrics": metrics, "n": n, "chance": chance,
              "source": sources[0] if len(sources) == 1 else f"{sources[0]} (+{len(sources) - 1} more)",
              "seconds": seconds}
    if keep_records:
        result["records"] = json.loads(json.dumps(samples, default=str, ensure_ascii=False))
    return result


def _source(config: Mapping[str, Any]) -> str:
    files = ((config.get("dataset_kwargs") or {}).get("data_files") or {})
    if config.get("dataset_path") == "json" and files:
        return str(files.get(config.get("test_split")) or next(iter(files.values())))
    return f"hub:{config.get('dataset_path')}"


# ----------------------------------------------------------------------------- evaluation


def evaluate_suite(lm, suite: str, *, limit: Optional[int] = None, data_dir=None,
                   settings: Optional[EvalSettings] = None, tasks: Optional[SuiteTasks] = None,
                   keep_records: bool = False, log: Optional[Callable[[str], None]] = None) -> Dict[str, Dict[str, Any]]:
    """Score ``lm`` (an ``ArmMdmLM``) on every task of ``suite`` (a suite name or "task1,task2").

    One ``simple_evaluate`` per combination of shots and MDM settings among the tasks (``lm.args``
    gives the defaults and is restored afterwards); a task's ``seconds`` are those of its call.
    ``limit`` caps the documents per lm-eval task (per subject for MMLU and CMMLU). Returns {task: {"kind", "metrics", "n", "chance", "source", "seconds"
    [, "records": lm-eval's logged samples]}}; ``chance`` is the mean of 1/choices over the
    documents scored (0 for generation). ``tasks`` reuses a ``SuiteTasks`` (else one is built and
    dropped)."""
    from lm_eval import simple_evaluate

    settings = settings or EvalSettings()
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of items per task (or None for all), got {limit}")
    chosen = settings.suite(suite)
    owned = tasks is None
    tasks = tasks or SuiteTasks(chosen, data_dir=data_dir, task_files=settings.task_files)
    defaults = lm.args
    groups: Dict[Tuple[int, float, int], List[SuiteTask]] = {}
    for task in chosen:  # one simple_evaluate per combination of settings (each call also records its environment)
        cfg_scale = defaults.cfg_scale if task.cfg_scale is None else task.cfg_scale
        groups.setdefault((task.num_fewshot, cfg_scale, task.mc_samples or defaults.mc_samples), []).append(task)
    scored: Dict[str, Dict[str, Any]] = {}
    kept = _global_random_states()
    try:
        for (shots, cfg_scale, mc_samples), group in groups.items():
            started = time.time()
            lm.args = replace(defaults, cfg_scale=cfg_scale, mc_samples=mc_samples)
            with _environment_recorded_once():
                out = simple_evaluate(model=lm, tasks=[t.lm_eval_task for t in group], num_fewshot=shots, limit=limit,
                                      task_manager=tasks.manager, log_samples=True,
                                      gen_kwargs=settings.gen_kwargs() or None, bootstrap_iters=0, random_seed=None,
                                      numpy_random_seed=None, torch_random_seed=None, fewshot_random_seed=FEWSHOT_SEED)
            seconds = time.time() - started
            for task in group:
                result = task_result(task, out, seconds, keep_records) if out is not None else None
                scored[task.name] = result = _from_rank_zero(result)
                if log is not None:
                    log(f"[eval] {task.name}: " + ", ".join(f"{k}={v:.4f}" for k, v in result["metrics"].items())
                        + f" (n={result['n']})")
    finally:
        lm.args = defaults
        _restore_random_states(kept)
        if owned:
            tasks.close()
    return {task.name: scored[task.name] for task in chosen}


_ENVIRONMENT: Dict[str, Any] = {}


@contextmanager
def _environment_recorded_once():
    """lm-eval records the environment with every ``simple_evaluate`` (``add_env_info``: torch's
    ``collect_env``, which runs pip in a subprocess, 1.4 s on a 2-core CPU against 0.25 s for scoring
    20 toy-world items). The environment does not change within a process, so it is collected once
    and the same record is added to every later result."""
    import lm_eval.evaluator as evaluator

    collect = evaluator.add_env_info

    def add_env_info(storage: Dict[str, Any]) -> None:
        if not _ENVIRONMENT:
            collect(_ENVIRONMENT)
        storage.update(_ENVIRONMENT)

    evaluator.add_env_info = add_env_info
    try:
        yield
    finally:
        evaluator.add_env_info = collect


def _global_random_states():
    """Python's and NumPy's global random states. lm-eval's global seeding is off, but building a
    task draws from Python's global stream (``lm_eval.api.utils.random_task_id``, evaluated as a
    ``getattr`` default); restoring the states keeps an evaluation inside training from moving them."""
    import random

    import numpy as np

    return random.getstate(), np.random.get_state()


def _restore_random_states(states) -> None:
    import random

    import numpy as np

    random.setstate(states[0])
    np.random.set_state(states[1])


def _from_rank_zero(value):
    """``value`` as rank 0 holds it, on every rank (lm-eval aggregates on rank 0 only)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


__all__ = ["SuiteTask", "TASKS", "SUITES", "suite_tasks", "EvalSettings", "GenerationSettings", "SuiteTasks",
           "evaluate_suite", "metric_name", "task_result"]
