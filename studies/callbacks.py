"""Lightning callbacks of a run that are about the study, not the model."""

from __future__ import annotations

import lightning as L


class DataEpochs(L.Callback):
    """Logs how many passes over the training data the run has made (``data/epochs``).

    Repetition matters to the ARM-vs-MDM comparison (MDMs are said to gain more from repeated
    data), so every run records it next to its loss curve.
    """

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        progress = getattr(trainer.datamodule, "epoch_progress", None)
        if progress is not None:
            pl_module.log("data/epochs", float(progress))
