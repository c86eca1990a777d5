"""The scheduled deployment (issue 5, "Schedule").

Fast checks: `flows/serve.py`'s defaults (00:30 UTC, `daily_leverage_report/daily`) and
`prefect.yaml` declare the same deployment; bad arguments and a missing API URL are refused.

The slow test starts a real `prefect server start` on a free 127.0.0.1 port (own
PREFECT_HOME, analytics off), serves the deployment with `python -m flows.serve` on the
sample book, checks the schedule through the Prefect client (cron, time zone, and the
scheduled runs the server made from them), triggers a run for the sample date, waits for
it to complete and checks the archive; then stops the serve process (the deployment is
paused) and serves again with another time (one schedule, active); then deploys
prefect.yaml with the real `prefect deploy` (same deployment, on a process work pool),
which `python -m flows.serve` then refuses to take over. Every process it
starts is stopped by pid in teardown: its process group, and any descendant that left
the group, SIGTERM then SIGKILL; the test then checks that none is left and the port is free.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from flows import serve as flows_serve

REPO = Path(__file__).resolve().parents[1]

SERVER_START_TIMEOUT = 180.0
REGISTER_TIMEOUT = 120.0
SCHEDULED_RUNS_TIMEOUT = 120.0
RUN_TIMEOUT = 600.0  # ~20 s on a quiet machine; 150 s seen on a loaded 2-CPU one
STOP_TIMEOUT = 30.0


# ---------------------------------------------------------------- fast checks


def test_serve_defaults_are_0030_utc_for_the_previous_day():
    kwargs = flows_serve.serve_arguments()
    assert kwargs["name"] == "daily"
    [schedule] = kwargs["schedules"]
    assert (schedule.cron, schedule.timezone, schedule.active) == ("30 0 * * *", "UTC", True)
    assert kwargs["parameters"] == {"overrides": {"schedule_timezone": "UTC"}}
    args = flows_serve._parser().parse_args([])
    assert (args.cron, args.timezone, args.name) == ("30 0 * * *", "UTC", "daily")


def test_prefect_yaml_declares_the_same_deployment_as_serve():
    config = yaml.safe_load((REPO / "prefect.yaml").read_text(encoding="utf-8"))
    [deployment] = config["deployments"]
    assert deployment["name"] == flows_serve.DEFAULT_NAME
    assert deployment["entrypoint"] == flows_serve.ENTRYPOINT
    assert deployment["schedules"] == [
        {"cron": flows_serve.DEFAULT_CRON, "timezone": flows_serve.DEFAULT_TIMEZONE, "active": True}]
    assert deployment["parameters"] == flows_serve.deployment_parameters(flows_serve.DEFAULT_TIMEZONE)
    assert deployment["tags"] == flows_serve.TAGS
    assert deployment["description"] == flows_serve.serve_arguments()["description"]
    assert deployment["work_pool"]["name"]


def test_entrypoint_names_the_flow():
    from prefect.flows import load_flow_from_entrypoint

    flow = load_flow_from_entrypoint(str(REPO / flows_serve.ENTRYPOINT))
    assert flow.name == flows_serve.FLOW_NAME
    assert (REPO / flows_serve.ENTRYPOINT.split(":")[0]).is_file()


@pytest.mark.parametrize("argv", [["--timezone", "Mars/Olympus_Mons"], ["--cron", "61 0 * * *"],
                                  ["--cron", "every day"]])
def test_bad_schedule_is_refused(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        flows_serve.main(argv)
    assert exit_info.value.code == 2
    assert "bad --cron or --timezone" in capsys.readouterr().err


def test_serve_refuses_to_run_without_a_server(tmp_path):
    env = _clean_environ()
    env["PREFECT_HOME"] = str(_mkdir(tmp_path / "prefect-home"))
    done = subprocess.run([sys.executable, "-m", "flows.serve"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "PREFECT_API_URL is not set" in done.stderr


# ---------------------------------------------------------------- the server test


@pytest.mark.slow
def test_served_deployment_runs_on_a_real_server(tmp_path):
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import (DeploymentFilter, DeploymentFilterId, FlowRunFilter,
                                                FlowRunFilterState, FlowRunFilterStateType)
    from prefect.client.schemas.objects import StateType
    from prefect.exceptions import ObjectNotFound

    from reporting.sample import DEFAULT_BUSINESS_DATE, write_sample_book

    timings: dict[str, float] = {}
    t0 = time.monotonic()
    book = write_sample_book(tmp_path / "book")
    assert book.business_date == DEFAULT_BUSINESS_DATE
    archive = tmp_path / "archive"
    config = tmp_path / "levtrack.toml"
    config.write_text("# empty: every path comes from LEVTRACK_* variables\n", encoding="utf-8")

    # A daily schedule in a time zone with daylight saving, at an hour at least 11 hours
    # away, so no scheduled run can start while the test runs, and outside 01:00-03:59,
    # which a change of clocks can skip or repeat.
    zone_name = "America/New_York"
    zone = ZoneInfo(zone_name)
    hour = (datetime.now(zone).hour + 12) % 24
    hour = 4 if hour in (1, 2, 3) else hour
    cron = f"30 {hour} * * *"

    port = _free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    base = _clean_environ()
    server_env = base | {
        "PREFECT_HOME": str(_mkdir(tmp_path / "server-home")),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }
    serve_env = base | {
        "PREFECT_HOME": str(_mkdir(tmp_path / "serve-home")),
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "GX_ANALYTICS_ENABLED": "false",
        "LEVTRACK_CONFIG": str(config),
        "LEVTRACK_INBOX": str(book.inbox),
        "LEVTRACK_REFERENCE": str(book.reference),
        "LEVTRACK_LAKE": str(tmp_path / "lake"),
        "LEVTRACK_ARCHIVE": str(archive),
    }

    processes = _Processes(tmp_path)
    try:
        server = processes.start("server", [_prefect_executable(), "server", "start", "--host", "127.0.0.1",
                                            "--port", str(port)], env=server_env, cwd=tmp_path)
        _wait_for(lambda: _healthy(api_url), SERVER_START_TIMEOUT, "the server's /api/health",
                  processes, server)
        timings["server up"] = time.monotonic() - t0

        served = processes.start("serve", [sys.executable, "-m", "flows.serve", "--cron", cron,
                                           "--timezone", zone_name, "--name", "daily"],
                                 env=serve_env, cwd=REPO)
        with SyncPrefectClient(api_url) as client:

            def registered():
                try:
                    return client.read_deployment_by_name("daily_leverage_report/daily")
                except ObjectNotFound:
                    return None

            deployment = _wait_for(registered, REGISTER_TIMEOUT, "the deployment", processes, served)
            timings["deployment registered"] = time.monotonic() - t0

            # The schedule, as the server holds it.
            assert deployment.entrypoint == "flows/daily.py:daily_leverage_report"
            assert deployment.parameters == {"overrides": {"schedule_timezone": zone_name}}
            assert deployment.work_pool_name is None  # served: runs execute in the serve process
            assert not deployment.paused
            [schedule] = deployment.schedules
            assert schedule.active
            assert (schedule.schedule.cron, schedule.schedule.timezone) == (cron, zone_name)

            # The runs the server's scheduler made from it: at <hour>:30 New York time, one a day.
            only_scheduled = FlowRunFilter(state=FlowRunFilterState(
                type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])))
            of_deployment = DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))

            def scheduled_runs():
                runs = client.read_flow_runs(flow_run_filter=only_scheduled, deployment_filter=of_deployment)
                return sorted(runs, key=lambda r: r.expected_start_time) if len(runs) >= 3 else None

            upcoming = _wait_for(scheduled_runs, SCHEDULED_RUNS_TIMEOUT, "scheduled runs", processes, served)[:3]
            starts = [r.expected_start_time.astimezone(zone) for r in upcoming]
            assert all((s.hour, s.minute) == (hour, 30) for s in starts), starts
            assert all((b.date() - a.date()) == timedelta(days=1) for a, b in zip(starts, starts[1:])), starts
            assert starts[0] > datetime.now(timezone.utc) + timedelta(hours=11)
            assert all(not r.parameters.get("business_date") for r in upcoming)
            timings["schedule checked"] = time.monotonic() - t0

            # A run by hand, as `prefect deployment run ... -p business_date=...` makes it.
            date_text = DEFAULT_BUSINESS_DATE.isoformat()
            run = client.create_flow_run_from_deployment(deployment.id, parameters={"business_date": date_text})
            triggered = time.monotonic()

            def finished():
                current = client.read_flow_run(run.id)
                return current if current.state is not None and current.state.is_final() else None

            final = _wait_for(finished, RUN_TIMEOUT, f"flow run {run.id} to finish", processes, served)
            timings["run (trigger to final state)"] = time.monotonic() - triggered
            assert final.state.type == StateType.COMPLETED, (
                f"flow run ended {final.state.type.value}: {final.state.message}\n"
                + processes.log_tail("serve"))
            assert final.parameters == {"business_date": date_text,
                                        "overrides": {"schedule_timezone": zone_name}}
            assert final.deployment_id == deployment.id

            # Stopped, the runner pauses the deployment; served again (here with another
            # time), the one schedule is replaced and active again.
            processes.stop(served)
            assert client.read_deployment(deployment.id).paused
            hour = (hour + 1) % 24
            cron = f"30 {hour} * * *"
            served = processes.start("serve-again", [sys.executable, "-m", "flows.serve", "--cron", cron,
                                                     "--timezone", zone_name], env=serve_env, cwd=REPO)

            def served_again():
                current = client.read_deployment(deployment.id)
                ok = not current.paused and [x.schedule.cron for x in current.schedules] == [cron]
                return current if ok else None

            again = _wait_for(served_again, REGISTER_TIMEOUT, "the deployment served again", processes, served)
            assert [(s.schedule.cron, s.schedule.timezone, s.active) for s in again.schedules] == [
                (cron, zone_name, True)]
            timings["restart checked"] = time.monotonic() - t0

            # prefect.yaml through the real `prefect deploy` (README's commands): the same
            # deployment, for a process work pool; serving then refuses to take the name over.
            processes.stop(served)
            pool = yaml.safe_load((REPO / "prefect.yaml").read_text(encoding="utf-8"))["deployments"][0][
                "work_pool"]["name"]
            for name, command in (("work-pool", ["work-pool", "create", pool, "--type", "process"]),
                                  ("deploy", ["--no-prompt", "deploy", "--all"])):
                step = processes.start(name, [_prefect_executable(), *command], env=serve_env, cwd=REPO)
                assert step.wait(timeout=REGISTER_TIMEOUT) == 0, processes.log_tail(name)
            declared = client.read_deployment_by_name("daily_leverage_report/daily")
            assert declared.work_pool_name == pool
            assert declared.entrypoint == "flows/daily.py:daily_leverage_report"
            assert declared.parameters == {"overrides": {"schedule_timezone": "UTC"}}
            assert [(s.schedule.cron, s.schedule.timezone, s.active) for s in declared.schedules] == [
                ("30 0 * * *", "UTC", True)]
            refused = processes.start("serve-refused", [sys.executable, "-m", "flows.serve"],
                                      env=serve_env, cwd=REPO)
            assert refused.wait(timeout=REGISTER_TIMEOUT) == 2, processes.log_tail("serve-refused")
            assert "is deployed to the work pool" in processes.log_tail("serve-refused")
            assert client.read_deployment(declared.id).work_pool_name == pool
            timings["prefect deploy checked"] = time.monotonic() - t0

        date_dir = archive / date_text
        run_dirs = [p for p in date_dir.iterdir() if not p.name.startswith(".")]
        assert len(run_dirs) == 1, sorted(p.name for p in date_dir.iterdir())
        summary = run_dirs[0] / "summary.pdf"
        assert summary.is_file() and summary.read_bytes()[:5] == b"%PDF-"
        assert (run_dirs[0] / "manifest.json").is_file()
    finally:
        stopped = processes.stop_all()
        timings["total"] = time.monotonic() - t0
        print("timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))

    assert stopped, "processes still running after teardown: " + ", ".join(map(str, processes.left_running()))
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, f"something still listens on port {port}"


# ---------------------------------------------------------------- helpers


def _clean_environ() -> dict[str, str]:
    """This environment without Prefect or levtrack settings (the test's own harness sets some)."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("PREFECT_", "LEVTRACK_")) and k != "DO_NOT_TRACK"}


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _prefect_executable() -> str:
    beside = Path(sys.executable).with_name("prefect")
    found = str(beside) if beside.is_file() else shutil.which("prefect")
    assert found, "the prefect command is not installed"
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(api_url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{api_url}/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _wait_for(probe, timeout: float, what: str, processes: "_Processes", process: subprocess.Popen):
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        name = processes.name_of(process)
        if process.poll() is not None:
            pytest.fail(f"{name} exited with {process.returncode} while waiting for {what}\n"
                        + processes.log_tail(name))
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} after {timeout:.0f} s\n" + processes.log_tail(name))
        time.sleep(1.0)


class _Processes:
    """The processes this test started, each in its own session; stopped by pid."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.started: list[tuple[str, subprocess.Popen]] = []
        self.known: set[int] = set()

    def start(self, name: str, args: list[str], *, env: dict[str, str], cwd: Path) -> subprocess.Popen:
        with open(self.log_dir / f"{name}.log", "wb") as log:
            proc = subprocess.Popen(args, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.started.append((name, proc))
        return proc

    def name_of(self, process: subprocess.Popen) -> str:
        return next(name for name, p in self.started if p is process)

    def log_tail(self, name: str, lines: int = 60) -> str:
        path = self.log_dir / f"{name}.log"
        text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
        return f"--- last lines of {name}.log ---\n" + "\n".join(text.splitlines()[-lines:])

    def stop(self, proc: subprocess.Popen) -> None:
        """SIGTERM to the process's group and descendants; SIGKILL to what is left after a while."""
        family = _descendants(proc.pid)  # before the signal: once the parent dies they are re-parented
        self.known.update(family | {proc.pid})
        _signal_group(proc.pid, signal.SIGTERM)
        _signal_pids(family, signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
        family |= _descendants(proc.pid)
        self.known.update(family)
        _signal_group(proc.pid, signal.SIGKILL)
        _signal_pids([pid for pid in family if _alive(pid)], signal.SIGKILL)
        proc.wait(timeout=STOP_TIMEOUT)

    def stop_all(self) -> bool:
        """Stop every process (the last started first); True if none of them or theirs is left."""
        for _, proc in reversed(self.started):
            self.stop(proc)
        deadline = time.monotonic() + STOP_TIMEOUT
        while self.left_running() and time.monotonic() < deadline:
            _signal_pids(self.left_running(), signal.SIGKILL)
            time.sleep(0.2)
        return not self.left_running()

    def left_running(self) -> list[int]:
        return [pid for pid in sorted(self.known) if _alive(pid)]


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _signal_pids(pids, sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # fields after "pid (comm)": state, ppid, ...


def _alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found
