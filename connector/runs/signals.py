"""SIGTERM and SIGINT during a run: finish the chunk, commit, stop cleanly.

Why handlers of our own: dlt's would swallow a SIGTERM during normalize/load (the run then goes
on, or fails with `SignalReceivedException`); ours only set the run's stop event, which every
walk checks between pages, so the pages fetched so far load and the state moves (`ciklek sync`
then exits 75; a bare source's extract ends cleanly). A second Ctrl-C interrupts at once.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType


@contextlib.contextmanager
def stop_on_signals(event: threading.Event) -> Iterator[None]:
    """SIGTERM/SIGINT set `event` while the block runs. The previous handlers are back as soon
    as the block ends; outside the main thread (where Python allows no handlers) nothing
    changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        if event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: the user really wants out
        event.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
