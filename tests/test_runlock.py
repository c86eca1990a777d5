"""One run per business date: the lock, its message, and take-over of a dead holder's lock."""

import json
import subprocess
import sys
import time
from datetime import date

import pytest

from reporting.errors import RunLockedError
from reporting.runlock import date_lock

D = date(2026, 11, 24)


def test_second_run_fails_with_the_holder_named(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import time, sys; from datetime import date; from reporting.runlock import date_lock\n"
        "with date_lock(sys.argv[1], date(2026, 11, 24)):\n    print('held', flush=True); time.sleep(30)"),
        str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=rf"pid {holder.pid}, started 20"):
            with date_lock(tmp_path, D, wait_seconds=0.5):
                pass
    finally:
        holder.kill()
        holder.wait()
    # the holder died without releasing anything: its lock is taken over at once
    with date_lock(tmp_path, D) as path:
        content = json.loads(path.read_text())
        assert content["took_over_from_dead_pid"] == holder.pid


def test_other_dates_do_not_block_and_release_is_clean(tmp_path):
    with date_lock(tmp_path, D):
        with date_lock(tmp_path, date(2026, 11, 25)):
            pass
    with date_lock(tmp_path, D) as path:
        assert json.loads(path.read_text())["took_over_from_dead_pid"] is None


def test_waiting_run_gets_the_lock_when_the_first_ends(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import time, sys; from datetime import date; from reporting.runlock import date_lock\n"
        "with date_lock(sys.argv[1], date(2026, 11, 24)):\n    print('held', flush=True); time.sleep(1.5)"),
        str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    start = time.monotonic()
    with date_lock(tmp_path, D, wait_seconds=20):
        assert time.monotonic() - start > 0.5
    holder.wait()
