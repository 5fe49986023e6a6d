"""The callables a submitted SLURM job runs (``studies/cluster/jobs.py``)."""

from __future__ import annotations

import pickle

import pytest
import submitit


def test_run_job_is_checkpointable_and_fails_loudly(monkeypatch):
    from studies.cluster.jobs import RunJob

    job = pickle.loads(pickle.dumps(RunJob("/runs/g/abc/config.yaml")))
    resubmission = job.checkpoint()
    assert isinstance(resubmission, submitit.helpers.DelayedSubmission)
    assert resubmission.function.config_path == "/runs/g/abc/config.yaml"

    import studies.run

    calls = []
    monkeypatch.setattr(studies.run, "main", lambda argv: calls.append(argv) or 1)
    with pytest.raises(RuntimeError, match="exited with code 1"):
        job()
    assert calls == [["/runs/g/abc/config.yaml"]]
