"""The daily flow on a Dask cluster (issue 4, "Out to a cluster").

Starts, each as its own process and stopped by pid: a real `prefect server start` on a
free 127.0.0.1 port, a `dask scheduler`, and `dask worker --nworkers 2` whose processes
get `PREFECT_API_URL` of that server — the set-up docs/operations.md describes, so no
worker starts a Prefect server of its own. Runs `levtrack run` on the sample book twice,
in-process and with `LEVTRACK_DASK_ADDRESS` (measures and entity reports in shards of 10
entities on the workers), and expects the same lake tables and the same report bytes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from reporting import lake
from reporting.archive import runs_for_date
from reporting.sample import DEFAULT_BUSINESS_DATE, write_sample_book
from tests.test_schedule import (
    SERVER_START_TIMEOUT, _clean_environ, _free_port, _healthy, _mkdir, _prefect_executable, _Processes, _wait_for,
)

pytestmark = pytest.mark.slow
D = DEFAULT_BUSINESS_DATE
RUN_TIMEOUT = 900
NOT_LAKE_TABLES = {"runs", "_locks", "_journal", "_staging"}  # run logs and the commit's working folders


def _executable(name: str) -> str:
    path = Path(sys.executable).with_name(name)
    assert path.is_file(), f"{name} is not installed beside {sys.executable}"
    return str(path)


def _tables(root: Path) -> dict[str, object]:
    return {p.name: lake.read_table(root, p.name) for p in sorted(root.iterdir())
            if p.is_dir() and p.name not in NOT_LAKE_TABLES}


def test_flow_on_a_dask_cluster_matches_the_in_process_run(tmp_path):
    from distributed import Client
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    book = write_sample_book(tmp_path / "book")
    port, dask_port = _free_port(), _free_port()
    api_url, scheduler = f"http://127.0.0.1:{port}/api", f"tcp://127.0.0.1:{dask_port}"
    quiet = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", "GX_ANALYTICS_ENABLED": "false"}
    base = _clean_environ() | quiet
    shared = base | {"PREFECT_API_URL": api_url}  # the flow and every worker talk to one server

    processes = _Processes(tmp_path)
    try:
        server = processes.start("server", [_prefect_executable(), "server", "start", "--host", "127.0.0.1",
                                            "--port", str(port)],
                                 env=base | {"PREFECT_HOME": str(_mkdir(tmp_path / "server-home"))}, cwd=tmp_path)
        _wait_for(lambda: _healthy(api_url), SERVER_START_TIMEOUT, "the server's /api/health", processes, server)
        processes.start("scheduler", [_executable("dask"), "scheduler", "--host", "127.0.0.1", "--port",
                                      str(dask_port), "--no-dashboard"], env=base, cwd=tmp_path)
        processes.start("workers", [_executable("dask"), "worker", scheduler, "--nworkers", "2",
                                              "--nthreads", "1", "--no-dashboard"],
                                  env=shared | {"PREFECT_HOME": str(_mkdir(tmp_path / "worker-home"))}, cwd=tmp_path)
        with Client(scheduler, timeout=120) as client:
            client.wait_for_workers(2, timeout=180)

        def run(name: str, extra: dict[str, str]) -> Path:
            root = _mkdir(tmp_path / name)
            done = subprocess.run(
                [_executable("levtrack"), "run", "--date", D.isoformat(), "--inbox", str(book.inbox),
                 "--reference", str(book.reference), "--lake", str(root / "lake"), "--archive", str(root / "archive")],
                env=shared | {"LEVTRACK_HOME": str(root / "home")} | extra, cwd=root,
                capture_output=True, text=True, timeout=RUN_TIMEOUT)
            assert done.returncode == 0, done.stderr[-3000:]
            return root

        # measure shards are a parameter of the run (they change figures by rounding only):
        # both runs use the same, in-process one after another, on the cluster as tasks
        shards = {"LEVTRACK_MEASURE_SHARD_ENTITIES": "10"}
        local = run("in-process", shards)
        cluster = run("dask", shards | {"LEVTRACK_DASK_ADDRESS": scheduler, "LEVTRACK_DASK_SHARD_ENTITIES": "10"})

        # the same lake tables, row for row
        mine, theirs = _tables(local / "lake"), _tables(cluster / "lake")
        assert sorted(mine) == sorted(theirs) and "entity_metrics" in mine
        for name, frame in mine.items():
            assert frame.equals(theirs[name]), name
        # the same documents, byte for byte: 25 entity reports rendered by the workers
        [a], [b] = runs_for_date(local / "archive", D), runs_for_date(cluster / "archive", D)
        docs = sorted(p.relative_to(a.path) for p in a.path.rglob("*") if p.suffix in (".pdf", ".html"))
        assert len(docs) == 2 * 26
        for rel in docs:
            assert (b.path / rel).read_bytes() == (a.path / rel).read_bytes(), rel
        assert a.manifest["report_id"] == b.manifest["report_id"]

        # three shards (10 + 10 + 5 entities) of measures and of rendering ran as tasks,
        # reported to the one server
        with SyncPrefectClient(api_url) as api:
            for kind in ("entity-measures", "render-entities"):
                runs = api.read_task_runs(task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_=f"{kind}-{D}-")))
                assert sorted(r.name for r in runs) == [f"{kind}-{D}-{i}" for i in range(3)], kind
                assert {r.state.name for r in runs} == {"Completed"}, kind
        worker_log = (tmp_path / "workers.log").read_text(encoding="utf-8", errors="replace")
        assert "entity-measures-" in worker_log and "render-entities-" in worker_log  # the workers ran them
        assert "Starting temporary server" not in worker_log  # and started no Prefect server
    finally:
        assert processes.stop_all(), f"left running: {processes.left_running()}"
