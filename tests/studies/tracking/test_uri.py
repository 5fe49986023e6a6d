"""Tests of studies/tracking/uri.py."""

from __future__ import annotations

import pytest

from studies.tracking.uri import TrackingUnavailable, check_reachable

pytestmark = pytest.mark.mlflow_server


def test_an_unreachable_server_is_reported_with_its_uri():
    with pytest.raises(TrackingUnavailable, match=r"127\.0\.0\.1:9.*unreachable"):
        check_reachable("http://127.0.0.1:9", timeout_s=2)
