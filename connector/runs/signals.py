"""SIGTERM and SIGINT around a run: before its exit code is decided they stop it cleanly; after,
they change nothing.

Why handlers of our own: dlt's would swallow a SIGTERM during normalize/load (the run then goes
on, or fails with `SignalReceivedException`); ours only set the run's stop event, which every
walk checks between pages, so the pages fetched so far load and the state moves (`ciklek sync`
then exits 75; a bare source's extract ends cleanly). A second Ctrl-C interrupts at once.

Why a decided phase: once a run has decided its exit code (`SignalScope.decide`), it still
writes its run row, publishes the read copy, writes status, prints its summary and exits. A
scheduler that sends SIGTERM then (a timeout, a deploy) must read the code the run decided, not
"killed by signal 15": from the decision on, SIGTERM/SIGINT are held (a second SIGINT still
interrupts). A caller that goes on after `run_sync` returns (the CLI, the cron script, a Dagster
op) wraps the run and what follows in `keep_exit_code()`, so the hold lasts until it is done;
`keep_exit_code(at_exit=True)` (a process's entry point) leaves both signals ignored once the
code is decided, through the interpreter's shutdown, when no Python handler can run any more.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

SIGNALS = (signal.SIGTERM, signal.SIGINT)
Handler = Callable[[int, FrameType | None], object] | int | signal.Handlers | None

# The scopes entered in the main thread, innermost last: a run's decision holds them all.
_ACTIVE: list[SignalScope] = []


class SignalScope:
    """What SIGTERM/SIGINT do while the scope is entered.

    With an `event` (a run): set it (a second SIGINT raises KeyboardInterrupt). Without one (a
    caller's `keep_exit_code`, before any run decided): what the handler before it did. Once
    decided: nothing, but a second SIGINT raises KeyboardInterrupt.
    """

    def __init__(self, event: threading.Event | None) -> None:
        self.event = event
        self.decided = False
        self.interrupts = 0  # SIGINTs received after the decision
        self._handling = False
        self.previous: dict[int, Handler] = {}

    def decide(self) -> None:
        """The run's exit code is decided: from now on signals change nothing, in this scope and
        in every scope around it, until they end."""
        self.decided = True
        for scope in _ACTIVE:
            scope.decided = True

    def handle(self, signum: int, frame: FrameType | None) -> None:
        # A signal can interrupt this very handler (a scheduler repeating SIGTERM on a busy
        # machine): the nested call returns at once. Else it would wait for the event's lock,
        # which the interrupted call holds, and each further signal would nest one level
        # deeper, until a RecursionError ends the run as a bug.
        if self._handling:
            return
        self._handling = True
        try:
            self._handle(signum, frame)
        finally:
            self._handling = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.decided:
            if signum == signal.SIGINT:
                self.interrupts += 1
                if self.interrupts > 1:
                    raise KeyboardInterrupt  # a second Ctrl-C: the user really wants out
            return
        if self.event is not None:
            if self.event.is_set():
                if signum == signal.SIGINT:
                    raise KeyboardInterrupt
                return
            self.event.set()
            return
        _as_before(self.previous.get(signum), signum, frame)


def _as_before(handler: Handler, signum: int, frame: FrameType | None) -> None:
    """What `handler` (the one our scope replaced) would have done with the signal."""
    if callable(handler):
        handler(signum, frame)
    elif handler != signal.SIG_IGN:  # the default action: for SIGTERM, end by the signal
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


@contextlib.contextmanager
def _entered(scope: SignalScope, *, at_exit: bool = False) -> Iterator[SignalScope]:
    """Install the scope's handler for the block; outside the main thread (where Python allows
    no handlers) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield scope
        return
    scope.previous = {sig: signal.signal(sig, scope.handle) for sig in SIGNALS}
    _ACTIVE.append(scope)
    try:
        yield scope
    finally:
        _ACTIVE.remove(scope)
        for sig, old in scope.previous.items():
            if at_exit and scope.decided:
                signal.signal(sig, signal.SIG_IGN)  # the process exits with the decided code
            else:
                signal.signal(sig, old if old is not None else signal.SIG_DFL)


@contextlib.contextmanager
def stop_on_signals(event: threading.Event) -> Iterator[SignalScope]:
    """SIGTERM/SIGINT set `event` while the block runs, until `decide()` is called on the scope
    it yields; the previous handlers are back as soon as the block ends."""
    with _entered(SignalScope(event)) as scope:
        yield scope


@contextlib.contextmanager
def keep_exit_code(*, at_exit: bool = False) -> Iterator[SignalScope]:
    """Around a `run_sync` call and whatever its caller does with the result: once the run has
    decided its exit code, SIGTERM/SIGINT no longer change it until the block ends (before
    that, they do what they did). `at_exit`: the block is the process's last act (an entry
    point): once decided, both signals stay ignored afterwards, so interpreter shutdown cannot
    be cut short by one."""
    with _entered(SignalScope(None), at_exit=at_exit) as scope:
        yield scope
