"""Downstream evaluation during training, at fixed fractions of the run's compute.

The x-axis of the scaling study is training compute C = 6 N D (N non-embedding parameters, D tokens
seen; LLaDA Sec. 3.1), so every evaluation point is logged with the FLOPs and tokens seen at that
optimizer step: ``eval/{task}/{metric}``, ``eval/{task}/n``, ``eval/flops_seen``,
``eval/tokens_seen`` (``models/metric_names.py``). Points sit at ``round(fraction * total_steps)`` optimizer steps; fraction 0
scores the untrained model before the first step. Results are kept in the callback (and in its
checkpoint state, so a resumed run neither repeats nor loses points) for the run's result.json, and
optionally written to ``results_dir/eval_step{N}.json`` as they happen.

Scoring is lm-evaluation-harness's (``studies.tasks.suite.evaluate_suite``: one ``simple_evaluate``
per combination of task settings, the in-memory model as ``studies.tasks.lm_eval_model.ArmMdmLM``).
Under DDP every rank scores lm-eval's shard of the documents, rank 0 aggregates and broadcasts, so
the numbers are identical on all ranks; only rank 0 writes files. Under FSDP2 the weights are
gathered on every rank for the evaluation (``models.parallelize.gathered``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import lightning as L

from models.flops import training_flops
from models.metric_names import EVAL_FLOPS_SEEN, EVAL_ITEMS, EVAL_SECONDS, EVAL_TOKENS_SEEN, eval_metric
from studies.atomic_write import write_atomic
from studies.config import eval_steps
from studies.tasks.suite import EvalSettings


class DownstreamEval(L.Callback):
    """Evaluate ``suite`` at the optimizer steps ``steps`` and log scores against FLOPs seen."""

    def __init__(self, suite: str, steps: Sequence[int], *, tokenizer, special_ids: Mapping[str, int],
                 data_dir=None, limit: Optional[int] = None, mc_samples: int = 128, cfg_scale: float = 0.0,
                 settings: Optional[EvalSettings] = None, results_dir=None):
        self.suite = suite
        self.steps = sorted(set(int(s) for s in steps))
        self.tokenizer, self.special_ids = tokenizer, dict(special_ids)
        self.data_dir = data_dir
        self.limit, self.mc_samples, self.cfg_scale = limit, mc_samples, cfg_scale
        self.settings = settings or EvalSettings()
        self.results_dir = Path(results_dir) if results_dir is not None else None
        self.results: List[Dict[str, Any]] = []
        self._tasks = None  # the suite's lm-eval TaskManager, built at the first point

    @classmethod
    def from_config(cls, eval_cfg, *, data_dir, total_steps: int, results_dir=None) -> "DownstreamEval":
        """From a run's ``EvalConfig`` and its prepared data folder (tokenizer, special ids, tasks)."""
        from tokenizers import Tokenizer

        from studies.data.layout import load_metadata

        data_dir = Path(data_dir)
        metadata = load_metadata(data_dir)
        return cls(
            eval_cfg.suite, eval_steps(eval_cfg.at_fractions, total_steps),
            tokenizer=Tokenizer.from_file(str(data_dir / "tokenizer.json")), special_ids=metadata["special_ids"],
            data_dir=data_dir, limit=eval_cfg.limit, mc_samples=eval_cfg.mc_samples,
            cfg_scale=eval_cfg.cfg_scale, settings=EvalSettings.parse(eval_cfg.settings), results_dir=results_dir,
        )

    # ------------------------------------------------------------------ hooks
    def on_train_start(self, trainer, pl_module) -> None:
        if 0 in self.steps:
            self._maybe_evaluate(trainer, pl_module, 0)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._maybe_evaluate(trainer, pl_module, trainer.global_step)

    def _maybe_evaluate(self, trainer, pl_module, step: int) -> None:
        if step not in self.steps or any(r["step"] == step for r in self.results):
            return
        self.results.append(self.evaluate(trainer, pl_module, step))

    def evaluate(self, trainer, pl_module, step: int) -> Dict[str, Any]:
        from models.parallelize import gathered
        from studies.tasks.lm_eval_model import ArmMdmLM
        from studies.tasks.suite import SuiteTasks, evaluate_suite

        started = time.time()
        if self._tasks is None:
            self._tasks = SuiteTasks(self.settings.suite(self.suite), data_dir=self.data_dir,
                                     task_files=self.settings.task_files)
        lm = ArmMdmLM.from_module(pl_module, self.tokenizer, special_ids=self.special_ids, mc_samples=self.mc_samples,
                                  cfg_scale=self.cfg_scale, **self.settings.model_args())
        with gathered(pl_module.model):  # FSDP2: no collective inside the ranks' unequal forward calls
            tasks = evaluate_suite(lm, self.suite, limit=self.limit, settings=self.settings, tasks=self._tasks)
        tokens = step * int(pl_module.tokens_per_step)
        flops = training_flops(pl_module.config.non_embedding_params, tokens)
        point = {"step": step, "fraction": step / max(1, int(getattr(pl_module, "total_steps", 0) or 1)),
                 "tokens": tokens, "flops": flops, "seconds": time.time() - started, "tasks": tasks}
        metrics = {EVAL_FLOPS_SEEN: flops, EVAL_TOKENS_SEEN: float(tokens), EVAL_SECONDS: point["seconds"]}
        for task, result in tasks.items():
            metrics[eval_metric(task, EVAL_ITEMS)] = float(result["n"])
            for name, value in result["metrics"].items():
                metrics[eval_metric(task, name)] = value
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
        if self.results_dir is not None and trainer.global_rank == 0:
            self.results_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(self.results_dir / f"eval_step{step}.json", json.dumps(point, indent=2))
        return point

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if self._tasks is not None:
            self._tasks.close()
            self._tasks = None

    # ------------------------------------------------------------------ checkpoint state
    def state_dict(self) -> Dict[str, Any]:
        return {"results": self.results}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self.results = list(state_dict.get("results", []))


__all__ = ["DownstreamEval"]
