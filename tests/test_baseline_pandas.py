"""The benchmark's pandas baseline (bench/baseline_pandas.py) agrees with the job on the sample book."""

import importlib.util
import math
from pathlib import Path

import pytest

from reporting.config import load_settings
from reporting.daily import compute, load_inputs, validate_inputs
from reporting.sample import write_sample_book

_PATH = Path(__file__).resolve().parents[1] / "bench" / "baseline_pandas.py"


def _module():
    spec = importlib.util.spec_from_file_location("baseline_pandas", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    bp = _module()
    root = tmp_path_factory.mktemp("baseline")
    book = write_sample_book(root / "book")
    settings = load_settings({"inbox": book.inbox, "reference": book.reference, "lake": root / "lake",
                              "archive": root / "archive"})
    inputs = load_inputs(settings, book.business_date)
    results = compute(inputs, validate_inputs(inputs, settings), settings)
    assert results.quarantine.height == 0
    tables = bp.baseline(book.inbox / book.business_date.isoformat(), settings)
    return bp, bp.job_tables(results), tables


def test_baseline_agrees_with_the_job_on_the_sample_book(run):
    bp, job, base = run
    assert base["entity_metrics"].shape[0] == 25
    assert base["stress_results"].shape[0] == 25 * 13  # 6 reference + 6 built-in + correlation one
    assert bp.compare(job, base) == []


def test_compare_names_a_disagreement(run):
    bp, job, base = run
    changed = {k: v.copy() for k, v in base.items()}
    changed["entity_metrics"].loc["KESTREL", "var_99_1d_hist_usd"] *= 1.001
    changed["backtest"].loc["AURORA", "exceptions"] += 1
    changed["stress_results"].loc[("MERLIN", "FTX_2022"), "pnl_usd"] = math.nan
    problems = bp.compare(job, changed)
    assert len(problems) == 3
    assert any("KESTREL" in p and "var_99_1d_hist_usd" in p for p in problems)
    assert any("AURORA" in p and "exceptions" in p for p in problems)
    assert any("MERLIN" in p and "FTX_2022" in p for p in problems)
