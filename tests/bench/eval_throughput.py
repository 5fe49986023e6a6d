"""Requests per second of the lm-eval path (``arm_mdm`` under ``lm_eval.simple_evaluate``) beside the
hand-written scorer (``studies.evaluate.evaluate_suite``) on the same toy-world items.

``python tests/bench/eval_throughput.py [--items 20] [--steps 30] [--mc-samples 8] [--batch-size 8]``

Prepares a small toy world and trains tiny ARM and MDM checkpoints with ``studies.run`` (``--steps``
optimizer steps, in a temporary folder), then scores, per objective, the multiple-choice task
``toy_forward`` (loglikelihood requests: items x 4 choices) and the generation task
``toy_arithmetic`` (generate_until requests, 16 new tokens; MDM with 16 steps) both ways, and prints
requests/s and the ratio lm-eval / today (above 1: the lm-eval path is faster), twice: the whole
suite call (``evaluate_suite`` vs ``simple_evaluate``, each path's task loading, prompts and metrics
included; the second of two rounds) and the model alone (``ModelAdapter.loglikelihood``/``generate``
vs ``ArmMdmLM.loglikelihood``/``generate_until`` on the same requests). CPU; a few minutes on 2 cores.
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
    from lm_eval import simple_evaluate
    from lm_eval.api.instance import Instance
    from lm_eval.tasks import TaskManager

    from studies.data.prepare import prepare_dataset
    from studies.evaluate import evaluate_suite
    from studies.tasks.adapter import EvalSettings, load_checkpoint_adapter
    from studies.tasks.lm_eval_model import ArmMdmLM
    from studies.tasks.lm_eval_tasks import write_task_yamls
    from studies.run import load_run_config

    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        print(f"training tiny ARM and MDM checkpoints ({args.steps} steps) ...", flush=True)
        checkpoints = train(root, args.steps)
        data_dir = prepare_dataset(load_run_config(pathlib.Path(checkpoints["arm"]).parents[1] / "config.yaml").data)
        include = write_task_yamls(data_dir, root / "lm_eval_tasks")
        manager = TaskManager(include_path=str(include))
        rows = []
        for objective, checkpoint in checkpoints.items():
            settings = EvalSettings.parse({"batch_size": args.batch_size, "max_new_tokens": GEN_TOKENS,
                                           "steps": GEN_TOKENS})
            adapter = load_checkpoint_adapter(checkpoint, data_dir, mc_samples=args.mc_samples, settings=settings)
            lm = ArmMdmLM(checkpoint=checkpoint, mc_samples=args.mc_samples, batch_size=args.batch_size,
                          steps=GEN_TOKENS, device="cpu")
            for task, kind, per_item in (("toy_forward", "loglikelihood", 4), ("toy_arithmetic", "generate_until", 1)):
                requests = args.items * per_item
                items = [json.loads(line) for line in (data_dir / "tasks" / f"{task}.jsonl").read_text().splitlines()]
                items = items[:args.items]
                if kind == "loglikelihood":
                    pairs = [(item["prompt"], choice) for item in items for choice in item["choices"]]
                    instances = [Instance(kind, {}, pair, 0, (task, n // 4, 1)) for n, pair in enumerate(pairs)]
                    bare = (lambda: adapter.loglikelihood(pairs), lambda: lm.loglikelihood(instances))
                else:
                    stop = ["Question:", "\n\n"]
                    gen = {"until": stop, "max_gen_toks": GEN_TOKENS, "do_sample": False}
                    instances = [Instance(kind, {}, (item["prompt"], gen), 0, (task, n, 1))
                                 for n, item in enumerate(items)]
                    prompts = [item["prompt"] for item in items]
                    bare = (lambda: adapter.generate(prompts, max_new_tokens=GEN_TOKENS, stop=stop),
                            lambda: lm.generate_until(instances))
                for _ in range(2):  # the first round warms both paths up; the second is timed
                    started = time.perf_counter()
                    evaluate_suite(adapter, task, limit=args.items, tasks_dir=data_dir / "tasks")
                    today = time.perf_counter() - started
                    started = time.perf_counter()
                    simple_evaluate(model=lm, tasks=[task], limit=args.items, task_manager=manager,
                                    gen_kwargs={"max_gen_toks": GEN_TOKENS}, verbosity="ERROR")
                    harness = time.perf_counter() - started
                rows.append((objective, f"{task} (suite)", kind, requests, requests / today, requests / harness,
                             today / harness))
                timings = []
                for call in bare:
                    started = time.perf_counter()
                    call()
                    timings.append(time.perf_counter() - started)
                rows.append((objective, f"{task} (model)", kind, requests, requests / timings[0], requests / timings[1],
                             timings[0] / timings[1]))

    header = ("objective", "task (what is timed)", "requests", "n", "today req/s", "lm-eval req/s", "lm-eval / today")
    print(f"\nmc_samples={args.mc_samples}, batch_size={args.batch_size}, {GEN_TOKENS} new tokens, "
          f"{torch.get_num_threads()} threads, CPU")
    print("  ".join(f"{h:>22}" for h in header))
    for objective, task, kind, n, a, b, ratio in rows:
        print("  ".join(f"{v:>22}" for v in (objective, task, kind, n, f"{a:.1f}", f"{b:.1f}", f"{ratio:.2f}")))
    print("suite: evaluate_suite vs simple_evaluate (task loading, prompts, metrics included); "
          "model: the adapter's requests vs the LM's on the same pairs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
