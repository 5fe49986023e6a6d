"""Bootstrap intervals cover the truth and the held-out check catches bad extrapolation
(analysis/bootstrap.py). Few resamples and starts keep this fast; coverage is asserted over
repeated synthetic studies at a nominal 90% level."""

import numpy as np
import pytest

from analysis.bootstrap import bootstrap_fit, compute_multiplier_interval, held_out_check
from analysis.accuracy_fits import AccuracyFit, fit_accuracy
from analysis.fits import (
    ChinchillaFit,
    PowerLawFit,
    fit_chinchilla,
    fit_power_law,
)

CHINCHILLA = ChinchillaFit(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28, n_points=0)
LOSS_CURVE = PowerLawFit(E=1.69, A=1071.4, alpha=0.1535, n_points=0)  # Chinchilla's frontier
ACC_CURVE = AccuracyFit(chance=0.25, ceiling=0.8, slope=1.5, midpoint=21.0, n_points=0)
COMPUTE = np.logspace(18, 24, 13)


def covered(boot, truth: dict) -> dict[str, bool]:
    return {k: boot.interval(k)[0] <= v <= boot.interval(k)[1] for k, v in truth.items()}


def test_power_law_intervals_cover_the_truth_in_most_studies():
    hits = []
    for rep in range(10):
        rng = np.random.default_rng(rep)
        loss = LOSS_CURVE.predict(COMPUTE) * np.exp(rng.normal(0, 0.005, COMPUTE.size))
        boot = bootstrap_fit(fit_power_law, COMPUTE, loss, n_resamples=30, confidence=0.9,
                             seed=rep, n_starts=1)
        hits.append(covered(boot, LOSS_CURVE.params()))
    for name in ("E", "A", "alpha"):
        assert sum(h[name] for h in hits) >= 7, (name, hits)


def test_chinchilla_intervals_cover_the_truth():
    hits = []
    for rep in range(4):
        rng = np.random.default_rng(100 + rep)
        N = np.concatenate([np.logspace(np.log10(c) / 2 - 3.2, np.log10(c) / 2 - 0.5, 6)
                            for c in np.logspace(18, 22, 5)])
        D = np.repeat(np.logspace(18, 22, 5), 6) / (6 * N)
        loss = CHINCHILLA.predict(N, D) * np.exp(rng.normal(0, 0.01, N.size))
        boot = bootstrap_fit(fit_chinchilla, N, D, loss, n_resamples=20, confidence=0.9,
                             seed=rep, n_starts=1)
        truth = {k: v for k, v in CHINCHILLA.params().items()}
        hits.append(covered(boot, truth))
        n_star = boot.interval(lambda f: f.optimal_allocation(1e23)[0])  # extrapolated 10x
        hits[-1]["N*(1e23)"] = n_star[0] <= CHINCHILLA.optimal_allocation(1e23)[0] <= n_star[1]
        assert set(boot.intervals()) == set(truth)  # every fitted quantity gets an interval
    for name in ("E", "alpha", "beta", "params_exponent", "N*(1e23)"):
        assert sum(h[name] for h in hits) >= 3, (name, hits)


def test_accuracy_intervals_and_band_cover_the_truth():
    hits, band_hits = [], []
    C = np.repeat(COMPUTE, 2)
    for rep in range(8):
        rng = np.random.default_rng(rep)
        acc = ACC_CURVE.predict(C) + rng.normal(0, 0.015, C.size)
        boot = bootstrap_fit(fit_accuracy, C, acc, chance=0.25, n_resamples=30,
                             confidence=0.9, seed=rep)
        hits.append(covered(boot, ACC_CURVE.params()))
        low, high = boot.band(COMPUTE)
        band_hits.append(np.mean((low <= ACC_CURVE.predict(COMPUTE)) & (ACC_CURVE.predict(COMPUTE) <= high)))
        assert np.all(low <= high) and np.all(np.diff(low) >= -1e-9)  # a sigmoid band rises
    for name in ("ceiling", "slope", "midpoint"):
        assert sum(h[name] for h in hits) >= 5, (name, hits)
    assert np.mean(band_hits) > 0.7


def test_resampling_is_seeded_and_by_run():
    rng = np.random.default_rng(0)
    loss = LOSS_CURVE.predict(COMPUTE) * np.exp(rng.normal(0, 0.005, COMPUTE.size))
    a = bootstrap_fit(fit_power_law, COMPUTE, loss, n_resamples=8, seed=3, n_starts=1)
    b = bootstrap_fit(fit_power_law, COMPUTE, loss, n_resamples=8, seed=3, n_starts=1)
    c = bootstrap_fit(fit_power_law, COMPUTE, loss, n_resamples=8, seed=4, n_starts=1)
    assert a.intervals() == b.intervals()
    assert a.intervals() != c.intervals()

    seen = []

    def record(x, y):
        seen.append(np.asarray(x))
        return fit_power_law(COMPUTE, loss, n_starts=1)

    runs = np.repeat(np.arange(4), 3)  # 4 runs, 3 evaluation points each
    points = np.arange(12.0)
    bootstrap_fit(record, points, points, n_resamples=10, seed=0, groups=runs)
    for drawn in seen[1:]:  # seen[0] is the fit on all points
        counts = np.bincount(drawn.astype(int), minlength=12).reshape(4, 3)
        assert (counts == counts[:, :1]).all()  # a run is drawn whole or not at all
        assert drawn.size == 12


def test_aligned_keyword_columns_are_resampled_with_the_points():
    rng = np.random.default_rng(5)
    C = np.repeat(COMPUTE, 2)
    task_loss = PowerLawFit(E=1.0, A=50.0, alpha=0.08, n_points=0).predict(C)
    acc = 0.25 + 0.55 / (1 + np.exp(6.0 * (task_loss - 1.8))) + rng.normal(0, 0.01, C.size)
    task_loss = task_loss * np.exp(rng.normal(0, 0.004, C.size))
    boot = bootstrap_fit(fit_accuracy, C, acc, chance=0.25, task_loss=task_loss, n_resamples=20,
                         confidence=0.9, seed=0)
    low, high = boot.interval("loss_alpha")
    assert low <= 0.08 <= high and low < high


def test_multiplier_interval_covers_16x():
    rng = np.random.default_rng(7)
    noisy = lambda C: LOSS_CURVE.predict(C) * np.exp(rng.normal(0, 0.003, C.size))  # noqa: E731
    arm = bootstrap_fit(fit_power_law, COMPUTE, noisy(COMPUTE), n_resamples=30, seed=0, n_starts=1)
    mdm = bootstrap_fit(fit_power_law, COMPUTE, noisy(COMPUTE / 16), n_resamples=30, seed=1,
                        n_starts=1)
    estimate, (low, high) = compute_multiplier_interval(mdm, arm, 2.6)
    assert low <= 16.0 <= high
    assert low <= estimate <= high
    # a level near MDM's irreducible loss is reached by some replicates only: the interval is open
    _, (_, high_near_e) = compute_multiplier_interval(mdm, arm, mdm.fit.E + 1e-3)
    assert high_near_e > 1e3


def test_multiplier_interval_takes_replicates_whose_compute_is_out_of_float_range():
    """A steep sigmoid far from its data puts the compute for a level at 10^-400 = 0 or 10^400 = inf:
    x/0 is an infinite ratio, 0/0 says nothing and is left out, and neither stops the interval."""
    from dataclasses import replace

    from analysis.bootstrap import BootstrapFit
    from analysis.fits import compute_multiplier

    slower = replace(ACC_CURVE, midpoint=ACC_CURVE.midpoint + np.log10(16.0))
    underflow = replace(ACC_CURVE, midpoint=np.float64(-400.0))
    assert underflow.required_compute(0.5) == 0.0
    mdm = BootstrapFit(fit=slower, replicates=(slower,) * 40 + (slower, underflow), confidence=0.9, n_failed=0)
    arm = BootstrapFit(fit=ACC_CURVE, replicates=(ACC_CURVE,) * 40 + (underflow, underflow), confidence=0.9,
                       n_failed=0)
    estimate, (low, high) = compute_multiplier_interval(mdm, arm, 0.5)
    assert estimate == pytest.approx(16.0) and (low, high) == pytest.approx((16.0, 16.0))
    with pytest.raises(ValueError, match="out of floating-point range"):
        compute_multiplier(slower, underflow, 0.5)


def test_held_out_budget_is_predicted_and_covered():
    rng = np.random.default_rng(8)
    C = np.repeat(np.logspace(18, 23, 6), 2)  # two seeds per budget
    loss = LOSS_CURVE.predict(C) * np.exp(rng.normal(0, 0.004, C.size))
    check = held_out_check(fit_power_law, C, loss, n_resamples=40, seed=0, n_starts=1)
    assert check.budget == pytest.approx(1e23) and check.n_train == 10
    assert check.observed.size == 2
    np.testing.assert_allclose(check.predicted, LOSS_CURVE.predict(1e23), rtol=0.015)
    assert np.all(np.abs(check.relative_error) < 0.03)
    assert check.all_covered

    broken = loss.copy()
    broken[C == C.max()] *= 1.15  # the largest run diverged: the check must flag it
    assert not held_out_check(fit_power_law, C, broken, n_resamples=40, seed=0,
                              n_starts=1).covered.any()


def test_held_out_two_step_accuracy_slices_the_task_loss_too():
    rng = np.random.default_rng(10)
    C = np.repeat(COMPUTE, 2)
    task_loss = PowerLawFit(E=1.0, A=50.0, alpha=0.08, n_points=0).predict(C)
    acc = 0.25 + 0.55 / (1 + np.exp(6.0 * (task_loss - 1.8))) + rng.normal(0, 0.01, C.size)
    check = held_out_check(fit_accuracy, C, acc, chance=0.25,
                           task_loss=task_loss * np.exp(rng.normal(0, 0.003, C.size)),
                           n_resamples=15, seed=0)
    assert check.n_train == 24 and check.observed.size == 2
    truth = 0.25 + 0.55 / (1 + np.exp(6.0 * (task_loss[-1] - 1.8)))
    np.testing.assert_allclose(check.predicted, truth, atol=0.03)


def test_held_out_chinchilla_needs_a_budget_column():
    rng = np.random.default_rng(9)
    budgets = np.repeat(np.logspace(18, 22, 5), 6)
    N = np.concatenate([np.logspace(np.log10(c) / 2 - 3.2, np.log10(c) / 2 - 0.5, 6)
                        for c in np.logspace(18, 22, 5)])
    D = budgets / (6 * N)
    loss = CHINCHILLA.predict(N, D) * np.exp(rng.normal(0, 0.005, N.size))
    with pytest.raises(ValueError, match="budget="):
        held_out_check(fit_chinchilla, N, D, loss)
    check = held_out_check(fit_chinchilla, N, D, loss, budget=budgets, n_resamples=15,
                           seed=0, n_starts=1)
    assert check.observed.size == 6
    np.testing.assert_allclose(check.predicted, CHINCHILLA.predict(N[-6:], D[-6:]), rtol=0.02)
    assert check.covered.mean() >= 0.5


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: bootstrap_fit(fit_power_law, [], []), "C is empty"),
        (lambda: bootstrap_fit(fit_power_law, [1e20] * 3, [3.0, 2.9, 3.1]), "single budget"),
        (lambda: bootstrap_fit(fit_power_law, COMPUTE, LOSS_CURVE.predict(COMPUTE),
                               confidence=95), "confidence must be in"),
        (lambda: bootstrap_fit(fit_power_law, COMPUTE[:3], LOSS_CURVE.predict(COMPUTE[:3]),
                               groups=[0, 0, 1], n_resamples=20), "could not be fitted"),
        (lambda: held_out_check(fit_power_law, [1e20] * 3, [3.0, 2.9, 3.1]), "one budget"),
        (lambda: held_out_check(fit_power_law, [1e19, np.nan], [3.0, 2.9]), "NaN"),
    ],
)
def test_bad_input_gives_a_clear_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()
