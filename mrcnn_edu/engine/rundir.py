"""The run folder `runs/<name>/`: one run at a time, writable, and left in a state to resume (lesson 12).

    with run_lock("runs/tiny"):       # held for the run's life; a second run into it refuses
        ...

The lock is a file `run.lock` created with O_CREAT | O_EXCL (atomic: of two runs that start
together exactly one creates it) holding {"pid", "host", "started"} as JSON; the run deletes it
when it ends, however it ends short of being killed. A killed run leaves it behind: the next run
on the same host sees that its pid is no longer alive, says so, and takes the lock over. A lock
from another host cannot be checked and is never taken over: the message says which file to
delete once that run is known to be gone.

An unwritable folder (read-only, or a path through a regular file) raises `RunFolderError`
naming the folder and the reason, never a raw PermissionError or NotADirectoryError.
"""
import contextlib
import json
import os
import socket
import sys
import time
from pathlib import Path

LOCK_NAME = "run.lock"


class RunFolderError(ValueError):
    """The run folder cannot be created or written; the message names it and says why."""


class RunFolderLocked(FileExistsError):
    """Another live run holds the folder; the message names its pid and host."""


def make_writable_dir(folder, what="run folder"):
    """Create `folder` (and parents) or raise RunFolderError naming it; returns it as a Path."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunFolderError(f"cannot write the {what} {folder}: {err.strerror or err}") from None
    if not folder.is_dir():
        raise RunFolderError(f"cannot write the {what} {folder}: it is not a directory")
    return folder


def pid_alive(pid):
    """True when a process with this pid exists on this machine."""
    try:
        os.kill(pid, 0)  # signal 0: no signal is sent, only the existence check is made
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists but belongs to another user
    return True


def read_lock(path):
    """The {"pid", "host", "started"} of a lock file; {} when it is unreadable or half-written."""
    try:
        owner = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}


def try_create_lock(path):
    """Create the lock file with our pid and host; False when it already exists."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(owner) + "\n")
    return True


def is_stale(owner):
    """A lock left by a run that was killed on this host (its pid is gone)."""
    return owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int) \
        and not pid_alive(owner["pid"])


def acquire_run_lock(folder):
    """Take the lock of run folder `folder` (created if needed); returns the lock file's path.

    Raises RunFolderLocked when a live run holds it, RunFolderError when it cannot be written.
    """
    folder = make_writable_dir(folder)
    path = folder / LOCK_NAME
    for _ in range(3):  # a stale lock is removed and the creation retried
        try:
            if try_create_lock(path):
                return path
        except OSError as err:
            raise RunFolderError(f"cannot write the run folder {folder}: "
                                 f"{err.strerror or err}") from None
        owner = read_lock(path)
        if not is_stale(owner):
            raise RunFolderLocked(locked_message(folder, path, owner))
        print(f"note: removing the lock of a killed run (pid {owner['pid']} is gone): {path}",
              file=sys.stderr)
        path.unlink(missing_ok=True)
    raise RunFolderLocked(locked_message(folder, path, read_lock(path)))


def locked_message(folder, path, owner):
    who = (f"pid {owner.get('pid')} on {owner.get('host')}" if owner
           else "another process (its lock file is being written)")
    return (f"run folder {folder} is in use by {who}; wait for that run to end or choose "
            f"another --output (if that run is known to be gone, delete {path})")


def release_run_lock(path):
    """Delete the lock file if it is still ours."""
    path = Path(path)
    if read_lock(path).get("pid") == os.getpid():
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def run_lock(folder, enabled=True):
    """Hold the lock of `folder` for the body of the `with` (no-op when not `enabled`)."""
    path = acquire_run_lock(folder) if enabled else None
    try:
        yield path
    finally:
        if path is not None:
            release_run_lock(path)
