"""Scaling-law fits recover known parameters from noisy synthetic data (analysis/fits.py).

Tolerances are stated per test; the data sizes mirror a small study (5 budgets x 7 model sizes
for Chinchilla, 13 budgets for a compute power law) with 1% (loss) or 1.5 points (accuracy) noise.
"""

import numpy as np
import pytest
from scipy import optimize

from analysis.accuracy_fits import AccuracyFit, fit_accuracy
from analysis.fits import (
    ChinchillaFit,
    PowerLawFit,
    compute_multiplier,
    fit_chinchilla,
    fit_isoflop,
    fit_loss_frontier,
    fit_power_law,
)

# Hoffmann et al. 2022, eq. 10 (published Chinchilla fit)
CHINCHILLA = ChinchillaFit(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28, n_points=0)


def chinchilla_grid(rng, noise=0.01, budgets=np.logspace(18, 22, 5), sizes=7):
    """IsoFLOP design: at each budget, model sizes spread around the optimum; multiplicative noise."""
    N, D = [], []
    for c in budgets:
        for n in np.logspace(np.log10(c) / 2 - 3.2, np.log10(c) / 2 - 0.5, sizes):
            N.append(n)
            D.append(c / (6 * n))
    N, D = np.array(N), np.array(D)
    return N, D, CHINCHILLA.predict(N, D) * np.exp(rng.normal(0.0, noise, N.size))


def frontier_power_law() -> PowerLawFit:
    """The loss of the compute-optimal Chinchilla model, written as a power law in C."""
    c = CHINCHILLA
    gamma = c.alpha * c.beta / (c.alpha + c.beta)
    k = c.A * c.G ** (-c.alpha) + c.B * c.G**c.beta
    return PowerLawFit(E=c.E, A=k * 6.0**gamma, alpha=gamma, n_points=0)


def test_chinchilla_recovers_published_parameters():
    rng = np.random.default_rng(0)
    fit = fit_chinchilla(*chinchilla_grid(rng))
    assert fit.E == pytest.approx(1.69, rel=0.03)
    assert fit.alpha == pytest.approx(0.34, rel=0.08)
    assert fit.beta == pytest.approx(0.28, rel=0.08)
    # A and B trade off against the exponents: only their order of magnitude is identified
    assert abs(np.log(fit.A / 406.4)) < 0.5 and abs(np.log(fit.B / 410.7)) < 0.5
    N, D = np.array([1e9, 7e10]), np.array([2e10, 1.4e12])  # outside the fitted range
    np.testing.assert_allclose(fit.predict(N, D), CHINCHILLA.predict(N, D), rtol=0.02)


def test_chinchilla_optimal_allocation_is_the_argmin_along_the_isoflop():
    for C in (1e20, 3.8e23):
        n_star, d_star = CHINCHILLA.optimal_allocation(C)
        res = optimize.minimize_scalar(lambda x: CHINCHILLA.predict(np.exp(x), C / (6 * np.exp(x))),
                                       bounds=(np.log(1e6), np.log(1e13)), method="bounded",
                                       options={"xatol": 1e-9})
        assert n_star == pytest.approx(np.exp(res.x), rel=1e-3)
        assert 6 * n_star * d_star == pytest.approx(C)
    # Hoffmann et al. Table A3 style check: exponents a + b = 1, a = beta / (alpha + beta)
    assert CHINCHILLA.params_exponent == pytest.approx(0.28 / 0.62)


def test_chinchilla_compute_for_inverts_the_optimal_loss():
    for level in (2.0, 2.5, 3.0):
        assert CHINCHILLA.optimal_loss(CHINCHILLA.compute_for(level)) == pytest.approx(level)
    np.testing.assert_allclose(frontier_power_law().predict([1e19, 1e24]),
                               CHINCHILLA.optimal_loss(np.array([1e19, 1e24])), rtol=1e-10)


def test_power_law_recovers_parameters():
    truth = frontier_power_law()
    C = np.logspace(18, 24, 13)
    loss = truth.predict(C) * np.exp(np.random.default_rng(1).normal(0, 0.005, C.size))
    fit = fit_power_law(C, loss)
    assert fit.E == pytest.approx(truth.E, rel=0.03)
    assert fit.alpha == pytest.approx(truth.alpha, rel=0.1)
    assert abs(np.log(fit.A / truth.A)) < 0.5
    assert fit.predict(1e25) == pytest.approx(truth.predict(1e25), rel=0.01)


def test_power_law_is_robust_to_an_outlier():
    """The Huber loss (delta 1e-3) makes one diverged run barely move the fit."""
    truth = frontier_power_law()
    C = np.logspace(18, 24, 13)
    loss = truth.predict(C) * np.exp(np.random.default_rng(2).normal(0, 0.003, C.size))
    loss[6] *= 1.3
    fit = fit_power_law(C, loss)
    assert fit.alpha == pytest.approx(truth.alpha, rel=0.1)
    assert fit.predict(1e25) == pytest.approx(truth.predict(1e25), rel=0.01)


def test_loss_frontier_takes_the_best_model_per_budget():
    rng = np.random.default_rng(3)
    N, D, loss = chinchilla_grid(rng, noise=0.002, sizes=9)
    fit = fit_loss_frontier(6 * N * D, N, loss)
    # the best of 9 sizes sits close to the optimum: the frontier tracks the optimal loss
    C = np.logspace(18, 22, 5)
    np.testing.assert_allclose(fit.predict(C), CHINCHILLA.optimal_loss(C), rtol=0.01)


def test_loss_frontier_groups_runs_by_budget():
    """Final evaluations land a little off the nominal budget (whole optimizer steps)."""
    rng = np.random.default_rng(3)
    N, D, loss = chinchilla_grid(rng, noise=0.002, sizes=9)
    budget = 6 * N * D
    C = budget * rng.uniform(0.97, 1.0, N.size)
    fit = fit_loss_frontier(C, N, loss, budget=budget)
    assert fit.n_points == 5  # one frontier point per budget, not one per run
    np.testing.assert_allclose(fit.predict(np.logspace(18, 22, 5)),
                               CHINCHILLA.optimal_loss(np.logspace(18, 22, 5)), rtol=0.015)
    assert fit_loss_frontier(C, N, loss).n_points == N.size  # without budgets every run is one


def test_isoflop_parabola_finds_the_optimal_size():
    C = 1e21
    N = np.logspace(8.5, 10.5, 9)
    fit = fit_isoflop(N, CHINCHILLA.predict(N, C / (6 * N)))
    n_star, _ = CHINCHILLA.optimal_allocation(C)
    assert fit.optimal_params == pytest.approx(n_star, rel=0.1)
    assert fit.optimal_loss == pytest.approx(float(CHINCHILLA.optimal_loss(C)), rel=1e-3)
    with pytest.raises(ValueError, match="not convex"):
        fit_isoflop(N, -CHINCHILLA.predict(N, C / (6 * N)))


def test_accuracy_sigmoid_recovers_parameters():
    truth = AccuracyFit(chance=0.25, ceiling=0.8, slope=1.5, midpoint=21.0, n_points=0)
    C = np.repeat(np.logspace(18, 24, 13), 2)
    acc = truth.predict(C) + np.random.default_rng(4).normal(0, 0.015, C.size)
    fit = fit_accuracy(C, acc, chance=0.25)
    assert fit.ceiling == pytest.approx(0.8, abs=0.03)
    assert fit.slope == pytest.approx(1.5, rel=0.15)
    assert fit.midpoint == pytest.approx(21.0, abs=0.15)
    assert fit.chance == 0.25


def test_accuracy_in_percent_needs_max_score():
    truth = AccuracyFit(chance=25.0, ceiling=80.0, slope=1.5, midpoint=21.0, n_points=0)
    C = np.logspace(18, 24, 13)
    with pytest.raises(ValueError, match="max_score=100"):
        fit_accuracy(C, truth.predict(C), chance=25.0)
    fit = fit_accuracy(C, truth.predict(C), chance=25.0, max_score=100.0)
    assert fit.ceiling == pytest.approx(80.0, abs=0.5)


def test_two_step_accuracy_recovers_both_steps():
    """OLMo ladder: task loss is a power law of C, accuracy a sigmoid of task loss."""
    rng = np.random.default_rng(5)
    C = np.repeat(np.logspace(18, 24, 13), 2)
    loss_truth = PowerLawFit(E=1.0, A=50.0, alpha=0.08, n_points=0)
    task_loss = loss_truth.predict(C) * np.exp(rng.normal(0, 0.004, C.size))
    acc = 0.25 + 0.55 * (1 / (1 + np.exp(6.0 * (task_loss - 1.8)))) + rng.normal(0, 0.01, C.size)
    fit = fit_accuracy(C, acc, chance=0.25, task_loss=task_loss)
    assert fit.task_loss.alpha == pytest.approx(0.08, rel=0.15)
    assert fit.ceiling == pytest.approx(0.8, abs=0.04)
    assert fit.midpoint == pytest.approx(1.8, abs=0.05)
    assert fit.slope == pytest.approx(6.0, rel=0.2)
    level = 0.6
    assert fit.predict(fit.compute_for(level)) == pytest.approx(level)


def test_compute_multiplier_of_curves_shifted_by_16x():
    arm = frontier_power_law()
    # the MDM curve reaches every loss at 16x the compute: L_mdm(C) = L_arm(C / 16)
    mdm = PowerLawFit(E=arm.E, A=arm.A * 16**arm.alpha, alpha=arm.alpha, n_points=0)
    for level in (2.2, 2.6, 3.5):
        assert compute_multiplier(mdm, arm, level) == pytest.approx(16.0)
        assert compute_multiplier(arm, mdm, level) == pytest.approx(1 / 16)
    acc_arm = AccuracyFit(chance=0.25, ceiling=0.8, slope=1.5, midpoint=21.0, n_points=0)
    acc_mdm = AccuracyFit(chance=0.25, ceiling=0.8, slope=1.5, midpoint=21.0 + np.log10(16), n_points=0)
    assert compute_multiplier(acc_mdm, acc_arm, 0.5) == pytest.approx(16.0)


def test_compute_multiplier_from_noisy_fits():
    rng = np.random.default_rng(6)
    arm = frontier_power_law()
    C = np.logspace(18, 24, 13)
    noisy = lambda C_eff: arm.predict(C_eff) * np.exp(rng.normal(0, 0.003, C.size))  # noqa: E731
    fit_arm = fit_power_law(C, noisy(C))
    fit_mdm = fit_power_law(C, noisy(C / 16))
    assert compute_multiplier(fit_mdm, fit_arm, 2.6) == pytest.approx(16.0, rel=0.25)


def test_compute_multiplier_unreachable_levels_are_clear_errors():
    arm = frontier_power_law()
    mdm = PowerLawFit(E=1.9, A=arm.A, alpha=arm.alpha, n_points=0)
    with pytest.raises(ValueError, match=r"fit_a .*irreducible loss E=1\.9"):
        compute_multiplier(mdm, arm, 1.8)
    acc = AccuracyFit(chance=0.25, ceiling=0.8, slope=1.5, midpoint=21.0, n_points=0)
    higher = AccuracyFit(chance=0.25, ceiling=0.9, slope=1.5, midpoint=21.0, n_points=0)
    assert compute_multiplier(higher, acc, 0.7) > 0
    with pytest.raises(ValueError, match=r"fit_b .*ceiling 0\.8"):
        compute_multiplier(higher, acc, 0.85)
    with pytest.raises(ValueError, match="cannot compare a loss fit with an? accuracy fit"):
        compute_multiplier(arm, acc, 0.5)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: fit_power_law([], []), "C is empty"),
        (lambda: fit_power_law([1e20] * 4, [3.0, 3.1, 2.9, 3.0]), "single budget"),
        (lambda: fit_power_law([1e19, 1e20, np.nan, 1e22], [3, 2.8, 2.6, 2.5]), "NaN"),
        (lambda: fit_power_law([1e19, 1e20, 1e21], [3.0, 2.8]), "one value per point"),
        (lambda: fit_power_law([1e19, -1e20, 1e21], [3.0, 2.8, 2.7]), "must be > 0"),
        (lambda: fit_chinchilla([1e8, 2e8, 4e8, 8e8, 1.6e9], [8e9, 4e9, 2e9, 1e9, 5e8],
                                [3.0, 2.9, 2.85, 2.9, 3.0]), "single budget"),
        (lambda: fit_accuracy([1e19, 1e20, 1e21], [0.3, np.nan, 0.5], chance=0.25), "NaN"),
        (lambda: fit_accuracy([1e20, 1e20, 1e20], [0.3, 0.4, 0.5], chance=0.25), "single budget"),
    ],
)
def test_bad_input_gives_a_clear_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()
