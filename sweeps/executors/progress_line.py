"""The progress of a parallel local sweep's running runs: on a terminal one line redrawn in place, into
a file or pipe a plain line now and then."""

from __future__ import annotations

import shutil
from typing import IO

PROGRESS_EVERY_S = 2.0  # progress line of a parallel sweep, redrawn in place on a terminal
PROGRESS_EVERY_S_NO_TTY = 60.0  # and into a file or pipe


class ProgressLine:
    """Each running run's progress, read from its log. On a terminal it is one line redrawn in place
    (cleared before any other line is printed); into a file or pipe it is a plain line now and then."""

    def __init__(self, stream: IO[bytes], say):
        self.stream, self._say = stream, say
        self.interactive = stream.isatty()
        self.every = PROGRESS_EVERY_S if self.interactive else PROGRESS_EVERY_S_NO_TTY
        self.shown = False

    def say(self, *parts, **kw) -> None:
        self.clear()
        self._say(*parts, **kw)

    def clear(self) -> None:
        if self.shown:
            self.stream.write(b"\r\x1b[K")
            self.stream.flush()
            self.shown = False

    def show(self, text: str) -> None:
        if not self.interactive:
            self._say(text, flush=True)
            return
        width = shutil.get_terminal_size().columns - 1
        self.stream.write(b"\r\x1b[K" + text[:width].encode())
        self.stream.flush()
        self.shown = True


__all__ = ["PROGRESS_EVERY_S", "PROGRESS_EVERY_S_NO_TTY", "ProgressLine"]
