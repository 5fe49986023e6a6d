"""Lightning callbacks of a run that are about the study, not the model."""

from __future__ import annotations

import lightning as L

from models.metric_names import DATA_EPOCHS


class DataEpochs(L.Callback):
    """Logs how many passes over the training data the run has made (``data/epochs``).

    Repetition matters to the ARM-vs-MDM comparison (MDMs are said to gain more from repeated
    data), so every run records it next to its loss curve.
    """

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        progress = getattr(trainer.datamodule, "epoch_progress", None)
        if progress is not None:
            pl_module.log(DATA_EPOCHS, float(progress))


def progress_bar(refresh_steps: int) -> L.Callback:
    """Lightning's own training bar (rich where it is installed, else tqdm), redrawn every
    ``refresh_steps`` steps (``check_run_config`` makes it at least 1)."""
    from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar
    from lightning.pytorch.utilities.imports import _RICH_AVAILABLE

    return RichProgressBar(refresh_rate=refresh_steps) if _RICH_AVAILABLE else TQDMProgressBar(refresh_rate=refresh_steps)
