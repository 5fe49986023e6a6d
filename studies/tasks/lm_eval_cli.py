"""``arm-mdm-eval``: lm-evaluation-harness's command line with our ``arm_mdm`` model registered.

    arm-mdm-eval --model arm_mdm --model_args checkpoint=RUN/checkpoints/final.ckpt,mc_samples=128 \\
        --tasks toyworld --include_path TASKS_DIR --device cpu --batch_size 16 --log_samples --output_path OUT

lm-eval 0.4.13 finds models only in its own registry (``lm_eval.models.MODEL_MAPPING`` and
``register_model``), never through package entry points, so this wrapper registers ``arm_mdm`` and
hands every argument, unchanged, to lm-eval's own entry point (as LLaDA's ``eval_llada.py`` and
SMDM do). The model is registered lazily, by its import path, so ``--help`` never imports torch.
"""

from __future__ import annotations

import sys
from typing import List, Optional

MODEL = "arm_mdm"
TARGET = "studies.tasks.lm_eval_model:ArmMdmLM"


def register() -> None:
    """Make ``--model arm_mdm`` known to lm-eval without importing the model yet."""
    from lm_eval.api.registry import model_registry

    if MODEL not in model_registry:
        model_registry.register(MODEL, target=TARGET)


def main(argv: Optional[List[str]] = None) -> int:
    from lm_eval.__main__ import cli_evaluate

    register()
    if argv is not None:  # lm-eval's parser reads sys.argv
        sys.argv = [sys.argv[0]] + list(argv)
    try:
        cli_evaluate()
    except ValueError as error:  # a bad model_args value: one line naming the fix, not a traceback
        model = sys.modules.get(TARGET.split(":")[0])
        if model is None or not isinstance(error, model.ModelArgsError):
            raise
        print(f"arm-mdm-eval: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
