"""The bad-input catalogue: every case ends in a clear error naming the file, the row(s)
and the rule, a non-zero exit, and a lake and archive exactly as they were."""

import shutil
from pathlib import Path

import polars as pl
import pytest

from flows.cli import main
from reporting.archive import sha256_file
from reporting.sample import DEFAULT_BUSINESS_DATE, write_sample_book

pytestmark = pytest.mark.slow
D = DEFAULT_BUSINESS_DATE
DAY = D.isoformat()


def snapshot(folder: Path) -> dict[str, str]:
    if not folder.exists():
        return {}
    # the run log (`runs`) records the failed run; the lock file is not data
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()
            and "_locks" not in p.parts and "runs" not in p.parts}


@pytest.fixture(scope="module")
def published(prefect_harness, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    book = write_sample_book(root / "book")
    assert main(["run", "--date", DAY, "--inbox", str(book.inbox), "--reference", str(book.reference),
                 "--lake", str(root / "lake"), "--archive", str(root / "archive")]) == 0
    return root


def edit(path: Path, row: int, column: str, value: str) -> None:
    """Set `column` of 1-based data row `row` of a CSV to `value` (text)."""
    df = pl.read_csv(path, infer_schema=False)
    df.with_columns(pl.when(pl.int_range(pl.len()) == row - 1).then(pl.lit(value))
                    .otherwise(pl.col(column)).alias(column)).write_csv(path)


def first_row(path: Path, column: str, value: str) -> int:
    df = pl.read_csv(path, infer_schema=False).with_row_index("r", offset=1)
    return int(df.filter(pl.col(column) == value)["r"][0])


def drop_rows(path: Path, expr: pl.Expr) -> None:
    pl.read_csv(path, infer_schema=False).filter(~expr).write_csv(path)


def case_missing_file(inbox, ref):
    (inbox / "marks.csv").unlink()
    return 3, ["marks.csv", "missing file"]


def case_empty_file(inbox, ref):
    (inbox / "positions.csv").write_text("")
    return 3, ["positions.csv", "empty file without a header"]


def case_misspelt_column(inbox, ref):
    p = inbox / "balances.csv"
    p.write_text(p.read_text().replace("amount", "ammount", 1))
    return 3, ["balances.csv", "missing column(s) 'amount' (found 'ammount'"]


def case_wrong_type(inbox, ref):
    edit(inbox / "balances.csv", 2, "amount", "12,5")
    return 3, ["balances.csv", "row 2:", "column 'amount' must be a Float64", "'12,5'"]


def case_unparsable_date(inbox, ref):
    edit(inbox / "positions.csv", 1, "business_date", "2026-13-01")
    return 3, ["positions.csv", "row 1:", "must be a date as YYYY-MM-DD"]


def case_other_business_date(inbox, ref):
    edit(inbox / "balances.csv", 4, "business_date", "2026-11-23")
    return 4, ["balances.csv", "business_date must equal the drop's date", "row 4"]


def case_duplicate_key(inbox, ref):
    p = inbox / "positions.csv"
    lines = p.read_text().splitlines()
    p.write_text("\n".join(lines + [lines[1]]) + "\n")
    n = len(lines)  # the copy is data row n (header is line 1)
    return 4, ["positions.csv", "unique", f"rows 1, {n}"]


def case_null_key(inbox, ref):
    edit(inbox / "balances.csv", 3, "entity_id", "")
    return 4, ["balances.csv", "entity_id must not be empty", "row 3"]


def case_nan_price(inbox, ref):
    edit(inbox / "asset_prices.csv", 2, "price_usd", "NaN")
    return 4, ["asset_prices.csv", "price_usd must be a finite number", "row 2"]


def case_infinite_amount(inbox, ref):
    edit(inbox / "balances.csv", 5, "amount", "inf")
    return 4, ["balances.csv", "amount must be a finite number", "row 5"]


def case_zero_price(inbox, ref):
    edit(inbox / "asset_prices.csv", 1, "price_usd", "0")
    return 4, ["asset_prices.csv", "price_usd must be > 0", "row 1"]


def case_negative_mark(inbox, ref):
    edit(inbox / "marks.csv", 2, "mark_price", "-612.5")
    return 4, ["marks.csv", "mark_price must be > 0", "row 2"]


def case_unknown_instrument(inbox, ref):
    edit(inbox / "positions.csv", 6, "instrument_id", "NO-SUCH-PERP")
    return 4, ["positions.csv", "instrument_id must exist in instruments", "row 6", "NO-SUCH-PERP"]


def _option_row(inbox) -> int:
    return first_row(inbox / "instruments.csv", "instrument_type", "option")


def case_option_without_strike(inbox, ref):
    row = _option_row(inbox)
    edit(inbox / "instruments.csv", row, "strike", "")
    return 4, ["instruments.csv", "an option must have strike, expiry and option_type", f"row {row}"]


def case_option_without_implied_vol(inbox, ref):
    opt = pl.read_csv(inbox / "instruments.csv", infer_schema=False)["instrument_id"][_option_row(inbox) - 1]
    row = first_row(inbox / "marks.csv", "instrument_id", opt)
    edit(inbox / "marks.csv", row, "implied_vol", "")
    return 4, ["marks.csv", "implied_vol", f"row {row}", opt]


def case_expired_contract(inbox, ref):
    row = _option_row(inbox)
    opt = pl.read_csv(inbox / "instruments.csv", infer_schema=False)["instrument_id"][row - 1]
    held = pl.read_csv(inbox / "positions.csv", infer_schema=False).with_row_index("r", offset=1).filter(
        pl.col("instrument_id") == opt)["r"].to_list()
    edit(inbox / "instruments.csv", row, "expiry", "2026-11-20")
    return 4, ["positions.csv", "expired contract still held", f"{opt}/2026-11-20",
               ("row " if len(held) == 1 else "rows ") + ", ".join(map(str, held))]


def case_perpetual_with_expiry(inbox, ref):
    row = first_row(inbox / "instruments.csv", "instrument_type", "perpetual")
    edit(inbox / "instruments.csv", row, "expiry", "2027-03-26")
    return 4, ["instruments.csv", "a perpetual has no expiry", f"row {row}"]


def case_future_with_option_terms(inbox, ref):
    row = first_row(inbox / "instruments.csv", "instrument_type", "future")
    edit(inbox / "instruments.csv", row, "strike", "50000")
    return 4, ["instruments.csv", "strike and option_type are for options only", f"row {row}", "50000"]


def case_astronomical_amount(inbox, ref):
    edit(inbox / "balances.csv", 5, "amount", "1e300")  # finite, and no book's
    return 4, ["balances.csv", "a balance line must be worth at most 1,000,000,000,000,000 USD", "row 5"]


def case_astronomical_quantity(inbox, ref):
    edit(inbox / "positions.csv", 3, "quantity", "-1e200")
    return 4, ["positions.csv", "a position's notional must be at most 1,000,000,000,000,000 USD", "row 3"]


def case_entity_named_star(inbox, ref):
    with (ref / "entities.csv").open("a") as fh:
        fh.write("*,Everyone Fund,\n")
    return 4, ["entities.csv", 'entity_id must not be "*"', "row 26"]


def case_column_named_twice(inbox, ref):
    p = inbox / "balances.csv"
    lines = p.read_text().splitlines()
    p.write_text("\n".join([lines[0] + ",amount"] + [line + ",0" for line in lines[1:]]) + "\n")
    return 3, ["balances.csv", "the header names column(s) 'amount' more than once"]


def case_asset_without_price(inbox, ref):
    drop_rows(inbox / "asset_prices.csv", pl.col("asset") == "DOGE")
    return 4, ["balances.csv", "DOGE", "asset_prices"]


def case_balance_unknown_entity(inbox, ref):
    edit(inbox / "balances.csv", 7, "entity_id", "GHOST")
    return 4, ["balances.csv", "entity", "row 7", "GHOST"]


def case_limit_unknown_metric(inbox, ref):
    edit(ref / "limits.csv", 2, "metric", "net_levrage")
    return 4, ["limits.csv", "metric", "row 2", "net_levrage"]


def case_non_utf8(inbox, ref):
    p = inbox / "balances.csv"
    lines = p.read_bytes().split(b"\n")
    lines[3] = lines[3].replace(b",", b",\xff", 1)  # into the entity_id of data row 3
    p.write_bytes(b"\n".join(lines))
    return 3, ["balances.csv", "line 4 (row 3)", "not UTF-8"]


def case_formula_in_name(inbox, ref):
    edit(ref / "entities.csv", 2, "name", "=cmd|' /C calc'!A0")
    return 4, ["entities.csv", "spreadsheet formula", "row 2", "=cmd"]


def case_parquet_with_other_schema(inbox, ref):
    df = pl.read_csv(inbox / "balances.csv", infer_schema=False).rename({"amount": "qty"})
    (inbox / "balances.csv").unlink()
    df.write_parquet(inbox / "balances.parquet")
    return 3, ["balances.parquet", "missing column(s) 'amount'"]


def case_history_gap(inbox, ref):
    drop_rows(inbox / "price_history.csv", (pl.col("asset") == "BTC") & (pl.col("date") == "2026-10-01"))
    return 4, ["price_history", "BTC", "2026-10-01"]


CASES = [v for k, v in sorted(globals().items()) if k.startswith("case_")]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__[5:] for c in CASES])
def test_bad_input_is_refused_and_nothing_changes(published, case, tmp_path, capsys):
    root = published
    if case is case_history_gap:
        root = tmp_path / "fresh"  # the published lake's history would fill the gap
        root.mkdir()
    book = tmp_path / "book"
    shutil.copytree(published / "book", book)
    inbox, ref = book / "inbox" / DAY, book / "reference"
    code, needles = case(inbox, ref)
    before = snapshot(root / "lake"), snapshot(root / "archive")
    rc = main(["run", "--date", DAY, "--inbox", str(book / "inbox"), "--reference", str(ref),
               "--lake", str(root / "lake"), "--archive", str(root / "archive")])
    err = capsys.readouterr().err
    assert rc == code, err
    first = err.splitlines()[0]
    assert first.startswith("levtrack run: ")
    for needle in needles:
        assert needle in err, f"{needle!r} not in:\n{err}"
    assert (snapshot(root / "lake"), snapshot(root / "archive")) == before
    runs = pl.read_parquet(root / "lake" / "runs", hive_partitioning=True)
    assert runs.sort("started_at")["status"][-1] == "failed"


@pytest.mark.parametrize("case", [case_wrong_type, case_zero_price], ids=["exit-3", "exit-4"])
def test_the_command_line_puts_the_reason_first_on_stderr(published, case, tmp_path):
    """`levtrack run` as a process, as the scheduler runs it: stderr's first line is the
    reason and stderr holds nothing else but its details; Prefect's logs and a failed
    task's traceback go to stdout (contract, section 4)."""
    import os
    import subprocess
    import sys

    from prefect.settings import get_current_settings

    book = tmp_path / "book"
    shutil.copytree(published / "book", book)
    code, needles = case(book / "inbox" / DAY, book / "reference")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_LOGGING_")}
    env["PREFECT_API_URL"] = str(get_current_settings().api.url)
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", "--date", DAY, "--inbox", str(book / "inbox"),
         "--reference", str(book / "reference"), "--lake", str(tmp_path / "lake"),
         "--archive", str(tmp_path / "archive")],
        cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == code, done.stderr
    lines = done.stderr.splitlines()
    assert lines and lines[0].startswith("levtrack run: "), done.stderr[:2000]
    assert all(line.startswith("  ") for line in lines[1:]), done.stderr[:2000]
    assert "Traceback" not in done.stderr and "Traceback" in done.stdout
    for needle in needles:
        assert needle in done.stderr
