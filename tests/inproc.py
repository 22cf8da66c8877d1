"""`ciklek ARGS` without a process: `connector.cli.main(argv)` in this process, output captured.

Why: starting the console script costs a Python start and dlt's import (about a second) per
call; an exit code and a message need neither. `run_main` mirrors `tests.helpers.run_cli`
(same arguments, a result with `returncode`, `stdout`, `stderr`), so a check moves from one to
the other with its assertions unchanged. A real process stays where a process is the point
(signals, `kill -9`, the lock held by another process, the console script itself).

What a fresh process would have and this one must be given back on each call:
- the environment: `env` replaces `os.environ` for the call, exactly as `subprocess.run(env=)`
  does, and the previous environment is restored afterwards;
- the working directory (`cwd`), restored afterwards;
- dlt's config providers: dlt reads `.dlt/config.toml` and `.dlt/secrets.toml` once per process
  (`PluggableRunContext` keeps the providers it built), so they are rebuilt for each call, from
  this call's working directory and environment;
- the secrets `scrub()` knows: a process knows only its own, and a secret registered by an
  earlier call would turn that text into `***` in this call's output;
- dlt's log lines: dlt's logger keeps the stream its handler was made with (whichever stderr
  was current the first time), so its handlers are pointed at this call's stderr;
- the rate limiters (one per API host and key, `connector.api.limiter`): a process starts with
  none, so a run never inherits the window (or the spent daily quota) an earlier run saw. Tests
  whose point is "each run is its own process, as from cron" (a sandbox's `new_day` between two
  runs) rely on it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Result:
    """What `subprocess.run(capture_output=True, text=True)` gives, for an in-process call."""

    returncode: int
    stdout: str
    stderr: str


@contextlib.contextmanager
def _environment(env: dict[str, str] | None, cwd: Path | None) -> Iterator[None]:
    saved_env = dict(os.environ)
    saved_cwd = os.getcwd()
    try:
        if env is not None:
            os.environ.clear()
            os.environ.update(env)
        if cwd is not None:
            os.chdir(cwd)
        yield
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)


def _fresh_dlt_providers() -> None:
    """dlt's providers as a new process in this directory, with this environment, builds them."""
    from dlt.common.configuration.container import Container
    from dlt.common.configuration.specs.pluggable_run_context import PluggableRunContext

    Container()[PluggableRunContext].reload_providers()


def _forget_limiters() -> None:
    from connector.api import limiter

    limiter._REGISTRY.clear()


def _forget_secrets() -> None:
    from connector.config import redaction

    redaction._KNOWN_SECRETS.clear()


def _point_dlt_logs_at(stream: object) -> None:
    # dlt's own handler only: a test runner's capture handlers (subclasses) keep their streams.
    for handler in logging.getLogger("dlt").handlers:
        if type(handler) is logging.StreamHandler:
            # Not setStream: it flushes the old stream, which an earlier test's capture may
            # have closed since (seen when tests of several files share a worker).
            with handler.lock or contextlib.nullcontext():
                handler.stream = stream  # type: ignore[assignment]


def run_main(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Result:
    """Run `ciklek ARGS` in this process: exit code and captured stdout/stderr."""
    from connector.cli import main

    stdout, stderr = io.StringIO(), io.StringIO()
    with _environment(env, cwd):
        _fresh_dlt_providers()
        _forget_secrets()
        _forget_limiters()
        try:
            with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
                _point_dlt_logs_at(stderr)
                try:
                    code = main(list(args))
                except SystemExit as exc:  # what a process would turn into its exit status
                    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            _point_dlt_logs_at(sys.stderr)
            _forget_secrets()
            _forget_limiters()
            _fresh_dlt_providers()
    return Result(code, stdout.getvalue(), stderr.getvalue())
