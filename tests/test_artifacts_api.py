"""The daily flow's Prefect artifacts, read back from the Prefect API (what the UI shows).

One flow run on the bundled sample book (session Prefect harness), then the flow run,
its task runs and its artifacts are read with the client and checked against the
lake, the reference data and the archive, not against the code that wrote them.
"""

import json
import math
import re
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import polars as pl
import pytest

from flows.daily import daily_leverage_report
from reporting.archive import runs_for_date
from reporting.sample import DEFAULT_BUSINESS_DATE, write_sample_book

pytestmark = pytest.mark.slow
D = DEFAULT_BUSINESS_DATE
KEYS = ("leverage-summary", "limit-utilization", "leverage-reports")
TASKS = ("recover", "wait-for-drop", "ingest", "validate", "measures", "render", "publish", "artifacts")


@pytest.fixture(scope="module")
def run(prefect_harness, tmp_path_factory):
    """One run of the daily flow on the sample book: (root, book, flow run id, archived run folder)."""
    root = tmp_path_factory.mktemp("artifacts-api")
    book = write_sample_book(root / "book")
    state = daily_leverage_report(
        business_date=D,
        overrides={"inbox": str(book.inbox), "reference": str(book.reference),
                   "lake": str(root / "lake"), "archive": str(root / "archive")},
        return_state=True)
    assert state.is_completed(), state.message
    return root, book, state.state_details.flow_run_id, Path(state.result())


@pytest.fixture(scope="module")
def api(run):
    """The flow run, its task runs, its artifacts by key and the latest artifact collections."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactCollectionFilter, ArtifactCollectionFilterFlowRunId, ArtifactCollectionFilterKey,
        ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey, FlowRunFilter, FlowRunFilterId)

    flow_run_id = run[2]
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run_id)
        task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=list(KEYS)), flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
        latest = client.read_latest_artifacts(artifact_filter=ArtifactCollectionFilter(
            key=ArtifactCollectionFilterKey(any_=list(KEYS)),
            flow_run_id=ArtifactCollectionFilterFlowRunId(any_=[flow_run_id])))
    return flow_run, task_runs, artifacts, latest


def by_key(artifacts) -> dict:
    keyed = {}
    for a in artifacts:
        assert a.key not in keyed, f"two artifacts with key {a.key} in one flow run"
        keyed[a.key] = a
    return keyed


def lake_utilization(root: Path) -> pl.DataFrame:
    util = pl.read_parquet(root / "lake" / "limit_utilization", hive_partitioning=True)
    return util.filter(pl.col("business_date") == D)


def same(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0)
    return a == b


def test_flow_run_and_task_runs_carry_the_business_date(run, api):
    flow_run, task_runs, _, _ = api
    assert flow_run.name == f"daily-leverage-{D}"
    assert flow_run.state.is_completed()
    names = {t.name for t in task_runs}
    assert {f"{t}-{D}" for t in TASKS} <= names
    assert all(n.endswith(f"-{D}") for n in names), sorted(names)
    assert all(t.state.is_completed() for t in task_runs), {t.name: t.state.name for t in task_runs}


def test_the_three_artifacts_exist_for_this_flow_run_and_are_the_latest(run, api):
    _, task_runs, artifacts, latest = api
    keyed = by_key(artifacts)
    assert set(keyed) == set(KEYS)
    (artifacts_task,) = [t for t in task_runs if t.name == f"artifacts-{D}"]
    assert {a.task_run_id for a in artifacts} == {artifacts_task.id}
    assert keyed["leverage-summary"].type == "markdown"
    assert keyed["limit-utilization"].type == "table"
    assert str(D) in keyed["leverage-summary"].description and str(D) in keyed["limit-utilization"].description
    # the key's latest version (what the Artifacts page shows) is this run's
    assert {c.key: c.latest_id for c in latest} == {k: a.id for k, a in keyed.items()}


def test_summary_markdown_names_the_verdict_and_the_counts(run, api):
    root, _, _, run_dir = run
    markdown = by_key(api[2])["leverage-summary"].data
    util = lake_utilization(root)
    breaches, warnings = util.filter(pl.col("status") == "breach"), util.filter(pl.col("status") == "warning")
    # the sample book's known states (reporting/sample.py): KESTREL 7.00x gross against 5x,
    # HARRIER over its margin limit, MERLIN insolvent; DESK07 at 4.30x (86 % of 5x) is a warning
    assert set(breaches["entity_id"]) == {"KESTREL", "HARRIER", "MERLIN"}
    kestrel = breaches.filter((pl.col("entity_id") == "KESTREL") & (pl.col("metric") == "gross_leverage"))
    assert kestrel["value"].item() == pytest.approx(7.0, rel=1e-6) and kestrel["limit"].item() == 5.0
    desk07 = warnings.filter((pl.col("entity_id") == "DESK07") & (pl.col("metric") == "gross_leverage"))
    assert desk07["value"].item() == pytest.approx(4.30, rel=1e-6)
    entities = pl.read_parquet(root / "lake" / "entity_metrics", hive_partitioning=True).filter(
        pl.col("business_date") == D).height

    assert markdown.startswith(f"# Daily leverage report {D}\n")
    verdict = re.search(r"(\d+) limit breach(?:\(es\)|es)? in (\d+) of (\d+) entities\W+(\d+) warning", markdown)
    assert verdict, markdown
    assert tuple(int(g) for g in verdict.groups()) == (
        breaches.height, breaches["entity_id"].n_unique(), entities, warnings.height)
    # pinned, so a silent change shows; 10, not 11, since MERLIN (insolvent, no Tier 1) no longer
    # breaches the crypto capital check, which does not apply to it
    assert (breaches.height, warnings.height, entities) == (10, 2, 25)
    checks = pl.read_parquet(root / "lake" / "validation_results", hive_partitioning=True).filter(
        pl.col("business_date") == D)
    assert f"{int(checks['success'].sum())} of {checks.height} checks passed" in markdown
    # every breach and warning is listed, formatted as the reports print it, with the
    # archived run folder named
    rows = {tuple(c.strip() for c in line.strip("|").split("|")[:3])
            for line in markdown.splitlines() if line.startswith("| ") and not line.startswith("| entity ")}
    assert rows == set(breaches.select("entity_id", "metric", "status").iter_rows()) | set(
        warnings.select("entity_id", "metric", "status").iter_rows())
    assert "| KESTREL | gross_leverage | breach | 7.00\u00d7 | max 5.00\u00d7 | 140.0 % | 1 |" in markdown
    assert "| DESK07 | gross_leverage | warning | 4.30\u00d7 | max 5.00\u00d7 | 86.0 % |" in markdown
    assert str(run_dir) in markdown


def test_table_has_one_row_per_limit_matching_the_lake(run, api):
    root, book, _, _ = run
    data = by_key(api[2])["limit-utilization"].data
    rows = json.loads(data) if isinstance(data, str) else data
    util = lake_utilization(root)

    # one row per limit: every entity gets each `*` default unless it has its own, plus its own extras
    limits = pl.read_csv(book.reference / "limits.csv")
    entity_ids = pl.read_csv(book.reference / "entities.csv")["entity_id"].to_list()
    defaults = limits.filter(pl.col("entity_id") == "*")["metric"].to_list()
    own = set(limits.filter(pl.col("entity_id") != "*").select("entity_id", "metric").iter_rows())
    expected = {(e, m) for e in entity_ids for m in defaults} | own
    keys = [(r["entity_id"], r["metric"]) for r in rows]
    assert len(keys) == len(set(keys)) == util.height
    assert set(keys) == expected == set(util.select("entity_id", "metric").iter_rows())

    lake_rows = {(r["entity_id"], r["metric"]): r for r in util.iter_rows(named=True)}
    for r in rows:
        want = lake_rows[(r["entity_id"], r["metric"])]
        assert r["business_date"] == D.isoformat()
        for column in ("value", "limit", "kind", "warn_at", "utilization", "status", "prev_utilization",
                       "days_in_breach"):
            assert same(r[column], want[column]), (r["entity_id"], r["metric"], column, r[column], want[column])
    # breaches first, then warnings, then the rest
    rank = {"breach": 0, "warning": 1, "ok": 2}
    assert [rank[r["status"]] for r in rows] == sorted(rank[r["status"]] for r in rows)


def test_link_points_at_the_archived_run_folder(run, api):
    root, _, _, run_dir = run
    link = by_key(api[2])["leverage-reports"].data
    match = re.fullmatch(r"\[(?P<text>[^\]]+)\]\((?P<url>[^)]+)\)", link.strip())
    assert match, link
    url = urlparse(match["url"])
    assert url.scheme == "file"
    target = Path(url2pathname(url.path))
    (archived,) = runs_for_date(root / "archive", D)
    assert archived.path.resolve() == run_dir.resolve()
    assert target == (run_dir / "summary.html").resolve()
    assert target.is_file() and (target.parent / "manifest.json").is_file()
    assert str(D) in match["text"] and run_dir.name in match["text"]
