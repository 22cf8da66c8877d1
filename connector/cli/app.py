"""The `ciklek` command: `main(argv)` parses the flags, runs the command's handler, and turns
whatever it raised into an exit code and one line.

Exit codes and lines come from `connector.errors.explain`, the one map the cron script, Dagster
and `run_sync` use too; tracebacks only with `--debug`. `main` can be called many times in one
process (the tests do): each call starts with clean output state.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence

from connector.cli import commands
from connector.cli.output import err, reset
from connector.cli.parser import build_parser
from connector.config.redaction import register_secret
from connector.config.statedir import check_pipeline_name
from connector.errors import EXIT_CONFIG, CiklekError, explain
from connector.runs.signals import keep_exit_code

Handler = Callable[[argparse.Namespace], int]

HANDLERS: dict[str, Handler] = {
    "sync": commands.cmd_sync,
    "sweep": commands.cmd_sync,
    "plan": commands.cmd_plan,
    "status": commands.cmd_status,
    "check": commands.cmd_check,
    "demo": commands.cmd_demo,
    "query": commands.cmd_query,
    "config": commands.cmd_config,
}


def console() -> int:
    """The `ciklek` console script: `main` on this process's arguments. Once a run has decided
    its exit code, SIGTERM/SIGINT are ignored until the process has exited with it (interpreter
    shutdown included): a scheduler reads the code the run decided, never "killed by signal"."""
    with keep_exit_code(at_exit=True):
        return main()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    reset()
    if argv[:1] == ["sandbox"]:
        from connector import sandbox  # lazy: only this command needs it

        if (problem := sandbox.missing_extra()) is not None:
            err(f"ciklek: error: {problem}")
            return EXIT_CONFIG
        return int(sandbox.main(argv[1:]) or 0)
    register_secret(os.environ.get("SOURCES__CIKLEK__API_KEY"))
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if not args.command:
        build_parser().print_help()
        return EXIT_CONFIG
    return run_guarded(HANDLERS[args.command], args)


def run_guarded(handler: Handler, args: argparse.Namespace) -> int:
    """Run the handler; map what it raised to an exit code and one line (`errors.explain`)."""
    # A run's decided code holds while its summary is printed; an error's code once it is
    # mapped (a signal then changes neither).
    with keep_exit_code() as signals:
        try:
            # A pipeline name becomes a path: refuse `../x` before anything touches the disk.
            if getattr(args, "pipeline", None) is not None:
                check_pipeline_name(args.pipeline)
            return handler(args)
        except (Exception, KeyboardInterrupt) as exc:
            signals.decide()
            if args.debug and not isinstance(exc, CiklekError | KeyboardInterrupt):
                err(traceback.format_exc())  # a bug, or our error wrapped by dlt: where it was
            explained = explain(exc)
            err(f"ciklek: {explained.line}")
            return explained.code
