"""Stopping a local sweep on a signal without losing track of a run it is starting
(``sweeps.executors.local``)."""

from __future__ import annotations

import contextlib
import signal
import threading


class Interrupts:
    """Ctrl-C, SIGTERM and SIGHUP (``kill``, a closed terminal, a job scheduler's stop) raise
    KeyboardInterrupt, so that a local sweep stops its running runs and records them instead of
    leaving them running on their own. Inside ``deferred()`` (a run being started and registered) the
    interrupt waits until the block ends, so no run can start without being known to the sweep."""

    def __init__(self):
        self.depth = 0
        self.pending: str | None = None

    def _handle(self, signum, frame):
        name = signal.Signals(signum).name
        if self.depth:
            self.pending = name
            return
        raise KeyboardInterrupt(f"received {name}")

    @contextlib.contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    @contextlib.contextmanager
    def deferred(self):
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
            if not self.depth and self.pending:
                name, self.pending = self.pending, None
                raise KeyboardInterrupt(f"received {name}")


__all__ = ["Interrupts"]
