"""Score a finished checkpoint on a downstream suite, as the training callback scores a run.

    python -m studies.evaluate --checkpoint runs/GRID/KEY/checkpoints/final.ckpt --suite toyworld \\
        [--limit N] [--out results.json] [--data-dir PREPARED_DATA] [--mc-samples 128] [--cfg-scale 0]

The run folder's ``config.yaml`` (two levels above the checkpoint) names the prepared data folder,
which holds the tokenizer, the special-token ids and the toy-world task files; ``--data-dir`` gives
it explicitly. The evaluation settings (Monte Carlo samples, CFG scale, ``eval.settings``) come from
the run config unless overridden. Scoring is ``studies.tasks.suite.evaluate_suite`` (lm-eval with
the checkpoint as ``arm_mdm``); prints a table and writes JSON. For lm-eval's own command line
(any task, ``--log_samples``, ``--output_path``) use ``arm-mdm-eval``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, List, Mapping, Optional

from studies.checkpoint_inputs import resolve_checkpoint
from studies.text_table import render_table
from studies.validation import first_line


def format_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """A plain-text table: task, kind, items, each metric, chance."""
    names: List[str] = []
    for result in results.values():
        names += [m for m in result["metrics"] if m not in names]
    header = ["task", "kind", "n"] + names + ["chance"]
    rows = [[task, result["kind"], str(result["n"])]
            + [f"{result['metrics'][m]:.4f}" if m in result["metrics"] else "-" for m in names]
            + [f"{result['chance']:.4f}"] for task, result in results.items()]
    return render_table(header, rows)


# ----------------------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m studies.evaluate", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a Lightning checkpoint of a LanguageModel")
    parser.add_argument("--suite", default=None, help="paper6, toyworld, or task1,task2 (default: the run's eval.suite)")
    parser.add_argument("--limit", type=int, default=None, help="items per task (default: the run's eval.limit)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--data-dir", default=None, help="prepared data folder (tokenizer.json, metadata.json, tasks/)")
    parser.add_argument("--mc-samples", type=int, default=None, help="Monte Carlo samples of the MDM bound")
    parser.add_argument("--cfg-scale", type=float, default=None, help="unsupervised CFG scale (MDM)")
    parser.add_argument("--settings", default=None, help="JSON object replacing eval.settings")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--records", action="store_true", help="keep lm-eval's per-document samples in the JSON")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        checkpoint, run_cfg, data_dir = resolve_checkpoint(args.checkpoint, args.data_dir)
        eval_cfg = run_cfg.eval if run_cfg is not None else None

        from studies.tasks.suite import EvalSettings, suite_tasks

        settings = EvalSettings.parse(json.loads(args.settings) if args.settings else (eval_cfg.settings if eval_cfg else None))
        suite = args.suite or (eval_cfg.suite if eval_cfg else None)
        if not suite or suite == "none":
            raise ValueError("no suite: pass --suite (paper6, toyworld, or a comma-separated task list)")
        suite_tasks(suite)
        mc_samples = args.mc_samples or (eval_cfg.mc_samples if eval_cfg else 128)
        cfg_scale = args.cfg_scale if args.cfg_scale is not None else (eval_cfg.cfg_scale if eval_cfg else 0.0)
        limit = args.limit if args.limit is not None else (eval_cfg.limit if eval_cfg else None)
        if limit is not None and limit < 1 or mc_samples < 1:
            raise ValueError(f"--limit ({limit}) and --mc-samples ({mc_samples}) must be at least 1")
    except SystemExit as exit_:  # resolve_checkpoint's "error: ..." lines
        if not (isinstance(exit_.code, str) and exit_.code.startswith("error: ")):
            raise
        print(exit_.code, file=sys.stderr)
        return 2
    except ValueError as error:  # bad flags or settings, found before the checkpoint is loaded
        print(f"error: {first_line(error)}", file=sys.stderr)
        return 2
    from studies.tasks.lm_eval_model import ArmMdmLM
    from studies.tasks.suite import evaluate_suite

    lm = ArmMdmLM(checkpoint=str(checkpoint), tokenizer=str(data_dir), device=args.device, mc_samples=mc_samples,
                  cfg_scale=cfg_scale, **settings.model_args())
    results = evaluate_suite(lm, suite, limit=limit, data_dir=data_dir, settings=settings, keep_records=args.records,
                             log=lambda line: print(line, flush=True))
    print(format_table(results), flush=True)
    report = {"checkpoint": str(checkpoint), "suite": suite, "objective": lm.objective, "limit": limit,
              "mc_samples": mc_samples, "cfg_scale": cfg_scale, "tasks": results}
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
        print(f"wrote {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
