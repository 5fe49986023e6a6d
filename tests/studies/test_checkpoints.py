"""studies/checkpoints.py on sharded checkpoint folders: installed atomically with the previous one
kept, an incomplete folder skipped on resume, a trunk's folder placed for its branch by hard links."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from studies.checkpoints import PREVIOUS, SHARDED_PARTIAL, install_checkpoint, place_copy, readable, resume_checkpoint


def _sharded(folder: Path, marker: str, complete: bool = True) -> Path:
    folder.mkdir(parents=True)
    (folder / "__0_0.distcp").write_text(f"rank 0 {marker}")
    (folder / "__1_0.distcp").write_text(f"rank 1 {marker}")
    (folder / "meta.pt").write_text(marker)
    if complete:
        (folder / ".metadata").write_text(marker)  # DCP writes its index last
    return folder


def test_a_new_folder_replaces_the_last_and_the_last_becomes_previous(tmp_path):
    last = tmp_path / "last.ckpt"
    for step in (2, 4, 6):
        install_checkpoint(_sharded(tmp_path / f"last.ckpt{SHARDED_PARTIAL}", f"step {step}"), last)
    assert (last / "meta.pt").read_text() == "step 6"
    assert (last.with_name(last.name + PREVIOUS) / "meta.pt").read_text() == "step 4"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt", "last.ckpt.prev"]


def test_an_incomplete_folder_is_not_resumed_from_and_a_partial_one_is_removed(tmp_path, capsys):
    last = tmp_path / "last.ckpt"
    _sharded(last.with_name(last.name + PREVIOUS), "step 4")
    _sharded(last, "step 6", complete=False)
    partial = _sharded(tmp_path / f"last.ckpt{SHARDED_PARTIAL}", "step 8", complete=False)
    assert "no .metadata" in readable(last)
    assert resume_checkpoint(last) == last.with_name(last.name + PREVIOUS)
    assert not partial.exists()
    assert "removing" in capsys.readouterr().err


def test_a_folder_is_placed_by_hard_links(tmp_path):
    trunk = _sharded(tmp_path / "trunk" / "branch-step4.ckpt", "step 4")
    target = tmp_path / "branch" / "last.ckpt"
    target.parent.mkdir()
    place_copy(trunk, target)
    assert readable(target) is None
    for shard in trunk.iterdir():
        assert os.path.samefile(shard, target / shard.name)


@pytest.mark.parametrize("content", ["file", "folder"])
def test_a_consolidated_checkpoint_refuses_what_is_not_a_finished_sharded_folder(tmp_path, content):
    from studies.consolidate import main

    path = tmp_path / "final.ckpt"
    if content == "file":
        path.write_bytes(b"PK")
    else:
        _sharded(path, "step 6", complete=False)
    assert main([str(path)]) == 2
    assert not (tmp_path / "final.consolidated.ckpt").exists()
