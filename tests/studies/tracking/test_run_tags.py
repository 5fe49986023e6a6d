"""Tests of studies/tracking/run_tags.py."""

from __future__ import annotations

import pytest

from studies.credentials import mask_uri
from studies.tracking.run_tags import flatten

pytestmark = pytest.mark.mlflow_server


def test_secrets_never_become_params():
    config = {"eval": {"settings": {"hf_token": "hf_abc", "api_key": "k", "temperature": 0.5}},
              "tracking": {"uri": "http://alice:s3cret@mlflow.example:5000"}, "db_password": "x"}
    flat = flatten(config)
    assert flat == {"eval.settings.temperature": "0.5", "tracking.uri": "http://alice:***@mlflow.example:5000"}
    assert "s3cret" not in mask_uri("https://bob:s3cret@host/path")
