"""One validation pass over a run's config: everything the run will need, checked before any work.

Every entry point runs it first: the planner for each run of a grid (so the dry run and the launch
refuse what a job would fail on, before anything is written or submitted), and ``studies.run`` for a
config given by hand. A bad value found by a job after hours of training, with no checkpoint kept
for the evaluation that failed, costs the whole run; found here it costs nothing.

It covers the schema's consistency (``studies.config.check_run_config``), the seed, the precision,
the optimiser, the schedule, the step count, the evaluation suite and its settings, what the data
section reads from disk (``data.files`` globs, ``data.tokenizer.path``), and credentials in the
tracking URI the run would use. Each error is a
``ConfigError`` naming the field, the value and the fix. No torch: the planner stays instant.
"""

from __future__ import annotations

import functools
import math
import os

from studies.config import ConfigError, RunConfig, check_run_config
from studies.credentials import check_no_credentials

# Lightning's precision flags (lightning.fabric.connector._PRECISION_INPUT), written out so the
# planner need not import Lightning.
PRECISIONS = ("transformer-engine", "transformer-engine-float16", "16-true", "16-mixed", "bf16-true",
              "bf16-mixed", "32-true", "64-true", "64", "32", "16", "bf16")
# Above this a run is a typo (budgets=[1e300]) rather than a study: 1e9 steps of one sequence of the
# smallest preset are already far beyond any grid here.
MAX_STEPS = 10**9
MAX_SEED = 2**32 - 1  # numpy's and Lightning's seed range


def validate_run(cfg: RunConfig) -> None:
    """Raise ConfigError for anything in ``cfg`` that would make the run fail or mean nonsense."""
    _check_seed(cfg.seed)
    _check_trainer(cfg)  # first: the consistency checks divide by the batch sizes
    try:
        check_run_config(cfg)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    _check_optim(cfg)
    _check_schedule(cfg)
    _check_eval(cfg)
    _check_data(cfg)
    if cfg.tracking.enabled and not cfg.tracking.uri:  # the store the run falls back to
        try:
            check_no_credentials(os.environ.get("MLFLOW_TRACKING_URI"), "MLFLOW_TRACKING_URI")
        except ValueError as error:
            raise ConfigError(str(error)) from None


def first_line(error: BaseException) -> str:
    """What a command prints for a user's error: its message's first line (no traceback)."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _fail(message: str) -> None:
    raise ConfigError(message)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_seed(seed) -> None:
    if not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        _fail(f"seed={seed!r} must be an integer in [0, {MAX_SEED}] (seeds=[0, 1, ...] in a grid)")


def _check_trainer(cfg: RunConfig) -> None:
    t = cfg.trainer
    if t.precision not in PRECISIONS:
        _fail(f"trainer.precision={t.precision!r} is not a precision Lightning knows; use one of "
              f"bf16-mixed (GPU), 32-true (CPU), 16-mixed, bf16-true")
    for name in ("seq_len", "global_batch_size", "micro_batch_size", "devices", "num_nodes",
                 "log_every_n_steps", "val_every_n_steps", "val_batches", "checkpoint_every_n_steps"):
        value = getattr(t, name)
        if value < 1:
            _fail(f"trainer.{name}={value} must be at least 1")
    if t.num_workers < 0:
        _fail(f"trainer.num_workers={t.num_workers} must be 0 (load in the main process) or more")
    if t.peak_flops_per_device is not None and not (_finite(t.peak_flops_per_device) and t.peak_flops_per_device > 0):
        _fail(f"trainer.peak_flops_per_device={t.peak_flops_per_device} must be a positive FLOP/s figure "
              "(e.g. 989e12 for an H100 SXM in bf16) or null")
    if cfg.budget.steps > MAX_STEPS:
        _fail(f"the budget of {cfg.budget.flops_budget:g} FLOPs needs {cfg.budget.steps:.3g} optimizer steps, "
              f"more than {MAX_STEPS:.0e}; check the budget (e.g. 1e20, not 1e300) or raise the batch size")


def _check_optim(cfg: RunConfig) -> None:
    o = cfg.optim
    if not (_finite(o.lr) and o.lr > 0):
        _fail(f"optim.lr={o.lr} must be a positive finite learning rate (LLaDA: 4e-4)")
    if not (_finite(o.weight_decay) and o.weight_decay >= 0):
        _fail(f"optim.weight_decay={o.weight_decay} must be 0 or more (LLaDA: 0.1)")
    if len(o.betas) != 2 or not all(_finite(b) and 0 <= b < 1 for b in o.betas):
        _fail(f"optim.betas={list(o.betas)} must be two numbers in [0, 1) (LLaDA: [0.9, 0.95])")
    if not (_finite(o.eps) and o.eps > 0):
        _fail(f"optim.eps={o.eps} must be positive (e.g. 1e-8)")
    if not (_finite(o.grad_clip) and o.grad_clip >= 0):
        _fail(f"optim.grad_clip={o.grad_clip} must be 0 (no clipping) or a positive norm (e.g. 1.0)")


def _check_schedule(cfg: RunConfig) -> None:
    s = cfg.schedule
    if s.warmup_steps < 0:
        _fail(f"schedule.warmup_steps={s.warmup_steps} must be 0 or more")
    for name in ("max_warmup_fraction", "drop_ratio", "final_ratio"):
        value = getattr(s, name)
        if not (_finite(value) and 0 <= value <= 1):
            _fail(f"schedule.{name}={value} must lie in [0, 1] (a fraction of the run or of the peak rate)")
    m = cfg.mdm
    if not (_finite(m.eps) and 0 <= m.eps < 1):
        _fail(f"mdm.eps={m.eps} must lie in [0, 1) (LLaDA: 1e-3)")
    if not (_finite(m.random_length_prob) and 0 <= m.random_length_prob <= 1):
        _fail(f"mdm.random_length_prob={m.random_length_prob} must lie in [0, 1] (LLaDA: 0.01)")


def _check_eval(cfg: RunConfig) -> None:
    e = cfg.eval
    if e.suite != "none":
        from studies.tasks.suite import EvalSettings, suite_tasks

        try:
            suite_tasks(e.suite)
        except ValueError as error:
            _fail(f"eval.suite: {error} (or none for no evaluation)")
        try:
            EvalSettings.parse(e.settings)
        except (TypeError, ValueError) as error:
            _fail(f"eval.settings: {first_line(error)}")
    if e.limit is not None and e.limit < 1:
        _fail(f"eval.limit={e.limit} must be at least 1 item per task, or null for every item")
    if not e.at_fractions:
        _fail("eval.at_fractions is empty; give the fractions of the run at which to evaluate, e.g. [1.0]")
    bad = [f for f in e.at_fractions if not (_finite(f) and 0 <= f <= 1)]
    if bad:
        _fail(f"eval.at_fractions={list(e.at_fractions)}: {bad} not in [0, 1]; they are fractions of the "
              "step budget (1.0 = the end of the run)")
    if e.mc_samples < 1:
        _fail(f"eval.mc_samples={e.mc_samples} must be at least 1 (LLaDA: 128 Monte Carlo samples)")
    if not (_finite(e.cfg_scale) and e.cfg_scale >= 0):
        _fail(f"eval.cfg_scale={e.cfg_scale} must be 0 (no guidance) or more")


def _check_data(cfg: RunConfig) -> None:
    d = cfg.data
    if d.source == "files":
        from studies.data.ingest import resolve_files

        try:
            resolve_files(d)
        except FileNotFoundError as error:
            _fail(f"{error} (from {os.getcwd()})")
    if d.tokenizer.path is not None:
        problem = _tokenizer_problem(os.path.abspath(os.path.expanduser(d.tokenizer.path)))
        if problem:
            _fail(f"data.tokenizer.path={d.tokenizer.path!r} {problem}")


@functools.lru_cache(maxsize=16)
def _tokenizer_problem(path: str) -> str | None:
    """Why ``path`` is not a loadable tokenizer.json, or None (checked once per path)."""
    if not os.path.isfile(path):
        return "does not exist; give the path of a tokenizer.json file"
    from tokenizers import Tokenizer

    try:
        Tokenizer.from_file(path)
    except Exception as error:  # noqa: BLE001 - the tokenizers library raises its own Exception
        return f"is not a tokenizer.json the tokenizers library can read ({str(error)[:200]})"
    return None
