"""Scoring: per-item metrics of each task kind, aggregated with torchmetrics so that DDP ranks that
each scored a shard of the items agree on one number.

- Multiple choice (lm-evaluation-harness's ``multiple_choice`` output type): every choice is a
  continuation of the prompt scored by log-likelihood. ``acc``: the highest log-likelihood is the
  answer. ``acc_norm``: the highest log-likelihood per UTF-8 byte of the choice text (the
  continuation without its leading space delimiter) is the answer, lm-eval's length normalisation
  that removes the bias towards short choices. Ties go to the first choice, as with ``argmax``.
- Generation (GSM8K, toy arithmetic): greedy generation, then the final number of the output is
  compared with the reference. ``exact_match`` uses the number after "The answer is" / "####" and
  falls back to the last number in the output (lm-eval's ``flexible-extract``); ``exact_match_strict``
  needs the marker (``strict-match``). Numbers compare by value ("1,000" == "1000.0").
- Code (HumanEval): ``num_samples`` completions per problem, each run against the unit tests in the
  sandbox of ``studies.tasks.execution``; pass@k by the unbiased estimator of Chen et al. (2021).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Dict, List, Optional, Protocol, Sequence, Tuple

import torch
from torchmetrics import MeanMetric, SumMetric

from .schema import CodeItem, GenerationItem, MultipleChoiceItem

_MARKED = re.compile(r"(?:the answer is|####)\s*:?\s*\$?\s*(-?\d[\d,]*(?:\.\d+)?)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


class Adapter(Protocol):
    """What scoring needs from a model: log-likelihoods of continuations and text generation."""

    def loglikelihood(self, requests: Sequence[Tuple[str, str]]) -> List[float]: ...

    def generate(self, contexts: Sequence[str], *, max_new_tokens: int, stop: Sequence[str] = (),
                 temperature: Optional[float] = None) -> List[str]: ...


class TaskMetrics:
    """Mean of each per-item metric and the item count, as torchmetrics (synchronised across DDP
    ranks on ``compute`` when torch.distributed is initialised)."""

    def __init__(self, names: Sequence[str], device=None):
        # states live where the collective runs (CUDA under NCCL, CPU under gloo)
        self.means = {name: _float64(MeanMetric(), device) for name in names}
        self.count = _float64(SumMetric(), device)

    def update(self, values: Dict[str, float]) -> None:
        for name, metric in self.means.items():
            metric.update(torch.tensor(float(values[name]), dtype=torch.float64))
        self.count.update(torch.tensor(1.0, dtype=torch.float64))

    def compute(self) -> Tuple[Dict[str, float], int]:
        n = int(self.count.compute().item())
        if n == 0:
            return {name: float("nan") for name in self.means}, 0
        return {name: float(m.compute().item()) for name, m in self.means.items()}, n


def _float64(metric, device):
    metric.set_dtype(torch.float64)  # scores of a few hundred items print exactly (1/3, not 0.33333334)
    return metric.to(device or "cpu")


# ----------------------------------------------------------------------------- multiple choice


def choice_bytes(choice: str) -> int:
    """UTF-8 length of a choice without its leading space delimiter (at least 1)."""
    text = choice[1:] if choice.startswith(" ") else choice
    return max(1, len(text.encode("utf-8")))


def multiple_choice_metrics(logliks: Sequence[float], item: MultipleChoiceItem) -> Dict[str, float]:
    """acc and acc_norm of one item from the log-likelihoods of its choices."""
    ll = torch.tensor(logliks, dtype=torch.float64)
    lengths = torch.tensor([choice_bytes(c) for c in item.choices], dtype=torch.float64)
    return {
        "acc": float(int(ll.argmax()) == item.answer),
        "acc_norm": float(int((ll / lengths).argmax()) == item.answer),
    }


def score_multiple_choice(adapter: Adapter, items: Sequence[MultipleChoiceItem], metrics: TaskMetrics,
                          chunk: int = 64) -> List[Dict]:
    """Score items ``chunk`` at a time; returns per-item records (id, log-likelihoods, metrics)."""
    records = []
    for start in range(0, len(items), chunk):
        part = items[start:start + chunk]
        requests = [(item.prompt, choice) for item in part for choice in item.choices]
        try:
            logliks = adapter.loglikelihood(requests)
        except ValueError as error:
            raise ValueError(f"scoring items {part[0].id}..{part[-1].id}: {error}") from error
        offset = 0
        for item in part:
            ll = logliks[offset:offset + len(item.choices)]
            offset += len(item.choices)
            values = multiple_choice_metrics(ll, item)
            metrics.update(values)
            records.append({"id": item.id, "loglikelihoods": list(map(float, ll)), **values})
    return records


# ----------------------------------------------------------------------------- numbers


def normalize_number(text: str) -> Optional[str]:
    """Canonical string of a number ("1,000.50" -> "1000.5", "$7." -> "7"), or None if not a number."""
    cleaned = text.strip().replace(",", "").replace("$", "").rstrip(".")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def extract_final_number(text: str, strict: bool = False) -> Optional[str]:
    """The final answer in a generated solution: the number after the first "The answer is" or
    "####" marker; without a marker, None if ``strict`` else the last number in the text."""
    marked = _MARKED.search(text)
    if marked:
        return normalize_number(marked.group(1))
    if strict:
        return None
    numbers = _NUMBER.findall(text)
    return normalize_number(numbers[-1]) if numbers else None


def exact_match(prediction: Optional[str], reference: str) -> float:
    gold = normalize_number(reference)
    if gold is None:  # a non-numeric reference compares as stripped text
        return float(prediction is not None and prediction.strip() == reference.strip())
    return float(prediction is not None and prediction == gold)


def score_generation(adapter: Adapter, items: Sequence[GenerationItem], metrics: TaskMetrics, *,
                     max_new_tokens: int, stop: Sequence[str], chunk: int = 64) -> List[Dict]:
    records = []
    for start in range(0, len(items), chunk):
        part = items[start:start + chunk]
        try:
            outputs = adapter.generate([item.prompt for item in part], max_new_tokens=max_new_tokens, stop=stop)
        except ValueError as error:
            raise ValueError(f"generating for items {part[0].id}..{part[-1].id}: {error}") from error
        for item, output in zip(part, outputs):
            flexible = extract_final_number(output)
            strict = extract_final_number(output, strict=True)
            values = {"exact_match": exact_match(flexible, item.answer),
                      "exact_match_strict": exact_match(strict, item.answer)}
            metrics.update(values)
            records.append({"id": item.id, "output": output, "prediction": flexible, "answer": item.answer, **values})
    return records


# ----------------------------------------------------------------------------- code


def score_code(adapter: Adapter, items: Sequence[CodeItem], metrics: TaskMetrics, *, max_new_tokens: int,
               stop: Sequence[str], num_samples: int = 1, pass_k: Sequence[int] = (1,),
               temperature: Optional[float] = None, timeout: float = 10.0) -> List[Dict]:
    """Generate ``num_samples`` completions per problem, execute each against the problem's unit
    tests in the sandbox, and record the unbiased pass@k of every problem (Chen et al. 2021, eq. 1)."""
    from .execution import evaluate_completions, pass_at_k

    bad = [k for k in pass_k if not 1 <= k <= num_samples]
    if bad:
        raise ValueError(f"pass@k needs 1 <= k <= num_samples={num_samples}; got k={bad} (raise eval.settings.num_samples)")
    if num_samples > 1 and not temperature:
        raise ValueError("num_samples > 1 needs sampling: set eval.settings.temperature > 0 (greedy repeats one completion)")
    if not items:
        return []
    contexts = [item.prompt for item in items for _ in range(num_samples)]
    try:
        flat = adapter.generate(contexts, max_new_tokens=max_new_tokens, stop=stop, temperature=temperature)
    except ValueError as error:
        raise ValueError(f"generating for items {items[0].id}..{items[-1].id}: {error}") from error
    completions = [flat[i * num_samples:(i + 1) * num_samples] for i in range(len(items))]
    problems = [{"task_id": item.id, "prompt": item.prompt, "test": item.test, "entry_point": item.entry_point}
                for item in items]
    report = evaluate_completions(problems, completions, ks=tuple(pass_k), timeout_s=timeout)
    records = []
    for item, outcome, samples in zip(items, report["per_problem"], completions):
        values = {f"pass@{k}": pass_at_k(outcome["n"], outcome["correct"], k) for k in pass_k}
        metrics.update(values)
        records.append({"id": item.id, "completions": samples, "correct": outcome["correct"],
                        "statuses": outcome["statuses"], **values})
    return records


__all__ = ["Adapter", "TaskMetrics", "choice_bytes", "multiple_choice_metrics", "score_multiple_choice",
           "normalize_number", "extract_final_number", "exact_match", "score_generation", "score_code"]
