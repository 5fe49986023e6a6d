"""Bootstrap uncertainty for scaling-law fits, and the held-out check of a fit's extrapolation.

Non-parametric bootstrap (Efron & Tibshirani 1993): resample the runs with replacement, refit,
and read percentile intervals off the refitted quantities. Besiroglu et al. 2024 showed that the
intervals of Hoffmann et al. 2022 were implausibly narrow; refitting on resampled runs is what they
used to get honest ones. Points that share a run (evaluations along one training run) are
resampled together when ``groups`` is given, so correlated points do not pose as independent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from analysis.fits import single_threaded_blas


def _percentile_interval(samples, confidence: float) -> tuple[float, float]:
    """Equal-tailed percentile interval; samples may hold +inf (a level never reached)."""
    samples = np.asarray(samples, dtype=float)
    samples = samples[~np.isnan(samples)]
    if samples.size == 0:
        raise ValueError("no bootstrap replicate gave a defined value for this quantity")
    tails = [(1.0 - confidence) / 2.0, (1.0 + confidence) / 2.0]
    method = "linear" if np.isfinite(samples).all() else "inverted_cdf"
    low, high = np.quantile(samples, tails, method=method)
    return float(low), float(high)


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), e.g. 0.95; got {confidence}")


@dataclass(frozen=True)
class BootstrapFit:
    """A point fit on all data plus the fits on ``len(replicates)`` resamples of the runs."""

    fit: object
    replicates: tuple
    confidence: float
    n_failed: int  # resamples the fit rejected (e.g. too few distinct budgets drawn)

    def intervals(self) -> dict[str, tuple[float, float]]:
        """Percentile interval for every parameter in ``fit.params()``."""
        return {name: self.interval(name) for name in self.fit.params()}

    def interval(self, quantity: str | Callable) -> tuple[float, float]:
        """Interval of a parameter name, or of any function of a fit (e.g. a prediction at 1e23)."""
        get = (lambda f: f.params()[quantity]) if isinstance(quantity, str) else quantity
        return _percentile_interval([float(get(f)) for f in self.replicates], self.confidence)

    def band(self, *xs) -> tuple[np.ndarray, np.ndarray]:
        """Pointwise interval of the fitted curve at ``xs`` (the arguments of ``fit.predict``)."""
        preds = np.stack([np.asarray(f.predict(*xs), dtype=float) for f in self.replicates])
        tails = [(1.0 - self.confidence) / 2.0, (1.0 + self.confidence) / 2.0]
        low, high = np.quantile(preds, tails, axis=0)
        return low, high


def _resample_groups(groups: np.ndarray, rng: np.random.Generator):
    # Groups are numbered in order of first appearance, not by sorted label: labels are run ids,
    # random for every logging of the same runs, and a seeded bootstrap must draw the same runs.
    labels, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    members = [np.flatnonzero(inverse == k) for k in order]
    while True:
        drawn = rng.integers(0, labels.size, size=labels.size)
        yield np.concatenate([members[k] for k in drawn])


def bootstrap_fit(fit_fn: Callable, *arrays, n_resamples: int = 1000, confidence: float = 0.95,
                  seed: int = 0, groups=None, **fit_kwargs) -> BootstrapFit:
    """Fit ``fit_fn(*arrays, **fit_kwargs)`` on all points and on ``n_resamples`` resamples.

    ``arrays`` are aligned columns (one value per point), e.g. (C, loss) or (N, D, loss).
    Keyword arguments that are arrays of the same length (``task_loss``) are resampled with them;
    others (``chance``) pass through. ``groups`` (e.g. run ids) makes whole runs the unit that is
    resampled; by default each point is its own run. Resamples the fit rejects with a ValueError
    (too few distinct budgets drawn) are counted in ``n_failed``; if more than half fail, the data
    cannot support a bootstrap and a ValueError says so.
    """
    _check_confidence(confidence)
    if n_resamples < 2:
        raise ValueError(f"n_resamples must be at least 2, got {n_resamples}")
    arrays = [np.asarray(a) for a in arrays]
    point_fit = fit_fn(*arrays, **fit_kwargs)  # validates the data with the fit's own messages
    n = arrays[0].shape[0]
    aligned = {k: np.asarray(v) for k, v in fit_kwargs.items()
               if isinstance(v, (np.ndarray, list, tuple)) and len(v) == n}
    groups = np.arange(n) if groups is None else np.asarray(groups)
    if groups.shape != (n,):
        raise ValueError(f"groups must hold one label per point ({n}), got shape {groups.shape}")
    draws = _resample_groups(groups, np.random.default_rng(seed))
    replicates, n_failed = [], 0
    with single_threaded_blas():
        for _ in range(n_resamples):
            idx = next(draws)
            kwargs = {**fit_kwargs, **{k: v[idx] for k, v in aligned.items()}}
            try:
                replicates.append(fit_fn(*(a[idx] for a in arrays), **kwargs))
            except ValueError:
                n_failed += 1
    if n_failed > n_resamples / 2:
        raise ValueError(
            f"{n_failed} of {n_resamples} bootstrap resamples could not be fitted: the data have "
            "too few runs or distinct budgets for a bootstrap; add budgets or pass groups=None"
        )
    return BootstrapFit(fit=point_fit, replicates=tuple(replicates), confidence=confidence,
                        n_failed=n_failed)


def compute_multiplier_interval(boot_a: BootstrapFit, boot_b: BootstrapFit,
                                level: float) -> tuple[float, tuple[float, float]]:
    """Point estimate and interval of compute_multiplier(a, b, level).

    Replicate i of a is paired with replicate i of b (independent data, so any pairing is a valid
    draw). A replicate that never reaches ``level`` needs infinite compute, so the interval may
    run to inf: an honest answer when the level sits near one fit's irreducible loss or ceiling.
    A steep accuracy sigmoid extrapolated far from its data can put the compute at 0 or inf in
    floating point; the ratio of such a pair is then x/0 = inf, or 0/0 and inf/inf, which say
    nothing and are left out of the interval.
    """
    from analysis.fits import compute_multiplier

    estimate = compute_multiplier(boot_a.fit, boot_b.fit, level)
    k = min(len(boot_a.replicates), len(boot_b.replicates))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        need_a = np.array([fa.required_compute(level) for fa in boot_a.replicates[:k]], dtype=float)
        need_b = np.array([fb.required_compute(level) for fb in boot_b.replicates[:k]], dtype=float)
        ratios = need_a / need_b
    return estimate, _percentile_interval(ratios, boot_a.confidence)


@dataclass(frozen=True, eq=False)
class HeldOutCheck:
    """Fit on every budget but the largest, predict the largest, compare with what was measured.

    ``interval`` is a bootstrap prediction interval: the refitted curve plus a residual of the
    training fit drawn at random, so it covers a new noisy measurement, not only the mean curve.
    ``mean_interval`` is the interval of the curve alone.
    """

    budget: float
    observed: np.ndarray
    predicted: np.ndarray
    interval: tuple[np.ndarray, np.ndarray]
    mean_interval: tuple[np.ndarray, np.ndarray]
    confidence: float
    n_train: int

    @property
    def error(self) -> np.ndarray:
        return self.predicted - self.observed

    @property
    def relative_error(self) -> np.ndarray:
        return self.error / np.abs(self.observed)

    @property
    def covered(self) -> np.ndarray:
        low, high = self.interval
        return (low <= self.observed) & (self.observed <= high)

    @property
    def all_covered(self) -> bool:
        return bool(self.covered.all())


def held_out_check(fit_fn: Callable, *arrays, budget=None, n_resamples: int = 200,
                   confidence: float = 0.9, seed: int = 0, groups=None,
                   **fit_kwargs) -> HeldOutCheck:
    """Extrapolation test: hold out the largest budget, fit the rest, predict the held-out points.

    ``arrays`` are the fit's columns with the target last, e.g. (C, loss) or (N, D, loss); the
    held-out points are predicted from the leading columns. ``budget`` (one value per point, e.g.
    ``flops_budget``) says which points form the largest budget; by default the first column,
    which must then be the compute.
    """
    _check_confidence(confidence)
    arrays = [np.asarray(a, dtype=float) for a in arrays]
    if len(arrays) < 2:
        raise ValueError("pass the fit's columns with the target last, e.g. (C, loss)")
    if budget is None and len(arrays) > 2:
        raise ValueError("with more than one input column pass budget=... (e.g. the flops_budget "
                         "of each point) to say which points form the largest budget")
    budget = arrays[0] if budget is None else np.asarray(budget, dtype=float)
    if budget.shape != arrays[0].shape:
        raise ValueError(f"budget must hold one value per point, got shape {budget.shape}")
    if budget.size == 0 or not np.isfinite(budget).all():
        raise ValueError("budget is empty or has NaN values; pass the budget of every point")
    largest = np.isclose(budget, budget.max(), rtol=1e-6)
    if largest.all():
        raise ValueError("all points share one budget: nothing is left to fit once it is held out")
    n = budget.size
    aligned = {k for k, v in fit_kwargs.items()
               if isinstance(v, (np.ndarray, list, tuple)) and len(v) == n}
    train_kwargs = {k: (np.asarray(v)[~largest] if k in aligned else v) for k, v in fit_kwargs.items()}
    boot = bootstrap_fit(fit_fn, *(a[~largest] for a in arrays), n_resamples=n_resamples,
                         confidence=confidence, seed=seed,
                         groups=None if groups is None else np.asarray(groups)[~largest],
                         **train_kwargs)
    xs_train, y_train = [a[~largest] for a in arrays[:-1]], arrays[-1][~largest]
    xs_test, observed = [a[largest] for a in arrays[:-1]], arrays[-1][largest]
    residuals = y_train - np.asarray(boot.fit.predict(*xs_train), dtype=float)
    rng = np.random.default_rng(seed + 1)
    preds = np.stack([np.asarray(f.predict(*xs_test), dtype=float) for f in boot.replicates])
    noisy = preds + rng.choice(residuals, size=preds.shape)
    tails = [(1.0 - confidence) / 2.0, (1.0 + confidence) / 2.0]
    return HeldOutCheck(
        budget=float(budget.max()), observed=observed,
        predicted=np.asarray(boot.fit.predict(*xs_test), dtype=float),
        interval=tuple(np.quantile(noisy, tails, axis=0)),
        mean_interval=tuple(np.quantile(preds, tails, axis=0)),
        confidence=confidence, n_train=int((~largest).sum()),
    )
