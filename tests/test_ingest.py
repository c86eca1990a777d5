"""Reading drop files with the contract schema: types, rows named in errors."""

from datetime import date

import polars as pl
import pytest

from reporting.errors import InputError
from reporting.ingest import find_table_file, merge_history, read_table_file
from reporting.schemas import BALANCES, PRICE_HISTORY

HEADER = "business_date,entity_id,account_id,venue,asset,amount\n"


def write(tmp_path, name, text, encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return path


def test_types_and_row_numbers(tmp_path):
    path = write(tmp_path, "balances.csv", HEADER + "2026-11-24, E1 ,A1,X,BTC,1.5\n2026-11-24,E1,A1,X,USD,-100\n")
    typed, raw = read_table_file(path, BALANCES)
    assert typed.schema["amount"] == pl.Float64 and typed.schema["business_date"] == pl.Date
    assert typed["_row"].to_list() == [1, 2]
    assert typed["entity_id"].to_list() == ["E1", "E1"]  # surrounding blanks stripped
    assert raw.height == 2


def test_header_only_file_is_an_empty_table(tmp_path):
    typed, _ = read_table_file(write(tmp_path, "balances.csv", HEADER), BALANCES)
    assert typed.height == 0 and typed.schema["amount"] == pl.Float64


@pytest.mark.parametrize("text,needle", [
    (HEADER + "2026-11-24,E1,A1,X,BTC,1.5\n2026-11-24,E1,A1,X,ETH,1 000\n", "row 2: column 'amount'"),
    (HEADER + "24/11/2026,E1,A1,X,BTC,1.5\n", "row 1: column 'business_date' must be a date as YYYY-MM-DD"),
    ("business_date,entity_id,acount_id,venue,asset,amount\n", "missing column(s) 'account_id' (found 'acount_id'"),
    ("", "empty file without a header"),
    (HEADER.replace("amount", "amount,amount") + "2026-11-24,E1,A1,X,BTC,1,2\n",
     "the header names column(s) 'amount' more than once"),
    (HEADER + "2026-11-24,E1,A1,X,BTC,1\n2026-11-24,E1,A1,X,\"ETH\nX\",1\n2026-11-24,E1,A1,X,BTC,1,7\n",
     "line 5 (row 3): 7 fields where the header has 6"),  # a quoted newline: row 3 is on line 5
    (HEADER + "2026-11-24,E1,A1,X,BTC,1\n2026-11-24,E1,A1,X,BTC\n",  # cut off: polars pads it with null
     "line 3 (row 2): 5 fields where the header has 6"),
    (HEADER + "2026-11-24,E1,A1,X,BTC,1\n2026-11-24\n", "line 3 (row 2): 1 field where the header has 6"),
    ("business_date,entity_id,account_id,venue,asset,amt\n", "missing column(s) 'amount'; balances needs"),
])
def test_bad_files_name_file_rows_and_rule(tmp_path, text, needle):
    path = write(tmp_path, "balances.csv", text)
    with pytest.raises(InputError) as err:
        read_table_file(path, BALANCES)
    assert str(path) in str(err.value) and needle in str(err.value)


def test_a_row_with_an_empty_last_field_is_not_short(tmp_path):
    typed, _ = read_table_file(write(tmp_path, "balances.csv", HEADER + "2026-11-24,E1,A1,X,BTC,\n"), BALANCES)
    assert typed["amount"].to_list() == [None]  # missing, for validation to refuse; not a ragged row


def test_a_field_past_the_csv_modules_size_limit_still_reads(tmp_path):
    """The short-row scan uses Python's csv module, which refuses fields over 128 KiB;
    polars reads them, so the scan must not turn such a file into a crash."""
    text = HEADER + f"2026-11-24,E1,A1,X,{'B' * 200_000},\n"  # empty last field: the scan runs
    typed, _ = read_table_file(write(tmp_path, "balances.csv", text), BALANCES)
    assert typed["asset"].str.len_chars().to_list() == [200_000]
    # a bad byte on the next line: rows counted from lines when the csv module gives up
    with pytest.raises(InputError, match=r"line 3 \(row 2\).*not UTF-8"):
        read_table_file(write(tmp_path, "balances.csv", text.replace(",\n", ",1\n").encode() + b"\xff\n"), BALANCES)


def test_blank_lines_are_skipped_and_later_rows_keep_their_numbers(tmp_path):
    text = HEADER + "2026-11-24,E1,A1,X,BTC,1\n\n2026-11-24,E1,A1,X,ETH,2\n,,,,,\n\n\n"
    typed, raw = read_table_file(write(tmp_path, "balances.csv", text), BALANCES)
    assert typed["asset"].to_list() == ["BTC", "ETH"]
    assert typed["_row"].to_list() == [1, 3]  # ETH is on line 4
    assert raw.height == 6  # the raw copy is the file as received


def test_non_utf8_after_a_quoted_newline_names_line_and_row(tmp_path):
    text = HEADER.encode() + b'2026-11-24,E1,A1,X,"B\nTC",1\n2026-11-24,E\xe91,A1,X,BTC,1\n'
    with pytest.raises(InputError, match=r"line 4 \(row 2\).*not UTF-8") as err:
        read_table_file(write(tmp_path, "balances.csv", text), BALANCES)
    assert err.value.rows == [2]


def test_non_utf8_at_the_start_of_a_quoted_values_second_line_is_in_that_row(tmp_path):
    text = HEADER.encode() + b'2026-11-24,E1,A1,X,BTC,1\n2026-11-24,E1,A1,X,"B\n\xe9TC",1\n'
    with pytest.raises(InputError, match=r"line 4 \(row 2\).*not UTF-8") as err:
        read_table_file(write(tmp_path, "balances.csv", text), BALANCES)
    assert err.value.rows == [2]
    with pytest.raises(InputError, match=r"line 1 \(row 0\).*not UTF-8"):
        read_table_file(write(tmp_path, "balances.csv", b"\xe9" + HEADER.encode()), BALANCES)


def test_non_utf8_names_the_line(tmp_path):
    path = write(tmp_path, "balances.csv", HEADER.encode() + b"2026-11-24,E\xe91,A1,X,BTC,1\n")
    with pytest.raises(InputError, match=r"line 2 \(row 1\).*not UTF-8"):
        read_table_file(path, BALANCES)


def test_missing_and_duplicate_files(tmp_path):
    with pytest.raises(InputError, match="missing file"):
        find_table_file(tmp_path, "positions")
    write(tmp_path, "positions.csv", "x\n")
    write(tmp_path, "positions.parquet", b"")
    with pytest.raises(InputError, match="both positions.csv and positions.parquet"):
        find_table_file(tmp_path, "positions")


def test_parquet_with_other_types_is_cast_or_rejected(tmp_path):
    good = pl.DataFrame({"business_date": ["2026-11-24"], "entity_id": ["E"], "account_id": ["A"],
                         "venue": ["X"], "asset": ["BTC"], "amount": [2]})
    good.write_parquet(tmp_path / "balances.parquet")
    typed, _ = read_table_file(tmp_path / "balances.parquet", BALANCES)
    assert typed["amount"].to_list() == [2.0] and typed["business_date"].to_list() == [date(2026, 11, 24)]
    good.with_columns(amount=pl.lit("lots")).write_parquet(tmp_path / "bad.parquet")
    with pytest.raises(InputError, match="column 'amount' must be a Float64"):
        read_table_file(tmp_path / "bad.parquet", BALANCES)


def test_a_column_named_like_the_row_index_is_an_extra_column(tmp_path):
    path = write(tmp_path, "balances.csv", HEADER.replace("\n", ",_row\n") + "2026-11-24,E1,A1,X,BTC,1.5,x\n")
    typed, raw = read_table_file(path, BALANCES)
    assert typed["_row"].to_list() == [1] and raw["_row"].to_list() == ["x"]


def test_parquet_list_column_is_refused_with_the_rule(tmp_path):
    pl.DataFrame({"business_date": [date(2026, 11, 24)], "entity_id": ["E"], "account_id": ["A"],
                  "venue": ["X"], "asset": ["BTC"], "amount": [[1.0, 2.0]]}).write_parquet(tmp_path / "b.parquet")
    with pytest.raises(InputError, match=r"column 'amount' must be a Float64; the file has a List\(Float64\) column"):
        read_table_file(tmp_path / "b.parquet", BALANCES)


@pytest.mark.parametrize("zone", [None, "UTC", "America/New_York"])
def test_parquet_timestamps_at_midnight_are_dates(tmp_path, zone):
    """pandas writes a date column as timestamps: midnight (in the column's own zone) is
    that date; a time of day is refused, naming the row."""
    from datetime import datetime

    frame = pl.DataFrame({"business_date": [datetime(2026, 11, 24), datetime(2026, 11, 24)],
                          "entity_id": ["E", "E"], "account_id": ["A", "A"], "venue": ["X", "X"],
                          "asset": ["BTC", "ETH"], "amount": [1.0, 2.0]})
    if zone:
        frame = frame.with_columns(pl.col("business_date").dt.replace_time_zone(zone))
    frame.write_parquet(tmp_path / "b.parquet")
    typed, _ = read_table_file(tmp_path / "b.parquet", BALANCES)
    assert typed["business_date"].to_list() == [date(2026, 11, 24)] * 2
    frame.with_columns(pl.col("business_date") + pl.when(pl.col("asset") == "ETH").then(pl.duration(hours=13))
                       .otherwise(pl.duration(hours=0))).write_parquet(tmp_path / "t.parquet")
    with pytest.raises(InputError, match=r"row 2: column 'business_date' must be a date; got timestamps"):
        read_table_file(tmp_path / "t.parquet", BALANCES)


def test_history_merge_later_sources_win():
    d = date(2026, 11, 24)
    stored = pl.DataFrame({"date": [date(2026, 11, 22), date(2026, 11, 23)], "asset": ["BTC", "BTC"],
                           "close_usd": [1.0, 2.0], "business_date": [date(2026, 11, 23)] * 2})
    drop = pl.DataFrame({"date": [date(2026, 11, 23)], "asset": ["BTC"], "close_usd": [2.5]},
                        schema=PRICE_HISTORY.columns)
    prices = pl.DataFrame({"asset": ["BTC"], "price_usd": [3.0]})
    h = merge_history(stored, drop, prices, d)
    assert h["close_usd"].to_list() == [1.0, 2.5, 3.0]
    assert h["date"].to_list() == [date(2026, 11, 22), date(2026, 11, 23), d]


def test_a_date_stores_only_the_closes_it_adds_or_restates():
    """A feed that resends its look-back every day: the date's partition keeps the closes the
    lake lacks or holds with another value (the latest ingested one, here the 23rd's
    restatement of the 21st), and today's, never a close dated after the date; merged, the
    lake's history is the same."""
    from reporting.ingest import history_to_store

    d, D = date(2026, 11, 24), (lambda day: date(2026, 11, day))
    earlier = pl.DataFrame({"date": [D(21), D(22), D(23), D(21)], "asset": ["BTC"] * 4,
                            "close_usd": [100.0, 101.0, 102.0, 99.0],
                            "business_date": [D(22), D(22), D(23), D(23)]})
    drop = pl.DataFrame({"date": [D(21), D(22), D(23), D(20), D(26)], "asset": ["BTC"] * 5,
                         "close_usd": [99.0, 101.0, 103.0, 98.0, 1.0]}, schema=PRICE_HISTORY.columns)
    prices = pl.DataFrame({"asset": ["BTC"], "price_usd": [104.0]})
    rows = history_to_store(earlier, drop, prices, d)
    assert rows.rows() == [(D(23), "BTC", 103.0), (D(20), "BTC", 98.0), (d, "BTC", 104.0)]
    # a first run keeps every row up to the date; the 26th is not history yet (ignored, with a warning)
    assert history_to_store(None, drop, prices, d)["date"].to_list() == [D(21), D(22), D(23), D(20), d]
    stored = pl.concat([earlier, rows.with_columns(business_date=pl.lit(d))])
    assert merge_history(stored, None, prices, d).equals(merge_history(earlier, drop, prices, d))


def test_oversized_files_are_refused_before_loading(tmp_path):
    from reporting.ingest import SizeLimits

    n = 300_000
    body = "".join(f"2026-11-24,E{i % 97},A{i % 13},X,BTC,{i}.5\n" for i in range(n))
    path = write(tmp_path, "balances.csv", HEADER + body)
    with pytest.raises(InputError, match=r"300,000 rows, over the 100,000-row limit \(max_input_rows\)"):
        read_table_file(path, BALANCES, SizeLimits(max_rows=100_000))
    with pytest.raises(InputError, match=r"balances.csv: [\d,]+ bytes( \(.* GiB\))?, over the 1,024 bytes limit \(max_input_bytes\)"):
        read_table_file(path, BALANCES, SizeLimits(max_bytes=1024))
    pl.read_csv(path).write_parquet(tmp_path / "b.parquet")
    with pytest.raises(InputError, match="300,000 rows"):
        read_table_file(tmp_path / "b.parquet", BALANCES, SizeLimits(max_rows=1000))
    typed, _ = read_table_file(path, BALANCES)  # within the default limits it is read
    assert typed.height == n


def test_waiting_for_a_complete_drop(tmp_path):
    from reporting.config import Settings
    from reporting.daily import missing_from_drop, wait_for_drop
    from reporting.errors import DropNotReady

    d = date(2026, 11, 24)
    folder = tmp_path / d.isoformat()
    folder.mkdir()
    for name in ("balances", "positions", "instruments", "marks"):
        (folder / f"{name}.csv").write_text("x\n")
    assert missing_from_drop(tmp_path, d) == ["asset_prices", "_READY"]
    settings = Settings(inbox=tmp_path, ready_wait_seconds=0.3, ready_poll_seconds=0.05)
    with pytest.raises(DropNotReady, match=r"missing asset_prices, _READY"):
        wait_for_drop(settings, d)

    naps = []

    def arrive(seconds):  # the sender finishes while we wait
        naps.append(seconds)
        (folder / "asset_prices.parquet").write_bytes(b"")
        (folder / "_READY").write_text("")

    wait_for_drop(Settings(inbox=tmp_path, ready_wait_seconds=60, ready_poll_seconds=5), d, sleep=arrive)
    assert naps == [5]
    wait_for_drop(Settings(inbox=tmp_path / "nowhere"), d)  # no wait configured: no check
