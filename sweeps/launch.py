"""Plan a named grid of FLOP-matched runs, compare it with what exists, and submit the rest.

    python sweeps/launch.py --grid scaling_1b --dry-run
    python sweeps/launch.py --grid smoke                     # runs here when there is no sbatch
    python sweeps/launch.py --grid scaling_1b --cluster slurm --only budget=1e20 trainer.precision=bf16-mixed

A launch is idempotent. Each planned run's key is a hash of its resolved config, and its state comes
from its folder and the sweep log (``sweeps.run_states``): finished runs are skipped, queued or running
ones are left alone, failed ones are resubmitted only with ``--retry-failed``, and the rest are
submitted. Planning and ``--dry-run`` import no torch, lightning or mlflow.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sweeps.executors.local import run_local  # noqa: E402
from sweeps.executors.slurm import resolve_cluster, submit_slurm  # noqa: E402
from sweeps.memory import fit_error  # noqa: E402
from sweeps.plan import plan_grid  # noqa: E402
from sweeps.plan_arguments import add_plan_arguments  # noqa: E402
from sweeps.plan_report import plan_json, plan_table, state_counts  # noqa: E402
from sweeps.preparation import (READY, RUNNING, UNAVAILABLE, preparation_lines, preparation_steps,  # noqa: E402
                                prepare_here, repetition_warnings)
from sweeps.run_command import RUN_COMMAND, with_repo_on_path  # noqa: E402
from sweeps.run_states import plan_states  # noqa: E402


@contextlib.contextmanager
def _exclusive(path: Path):
    """Hold an advisory lock so that two local launches of one grid never run the same run twice."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python sweeps/launch.py",
        description="Plan a named grid of FLOP-matched ARM/MDM runs and submit the ones not done yet.",
    )
    add_plan_arguments(parser)
    parser.add_argument("--dry-run", action="store_true", help="print the plan and submit nothing")
    parser.add_argument("--cluster", choices=("auto", "slurm", "local"), default="auto",
                        help="slurm (submitit job array), local (subprocesses here), auto: slurm when sbatch is on PATH")
    parser.add_argument("--retry-failed", action="store_true", help="also resubmit runs that failed")
    parser.add_argument("--parallel", type=int, default=None, metavar="N",
                        help="local executor: runs at once, 0 = one per core (default: the cluster profile's "
                             "local_parallel_runs)")
    parser.add_argument("--no-analysis", action="store_true",
                        help="after a local sweep, skip the comparison (analysis/compare.py) of the grid")
    parser.add_argument("--emit-sbatch", metavar="DIR", default=None,
                        help="submit nothing; write DIR/array.sbatch (a job array) and the per-run configs of the "
                             "runs not finished yet, for `sbatch DIR/array.sbatch` (see sweeps/executors/sbatch.py)")
    return parser


def main(argv: Optional[Sequence[str]] = None, *, command: Sequence[str] = RUN_COMMAND) -> int:
    """Exit codes: 0 all good, 1 some run failed, 2 bad input (nothing submitted)."""
    args = build_parser().parse_intermixed_args(argv)
    machine_readable = args.format == "json"
    out = sys.stdout
    info = sys.stderr if machine_readable else sys.stdout

    def say(*parts, **kw):
        kw.pop("file", None)
        print(*parts, file=info, **kw)

    if args.parallel is not None and args.parallel < 0:
        print(f"error: --parallel must be 0 (one run per core) or more, got {args.parallel}", file=sys.stderr)
        return 2
    try:
        plan = plan_grid(args.grid, args.overrides, runs_dir=args.runs_dir, only=args.only, profile=args.profile)
        slurm_profile = plan.profile.executor == "slurm"
        cluster = None if args.dry_run else resolve_cluster(args.cluster, slurm_profile)
        if cluster == "slurm":
            from sweeps.profiles import check_resources

            trainer = plan.grid_config.trainer
            check_resources(plan.profile, trainer.devices, trainer.num_nodes, plan.profile_name)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    log, records, _, states = plan_states(plan, say)
    steps = preparation_steps([*plan.runs, *plan.trunks], records)
    print(plan_json(plan, states, steps) if machine_readable else plan_table(plan, states, steps), file=out)
    on_slurm = cluster == "slurm" or bool(args.emit_sbatch) or (cluster is None and slurm_profile)
    for line in [*preparation_lines(steps, "slurm" if on_slurm else "local"),
                 *repetition_warnings(plan, steps)]:
        say(line)

    finished = [r for r in plan.runs if states[r.key].state == "finished"]
    failed = [r for r in plan.runs if states[r.key].state == "failed"]
    todo = [r for r in plan.runs if states[r.key].state == "planned" or (args.retry_failed and r in failed)]
    say(f"{state_counts(states)}; to submit: {len(todo)}")
    if failed and not args.retry_failed:
        say(f"{len(failed)} failed run(s) not resubmitted; pass --retry-failed to resubmit them:")
        for r in failed:
            s = states[r.key]
            say(f"  {r.key} {r.name}: {s.detail}" + (f"; log: {s.log}" if s.log else ""))

    # A run whose memory plan exceeds the profile's GPUs is bad input: refused before anything is written,
    # the plan above showing every run's GiB (finished runs and trunks are not trained again).
    unfinished = [r for r in plan.runs if states[r.key].state != "finished"] + [t for t in plan.trunks if not t.done()]
    too_big = fit_error(unfinished, plan.profile.gpu_memory_gb, plan.profile_name)
    if too_big:
        print(f"error: {too_big}", file=sys.stderr)
        return 2
    missing = [s for s in steps if s.state == UNAVAILABLE and set(map(id, s.runs)) & set(map(id, unfinished))]
    if missing and not args.dry_run:
        print(f"error: the data of {len(missing[0].runs)} run(s) cannot be prepared: {missing[0].detail}",
              file=sys.stderr)
        return 2

    if args.emit_sbatch and plan.trunks:
        print("error: --emit-sbatch writes one job array, which cannot chain a branched grid's trunk segments; "
              "launch with --cluster slurm (each segment and branch a job with afterok dependencies), or set "
              "branching=false", file=sys.stderr)
        return 2
    if args.emit_sbatch:
        from sweeps.executors.sbatch import emit_sbatch

        pending = [r for r in plan.runs if states[r.key].state != "finished"]
        if not pending:
            say(f"nothing to write: all {len(plan.runs)} runs of grid {plan.grid} finished ({plan.runs_root})")
            return 0
        from sweeps.executors.sbatch import emit_preparation

        ahead = [s for s in _steps_for(steps, pending) if s.ahead and s.state != READY]
        try:
            script = emit_sbatch(pending, plan.profile, plan.grid, args.emit_sbatch, profile_name=plan.profile_name)
            submit = emit_preparation(ahead, plan.profile, plan.grid, args.emit_sbatch)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if submit is None:
            say(f"wrote {script} ({len(pending)} run(s), profile {plan.profile_name}); submit with: sbatch {script}")
        else:
            say(f"wrote {script} ({len(pending)} run(s), profile {plan.profile_name}) and the preparation of "
                f"{len(ahead)} dataset(s) before it; submit both with: bash {submit}")
        return 0

    if args.dry_run:
        import shutil

        has_sbatch = shutil.which("sbatch") is not None
        if args.cluster == "auto":
            if not slurm_profile:
                target = f"local (profile {plan.profile_name} is for this machine)"
            else:
                target = "slurm (sbatch is on PATH)" if has_sbatch else "local (no sbatch on PATH)"
        else:
            target = args.cluster + ("" if has_sbatch or args.cluster == "local" else ", which needs sbatch on PATH")
        say(f"dry run: nothing submitted (executor: {target})")
        return 0
    if not todo:
        if len(finished) == len(plan.runs):
            say(f"nothing to do: all {len(plan.runs)} runs of grid {plan.grid} finished ({plan.runs_root})")
        else:
            say("nothing submitted")
        return 1 if failed and not args.retry_failed else 0

    try:
        from sweeps.launch_tracking import tracking_store

        tracking_store(plan)  # an unreachable server: refused before any lock, record or folder
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if cluster == "slurm":
        return _submit_to_slurm(plan, todo, log, args, argv, say, steps)
    # One local launch of a grid at a time; a refused one leaves no MLflow run, record or folder.
    with _exclusive(plan.sweep_dir / "local.lock") as held:
        if not held:
            print(f"error: another local launch of grid {plan.grid} is running in {plan.runs_root}; wait for it "
                  f"or follow it with python sweeps/status.py --grid {args.grid}", file=sys.stderr)
            return 2
        try:  # every dataset the runs read, before any of them starts
            prepare_here(_steps_for(steps, _with_trunks(plan, todo)), plan.profile.prepare.cpus, say)
        except (OSError, ValueError, RuntimeError) as exc:
            print(f"error: data preparation failed, nothing was run: {exc}", file=sys.stderr)
            return 1
        opened = _open_launch(plan, _with_trunks(plan, todo), log, "local", argv, say)
        if isinstance(opened, int):
            return opened
        todo, parent = opened
        jobs, after = _jobs(plan, todo)
        parallel = plan.profile.local_parallel_runs if args.parallel is None else args.parallel
        stream = sys.stderr.buffer if machine_readable else sys.stdout.buffer
        try:
            outcomes = run_local(jobs, log, command=command, stream=stream, say=say, parallel=parallel, after=after)
        except BaseException:
            _end_parent(plan, parent, "KILLED")
            raise
        _end_parent(plan, parent, "FINISHED" if all(o.finished for o in outcomes) else "FAILED")
    bad = [o for o in outcomes if not o.finished]
    say(f"local sweep done: {len(outcomes) - len(bad)} finished, {len(bad)} failed, "
        f"{len(finished)} skipped (already finished); runs in {plan.runs_root}")
    for o in bad:
        say(f"  failed: {o.name} ({o.run_key}), exit code {o.returncode}; log: {o.log}")
    if not bad and not args.no_analysis:
        _compare(plan, say)
    return 1 if bad else 0


def _steps_for(steps, runs) -> list:
    """The preparation steps (``sweeps.preparation``) that ``runs`` read."""
    wanted = {id(r) for r in runs}
    return [s for s in steps if any(id(r) in wanted for r in s.runs)]


def _with_trunks(plan, todo) -> list:
    """``todo`` and the unfinished trunks its branches start from (sweeps.branching): MLflow runs are
    opened for both."""
    wanted = {r.config["branching"]["trunk_dir"] for r in todo}
    return list(todo) + [t for t in plan.trunks if str(t.out_dir) in wanted and not t.done()]


def _jobs(plan, runs) -> tuple[list, dict]:
    """The jobs that train ``runs`` (a branched grid's trunk segments first) and their prerequisites."""
    if not plan.trunks:
        return list(runs), {}
    from sweeps.branching import TRUNK, jobs

    return jobs(plan.trunks, [r for r in runs if r.role != TRUNK])


def _prepare_tracking(plan, todo, say):
    """(the runs still to submit, the launch's MLflow parent run id or None), or None on bad input
    (the message printed). Runs MLflow already holds as finished are left out, with the reason."""
    from sweeps.launch_tracking import launch_tracking

    try:
        tracked_finished, parent = launch_tracking(plan, todo, say)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    for r in todo:
        if r.key in tracked_finished:
            say(f"  {r.key} {r.name}: finished according to MLflow, but {r.out_dir / 'result.json'} is missing; "
                "not resubmitted (restore result.json, or delete the run folder and its MLflow run to train it again)")
    return [r for r in todo if r.key not in tracked_finished], parent


def _open_launch(plan, todo, log, executor: str, argv, say):
    """MLflow's parent run and the sweep log's launch record: (the runs to submit, the parent run id),
    or an exit code (2: bad input; 0: MLflow holds every run as finished)."""
    prepared = _prepare_tracking(plan, todo, say)
    if prepared is None:
        return 2
    todo, parent = prepared
    if not todo:
        say("nothing submitted")
        return 0
    try:
        log.append({"event": "launch", "argv": list(argv) if argv is not None else sys.argv[1:],
                    "executor": executor, "grid": plan.grid, "submit": [r.key for r in todo]})
    except OSError as error:  # a full disk: the runs report their own failures
        say(f"note: the launch could not be recorded in {log.path} ({error})")
    return todo, parent


def _submit_to_slurm(plan, todo, log, args, argv, say, steps) -> int:
    opened = _open_launch(plan, _with_trunks(plan, todo), log, "slurm", argv, say)
    if isinstance(opened, int):
        return opened
    todo, parent = opened
    jobs, after = _jobs(plan, todo)
    try:
        wait_for = _prepare_for_slurm(plan, _steps_for(steps, _with_trunks(plan, todo)), log, say)
        submit_slurm(jobs, log, plan.profile, plan.grid, say=say, after=after, wait_for=wait_for)
    except (OSError, ValueError) as exc:
        _end_parent(plan, parent, "FAILED")
        print(f"error: data preparation failed, nothing was submitted: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        _end_parent(plan, parent, "FAILED")
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _end_parent(plan, parent, "FINISHED")  # the launch is done; its jobs' runs report for themselves
    say(f"submitted {len(jobs)} job(s); follow them with: python sweeps/status.py --grid {args.grid}")
    return 0


def _prepare_for_slurm(plan, steps, log, say) -> list[str]:
    """The preparation job ids the training jobs wait for: a hub corpus not ready yet is prepared by a CPU
    job of its own (or the one already in the queue); the toy world and local files here, at once."""
    from sweeps.executors.slurm import submit_preparation

    prepare_here([s for s in steps if not s.ahead or (s.state == RUNNING and s.job_id is None)],
                 plan.profile.prepare.cpus, say)  # a preparation running here: wait for it
    wait_for = []
    for step in steps:
        if step.state == READY:
            continue
        if step.job_id is not None:
            say(f"{step.folder.name} is being prepared by SLURM job {step.job_id}; the runs wait for it")
            wait_for.append(step.job_id)
        else:
            wait_for.append(submit_preparation(step, plan.profile, log, plan.grid, say=say))
    return wait_for


def _end_parent(plan, parent, status: str) -> None:
    if parent is not None:
        from sweeps.launch_tracking import end_launch_run

        end_launch_run(plan, parent, status)


def _compare(plan, say) -> None:
    """The comparison of a finished local sweep: scores per task, budget and objective, fits where
    the budgets allow, figures; ``python -m analysis.compare --grid NAME --launch-summary`` in a process
    of its own, from this working folder (a relative tracking URI names the store the runs wrote to),
    its summary passed on as it prints it."""
    tracking = plan.grid_config.tracking
    if not tracking.enabled:
        return
    command = [sys.executable, "-m", "analysis.compare", "--grid", plan.grid, "--runs-dir", str(plan.runs_root.parent),
               "--launch-summary"]
    if tracking.uri:
        command += ["--tracking-uri", tracking.uri]
    if tracking.experiment:
        command += ["--experiment", tracking.experiment]
    env = with_repo_on_path(os.environ)
    env["PYTHONIOENCODING"] = "utf-8"
    done = subprocess.run(command, capture_output=True, env=env, encoding="utf-8", errors="replace")
    if done.stdout:
        say(done.stdout[:-1] if done.stdout.endswith("\n") else done.stdout)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or [""])[-1]
        say(f"analysis failed (exit {done.returncode}): {last}")


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["build_parser", "main"]
