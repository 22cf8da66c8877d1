"""The state dir is private: owner-only directories and files, never a path someone else chose.

Why: the state dir holds the quota ledger, run status and dlt's working files (load packages
carry customer names and e-mails). On a shared machine another user must neither read them nor
plant a symlink that makes our next write land somewhere else. So directories are created 0700
and files 0600, replaced files are written to a fresh `mkstemp` file in the same directory and
renamed over (never truncated in place), files are opened without following symlinks, and a
state dir that belongs to someone else or that others may write to is refused (exit 2) rather
than used. Pipeline names become path components, so they are checked before anything touches
the disk.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import tempfile
from pathlib import Path

from connector.errors import ConfigError

DIR_MODE = 0o700
FILE_MODE = 0o600
_PIPELINE_NAME = re.compile(r"[A-Za-z0-9_.-]+")
# Entries that mark an existing directory as a state dir we made (so tightening it is ours to do).
_OUR_ENTRIES = frozenset({"runs", "ledger.json", "ledger.lock", "pipelines"})


def check_pipeline_name(name: str) -> str:
    """Return `name` if it is safe as one path component, else raise ConfigError (exit 2)."""
    if not _PIPELINE_NAME.fullmatch(name) or name in {".", ".."}:
        raise ConfigError(
            f"pipeline name {name!r} is not allowed: use letters, digits, '_', '.' and '-' "
            "(no path separators, not '.' or '..')"
        )
    return name


def check_dir(path: Path) -> bool:
    """Refuse (ConfigError) a directory owned by someone else or writable by group/others.

    Returns False when the directory does not exist yet (nothing to check, nothing to read).
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"state dir {path} is not a directory: set CIKLEK_HOME to a directory")
    if st.st_uid != os.geteuid():
        raise ConfigError(
            f"state dir {path} belongs to uid {st.st_uid}, not to you (uid {os.geteuid()}): "
            f"run chown -R {os.geteuid()} {path}, or set CIKLEK_HOME to a directory of your own"
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(
            f"state dir {path} is writable by other users (mode {stat.S_IMODE(st.st_mode):04o}): "
            f"run chmod 700 {path}, or set CIKLEK_HOME to a private directory"
        )
    return True


def private_dir(path: Path, *, ours: bool = False) -> Path:
    """Create `path` (mode 0700) or check the existing one; returns it.

    An existing directory readable by others is tightened to 0700 when it is ours to change:
    `ours=True` (a subdirectory we name) or it already holds our files (a state dir made by an
    older version). Every other existing directory keeps its mode: the user chose it.
    """
    if not check_dir(path):
        if path.parent != path and not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):  # a concurrent run made it: checked below
            path.mkdir(mode=DIR_MODE)
        check_dir(path)
        ours = True
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077 and (ours or _holds_our_files(path)):
        os.chmod(path, DIR_MODE)
    return path


def _holds_our_files(path: Path) -> bool:
    """Empty, or holding one of our entries: a directory made for us, not one the user lives in."""
    try:
        names = {entry.name for entry in os.scandir(path)}
    except OSError:
        return False
    return not names or bool(names & _OUR_ENTRIES)


def open_private(path: Path, flags: int = os.O_RDWR) -> int:
    """Open (creating 0600) a file without following a symlink; returns the descriptor.

    A file of ours left readable by an older version is narrowed to 0600.
    """
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise ConfigError(f"{path} is a symbolic link, which we never follow: remove it") from None
    try:
        st = os.fstat(fd)
        if stat.S_IMODE(st.st_mode) & 0o077 and st.st_uid == os.geteuid():
            os.fchmod(fd, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def replace_file(path: Path, text: str, *, durable: bool = False) -> None:
    """Atomically replace `path` with `text` (0600): a reader never sees half a file.

    The new content goes to a `mkstemp` file (created exclusively, 0600, unpredictable name) in
    the same directory and is renamed over `path`; a symlink at `path` is replaced, not followed.
    `durable`: the content and the rename reach the disk before this returns (fsync of the file
    and of the directory), so a power cut cannot take back what was written (the quota ledger's
    reservations: a request may be sent as soon as it returns).
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
