"""Requests per second of the evaluation path on toy-world items: the suite (``studies.tasks.suite.
evaluate_suite``, what the training callback and ``studies.evaluate`` call) beside the model alone
(``ArmMdmLM.loglikelihood`` / ``generate_until`` on the same requests).

``python tests/bench/eval_throughput.py [--items 20] [--steps 30] [--mc-samples 8] [--batch-size 8]``

Prepares a small toy world and trains tiny ARM and MDM checkpoints with ``studies.run`` (``--steps``
optimizer steps, in a temporary folder), then scores, per objective, the multiple-choice task
``toy_forward`` (loglikelihood requests: items x 4 choices) and the generation task
``toy_arithmetic`` (generate_until requests, 16 new tokens; MDM with 16 steps), and prints requests/s
of both and their ratio (suite / model: the share of the time spent scoring; the rest is lm-eval's
task building, prompts, filters and metrics). The suite is timed on the second of two rounds. CPU; a
few minutes on 2 cores. The figures of the former hand-written scorer beside lm-eval are those of
this script at commit 3c4e2cb (README, Benchmarks).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time

sys.path[:0] = [str(pathlib.Path(__file__).resolve().parents[2]), str(pathlib.Path(__file__).resolve().parents[1])]

GEN_TOKENS = 16


def train(root: pathlib.Path, steps: int) -> dict:
    from models.config import preset
    from studies.config import BudgetConfig, EvalConfig, RunConfig, TrackingConfig, TrainerConfig
    from studies.data.config import DataConfig, TokenizerConfig, ToyWorldConfig
    from studies.run import run

    data = DataConfig(source="toyworld", cache_dir=str(root / "data"), tokenizer=TokenizerConfig(vocab_size=300),
                      toyworld=ToyWorldConfig(num_people=60, bios_per_person=2, num_arithmetic=200, task_items=40,
                                              validation_bios=20, validation_arithmetic=20))
    checkpoints = {}
    for objective in ("arm", "mdm"):
        cfg = RunConfig(
            name=f"{objective}-tiny", objective=objective, out_dir=str(root / objective),
            model=preset("tiny", causal=objective == "arm", max_seq_len=64), data=data,
            trainer=TrainerConfig(seq_len=32, global_batch_size=4, micro_batch_size=4, precision="32-true",
                                  accelerator="cpu", num_workers=0, val_batches=1, progress_bar=False),
            budget=BudgetConfig(steps=steps), eval=EvalConfig(suite="none"), tracking=TrackingConfig(enabled=False),
        )
        checkpoints[objective] = run(cfg)["checkpoint"]
    return checkpoints


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=20, help="items per task")
    parser.add_argument("--steps", type=int, default=30, help="training steps of the tiny checkpoints")
    parser.add_argument("--mc-samples", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args(argv)

    import json
    import logging
    import os

    import torch

    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    logging.disable(logging.WARNING)
    from lm_eval.api.instance import Instance

    from studies.data.prepare import prepare_dataset
    from studies.config import load_run_config
    from studies.tasks.lm_eval_model import ArmMdmLM
    from studies.tasks.suite import EvalSettings, SuiteTasks, evaluate_suite, suite_tasks

    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        print(f"training tiny ARM and MDM checkpoints ({args.steps} steps) ...", flush=True)
        checkpoints = train(root, args.steps)
        data_dir = prepare_dataset(load_run_config(pathlib.Path(checkpoints["arm"]).parents[1] / "config.yaml").data)
        settings = EvalSettings.parse({"batch_size": args.batch_size, "max_new_tokens": GEN_TOKENS, "steps": GEN_TOKENS})
        tasks = SuiteTasks(suite_tasks("toyworld"), data_dir=data_dir)
        rows = []
        for objective, checkpoint in checkpoints.items():
            lm = ArmMdmLM(checkpoint=checkpoint, mc_samples=args.mc_samples, device="cpu", **settings.model_args())
            for task, kind, per_item in (("toy_forward", "loglikelihood", 4), ("toy_arithmetic", "generate_until", 1)):
                requests = args.items * per_item
                items = [json.loads(line) for line in (data_dir / "tasks" / f"{task}.jsonl").read_text().splitlines()]
                items = items[:args.items]
                if kind == "loglikelihood":
                    pairs = [(item["prompt"], choice) for item in items for choice in item["choices"]]
                    instances = [Instance(kind, {}, pair, 0, (task, n // 4, 1)) for n, pair in enumerate(pairs)]
                    bare = lambda: lm.loglikelihood(instances)  # noqa: E731
                else:
                    gen = {"until": ["Question:", "\n\n"], "max_gen_toks": GEN_TOKENS, "do_sample": False}
                    instances = [Instance(kind, {}, (item["prompt"], gen), 0, (task, n, 1))
                                 for n, item in enumerate(items)]
                    bare = lambda: lm.generate_until(instances)  # noqa: E731
                for _ in range(2):  # the first round warms the path up; the second is timed
                    started = time.perf_counter()
                    evaluate_suite(lm, task, limit=args.items, settings=settings, tasks=tasks)
                    suite = time.perf_counter() - started
                started = time.perf_counter()
                bare()
                model = time.perf_counter() - started
                rows.append((objective, task, kind, requests, requests / suite, requests / model, model / suite))
        tasks.close()

    header = ("objective", "task", "requests", "n", "suite req/s", "model req/s", "suite / model")
    print(f"\nmc_samples={args.mc_samples}, batch_size={args.batch_size}, {GEN_TOKENS} new tokens, "
          f"{torch.get_num_threads()} threads, CPU")
    print("  ".join(f"{h:>16}" for h in header))
    for objective, task, kind, n, a, b, ratio in rows:
        print("  ".join(f"{v:>16}" for v in (objective, task, kind, n, f"{a:.1f}", f"{b:.1f}", f"{ratio:.2f}")))
    print("suite: evaluate_suite (task loading, prompts, filters, metrics included); model: the LM's requests alone")
    return 0

if __name__ == "__main__":
    sys.exit(main())
