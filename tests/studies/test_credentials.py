"""Credentials: found and masked in URIs, refused in configs, and never written when given to MLflow
through its environment variables (a planted secret is searched for in everything a run leaves)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from run_configs import tiny_run_config
from studies.config import config_yaml
from studies.credentials import mask_uri, uri_credentials
from studies.run import run

REPO_ROOT = Path(__file__).resolve().parents[2]
SECRET = "pl4nted-s3cret-7f9c"


@pytest.mark.parametrize("uri, masked", [
    ("http://alice:s3cret@mlflow.example:5000/x", "http://alice:***@mlflow.example:5000/x"),
    ("https://s3cret@mlflow.example", "https://***@mlflow.example"),  # a token as the user name
    ("http://host:5000/?token=s3cret&region=eu", "http://host:5000/?token=***&region=eu"),
    ("http://host/?api_key=s3cret&X-Amz-Signature=s3cret", "http://host/?api_key=***&X-Amz-Signature=***"),
    ("http://bob:s3cret@[::1]:5000", "http://bob:***@[::1]:5000"),  # IPv6 brackets kept
    ("http://[fe80::1]:5000/path", "http://[fe80::1]:5000/path"),
    ("sqlite:////tmp/runs/mlflow.db", "sqlite:////tmp/runs/mlflow.db"),
])
def test_mask_uri_hides_every_kind_of_credential_and_keeps_the_host(uri, masked):
    assert mask_uri(uri) == masked
    assert "s3cret" not in mask_uri(uri)
    assert bool(uri_credentials(uri)) == ("s3cret" in uri)


def _launch(*args, env=None, cwd):
    return subprocess.run([sys.executable, str(REPO_ROOT / "sweeps" / "launch.py"), "--grid", "smoke", *args],
                          cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("how", ["tracking.uri", "MLFLOW_TRACKING_URI"])
def test_a_launch_with_credentials_in_the_uri_is_refused_before_anything_is_written(tmp_path, how):
    uri = f"http://alice:{SECRET}@127.0.0.1:5000"
    args, env = ([f"tracking.uri={uri}"], None) if how == "tracking.uri" else ([], {"MLFLOW_TRACKING_URI": uri})
    for extra in (["--dry-run"], []):
        out = _launch("--runs-dir", str(tmp_path / "runs"), "models=[tiny]", "budgets=[1e11]", *args, *extra,
                      env=env, cwd=tmp_path)
        assert out.returncode == 2, out.stderr
        assert f"{how}=http://alice:***@127.0.0.1:5000 carries credentials" in out.stderr
        assert "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in out.stderr
        assert SECRET not in out.stdout + out.stderr
    assert not (tmp_path / "runs").exists() and sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_run_config_with_credentials_is_refused_before_its_folder_exists(tmp_path):
    cfg = tiny_run_config(tmp_path / "g" / "r", tmp_path / "data", tracking={"uri": f"http://{SECRET}@host:5000"})
    with pytest.raises(ValueError, match=r"tracking.uri=http://\*\*\*@host:5000 carries credentials") as error:
        run(cfg)
    assert SECRET not in str(error.value)
    assert not (tmp_path / "g").exists()


@pytest.mark.mlflow_server
def test_credentials_from_the_environment_are_written_nowhere(mlflow_server, tmp_path):
    """A job given MLflow credentials the supported way (environment variables) runs, is tracked,
    and leaves the secret in no file: not the run folder, not its log, not the MLflow store."""
    out = tmp_path / "runs" / "g-secret" / "key1"
    cfg = tiny_run_config(out, tmp_path / "data", steps=3, grid="g-secret", tracking={"uri": mlflow_server.uri})
    out.mkdir(parents=True)
    (out / "config.yaml").write_text(config_yaml(cfg))
    env = {**os.environ, "MLFLOW_TRACKING_USERNAME": "alice", "MLFLOW_TRACKING_PASSWORD": SECRET,
           "MLFLOW_TRACKING_TOKEN": ""}
    with open(out / "run.log", "w") as log:
        done = subprocess.run([sys.executable, "-m", "studies.run", str(out / "config.yaml")], cwd=REPO_ROOT,
                              env=env, stdout=log, stderr=subprocess.STDOUT)
    assert done.returncode == 0, (out / "run.log").read_text()[-3000:]
    client = MlflowClient(mlflow_server.uri)
    (record,) = client.search_runs([client.get_experiment_by_name("g-secret").experiment_id])
    assert record.info.status == "FINISHED"

    searched = [p for root in (out, mlflow_server.root) for p in Path(root).rglob("*") if p.is_file()]
    assert any(p.name == "config.yaml" for p in searched if mlflow_server.root in p.parents)  # the artifact
    assert any(b"g-secret" in p.read_bytes() for p in searched if p.name == "mlflow.db")  # the search reads the store
    leaks = [str(p) for p in searched if SECRET.encode() in p.read_bytes()]
    assert leaks == []
