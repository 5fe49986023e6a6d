"""The status line of a preparation on stderr: documents, tokens, tokens/s and an ETA.

Refreshed in place on a terminal (``\\r``), printed as a plain line every ``PLAIN_SECONDS`` otherwise
(a batch job's log). The ETA is measured against ``max_tokens`` when it is set, else against the
parts done out of the parts in total. Rates count the tokens made by this run only, so a resumed
preparation does not report the resumed parts as speed.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Dict, Optional, TextIO

TTY_SECONDS = 0.5
PLAIN_SECONDS = 30.0


def _count(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:.0f}"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """Counts of finished and running parts; ``render`` draws the line when it is due."""

    def __init__(self, total_parts: int, max_tokens: Optional[int], enabled: bool = True,
                 stream: Optional[TextIO] = None):
        self.total_parts, self.max_tokens, self.enabled = total_parts, max_tokens, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.done: Dict[str, tuple] = {}  # part -> (documents, tokens)
        self.running: Dict[str, tuple] = {}
        self.resumed_tokens = self.resumed_parts = 0
        self.start = time.monotonic()
        self.last_draw = self.start if not self.tty else 0.0
        self.drawn = False

    def resumed(self, name: str, documents: int, tokens: int) -> None:
        """A part finished by an earlier run."""
        self.done[name] = (documents, tokens)
        self.resumed_tokens += tokens
        self.resumed_parts += 1

    def update(self, name: str, documents: int, tokens: int) -> None:
        if name not in self.done:
            self.running[name] = (documents, tokens)
        self.render()

    def finished(self, name: str, documents: int, tokens: int) -> None:
        self.running.pop(name, None)
        self.done[name] = (documents, tokens)
        self.render()

    def poll(self, folder: Path) -> None:
        """Read the running parts' counts that workers write to ``folder/<part>``."""
        if folder.is_dir():
            for file in folder.iterdir():
                if file.name.startswith(".") or file.name in self.done:
                    continue
                try:
                    documents, tokens = map(int, file.read_text().split())
                except (OSError, ValueError):
                    continue
                self.running[file.name] = (documents, tokens)
        self.render()

    def line(self) -> str:
        counts = list(self.done.values()) + list(self.running.values())
        documents, tokens = sum(c[0] for c in counts), sum(c[1] for c in counts)
        elapsed = max(time.monotonic() - self.start, 1e-9)
        rate = (tokens - self.resumed_tokens) / elapsed
        eta = "?"
        if self.max_tokens is not None and rate > 0:
            eta = _duration(max(self.max_tokens - tokens, 0) / rate)
        elif self.max_tokens is None and len(self.done) > self.resumed_parts:
            eta = _duration((self.total_parts - len(self.done)) * elapsed / (len(self.done) - self.resumed_parts))
        return (f"prepare  parts {len(self.done)}/{self.total_parts}  documents {documents:,}  tokens {_count(tokens)}  "
                f"{_count(rate)} tokens/s  ETA {eta}")

    def render(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self.last_draw < (TTY_SECONDS if self.tty else PLAIN_SECONDS):
            return
        self.last_draw = now
        if self.tty:
            self.stream.write("\r" + self.line() + "\x1b[K")
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        """Draw the final counts (a terminal's line is ended)."""
        if not self.enabled:
            return
        self.render(force=True)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
