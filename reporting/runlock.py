"""One run per business date: an exclusive lock file holding the holder's pid and start time.

The lock is an `flock` on `<lake>/_locks/<date>.lock`: the kernel releases it when
the holder dies, however it dies, so a stale lock from a dead process is taken
over by the next run without anyone deleting it. The file's content (pid, start
time, host) is there for the message the second run prints.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from contextlib import contextmanager
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Iterator

from .errors import RunLockedError

LOCK_DIR = "_locks"


@contextmanager
def date_lock(lake_root: Path, business_date: date, *, wait_seconds: float = 0.0) -> Iterator[Path]:
    """Hold the run lock of `business_date`, waiting up to `wait_seconds` for another run."""
    folder = Path(lake_root) / LOCK_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{business_date.isoformat()}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait_seconds
    held = False
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = True
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _read(path)
                    raise RunLockedError(
                        f"another run holds the lock for {business_date} (pid {holder.get('pid', '?')}, "
                        f"started {holder.get('started', '?')} on {holder.get('host', '?')}); "
                        f"wait for it to finish, or check that process ({path})"
                    ) from None
                time.sleep(0.2)
        stale = _read(path)  # left by a holder that died without releasing
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({
            "pid": os.getpid(), "host": socket.gethostname(),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "took_over_from_dead_pid": stale.get("pid"),
        }).encode(), 0)
        os.fsync(fd)
        yield path
    finally:
        if held:
            os.ftruncate(fd, 0)  # a clean release leaves no holder behind
        os.close(fd)  # releases the flock


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
