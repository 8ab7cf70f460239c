"""Prepare and check the state directory (``home_agent.state_dir``) before anything is put in it.

The control socket lives there, and later the SQLite store. Whoever can write in that directory can put
a socket of their own in place of the daemon's (and be asked for bindings, or told to remove them, in its
name) or plant a file that stops the daemon from starting; a symlink could point the daemon at any
directory at all. So the directory must be the daemon's user's alone: a real directory, not a symlink,
owned by the daemon's effective uid, and writable by nobody else. Anything else refuses the start with
one line naming the key, the path and the fix; the daemon never repairs a directory someone else made,
because it cannot know what that someone already put inside.

A missing directory is created mode 0700 (its missing parents with the usual umask, as ``mkdir -p``
would). Only the directory itself is judged, as OpenSSH judges ``~/.ssh``: the parents are the system's
(``/var/lib``) or the user's (``~/.local/state``) business.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

KEY = "home_agent.state_dir"
MODE = 0o700  # a directory this module creates: the daemon's user reads, writes and enters it, no one else


class StateDirError(RuntimeError):
    """Why the daemon will not use the state directory, as one line that names the key and the path."""


def prepare(path: Path) -> None:
    """Create ``path`` (mode 0700) if it is missing, then check it; raise StateDirError if it is unsafe."""
    try:
        st = os.lstat(path)  # lstat: a symlink is judged as itself, never by what it points at
    except FileNotFoundError:
        st = _create(path)
    except OSError as exc:  # a parent that is a file (ENOTDIR), or that we may not search (EACCES)
        raise StateDirError(f"{KEY}: cannot use {path}: {exc.strerror}") from None
    check(path, st)


def check(path: Path, st: os.stat_result, euid: int | None = None) -> None:
    """Refuse a symlink, anything but a directory, another user's directory, or one that group or others
    may write to (``st`` from ``os.lstat``; ``euid`` the daemon's, by default this process's)."""
    if stat.S_ISLNK(st.st_mode):
        raise StateDirError(f"{KEY}: {path} is a symlink")
    if not stat.S_ISDIR(st.st_mode):
        raise StateDirError(f"{KEY}: {path} is not a directory")
    euid = os.geteuid() if euid is None else euid
    if st.st_uid != euid:
        raise StateDirError(f"{KEY}: {path} is owned by uid {st.st_uid}, not uid {euid} (the daemon's)")
    mode = stat.S_IMODE(st.st_mode)
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise StateDirError(f"{KEY}: {path} is writable by group or others (mode {mode:04o}); chmod go-w it")


def _create(path: Path) -> os.stat_result:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StateDirError(f"{KEY}: cannot create {path.parent}: {exc.strerror}") from None
    try:
        os.mkdir(path, MODE)  # the umask can only take bits away: no one else gets a way in
    except FileExistsError:
        pass  # made meanwhile by someone else: judged below like any directory we found
    except OSError as exc:
        raise StateDirError(f"{KEY}: cannot create {path}: {exc.strerror}") from None
    try:
        return os.lstat(path)
    except OSError as exc:
        raise StateDirError(f"{KEY}: cannot use {path}: {exc.strerror}") from None
