"""What SIGTERM/SIGINT do around a run (connector/runs/signals.py), signalled for real in this
process: before the decision they stop the run, after it they change nothing."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator

import pytest

from connector.runs.signals import SignalScope, keep_exit_code, stop_on_signals


def _send(signum: int) -> None:
    os.kill(os.getpid(), signum)  # the handler runs before os.kill returns to Python code


@pytest.fixture
def seen() -> Iterator[list[int]]:
    """A handler of the caller's own for both signals (restored afterwards)."""
    got: list[int] = []
    old = {
        s: signal.signal(s, lambda n, _f: got.append(n)) for s in (signal.SIGTERM, signal.SIGINT)
    }
    yield got
    for s, h in old.items():
        signal.signal(s, h)


def test_before_the_decision_a_signal_stops_the_run_after_it_changes_nothing(
    seen: list[int],
) -> None:
    stop = threading.Event()
    with keep_exit_code() as outer:
        _send(signal.SIGTERM)  # no run yet: what the caller's handler does
        assert seen == [signal.SIGTERM]
        with stop_on_signals(stop) as run:
            _send(signal.SIGTERM)
            assert stop.is_set() and seen == [signal.SIGTERM]
            run.decide()
            stop.clear()
            _send(signal.SIGTERM)
            _send(signal.SIGINT)  # one Ctrl-C after the decision: held like SIGTERM
            assert not stop.is_set() and seen == [signal.SIGTERM]
            with pytest.raises(KeyboardInterrupt):
                _send(signal.SIGINT)  # a second one: the user really wants out
        assert outer.decided  # the run's decision holds the caller's scope too
        _send(signal.SIGTERM)  # run_sync returned; the caller prints its summary
        assert seen == [signal.SIGTERM] and not stop.is_set()
    _send(signal.SIGTERM)  # the scope ended: the caller's own handler is back
    assert seen == [signal.SIGTERM, signal.SIGTERM]


def test_a_scope_that_ends_the_process_leaves_signals_ignored_once_decided(
    seen: list[int],
) -> None:
    with keep_exit_code(at_exit=True):
        pass  # nothing decided (`ciklek status`): the handlers are restored
    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN
    with keep_exit_code(at_exit=True), stop_on_signals(threading.Event()) as run:
        run.decide()
    # Interpreter shutdown runs no Python handler: ignored, the process exits with its code.
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN


class _SignalledWhileSetting(threading.Event):
    """An event whose `set()` is interrupted by another signal (as a SIGTERM repeated every few
    milliseconds does on a busy machine), while it holds the event's lock."""

    def __init__(self) -> None:
        super().__init__()
        self.scope: SignalScope | None = None
        self.sets = 0

    def set(self) -> None:
        self.sets += 1
        if self.scope is not None and self.sets < 50:
            self.scope.handle(signal.SIGTERM, None)  # the next signal, nested
        super().set()


def test_a_signal_that_interrupts_the_handler_returns_at_once() -> None:
    event = _SignalledWhileSetting()
    scope = SignalScope(event)
    event.scope = scope
    scope.handle(signal.SIGTERM, None)
    # Nested, it would set again (waiting for the lock its own interrupted call holds, one level
    # deeper with each signal, until a RecursionError).
    assert event.is_set() and event.sets == 1
