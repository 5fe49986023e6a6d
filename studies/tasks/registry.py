"""The task registry: every downstream task by name, the suites, and where each task's items come from.

A task's items are read, in this order of precedence, from

1. an explicit local file (``task_files={name: path}``, e.g. from ``eval.settings.task_files``);
2. ``tasks_dir/{name}.jsonl`` (the toy world writes its tasks into the prepared data folder);
3. the Hugging Face hub (paper tasks only, for cluster use): ``datasets.load_dataset(path, config,
   split=...)`` converted by ``studies.tasks.hub``, with few-shot demonstrations from
   ``fewshot_split``.

Local files hold items in the schema of ``studies.tasks.schema`` with final prompts (few-shot
demonstrations, if any, already in the prompt): exactly what ``export_task`` writes from the hub.

Few-shot counts and metrics follow LLaDA's base-model evaluation (Nie et al. 2025, Table 1 and
App. B.6): MMLU 5-shot, ARC-C 0-shot, CMMLU 5-shot, PIQA 0-shot, GSM8K 4-shot, HumanEval 0-shot.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

from .schema import KINDS, Item, load_items, parse_item, write_items

# The 67 subjects of CMMLU (Li et al. 2023); each is a config of haonan-li/cmmlu.
CMMLU_SUBJECTS = (
    "agronomy anatomy ancient_chinese arts astronomy business_ethics chinese_civil_service_exam "
    "chinese_driving_rule chinese_food_culture chinese_foreign_policy chinese_history chinese_literature "
    "chinese_teacher_qualification clinical_knowledge college_actuarial_science college_education "
    "college_engineering_hydrology college_law college_mathematics college_medical_statistics "
    "college_medicine computer_science computer_security conceptual_physics "
    "construction_project_management economics education electrical_engineering elementary_chinese "
    "elementary_commonsense elementary_information_and_technology elementary_mathematics ethnology "
    "food_science genetics global_facts high_school_biology high_school_chemistry high_school_geography "
    "high_school_mathematics high_school_physics high_school_politics human_sexuality international_law "
    "journalism jurisprudence legal_and_moral_basis logical machine_learning management marketing "
    "marxist_theory modern_chinese nutrition philosophy professional_accounting professional_law "
    "professional_medicine professional_psychology public_relations security_study sociology "
    "sports_science traditional_chinese_medicine virology world_history world_religions"
).split()

# Stop sequences of generation tasks (lm-evaluation-harness's ``until`` lists).
QA_STOP = ("Question:", "\n\n")
HUMANEVAL_STOP = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")


@dataclass(frozen=True)
class HubSource:
    """Where a paper task lives on the Hugging Face hub. ``configs`` lists one or more dataset configs
    whose ``split`` rows are concatenated (CMMLU has one config per subject); ``fewshot_split`` feeds
    the demonstrations; ``group_key`` restricts them to rows of the same value (the subject)."""

    path: str
    configs: Tuple[str, ...]
    split: str
    fewshot_split: Optional[str] = None
    group_key: Optional[str] = None
    sampler: str = "first_n"


@dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: str  # multiple_choice | generation | code
    metrics: Tuple[str, ...]
    chance: float  # score of uniform guessing on the task's nominal number of choices (0 for generation)
    num_fewshot: int = 0
    hub: Optional[HubSource] = None
    max_new_tokens: int = 0  # generation tasks: the default generation length
    stop: Tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"task {self.name}: kind {self.kind!r} is not one of {KINDS}")


MC_METRICS = ("acc", "acc_norm")
TASKS: Dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec("mmlu", "multiple_choice", MC_METRICS, 0.25, 5,
                 HubSource("cais/mmlu", ("all",), "test", "dev", group_key="subject")),
        TaskSpec("arc_challenge", "multiple_choice", MC_METRICS, 0.25, 0,
                 HubSource("allenai/ai2_arc", ("ARC-Challenge",), "test", "train")),
        TaskSpec("cmmlu", "multiple_choice", MC_METRICS, 0.25, 5,
                 HubSource("haonan-li/cmmlu", tuple(CMMLU_SUBJECTS), "test", "dev", group_key="subject")),
        TaskSpec("piqa", "multiple_choice", MC_METRICS, 0.5, 0,
                 HubSource("ybisk/piqa", ("plain_text",), "validation", "train")),
        TaskSpec("gsm8k", "generation", ("exact_match", "exact_match_strict"), 0.0, 4,
                 HubSource("openai/gsm8k", ("main",), "test", "train", sampler="random"),
                 max_new_tokens=256, stop=QA_STOP),
        TaskSpec("humaneval", "code", ("pass@1",), 0.0, 0,
                 HubSource("openai/openai_humaneval", ("openai_humaneval",), "test"),
                 max_new_tokens=512, stop=HUMANEVAL_STOP),
        TaskSpec("toy_mc", "multiple_choice", MC_METRICS, 0.25),
        TaskSpec("toy_forward", "multiple_choice", MC_METRICS, 0.25),
        TaskSpec("toy_reverse", "multiple_choice", MC_METRICS, 0.25),
        TaskSpec("toy_arithmetic", "generation", ("exact_match", "exact_match_strict"), 0.0,
                 max_new_tokens=32, stop=QA_STOP),
    )
}

SUITES: Dict[str, Tuple[str, ...]] = {
    "paper6": ("mmlu", "arc_challenge", "cmmlu", "piqa", "gsm8k", "humaneval"),
    "toyworld": ("toy_mc", "toy_forward", "toy_reverse", "toy_arithmetic"),
}


def get_task(name: str) -> TaskSpec:
    if name not in TASKS:
        close = difflib.get_close_matches(name, TASKS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown task {name!r}.{hint} Known tasks: {', '.join(TASKS)}")
    return TASKS[name]


def suite_tasks(suite: str) -> List[TaskSpec]:
    """The tasks of a named suite, or of a comma-separated list of task names (e.g. "mmlu,piqa")."""
    if suite in SUITES:
        return [TASKS[name] for name in SUITES[suite]]
    names = [s.strip() for s in suite.split(",") if s.strip()]
    if not names or any(n not in TASKS for n in names):
        raise ValueError(
            f"unknown suite {suite!r}: give one of {sorted(SUITES)} or a comma-separated list of tasks "
            f"from {sorted(TASKS)}"
        )
    return [TASKS[n] for n in names]


def task_source(spec: TaskSpec, *, tasks_dir=None, task_files: Optional[Mapping[str, str]] = None) -> str:
    """Where ``load_task`` would read the items of ``spec`` from: a file path or ``hub:PATH``."""
    if task_files and spec.name in task_files:
        return str(task_files[spec.name])
    if tasks_dir is not None and (Path(tasks_dir) / f"{spec.name}.jsonl").is_file():
        return str(Path(tasks_dir) / f"{spec.name}.jsonl")
    if spec.hub is not None:
        return f"hub:{spec.hub.path}"
    where = f" in {tasks_dir}" if tasks_dir is not None else ""
    raise FileNotFoundError(
        f"task {spec.name!r} has no file{where} (expected {spec.name}.jsonl) and no hub source; prepare the "
        "toy-world dataset or pass a task file (eval.settings.task_files)"
    )


def load_task(spec: TaskSpec, *, tasks_dir=None, task_files: Optional[Mapping[str, str]] = None,
              limit: Optional[int] = None) -> List[Item]:
    """The validated items of ``spec`` (the first ``limit`` of them), from the first source available."""
    source = task_source(spec, tasks_dir=tasks_dir, task_files=task_files)
    if not source.startswith("hub:"):
        return load_items(source, spec.kind, limit)
    rows = hub_items(spec, limit=limit)
    return [parse_item(row, spec.kind, f"{spec.name} (hub {spec.hub.path}) row {i}") for i, row in enumerate(rows)]


def hub_items(spec: TaskSpec, *, limit: Optional[int] = None) -> List[dict]:
    """Download (or read from the local hub cache) and convert ``spec``'s hub split. Needs network or a
    warm ``HF_DATASETS_CACHE``; never called by the tests."""
    import datasets

    from .hub import convert_rows

    src = spec.hub
    rows, pool = [], []
    for config in src.configs:
        part = [dict(r, subject=r.get("subject", config)) if src.group_key else dict(r)
                for r in datasets.load_dataset(src.path, config, split=src.split)]
        rows.extend(part)
        if spec.num_fewshot and src.fewshot_split:
            pool.extend(dict(r, subject=r.get("subject", config)) if src.group_key else dict(r)
                        for r in datasets.load_dataset(src.path, config, split=src.fewshot_split))
        if limit is not None and len(rows) >= limit:
            break
    rows = rows[:limit] if limit is not None else rows
    return convert_rows(spec.name, rows, fewshot_pool=pool, num_fewshot=spec.num_fewshot,
                        group_key=src.group_key, sampler=src.sampler)


def export_task(name: str, path, *, limit: Optional[int] = None) -> Path:
    """Write a paper task from the hub as a local JSONL file (e.g. on a login node with network)."""
    return write_items(path, hub_items(get_task(name), limit=limit))


__all__ = ["TaskSpec", "HubSource", "TASKS", "SUITES", "CMMLU_SUBJECTS", "get_task", "suite_tasks",
           "task_source", "load_task", "hub_items", "export_task"]
