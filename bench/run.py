#!/usr/bin/env python
"""Benchmark of the daily job: every stage timed on one synthetic drop, against a pandas baseline.

    python bench/run.py --scale L [--out DIR | --reuse DROP] [--no-baseline] [--no-cli]
                        [--skip-render] [--json PATH] [--keep]
    python bench/run.py --markdown RESULT.json [RESULT.json ...]   # README tables

One process runs the job's library steps (`reporting.daily`, no Prefect) on a drop
from `bench/generate.py` — ingest, validation, each measure family, limits, report
inputs, rendering, archiving — then, on the same in-memory inputs, the pandas
baseline (`bench/baseline_pandas.py`), and checks that both agree on every figure
the baseline computes. Optionally it then times the whole `levtrack run` CLI as a
subprocess on a fresh lake (Prefect included). It prints the machine, the stage
table, peak memory and the targets; `--json` keeps the numbers for bench/README.md.

Memory: the main process's peak RSS is `getrusage(RUSAGE_SELF)`, read before the
baseline runs (same process); a drop that has to be generated is written by a
subprocess and the measurements run in a fresh child, so the generator's memory
does not count (`--reuse` measures in this process). Render workers and the
`levtrack run` subprocess are sampled from /proc (`DescendantPeak` says why not
RUSAGE_CHILDREN). Other processes' CPU use during each phase is reported too: on a
shared machine it inflates the times.

Exit status 1 if the job and the baseline disagree, 3 if `levtrack run` failed.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
for _p in (REPO, BENCH):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

SCALES = ("S", "M", "L", "XL")
GIB_KIB = 1024 * 1024  # ru_maxrss is in KiB on Linux
FAMILIES = ("exposure", "margin", "var_backtest", "stress", "cascade")
CONCURRENT = ("stress", "cascade", "var_backtest")
"""Families that run in threads of their own, overlapping the others: their wall time is
theirs, and the families add up to more than the measures' wall time."""
SHARED = ("exposure", "margin", "var_backtest", "stress")
"""Families the pandas baseline also computes: the ratio compares these (cascade is job-only)."""

BASELINE_STEPS = {
    # bench/baseline_pandas.py function: the job's measure family it corresponds to
    "_inputs": "inputs to pandas",
    "build_lines": "exposure", "exposure_and_leverage": "exposure", "open_interest_share": "exposure",
    "margin": "margin",
    "daily_returns": "var_backtest", "var_and_backtest": "var_backtest",
    "stress": "stress", "worst_stress": "stress",
}
"""`baseline()` is one function; its steps are timed by wrapping these module functions."""

TARGETS = {"measures_s": 3.0, "ratio": 20.0, "whole_run_s": 90.0, "peak_gib": 4.0}
"""The issue's targets, set for scale L on a 2-core 24 GiB machine."""

_T0 = time.perf_counter()


def say(message: str) -> None:
    """Progress on stderr, so stdout is just the results."""
    print(f"[{time.perf_counter() - _T0:7.1f} s] {message}", file=sys.stderr, flush=True)


def gib(kib: float | None) -> float | None:
    return None if kib is None else kib / GIB_KIB


def peak_kib(who: int = resource.RUSAGE_SELF) -> int:
    return resource.getrusage(who).ru_maxrss


# ----------------------------------------------------------------------------- machine


def machine() -> dict[str, Any]:
    """What the numbers came from: CPU, cores, RAM, library versions, code commit."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gib = int(line.split()[1]) / GIB_KIB
    except OSError:
        pass
    versions = {}
    for package in ("polars", "numpy", "pandas", "pyarrow", "weasyprint", "prefect", "great_expectations"):
        try:
            versions[package] = metadata.version(package.replace("_", "-"))
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpu": cpu, "cores": os.cpu_count(), "ram_gib": ram_gib, "os": platform.platform(),
        "python": platform.python_version(), "versions": versions, **git_state(),
    }


def speed_probe() -> float:
    """Seconds for a fixed mix of work on one core (BLAS on one thread, a sort, a Python
    loop): taken before and after the run, it tells a slow phase of the machine from a
    slower job (bench/README.md, "Speed probe")."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    a, x = rng.random((600, 600)), rng.random(4_000_000)
    start = time.perf_counter()
    with threadpool_limits(1):
        for _ in range(8):
            a @ a
    np.sort(x)
    sum(i * i for i in range(3_000_000))
    return time.perf_counter() - start


def git_state() -> dict[str, Any]:
    """Commit and whether the work tree had uncommitted or untracked changes (they are in the numbers too)."""
    def git(*args: str) -> str:
        out = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
        return out.stdout.strip() if out.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or None
    own = {"bench/run.py", "bench/README.md"}  # this benchmark's own files do not change the figures
    dirty = any(line[3:] not in own for line in git("status", "--porcelain").splitlines())
    return {"commit": commit, "uncommitted_changes": dirty}


def cpu_seconds() -> tuple[float, float, float]:
    """(wall, CPU seconds used by the whole machine, by this process and its children)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    busy = sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)  # all but idle and iowait
    own = sum(getattr(resource.getrusage(w), f) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
              for f in ("ru_utime", "ru_stime"))
    return time.perf_counter(), busy / os.sysconf("SC_CLK_TCK"), own


def other_cpu(start: tuple[float, float, float], end: tuple[float, float, float]) -> dict[str, float]:
    """CPU that other processes took during the measurements: on a shared machine the
    times are only comparable when this is near zero."""
    wall, machine_s, own = (b - a for a, b in zip(start, end))
    others = max(0.0, machine_s - own)
    return {"wall_s": wall, "core_seconds": others, "share": others / (wall * (os.cpu_count() or 1))}


class DescendantPeak:
    """Largest peak RSS (VmHWM, KiB) of any descendant process, polled from /proc while
    running. Not RUSAGE_CHILDREN: multiprocessing's spawn forks before it execs, and the
    kernel carries the forked copy's high-water mark — this process's size at that moment —
    into the worker's ru_maxrss, so RUSAGE_CHILDREN reports the parent's size, not the
    workers'. VmHWM is per address space, so it counts only what the worker itself used."""

    def __init__(self, interval: float = 0.25):
        import threading

        self.interval, self.peak, self.processes = interval, 0, set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> "DescendantPeak":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        me = os.getpid()
        while not self._stop.wait(self.interval):
            parents: dict[int, int] = {}
            for entry in os.scandir("/proc"):
                if entry.name.isdigit():
                    try:
                        stat = Path(entry.path, "stat").read_text()
                        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
                    except (OSError, ValueError, IndexError):
                        continue
            mine = {pid for pid in parents if self._descends(pid, me, parents)}
            for pid in mine:
                try:
                    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                        if line.startswith("VmHWM:"):
                            self.peak = max(self.peak, int(line.split()[1]))
                            self.processes.add(pid)
                except OSError:
                    continue

    @staticmethod
    def _descends(pid: int, ancestor: int, parents: dict[int, int]) -> bool:
        while pid in parents and pid > 1:
            pid = parents[pid]
            if pid == ancestor:
                return True
        return False


# ----------------------------------------------------------------------------- drop


def run_measured(cmd: list[str], **kwargs) -> tuple[int, float, int | None]:
    """Run `cmd`; return its exit code, wall seconds and the largest peak RSS (KiB) of its
    processes (sampled: wait4's ru_maxrss would include this process's size at the fork)."""
    start = time.perf_counter()
    with DescendantPeak() as peak:
        rc = subprocess.run(cmd, **kwargs).returncode
    return rc, time.perf_counter() - start, peak.peak or None


def generate_drop(scale: str, folder: Path, business_date: date | None, seed: int | None) -> tuple[float, int]:
    """Write the drop with bench/generate.py in a subprocess; (seconds, peak KiB)."""
    cmd = [sys.executable, str(BENCH / "generate.py"), "--scale", scale, "--out", str(folder), "-v"]
    if business_date:
        cmd += ["--date", business_date.isoformat()]
    if seed is not None:
        cmd += ["--seed", str(seed)]
    say(f"generating scale {scale} into {folder}")
    rc, seconds, peak = run_measured(cmd, stdout=sys.stderr)
    if rc:
        raise SystemExit(f"bench/generate.py failed (exit {rc})")
    return seconds, peak


def drop_date(drop: Path, wanted: date | None) -> date:
    """The business date of a drop: `wanted`, or the only `inbox/<date>/` folder with `_READY`."""
    if wanted:
        return wanted
    dates = sorted(p.name for p in (drop / "inbox").glob("*") if (p / "_READY").is_file())
    if len(dates) != 1:
        raise SystemExit(f"{drop}/inbox: {len(dates)} complete drops ({', '.join(dates) or 'none'}); "
                         "pass --date")
    return date.fromisoformat(dates[0])


# ----------------------------------------------------------------------------- the job


def seed_history(lake: Path, metrics: Any, business_date: date, days: int) -> None:
    """`days` earlier `entity_metrics` partitions, before `business_date`, holding these
    figures again: the reports then read the history (leverage chart, C 48 table) of a lake
    after that many daily runs, which a fresh lake does not have."""
    import polars as pl

    from reporting import lake as lake_io
    for i in range(1, days + 1):
        day = business_date - timedelta(days=i)
        lake_io.write_partition(lake, "entity_metrics", day, metrics.with_columns(business_date=pl.lit(day)))


def run_job(drop: Path, work: Path, business_date: date, render: bool = True, repeat: int = 1,
            history_days: int = 0) -> dict[str, Any]:
    """The job's library steps in order, each timed; returns timings, figures and memory.
    Without `render`, stops before rendering (nothing is written to the lake or archive).
    `repeat` > 1 times the measures that many times in all (the job's run first).
    `history_days` > 0 seeds the lake with that many earlier days of today's entity figures
    after the measures (not timed), before the report inputs read them."""
    from reporting import daily
    from reporting.config import load_settings

    settings = load_settings({"inbox": drop / "inbox", "reference": drop / "reference",
                              "lake": work / "lake", "archive": work / "archive"})
    stages: dict[str, float] = {}
    families: dict[str, float] = {}

    def step(name: str, fn: Callable, *args, **kwargs):
        say(f"job: {name}")
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        stages[name] = time.perf_counter() - start
        return out

    inputs = step("ingest", daily.load_inputs, settings, business_date)
    validation = step("validation", daily.validate_inputs, inputs, settings)
    results = step("compute", daily.compute, inputs, validation, settings, families)
    if history_days:
        say(f"job: seeding {history_days} earlier days of entity_metrics (not timed)")
        seed_history(settings.lake, results.entity_metrics, business_date, history_days)
    report = step("report inputs", daily.report_inputs, inputs, results, validation, settings)
    pdfs = pages = run_dir = workers = None
    if render:
        run_id, created_at = daily.new_run()
        with DescendantPeak() as workers:
            staging = step("rendering", daily.render, report, settings, run_id)
        pdfs, pages = count_pages(staging)
        run_dir = step("archiving", daily.publish, inputs, results, validation, staging, settings, created_at,
                       report.report_id)
    peak_main, peak_children = peak_kib(), peak_kib(resource.RUSAGE_CHILDREN)
    # The same measures again, after the job's peak memory is read (a second set of results
    # beside the first would raise it): this machine's speed varies minute to minute.
    repeats = [stages["compute"] - families.get("limits", 0.0)]
    for i in range(1, repeat):
        say(f"job: compute again ({i + 1} of {repeat})")
        again: dict[str, float] = {}
        start = time.perf_counter()
        daily.compute(inputs, validation, settings, again)
        repeats.append(time.perf_counter() - start - again.get("limits", 0.0))
    return {
        "settings": settings, "inputs": inputs, "results": results, "stages": stages, "families": families,
        "measure_runs": repeats,
        "pdfs": pdfs, "pages": pages, "run_dir": run_dir,
        "peak_main_kib": peak_main, "peak_workers_kib": workers.peak if workers and workers.peak else None,
        "render_processes": len(workers.processes) if workers else None, "rusage_children_kib": peak_children,
        "rows": {name: frame.height for name, frame in sorted(inputs.tables.items())},
    }


def count_pages(folder: Path) -> tuple[int, int]:
    """PDFs and pages under `folder` (summary plus entity reports)."""
    from pypdf import PdfReader

    files = sorted(folder.rglob("*.pdf"))
    return len(files), sum(len(PdfReader(f).pages) for f in files)


# ----------------------------------------------------------------------------- the baseline


@contextmanager
def timed_steps(module, steps: dict[str, str], timings: dict[str, float]) -> Iterator[list[str]]:
    """Wrap `module`'s functions named in `steps` so each call adds its wall time to
    `timings[family]`; nested calls count once, in the outermost. Yields the names not
    found (the module changed), and restores the originals afterwards."""
    originals: dict[str, Callable] = {}
    depth = [0]

    def wrap(name: str, family: str, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def timed_fn(*args, **kwargs):
            if depth[0]:
                return fn(*args, **kwargs)
            say(f"baseline: {name}")
            depth[0] += 1
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                depth[0] -= 1
                timings[family] = timings.get(family, 0.0) + time.perf_counter() - start
        return timed_fn

    for name, family in steps.items():
        fn = getattr(module, name, None)
        if callable(fn):
            originals[name] = fn
            setattr(module, name, wrap(name, family, fn))
    try:
        yield [name for name in steps if name not in originals]
    finally:
        for name, fn in originals.items():
            setattr(module, name, fn)


def run_baseline(job: dict[str, Any], rtol: float, atol: float) -> dict[str, Any]:
    """The pandas baseline on the job's in-memory inputs, timed by family, then compared."""
    import baseline_pandas as bp

    families: dict[str, float] = {}
    say("baseline: pandas, same inputs (a per-entity Python loop for VaR, backtest and stress: "
        "minutes at L)")
    with timed_steps(bp, BASELINE_STEPS, families) as missing:
        start = time.perf_counter()
        tables = bp.baseline(job["inputs"], job["settings"])
        total = time.perf_counter() - start
    if missing:
        say(f"baseline: not timed by family (not in baseline_pandas.py): {', '.join(missing)}")
    say("comparing the job's figures with the baseline's")
    start = time.perf_counter()
    problems = bp.compare(bp.job_tables(job["results"]), tables, rtol=rtol, atol=atol)
    compare_s = time.perf_counter() - start
    return {
        "seconds": total, "families": families, "compare_seconds": compare_s, "problems": problems,
        "figures": sum(t.shape[0] * t.shape[1] for t in tables.values()),
        "tables": {name: list(t.shape) for name, t in tables.items()},
        "quarantined_rows": job["results"].quarantine.height,
        "peak_main_kib": peak_kib(),
    }


# ----------------------------------------------------------------------------- levtrack run


def run_cli(drop: Path, work: Path, business_date: date, history: tuple[Any, int] | None = None) -> dict[str, Any]:
    """`levtrack run` end to end in a subprocess on a fresh lake (seeded with `history`,
    (entity figures, days), as the in-process job's was), archive and Prefect home."""
    root = work / "cli"
    root.mkdir(parents=True)
    if history:
        seed_history(root / "lake", history[0], business_date, history[1])
    script = Path(sys.executable).with_name("levtrack")
    cmd = [str(script)] if script.is_file() else [sys.executable, "-c", "import sys; from flows.cli import main; "
                                                                         "sys.exit(main())"]
    cmd += ["run", "--date", business_date.isoformat(), "--inbox", str(drop / "inbox"),
            "--reference", str(drop / "reference"), "--lake", str(root / "lake"), "--archive", str(root / "archive")]
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_HOME"}
    env["LEVTRACK_HOME"] = str(root / "home")
    say(f"end-to-end: {' '.join(cmd[:2])} … (Prefect, fresh lake in {root})")
    with open(root / "stdout.txt", "wb") as out, open(root / "stderr.txt", "wb") as err:
        rc, seconds, peak = run_measured(cmd, cwd=REPO, env=env, stdout=out, stderr=err)
    error = None
    if rc:
        lines = (root / "stderr.txt").read_text(errors="replace").strip().splitlines()
        error = "\n".join(lines[-15:])
    return {"seconds": seconds, "exit_code": rc, "peak_kib": peak, "error": error, "folder": str(root)}


# ----------------------------------------------------------------------------- results


def summarise(scale: str, business_date: date, info: dict, job: dict, base: dict | None, cli: dict | None,
              generated: tuple[float | None, int | None]) -> dict[str, Any]:
    """Everything measured, as JSON-ready numbers (what --json writes and the tables print)."""
    st, fam = job["stages"], job["families"]
    limits = fam.get("limits", 0.0)
    measures_all = st["compute"] - limits
    # the stress family (scenarios, cascade, stress P&L) and the VaR family run in threads of their
    # own alongside exposure and margin (measures/book.py): the rest is the wall time the main
    # thread spent outside its own families, waiting for those threads included.
    other = measures_all - sum(fam.get(f, 0.0) for f in FAMILIES if f not in CONCURRENT)
    # Σ of the shared families' wall times, or the measures' own wall time where the
    # threads overlap them by more than the cascade takes: never more than was spent
    shared = min(sum(fam.get(f, 0.0) for f in SHARED), measures_all)
    bfam = base["families"] if base else {}
    base_shared = sum(bfam.get(f, 0.0) for f in SHARED) if base else None
    total = sum(st.values())

    def row(stage, seconds, baseline_s=None, note=""):
        ratio = baseline_s / seconds if baseline_s is not None and seconds else None
        return {"stage": stage, "seconds": seconds, "baseline_seconds": baseline_s, "ratio": ratio, "note": note}

    rows = [row("generate (not counted)", generated[0], note="reused drop" if generated[0] is None else "")]
    rows += [row("ingest", st["ingest"]), row("validation", st["validation"])]
    for f in FAMILIES:
        rows.append(row(f"measures: {f}", fam.get(f, 0.0), bfam.get(f) if base else None,
                        "" if f in SHARED else "job only (not in the baseline)"))
    rows.append(row("measures: other", other, note="quarantine split, joins, flags; waiting for the VaR and stress threads"))
    rows.append(row("measures, all families", measures_all))
    runs = job.get("measure_runs") or [measures_all]
    median = statistics.median(runs)
    if len(runs) > 1:
        rows.append(row(f"measures, all families: median of {len(runs)} runs", median,
                        note="runs " + ", ".join(f"{x:.2f}" for x in runs) + " s (the first is the job's)"))
    rows.append(row("measures the baseline also computes", shared, base_shared,
                    "exposure + margin + var_backtest + stress (at most the measures' wall time)"))
    rows.append(row("limits", limits))
    rows.append(row("report inputs", st["report inputs"]))
    rendered = "rendering" in st
    pps = job["pages"] / st["rendering"] if rendered and st["rendering"] else None
    if rendered:
        rows.append(row("rendering", st["rendering"],
                        note=f"{job['pdfs']} PDFs, {job['pages']} pages, {pps:.2f} pages/s"))
        rows.append(row("archiving (publish)", st["archiving"]))
        rows.append(row("total (ingest → archiving)", total))
    else:
        rows.append(row("total (ingest → report inputs)", total, note="--skip-render: no rendering or archiving"))
    if cli:
        rows.append(row("end-to-end levtrack run", cli["seconds"],
                        note="subprocess, Prefect included" + (f"; FAILED exit {cli['exit_code']}"
                                                                if cli["exit_code"] else "")))
    memory = {
        "job_main_gib": gib(job["peak_main_kib"]),
        "render_workers_gib": gib(job["peak_workers_kib"]),
        "render_processes_seen": job["render_processes"],
        "rusage_children_gib": gib(job["rusage_children_kib"]),  # see DescendantPeak: not the workers' own
        "main_after_baseline_gib": gib(base["peak_main_kib"]) if base else None,
        "levtrack_run_gib": gib(cli["peak_kib"]) if cli else None,
        "generator_gib": gib(generated[1]),
    }
    result = {
        "scale": scale, "business_date": business_date.isoformat(),
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": info, "rows": job["rows"], "stages": rows,
        "measures": {"all_families_s": measures_all, "runs_s": runs, "median_s": median,
                     "shared_s": shared, "baseline_shared_s": base_shared,
                     "ratio": base_shared / shared if base and shared else None,
                     "baseline_total_s": base["seconds"] if base else None,
                     "baseline_inputs_to_pandas_s": bfam.get("inputs to pandas") if base else None},
        "rendering": None if not rendered else {"pdfs": job["pdfs"], "pages": job["pages"],
                                                "seconds": st["rendering"], "pages_per_s": pps},
        "memory": memory,
        "agreement": None if not base else {
            "figures": base["figures"], "tables": base["tables"], "disagreements": len(base["problems"]),
            "first": base["problems"][:20], "quarantined_rows": base["quarantined_rows"],
            "compare_seconds": base["compare_seconds"]},
        "cli": None if not cli else {k: cli[k] for k in ("seconds", "exit_code", "error")},
    }
    result["targets"] = targets(result)
    return result


def targets(r: dict) -> list[dict[str, Any]]:
    """The issue's targets next to what was measured (they are set for L)."""
    m, mem = r["measures"], r["memory"]
    total = next(s["seconds"] for s in r["stages"] if s["stage"].startswith("total"))
    rendered = r["rendering"] is not None
    out = [
        {"target": f"measures, all families < {TARGETS['measures_s']:g} s", "value": m["all_families_s"],
         "met": m["all_families_s"] < TARGETS["measures_s"]},
        {"target": f"measures the baseline also computes < {TARGETS['measures_s']:g} s", "value": m["shared_s"],
         "met": m["shared_s"] < TARGETS["measures_s"]},
    ]
    if len(m.get("runs_s") or []) > 1:
        out.insert(1, {"target": f"measures, all families, median of {len(m['runs_s'])} runs < {TARGETS['measures_s']:g} s",
                       "value": m["median_s"], "met": m["median_s"] < TARGETS["measures_s"]})
    if m["ratio"] is not None:
        out.append({"target": f"pandas baseline / job on the shared families ≥ {TARGETS['ratio']:g}×",
                    "value": m["ratio"], "met": m["ratio"] >= TARGETS["ratio"]})
    if rendered:
        out.append({"target": f"whole run (ingest → archiving, in process) < {TARGETS['whole_run_s']:g} s",
                    "value": total, "met": total < TARGETS["whole_run_s"]})
    if r["cli"] and not r["cli"]["exit_code"]:
        out.append({"target": f"end-to-end levtrack run < {TARGETS['whole_run_s']:g} s", "value": r["cli"]["seconds"],
                    "met": r["cli"]["seconds"] < TARGETS["whole_run_s"]})
    peaks = [x for x in (mem["job_main_gib"], mem["render_workers_gib"], mem.get("levtrack_run_gib"))
             if x is not None]
    what = "the job's processes" if rendered else "the job (main process, no rendering)"
    if mem.get("levtrack_run_gib") is not None:
        what += " and of levtrack run"
    out.append({"target": f"peak memory of {what} < {TARGETS['peak_gib']:g} GiB", "value": max(peaks),
                "met": max(peaks) < TARGETS["peak_gib"]})
    return out


def _num(x: float | None, fmt: str = "{:.2f}") -> str:
    return "—" if x is None else fmt.format(x)


def stage_table(r: dict, markdown: bool = False) -> str:
    """The stage table as aligned text, or as a Markdown table."""
    head = ("stage", "seconds", "pandas s", "ratio", "notes")
    body = [(s["stage"], _num(s["seconds"]), _num(s["baseline_seconds"]), _num(s["ratio"], "{:.1f}×"), s["note"])
            for s in r["stages"]]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|---|---:|---:|---:|---|"]
        return "\n".join(lines + ["| " + " | ".join(b) + " |" for b in body])
    w = [max(len(x[i]) for x in [head, *body]) for i in range(4)]
    fmt = lambda x: f"{x[0]:<{w[0]}}  {x[1]:>{w[1]}}  {x[2]:>{w[2]}}  {x[3]:>{w[3]}}  {x[4]}".rstrip()  # noqa: E731
    return "\n".join([fmt(head)] + [fmt(b) for b in body])


def memory_lines(r: dict) -> list[tuple[str, float]]:
    """(what, peak GiB) for each process measured."""
    mem = r["memory"]
    lines = [("job, main process", mem["job_main_gib"])]
    if mem["render_workers_gib"] is not None:
        lines.append(("render workers (largest one, VmHWM)", mem["render_workers_gib"]))
    if mem["main_after_baseline_gib"] is not None:
        lines.append(("main process after the pandas baseline", mem["main_after_baseline_gib"]))
    if mem["levtrack_run_gib"] is not None:
        lines.append(("levtrack run (largest process)", mem["levtrack_run_gib"]))
    return lines


def load_line(r: dict) -> str:
    """How much CPU other processes took in each phase: on a shared machine that inflates the times."""
    other = r["machine"].get("other_cpu") or {}
    if not other:
        return ""
    if "share" in other:  # a result file from before the split by phase
        other = {"all phases": other}
    parts = [f"{phase} {o['share']:.0%} ({o['core_seconds']:.0f} core-s in {o['wall_s']:.0f} s)"
             for phase, o in other.items()]
    busy = any(o["share"] > 0.1 for o in other.values())
    probe = r["machine"].get("speed_probe_s")
    return (f"CPU taken by other processes on the {r['machine']['cores']} cores: " + "; ".join(parts)
            + (" — contention inflated these times" if busy else "")
            + ("" if not probe else "; speed probe (fixed work, one core) "
               + " s before, ".join(f"{p:.2f}" for p in probe) + " s after the run"))


def machine_line(info: dict) -> str:
    v = info["versions"]
    return (f"{info['cpu']}, {info['cores']} cores, {_num(info['ram_gib'], '{:.1f}')} GiB RAM; "
            f"Python {info['python']}, polars {v['polars']}, numpy {v['numpy']}, pandas {v['pandas']}, "
            f"pyarrow {v['pyarrow']}, weasyprint {v['weasyprint']}; {info['os']}; commit {info['commit']}"
            + (" + uncommitted changes" if info["uncommitted_changes"] else ""))


def print_report(r: dict) -> None:
    rows = r["rows"]
    print(f"\nscale {r['scale']}, business date {r['business_date']}: "
          + ", ".join(f"{rows[t]:,} {t}" for t in ("entities", "balances", "positions", "instruments") if t in rows))
    print(f"machine: {machine_line(r['machine'])}")
    days = r["machine"].get("history_days")
    print(f"lake: seeded with {days} earlier days of entity figures (--history-days)\n" if days else
          "lake: fresh (no earlier days: the reports' history is one day)\n")
    print(stage_table(r))
    m = r["measures"]
    if m["ratio"] is not None:
        print(f"\nratio = pandas baseline / job on the families both compute (exposure, margin, VaR/ES/backtest, "
              f"stress before the cascade): {m['ratio']:.1f}×.\nThe job's margin family also computes liquidation "
              "distance and its stress family the post-cascade P&L, which the baseline does not.\n"
              f"pandas baseline in all: {m['baseline_total_s']:.2f} s, of which converting the inputs to pandas "
              f"{_num(m['baseline_inputs_to_pandas_s'])} s (not counted in the ratio).")
    a = r["agreement"]
    if a:
        if a["quarantined_rows"]:
            print(f"\nnote: {a['quarantined_rows']} row(s) were quarantined; the baseline does not quarantine, "
                  "so the comparison is not like for like")
        if a["disagreements"]:
            print(f"\nDISAGREE: {a['disagreements']} of {a['figures']:,} figures differ; first:")
            for p in a["first"]:
                print(f"  {p}")
        else:
            print(f"\njob and baseline agree on {a['figures']:,} figures "
                  + ", ".join(f"({t}: {n:,} × {c})" for t, (n, c) in a["tables"].items()))
    if r["cli"] and r["cli"]["error"]:
        print(f"\nlevtrack run FAILED (exit {r['cli']['exit_code']}):\n{r['cli']['error']}")
    print("\npeak memory (RSS):")
    for what, value in memory_lines(r):
        print(f"  {what + ':':<42} {_num(value)} GiB")
    print(f"\n{load_line(r)}")
    print(f"\ntargets (set for L on a 2-core 24 GiB machine; this is {r['scale']}):")
    for t in r["targets"]:
        value = f"{t['value']:.1f}×" if "×" in t["target"] else (
            f"{t['value']:.2f} GiB" if "GiB" in t["target"] else f"{t['value']:.2f} s")
        print(f"  {t['target']:<58} {value:>10}  {'met' if t['met'] else 'MISSED'}")


def markdown(paths: list[Path]) -> str:
    """README sections from --json result files: machine, stage table, memory, targets."""
    out = []
    for path in paths:
        r = json.loads(path.read_text())
        rows = r["rows"]
        out += [f"### {r['scale']}: " + ", ".join(f"{rows[t]:,} {t}" for t in ("entities", "balances", "positions")
                                                  if t in rows), "",
                f"Measured {r['measured_at'][:10]}, commit `{r['machine']['commit']}`"
                + (" (with uncommitted changes)" if r["machine"]["uncommitted_changes"] else "")
                + f", on {r['machine']['cpu']}, {r['machine']['cores']} cores, {_num(r['machine']['ram_gib'], '{:.1f}')} GiB"
                " RAM." + (f" Lake seeded with {r['machine']['history_days']} earlier days of entity figures "
                           "(`--history-days`)." if r["machine"].get("history_days") else ""),
                "", stage_table(r, markdown=True), ""]
        a = r["agreement"]
        if a:
            out.append(f"Job and baseline: {'agree on' if not a['disagreements'] else 'DISAGREE on ' + str(a['disagreements']) + ' of'} "
                       f"{a['figures']:,} figures.")
        out += ["", "Peak memory (RSS): " + "; ".join(f"{what} {_num(v)} GiB" for what, v in memory_lines(r)) + ".",
                "", load_line(r) + ".", ""]
        out += ["| target (set for L) | measured | |", "|---|---:|---|"]
        for t in r["targets"]:
            value = f"{t['value']:.1f}×" if "×" in t["target"] else (
                f"{t['value']:.2f} GiB" if "GiB" in t["target"] else f"{t['value']:.2f} s")
            out.append(f"| {t['target']} | {value} | {'met' if t['met'] else 'missed'} |")
        out.append("")
    return "\n".join(out)


# ----------------------------------------------------------------------------- main


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Time the daily job stage by stage against a pandas baseline.")
    p.add_argument("--scale", type=str.upper, choices=SCALES, help="book size (bench/generate.py)")
    p.add_argument("--out", type=Path, help="folder for the drop, lake and archive (default: a temporary "
                                            "folder, removed at the end unless --keep)")
    p.add_argument("--reuse", type=Path, metavar="DROP",
                   help="an existing drop (DROP/inbox/<date>/, DROP/reference/): skip generating")
    p.add_argument("--date", type=date.fromisoformat, help="business date (default: generator's / the drop's)")
    p.add_argument("--seed", type=int, help="generator seed (default: the generator's)")
    p.add_argument("--no-baseline", action="store_true", help="skip the pandas baseline and the comparison")
    p.add_argument("--no-cli", action="store_true", help="skip the end-to-end `levtrack run` subprocess")
    p.add_argument("--skip-render", action="store_true",
                   help="stop the in-process job before rendering and archiving (quick measures vs baseline)")
    p.add_argument("--history-days", type=int, default=0, metavar="N",
                   help="seed the lake with N earlier days of entity figures, as after N daily runs "
                        "(the reports' leverage chart and C 48 table; default 0: a fresh lake)")
    p.add_argument("--repeat", type=int, default=3,
                   help="time the measures this many times in all (default 3; the job's own run is the first)")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    p.add_argument("--rtol", type=float, default=1e-6, help="relative tolerance of the comparison")
    p.add_argument("--atol", type=float, default=1e-9, help="absolute tolerance (values near zero)")
    p.add_argument("--markdown", type=Path, nargs="+", metavar="JSON",
                   help="print README tables from --json result files and exit")
    p.add_argument("--generated", help=argparse.SUPPRESS)  # SECONDS:PEAK_KIB, from the parent process
    args = p.parse_args(argv)
    if not args.markdown and not args.scale:
        p.error("--scale is required")
    return args


def measure(args: argparse.Namespace, drop: Path, work: Path, generated: tuple[float | None, int | None]) -> int:
    """Run the job, the baseline and the CLI in this process; print and write the results."""
    business_date = drop_date(drop, args.date)
    info = machine()
    work.mkdir(parents=True, exist_ok=False)
    info["other_cpu"] = contention = {}  # per phase: the job and the baseline may see different loads
    info["speed_probe_s"] = [speed_probe()]
    start = cpu_seconds()
    info["history_days"] = args.history_days
    job = run_job(drop, work, business_date, render=not args.skip_render, repeat=args.repeat,
                  history_days=args.history_days)
    contention["job"], start = other_cpu(start, cpu_seconds()), cpu_seconds()
    base = None if args.no_baseline else run_baseline(job, args.rtol, args.atol)
    if base:
        contention["pandas baseline"], start = other_cpu(start, cpu_seconds()), cpu_seconds()
    history = (job["results"].entity_metrics, args.history_days) if args.history_days else None
    cli = None if args.no_cli else run_cli(drop, work, business_date, history)
    if cli:
        contention["levtrack run"] = other_cpu(start, cpu_seconds())
    info["speed_probe_s"].append(speed_probe())
    result = summarise(args.scale, business_date, info, job, base, cli, generated)
    print_report(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
        say(f"results written to {args.json}")
    if base and base["problems"]:
        return 1
    return 3 if cli and cli["exit_code"] else 0


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.markdown:
        print(markdown(args.markdown))
        return 0
    stamp = datetime.now().strftime("%Y%m%dT%H%M%S")
    if args.reuse:  # measure here; the lake and archive go to a fresh folder
        out = args.out or Path(tempfile.mkdtemp(prefix="levtrack-bench-"))
        generated: tuple[float | None, int | None] = (None, None)
        if args.generated:  # SECONDS:PEAK_KIB from the parent that generated the drop
            seconds, peak = args.generated.split(":")
            generated = (float(seconds), int(peak) or None)
        try:
            return measure(args, args.reuse.resolve(), out.resolve() / f"run-{stamp}", generated)
        finally:
            _cleanup(out, temporary=args.out is None, keep=args.keep)
    # Generate in a subprocess, then measure in a fresh child whose peak RSS the generator did not touch.
    out = (args.out or Path(tempfile.mkdtemp(prefix="levtrack-bench-"))).resolve()
    drop = out / f"drop-{args.scale}"
    if drop.exists() and any(drop.iterdir()):
        raise SystemExit(f"{drop} exists: pass --reuse {drop} to measure it, or remove it")
    try:
        seconds, peak = generate_drop(args.scale, drop, args.date, args.seed)
        child = [sys.executable, str(Path(__file__).resolve()), "--scale", args.scale, "--reuse", str(drop),
                 "--out", str(out), "--generated", f"{seconds:.3f}:{peak or 0}", "--rtol", str(args.rtol),
                 "--atol", str(args.atol)]
        child += (["--date", args.date.isoformat()] if args.date else []) + \
            (["--no-baseline"] if args.no_baseline else []) + (["--no-cli"] if args.no_cli else []) + \
            (["--skip-render"] if args.skip_render else []) + ["--repeat", str(args.repeat)] + \
            ["--history-days", str(args.history_days)] + \
            (["--json", str(args.json.resolve())] if args.json else [])
        return subprocess.run(child).returncode
    finally:
        _cleanup(out, temporary=args.out is None, keep=args.keep)


def _cleanup(folder: Path, temporary: bool, keep: bool) -> None:
    if temporary and not keep:
        shutil.rmtree(folder, ignore_errors=True)
    elif temporary:
        say(f"kept {folder}")


if __name__ == "__main__":
    sys.exit(main())
