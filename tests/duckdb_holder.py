"""Another process holding a DuckDB file open read-only, as an analyst's shell or notebook does.

DuckDB lets one process write a file, or any number read it, never both: a reader in another
process is exactly what blocks a sync. Tests use a real second process for that reason.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HOLDER = """
import duckdb, sys
con = duckdb.connect(sys.argv[1], read_only=True)
print(con.sql(sys.argv[2]).fetchall()[0][0] if len(sys.argv) > 2 else "ready", flush=True)
for line in sys.stdin:  # each line: run the query again and print its answer
    print(con.sql(sys.argv[2]).fetchall()[0][0], flush=True)
"""


class Holder:
    """`Holder(path)` opens the file read-only and keeps it open until `close()`.

    With `sql`, the first answer is in `first` and `ask()` runs it again on the same connection
    (so a test sees what a long-open session sees).
    """

    def __init__(self, path: Path, sql: str | None = None) -> None:
        args = [sys.executable, "-c", HOLDER, str(path), *([sql] if sql else [])]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.first = self.proc.stdout.readline().strip()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def ask(self) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
