"""Downstream accuracy against training compute, for the Fig. 3 panels of an ARM vs MDM study.

Two forms: a sigmoid in log-compute between chance and a fitted ceiling (``AccuracyFit``), and the
two-step form of the OLMo model ladder (``TwoStepAccuracyFit``: task loss as a power law of compute,
accuracy as a sigmoid of task loss). Both share the interface of the loss fits in
``analysis.fits`` (``predict``, ``params()``, ``compute_for(level)``), so bootstrap intervals and
``compute_multiplier`` apply to them unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize, special

from analysis.fits import (
    ACCURACY,
    PowerLawFit,
    _columns,
    _grid,
    _require_distinct,
    _unreachable,
    fit_power_law,
    single_threaded_blas,
)


@dataclass(frozen=True)
class AccuracyFit:
    """acc(C) = chance + (ceiling - chance) * sigmoid(slope * (log10 C - midpoint)).

    A benchmark sits at chance until the model starts to solve it and saturates below a
    ceiling; the sigmoid in log-compute is the usual shape for this (e.g. Ruan et al. 2024,
    "Observational scaling laws"; OLMo model ladder, Bhagia et al. 2024, step 2).
    """

    chance: float
    ceiling: float
    slope: float
    midpoint: float  # log10 of the compute at half-way between chance and ceiling
    n_points: int
    quantity: str = ACCURACY

    def predict(self, C) -> np.ndarray:
        z = self.slope * (np.log10(np.asarray(C, dtype=float)) - self.midpoint)
        return self.chance + (self.ceiling - self.chance) * special.expit(z)

    def params(self) -> dict[str, float]:
        return {"ceiling": self.ceiling, "slope": self.slope, "midpoint": self.midpoint}

    def required_compute(self, level: float) -> float:
        if level >= self.ceiling:
            return np.inf
        if level <= self.chance:
            return 0.0
        frac = (level - self.chance) / (self.ceiling - self.chance)
        return float(10.0 ** (self.midpoint + special.logit(frac) / self.slope))

    def compute_for(self, level: float) -> float:
        if not self.chance < level < self.ceiling:
            raise _unreachable(ACCURACY, level, f"the fit runs from chance {self.chance:.4g} to "
                               f"its ceiling {self.ceiling:.4g}")
        return self.required_compute(level)


@dataclass(frozen=True)
class TwoStepAccuracyFit:
    """OLMo model-ladder form (Bhagia et al. 2024): task loss L(C) = E + A C^-alpha (step 1),
    accuracy = chance + (ceiling - chance) * sigmoid(-slope * (L - midpoint)) (step 2)."""

    task_loss: PowerLawFit
    chance: float
    ceiling: float
    slope: float
    midpoint: float  # task loss at half-way between chance and ceiling
    n_points: int
    quantity: str = ACCURACY

    def accuracy_from_loss(self, task_loss) -> np.ndarray:
        z = -self.slope * (np.asarray(task_loss, dtype=float) - self.midpoint)
        return self.chance + (self.ceiling - self.chance) * special.expit(z)

    def predict(self, C) -> np.ndarray:
        return self.accuracy_from_loss(self.task_loss.predict(C))

    def params(self) -> dict[str, float]:
        step1 = {f"loss_{k}": v for k, v in self.task_loss.params().items()}
        return {**step1, "ceiling": self.ceiling, "slope": self.slope, "midpoint": self.midpoint}

    def required_compute(self, level: float) -> float:
        if level >= min(self.ceiling, float(self.accuracy_from_loss(self.task_loss.E))):
            return np.inf
        if level <= self.chance:
            return 0.0
        frac = (level - self.chance) / (self.ceiling - self.chance)
        return self.task_loss.required_compute(self.midpoint - special.logit(frac) / self.slope)

    def compute_for(self, level: float) -> float:
        top = min(self.ceiling, float(self.accuracy_from_loss(self.task_loss.E)))
        if not self.chance < level < top:
            raise _unreachable(ACCURACY, level, f"the fit runs from chance {self.chance:.4g} to "
                               f"{top:.4g} (accuracy at the irreducible task loss)")
        return self.required_compute(level)


def _fit_sigmoid(x, acc, chance, max_score, sign, n_starts=2):
    """Least squares for chance + (ceiling - chance) * sigmoid(sign * slope * (x - mid)).

    Like the loss fits: score a grid of starts at once, refine the best few (trust-region
    least squares with bounds: ceiling in (chance, max_score], slope > 0).
    """
    span = np.ptp(x)
    lower = np.array([chance + 1e-6 * max_score, 1e-3 / span, x.min() - 2 * span])
    upper = np.array([max_score, 50.0 / span, x.max() + 2 * span])
    grid = _grid(
        np.linspace(min(acc.max(), max_score), max_score, 3),
        np.array([0.5, 2.0, 6.0, 15.0]) / span,
        np.linspace(x.min() - 0.25 * span, x.max() + 0.75 * span, 7),
    )
    grid = np.clip(grid, lower, upper)

    def residual(p):  # p: [..., 3] -> [..., n]
        p = np.asarray(p)
        z = sign * p[..., 1:2] * (x - p[..., 2:3])
        return chance + (p[..., 0:1] - chance) * special.expit(z) - acc

    best = None
    with single_threaded_blas():
        for i in np.argsort((residual(grid) ** 2).sum(-1))[:n_starts]:
            res = optimize.least_squares(residual, grid[i], bounds=(lower, upper))
            if best is None or res.cost < best.cost:
                best = res
    return best.x


def _check_accuracy(acc: np.ndarray, chance: float, max_score: float) -> None:
    if not 0 <= chance < max_score:
        raise ValueError(f"chance={chance:g} must lie in [0, max_score={max_score:g}) "
                         "(pass max_score=100 for percentages)")
    if acc.max() > max_score or acc.min() < 0:
        raise ValueError(f"scores must lie in [0, max_score={max_score:g}]; got {acc.min():g}..."
                         f"{acc.max():g} (pass max_score=100 for percentages)")


def fit_accuracy(C, acc, chance: float, *, task_loss=None, max_score: float = 1.0):
    """Fit accuracy against training compute.

    Without ``task_loss``: a sigmoid in log10 C between ``chance`` and a fitted ceiling
    (AccuracyFit). With per-point ``task_loss``: the two-step OLMo-ladder fit (TwoStepAccuracyFit).
    ``acc``, ``chance`` and ``max_score`` share units (fractions by default).
    """
    if task_loss is not None:
        C, acc, task_loss = _columns(C=C, acc=acc, task_loss=task_loss, _positive=("C", "task_loss"))
    else:
        C, acc = _columns(C=C, acc=acc, _positive=("C",))
    _check_accuracy(acc, float(chance), float(max_score))
    _require_distinct("C", C, 3, 3)
    if task_loss is None:
        ceiling, slope, mid = _fit_sigmoid(np.log10(C), acc, float(chance), float(max_score), 1.0)
        return AccuracyFit(chance=float(chance), ceiling=float(ceiling), slope=float(slope),
                           midpoint=float(mid), n_points=C.size)
    loss_fit = fit_power_law(C, task_loss)
    ceiling, slope, mid = _fit_sigmoid(task_loss, acc, float(chance), float(max_score), -1.0)
    return TwoStepAccuracyFit(task_loss=loss_fit, chance=float(chance), ceiling=float(ceiling),
                              slope=float(slope), midpoint=float(mid), n_points=C.size)
