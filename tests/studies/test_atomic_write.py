"""Tests of studies/atomic_write.py."""

from __future__ import annotations

import os

from studies.atomic_write import write_atomic


def test_the_target_is_replaced_whole_and_no_temporary_file_stays(tmp_path):
    target = tmp_path / "state.json"
    write_atomic(target, "old\n")
    write_atomic(target, b"new\n")
    assert target.read_bytes() == b"new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_only_a_durable_write_waits_for_the_disk(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    write_atomic(tmp_path / "metadata.json", "{}")
    assert len(synced) == 1
    write_atomic(tmp_path / "progress", "10 2048\n", durable=False)
    assert len(synced) == 1
    assert (tmp_path / "progress").read_text() == "10 2048\n"
