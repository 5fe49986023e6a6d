"""Scaling-law fits of loss for FLOP-matched ARM vs MDM studies (accuracy curves: ``analysis.accuracy_fits``).

Every fit is a small frozen dataclass with the fitted parameters, a ``predict`` method, a
``params()`` dict (what the bootstrap in ``analysis.bootstrap`` puts intervals on) and
``compute_for(level)``: the training compute C = 6ND at which the fitted curve reaches a loss or
an accuracy. ``compute_multiplier`` divides two of those (SMDM, Nie et al. 2024: MDM needs about
16x the compute of ARM to reach the same validation likelihood).

Loss fits follow Hoffmann et al. 2022 (Chinchilla, App. D.2) as re-done by Besiroglu et al. 2024
("Chinchilla scaling: a replication attempt"): parameters in log space (a = log A, e = log E, ...),
the prediction written as a log-sum-exp so it is evaluated in log space, a Huber loss (delta 1e-3)
on log-space residuals, and L-BFGS started from a grid of initialisations. Logs of N, D, C are
centred on their geometric means before fitting, so one grid serves any unit; parameters are
reported in raw units. Exponents are bounded to [1e-4, 5] (L-BFGS-B) so a fit on few points
cannot turn a decreasing law into an increasing one; the original fits are unconstrained.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
from dataclasses import dataclass

import numpy as np
from scipy import optimize

from models.flops import FLOPS_PER_PARAM_PER_TOKEN, tokens_for_budget

HUBER_DELTA = 1e-3
LOSS, ACCURACY = "loss", "accuracy"


@functools.cache
def _blas_controller():
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # optional: only a speed-up
        return None
    return ThreadpoolController()


def single_threaded_blas():
    """Context in which BLAS runs on one thread.

    The optimisers here work on vectors of 3-5 parameters; a multi-threaded BLAS spends more on
    waking threads than on arithmetic (20-50x slower fits on a busy 2-core machine).
    """
    controller = _blas_controller()
    return controller.limit(limits=1, user_api="blas") if controller else contextlib.nullcontext()


# ---------------------------------------------------------------------------------------------
# input checks: every bad input becomes a ValueError that says what to fix
# ---------------------------------------------------------------------------------------------
def _column(name: str, values, *, positive: bool = False) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty: there are no points to fit")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ValueError(
            f"{name} has {bad.size} non-finite value(s) (NaN/inf) at positions {bad[:5].tolist()}; "
            "drop or re-evaluate those runs before fitting"
        )
    if positive and (arr <= 0).any():
        raise ValueError(f"{name} must be > 0 (it enters a logarithm); got min {arr.min():g}")
    return arr


def _columns(**named) -> list[np.ndarray]:
    """Validate columns and check that they are aligned (one value per point)."""
    positive = named.pop("_positive", ())
    arrays = [_column(k, v, positive=k in positive) for k, v in named.items()]
    lengths = {k: a.size for k, a in zip(named, arrays)}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"columns must have one value per point; got lengths {lengths}")
    return arrays


def _require_distinct(name: str, values: np.ndarray, minimum: int, n_params: int) -> None:
    distinct = np.unique(np.round(np.log10(np.abs(values) + 1e-300), 6)).size
    if distinct < minimum:
        raise ValueError(
            f"{name} takes {distinct} distinct value(s) but a {n_params}-parameter fit needs at "
            f"least {minimum}: a single budget leaves nothing to fit; add budgets to the grid"
        )


# ---------------------------------------------------------------------------------------------
# the Hoffmann/Besiroglu objective: Huber loss on log-space residuals of a log-sum-exp model
# ---------------------------------------------------------------------------------------------
def _huber(r: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """Huber loss and its derivative, divided by delta so gradients are O(1) for L-BFGS."""
    quad = np.abs(r) <= delta
    value = np.where(quad, 0.5 * r**2 / delta, np.abs(r) - 0.5 * delta)
    return value, np.where(quad, r / delta, np.sign(r))


def _lse_terms(theta: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Terms [s_j - p_j * x_j ..., e] whose log-sum-exp is log L-hat. theta: [..., 2m+1], x: [m, n]."""
    m = x.shape[0]
    s, p, e = theta[..., 0 : 2 * m : 2], theta[..., 1 : 2 * m : 2], theta[..., -1]
    power = s[..., :, None] - p[..., :, None] * x  # [..., m, n]
    const = np.broadcast_to(e[..., None, None], power.shape[:-2] + (1, x.shape[1]))
    return np.concatenate([power, const], axis=-2)  # [..., m+1, n]


def _logsumexp(terms: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Stable log-sum-exp along ``axis`` and the softmax weights (its gradient wrt each term)."""
    top = terms.max(axis=axis, keepdims=True)
    exp = np.exp(terms - top)
    total = exp.sum(axis=axis, keepdims=True)
    return np.squeeze(top + np.log(total), axis=axis), exp / total


def _lse_objective(theta, x, log_y, delta):
    lse, weights = _logsumexp(_lse_terms(theta, x), axis=0)
    value, g = _huber(lse - log_y, delta)
    m = x.shape[0]
    grad = np.empty_like(theta)
    grad[0 : 2 * m : 2] = (weights[:m] * g).sum(axis=1)
    grad[1 : 2 * m : 2] = -(weights[:m] * x * g).sum(axis=1)
    grad[-1] = (weights[m] * g).sum()
    return value.sum(), grad


def _fit_lse(x, log_y, grid, bounds, n_starts, delta):
    """Evaluate the objective on the whole grid, run L-BFGS-B from the best ``n_starts`` points.

    Hoffmann et al. run L-BFGS from every grid point; starting from the best few of a dense grid
    finds the same minimum at a fraction of the cost (pass n_starts=None for every point).
    """
    grid_values = _huber(_logsumexp(_lse_terms(grid, x), axis=-2)[0] - log_y, delta)[0].sum(-1)
    starts = np.argsort(grid_values)[: n_starts or len(grid)]
    best = None
    with single_threaded_blas():
        for i in starts:
            res = optimize.minimize(
                _lse_objective, grid[i], args=(x, log_y, delta), jac=True, method="L-BFGS-B",
                bounds=bounds, options={"maxiter": 5000, "ftol": 1e-15, "gtol": 1e-10},
            )
            if np.isfinite(res.fun) and (best is None or res.fun < best.fun):
                best = res
    return best.x, float(best.fun)


def _grid(*axes) -> np.ndarray:
    return np.array(list(itertools.product(*axes)), dtype=float)


# scales s are logs of a term's size at the centre of the data, exponents p are slopes in log-log
_SCALES, _EXPONENTS = (-4.0, -2.5, -1.0, 0.0, 1.0), (0.05, 0.15, 0.4, 1.0, 2.0)
_LOG_E = (-1.0, -0.5, 0.0, 0.5, 1.0, 1.5)
_POWER_GRID = _grid(_SCALES, _EXPONENTS + (0.025, 0.1, 0.25), _LOG_E)
_CHINCHILLA_GRID = _grid(_SCALES, _EXPONENTS, _SCALES, _EXPONENTS, _LOG_E)
_EXPONENT_BOUNDS = (1e-4, 5.0)


def _unreachable(kind: str, level: float, reason: str) -> ValueError:
    return ValueError(f"{kind} level {level:g} is not reachable by this fit: {reason}")


# ---------------------------------------------------------------------------------------------
# loss fits
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PowerLawFit:
    """L(C) = E + A * C^(-alpha) (Kaplan et al. 2020 with an irreducible term, Hoffmann eq. 2 form).

    ``required_compute(level)`` is the inverse with unreachable levels as +inf (used by the
    bootstrap); ``compute_for(level)`` raises instead. The other fits follow the same protocol.
    """

    E: float
    A: float
    alpha: float
    n_points: int
    quantity: str = LOSS

    def predict(self, C) -> np.ndarray:
        return self.E + self.A * np.asarray(C, dtype=float) ** (-self.alpha)

    def params(self) -> dict[str, float]:
        return {"E": self.E, "A": self.A, "alpha": self.alpha}

    def required_compute(self, level: float) -> float:
        if level <= self.E:
            return np.inf
        return float((self.A / (level - self.E)) ** (1.0 / self.alpha))

    def compute_for(self, level: float) -> float:
        """Compute C at which the fitted loss equals ``level`` (needs level > E)."""
        if level <= self.E:
            raise _unreachable(LOSS, level, f"it is at or below the irreducible loss E={self.E:.4g}")
        return self.required_compute(level)


def fit_power_law(C, loss, *, delta: float = HUBER_DELTA, n_starts: int | None = 4) -> PowerLawFit:
    """Fit L(C) = E + A*C^-alpha, i.e. log L = LSE(a - alpha*log C, e), with the Chinchilla objective."""
    C, loss = _columns(C=C, loss=loss, _positive=("C", "loss"))
    _require_distinct("C", C, 3, 3)
    log_ref = np.log(C).mean()
    x = (np.log(C) - log_ref)[None, :]
    bounds = [(None, None), _EXPONENT_BOUNDS, (None, None)]
    (s, alpha, e), _ = _fit_lse(x, np.log(loss), _POWER_GRID, bounds, n_starts, delta)
    return PowerLawFit(E=float(np.exp(e)), A=float(np.exp(s + alpha * log_ref)), alpha=float(alpha),
                       n_points=C.size)


@dataclass(frozen=True)
class ChinchillaFit:
    """L(N, D) = E + A/N^alpha + B/D^beta (Hoffmann et al. 2022, eq. 10).

    Under C = 6ND the loss-minimising allocation is N*(C) = G (C/6)^(beta/(alpha+beta)),
    D*(C) = G^-1 (C/6)^(alpha/(alpha+beta)) with G = (alpha A / (beta B))^(1/(alpha+beta))
    (Hoffmann eq. 4), and the loss along it is a power law in C with exponent alpha*beta/(alpha+beta).
    """

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    n_points: int
    quantity: str = LOSS

    def predict(self, N, D) -> np.ndarray:
        N, D = np.asarray(N, dtype=float), np.asarray(D, dtype=float)
        return self.E + self.A * N ** (-self.alpha) + self.B * D ** (-self.beta)

    @property
    def G(self) -> float:
        return (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / (self.alpha + self.beta))

    @property
    def params_exponent(self) -> float:
        """a in N* proportional to C^a."""
        return self.beta / (self.alpha + self.beta)

    @property
    def tokens_exponent(self) -> float:
        """b in D* proportional to C^b."""
        return self.alpha / (self.alpha + self.beta)

    def optimal_allocation(self, C) -> tuple[np.ndarray, np.ndarray]:
        """Compute-optimal (N*, D*) for training compute C = 6ND."""
        C = np.asarray(C, dtype=float)
        N = self.G * (C / FLOPS_PER_PARAM_PER_TOKEN) ** self.params_exponent
        return N, tokens_for_budget(C, N)

    def optimal_loss(self, C) -> np.ndarray:
        return self.predict(*self.optimal_allocation(C))

    def params(self) -> dict[str, float]:
        return {"E": self.E, "A": self.A, "B": self.B, "alpha": self.alpha, "beta": self.beta,
                "params_exponent": self.params_exponent, "tokens_exponent": self.tokens_exponent}

    def required_compute(self, level: float) -> float:
        if level <= self.E:
            return np.inf
        k = self.A * self.G ** (-self.alpha) + self.B * self.G**self.beta
        gamma = self.alpha * self.beta / (self.alpha + self.beta)
        return float(FLOPS_PER_PARAM_PER_TOKEN * (k / (level - self.E)) ** (1.0 / gamma))

    def compute_for(self, level: float) -> float:
        """Compute at which the compute-optimal model reaches loss ``level`` (needs level > E)."""
        if level <= self.E:
            raise _unreachable(LOSS, level, f"it is at or below the irreducible loss E={self.E:.4g}")
        return self.required_compute(level)


def fit_chinchilla(N, D, loss, *, delta: float = HUBER_DELTA,
                   n_starts: int | None = 4) -> ChinchillaFit:
    """Fit Hoffmann et al.'s parametric loss (their Approach 3) as Hoffmann/Besiroglu do.

    Minimises sum_i Huber_delta(LSE(a - alpha log N_i, b - beta log D_i, e) - log L_i) with
    L-BFGS from a grid over (a, alpha, b, beta, e). Needs at least two budgets N*D: points of a
    single IsoFLOP slice cannot separate the N and D terms.
    """
    N, D, loss = _columns(N=N, D=D, loss=loss, _positive=("N", "D", "loss"))
    if N.size < 5:
        raise ValueError(f"a 5-parameter Chinchilla fit needs at least 5 points, got {N.size}")
    _require_distinct("compute N*D", N * D, 2, 5)
    _require_distinct("N", N, 2, 5)
    _require_distinct("D", D, 2, 5)
    ref_n, ref_d = np.log(N).mean(), np.log(D).mean()
    x = np.vstack([np.log(N) - ref_n, np.log(D) - ref_d])
    bounds = [(None, None), _EXPONENT_BOUNDS, (None, None), _EXPONENT_BOUNDS, (None, None)]
    (sa, alpha, sb, beta, e), _ = _fit_lse(x, np.log(loss), _CHINCHILLA_GRID, bounds, n_starts, delta)
    return ChinchillaFit(E=float(np.exp(e)), A=float(np.exp(sa + alpha * ref_n)),
                         B=float(np.exp(sb + beta * ref_d)), alpha=float(alpha), beta=float(beta),
                         n_points=N.size)


def fit_loss_frontier(C, N, loss, *, budget=None, **kwargs) -> PowerLawFit:
    """Power law through the compute-efficient frontier: per budget, the best model size.

    Points sharing a (budget, N) (seeds) are averaged first, then the size with the lowest loss is
    kept at each budget (Kaplan et al. 2020's envelope) at its mean compute C. ``budget`` (e.g.
    ``flops_budget``) groups runs whose final C differs slightly; by default C itself is the budget.
    """
    C, N, loss = _columns(C=C, N=N, loss=loss, _positive=("C", "N", "loss"))
    budget = C if budget is None else _columns(C=C, budget=budget, _positive=("budget",))[1]
    keys = np.round(np.log10(np.column_stack([budget, N])), 6)
    pairs, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    counts = np.bincount(inverse)
    mean_loss, mean_c = (np.bincount(inverse, weights=w) / counts for w in (loss, C))
    best = [np.flatnonzero(pairs[:, 0] == b)[np.argmin(mean_loss[pairs[:, 0] == b])]
            for b in np.unique(pairs[:, 0])]
    return fit_power_law(mean_c[best], mean_loss[best], **kwargs)


@dataclass(frozen=True)
class IsoFlopFit:
    """Parabola in log N through one IsoFLOP slice (Hoffmann et al. Approach 2)."""

    coefficients: tuple[float, float, float]  # loss = c0 + c1 x + c2 x^2, x = ln N
    n_points: int

    def predict(self, N) -> np.ndarray:
        c0, c1, c2 = self.coefficients
        x = np.log(np.asarray(N, dtype=float))
        return c0 + c1 * x + c2 * x**2

    @property
    def optimal_params(self) -> float:
        c0, c1, c2 = self.coefficients
        return float(np.exp(-c1 / (2 * c2)))

    @property
    def optimal_loss(self) -> float:
        return float(self.predict(self.optimal_params))

    def params(self) -> dict[str, float]:
        return {"optimal_params": self.optimal_params, "optimal_loss": self.optimal_loss}


def fit_isoflop(N, loss) -> IsoFlopFit:
    """Least-squares parabola of loss in ln N at one budget; its vertex is N*(C) at that budget."""
    N, loss = _columns(N=N, loss=loss, _positive=("N",))
    _require_distinct("N", N, 3, 3)
    c2, c1, c0 = np.polyfit(np.log(N), loss, 2)
    if c2 <= 0:
        raise ValueError("the IsoFLOP slice is not convex in log N (no interior minimum); "
                         "add model sizes on both sides of the optimum")
    return IsoFlopFit(coefficients=(float(c0), float(c1), float(c2)), n_points=N.size)


@dataclass(frozen=True)
class AllocationFit:
    """N*(C) = G C^a (Hoffmann et al. 2022, Approach 2): the loss-optimal size against compute.

    Fitted by least squares in log-log space through the IsoFLOP optima; with C = 6 N D the optimal
    tokens follow as D*(C) = C / (6 G C^a), exponent 1 - a. Chinchilla finds a = 0.49 (0.462-0.534);
    Kaplan et al. 2020 a = 0.73.
    """

    exponent: float
    exponent_low: float
    exponent_high: float
    coefficient: float  # G
    n_points: int
    confidence: float

    def optimal_params(self, C) -> np.ndarray:
        return self.coefficient * np.asarray(C, dtype=float) ** self.exponent

    def optimal_tokens(self, C) -> np.ndarray:
        C = np.asarray(C, dtype=float)
        return tokens_for_budget(C, self.optimal_params(C))

    def params(self) -> dict[str, float]:
        return {"a (N* ~ C^a)": self.exponent, "b (D* ~ C^b) = 1 - a": 1.0 - self.exponent}


def fit_allocation(C, optimal_params, *, confidence: float = 0.9) -> AllocationFit:
    """Power law through (C, N*) pairs, with a Student-t interval on the exponent."""
    from scipy import stats

    C, n_opt = _columns(C=C, optimal_params=optimal_params, _positive=("C", "optimal_params"))
    _require_distinct("C", C, 3, 2)
    result = stats.linregress(np.log(C), np.log(n_opt))
    half = stats.t.ppf(0.5 + confidence / 2, C.size - 2) * result.stderr
    return AllocationFit(exponent=float(result.slope), exponent_low=float(result.slope - half),
                         exponent_high=float(result.slope + half), coefficient=float(np.exp(result.intercept)),
                         n_points=C.size, confidence=confidence)


# ---------------------------------------------------------------------------------------------
# comparing two objectives
# ---------------------------------------------------------------------------------------------
def multiplier_level(fits: dict, largest_compute: dict) -> float:
    """The level at which a compute multiplier is read: the worse of the objectives' best fitted levels.

    Each objective's best level is its fit at its largest compute (``largest_compute[objective]``).
    Reading C_MDM / C_ARM at the worse one keeps the lagging objective's fit inside the compute it
    was trained with; only the leading one's fit is read below its largest budget, where its own
    runs are. At the leader's best level the lagging fit would be extrapolated to a loss it never
    came near, where its fitted floor E decides the answer (at small scale an MDM's floor can sit
    above what an ARM reaches). For losses the worse level is the higher, for accuracies the lower.
    """
    best = [float(fit.predict(largest_compute[objective])) for objective, fit in fits.items()]
    return max(best) if next(iter(fits.values())).quantity == LOSS else min(best)


def compute_multiplier(fit_a, fit_b, level: float) -> float:
    """C_a(level) / C_b(level): how many times the compute of b that a needs to reach ``level``.

    For loss fits ``level`` is a loss (lower is better); for accuracy fits an accuracy. SMDM's
    headline is compute_multiplier(mdm_loss_fit, arm_loss_fit, level) of about 16.
    """
    if fit_a.quantity != fit_b.quantity:
        raise ValueError(f"cannot compare a {fit_a.quantity} fit with a {fit_b.quantity} fit")
    compute = []
    for name, fit in (("fit_a", fit_a), ("fit_b", fit_b)):
        try:
            compute.append(fit.compute_for(float(level)))
        except ValueError as err:
            raise ValueError(f"{name} ({type(fit).__name__}): {err}") from None
    if not all(0.0 < c < np.inf for c in compute):
        raise ValueError(f"the compute at level {level:g} is out of floating-point range (fit_a "
                         f"{compute[0]:.3g}, fit_b {compute[1]:.3g} FLOPs): the level lies where a fit "
                         "is extrapolated far beyond its data")
    return compute[0] / compute[1]
