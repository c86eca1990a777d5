"""Drop and reference files -> typed polars frames that match `schemas`. No computation.

Every frame gets an `_row` column: the 1-based data row in its file (CSV line
`_row + 1`), so that every later error can name the row. String values are
stripped of surrounding blanks (a blank value is missing); anything that does not parse as its contract type
is an `InputError` naming the file, the rows and the rule.
"""

from __future__ import annotations

import contextlib
import csv
import difflib
import io
import shutil
import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Iterable, Iterator

import polars as pl
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .archive import file_entries
from .config import is_uri
from .errors import InputError
from .schemas import DROP_TABLES, OPTIONAL_DROP_TABLES, PRICE_HISTORY, REFERENCE_TABLES, TableSchema

ROW = "_row"
_SHOW = 5


@dataclass(frozen=True)
class LoadedTables:
    tables: dict[str, pl.DataFrame]
    """Typed frames (contract columns + `_row`)."""
    raw: dict[str, pl.DataFrame]
    """The files as read, every column kept, for the lake's raw copy."""
    sources: dict[str, str]
    """Where each table was read from: a local path or an object-store URI."""
    files: dict[str, dict[str, Any]]
    """Per table, the file read: its `path` (as in `sources`), `sha256` and `bytes`,
    taken when it was read, for the run's manifest."""


def find_table_file(folder: Path, name: str, *, required: bool = True) -> Path | None:
    """`NAME.csv` or `NAME.parquet` in `folder`; both or (if required) neither is an error."""
    found = [p for p in (folder / f"{name}.csv", folder / f"{name}.parquet") if p.is_file()]
    if len(found) > 1:
        raise InputError(f"{folder}: both {name}.csv and {name}.parquet are present; send one",
                         file=str(folder), rule="one file per table")
    if not found:
        if required:
            raise InputError(
                f"{folder / (name + '.csv')}: missing file — every drop must carry {name} "
                f"(.csv or .parquet); a book without rows sends the header only",
                file=str(folder / f"{name}.csv"), rule="every table file present",
            )
        return None
    return found[0]


def _rows_text(rows: list[int]) -> str:
    more = f" and {len(rows) - _SHOW} more" if len(rows) > _SHOW else ""
    return ("row " if len(rows) == 1 else "rows ") + ", ".join(str(r) for r in rows[:_SHOW]) + more


def _read_csv_strings(path: Path) -> pl.DataFrame:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        before = data[: exc.start]
        line = before.count(b"\n") + 1
        # the row counts records, not lines: a quoted value may span lines. A character in
        # place of the bad byte joins the record it is in, or starts the next one.
        try:
            row = sum(1 for _ in csv.reader(io.StringIO(before.decode("utf-8") + "x"))) - 1
        except csv.Error:  # a field past the csv module's size limit: count lines instead
            row = line - 1
        raise InputError(
            f"{path}: line {line} (row {row}): bytes that are not UTF-8 at offset {exc.start}; "
            "re-export the file as UTF-8", file=str(path), rows=[row], rule="UTF-8 encoding",
        ) from None
    if not data.strip():
        raise InputError(f"{path}: empty file without a header row; send at least the header",
                         file=str(path), rule="header row present")
    header = next(csv.reader([text.partition("\n")[0].rstrip("\r")]), [])
    names = [h.strip() for h in header if h.strip()]  # a blank name (a trailing comma) is no column of ours
    twice = sorted({h for h in names if names.count(h) > 1})
    if twice:
        raise InputError(f"{path}: the header names column(s) {', '.join(map(repr, twice))} more than once; "
                         "send each column once", file=str(path), rows=[0], rule="column names unique")
    frame, refused = None, ""
    try:
        frame = pl.read_csv(data, infer_schema=False, raise_if_empty=True, truncate_ragged_lines=False)
    except pl.exceptions.PolarsError as exc:
        refused = str(exc).splitlines()[0]
    # polars refuses a row with too many fields without saying where, and pads one with
    # too few with nulls, silently: a cut-off or shifted row. A short row always leaves
    # the last column null, so only a file with a null there (rare: the big tables'
    # columns are all required) is scanned for one.
    if frame is None or (frame.width and frame[frame.columns[-1]].null_count()):
        ragged = _ragged_record(text, len(header))
        if ragged is not None:
            raise InputError(f"{path}: {ragged[1]}", file=str(path), rows=[ragged[0]],
                             rule="well-formed CSV")
    if frame is None:
        raise InputError(f"{path}: not a readable CSV file: {refused}", file=str(path),
                         rule="well-formed CSV")
    return frame


def _ragged_record(text: str, width: int) -> tuple[int, str] | None:
    """The first record with another number of fields than the header: its row and where
    it is (polars does not say which line); read only on a file that may have one."""
    reader = csv.reader(io.StringIO(text))
    try:
        next(reader, None)
        for row, record in enumerate(reader, start=1):
            if record and len(record) != width:
                return row, (f"line {reader.line_num} (row {row}): {len(record)} "
                             f"field{'' if len(record) == 1 else 's'} where the header has {width}")
    except csv.Error:  # a field past the csv module's size limit (polars has none): cannot tell
        return None
    return None


def _read_parquet(path: Path) -> pl.DataFrame:
    try:
        return pl.read_parquet(path)
    except Exception as exc:  # pyarrow and polars raise several kinds
        raise InputError(f"{path}: not a readable Parquet file: {exc}", file=str(path),
                         rule="readable Parquet") from None


def _parse(col: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    text = col.cast(pl.String).str.strip_chars()
    if dtype == pl.Date:
        return text.str.to_date("%Y-%m-%d", strict=False)
    if dtype == pl.String:
        return pl.when(text != "").then(text)
    return text.cast(dtype, strict=False)


def type_table(frame: pl.DataFrame, schema: TableSchema, path: Path) -> pl.DataFrame:
    """Check the columns and cast each to its contract dtype, naming the rows that fail."""
    missing = [c for c in schema.columns if c not in frame.columns]
    if missing:
        hints = []
        for c in missing:
            close = difflib.get_close_matches(c, frame.columns, n=1, cutoff=0.8)
            hints.append(f"{c!r}" + (f" (found {close[0]!r} — misspelt?)" if close else ""))
        raise InputError(
            f"{path}: missing column(s) {', '.join(hints)}; {schema.name} needs "
            f"{', '.join(schema.columns)}", file=str(path), rule="required columns present",
        )
    # a column of the file named like the row index is an unknown extra column: ignored
    # here like any other (the raw copy keeps it)
    frame = frame.drop(ROW, strict=False).with_row_index(ROW, offset=1).with_columns(pl.col(ROW).cast(pl.Int64))
    out = []
    for name, dtype in schema.columns.items():
        src = frame[name]
        kind = "a date as YYYY-MM-DD" if dtype == pl.Date else f"a {dtype}"
        if src.dtype.is_nested():
            raise InputError(f"{path}: column {name!r} must be {kind}; the file has a {src.dtype} column",
                             file=str(path), rule=f"{name} is {kind}")
        if dtype == pl.Date and isinstance(src.dtype, pl.Datetime):
            # pandas writes dates as timestamps: a timestamp at midnight (in its own time
            # zone, if it has one) is that date; one with a time of day is not a date
            timed_rows = frame.filter(pl.col(name).is_not_null() & (pl.col(name).dt.time() != pl.time(0)))
            if timed_rows.height:
                rows = timed_rows[ROW].to_list()
                values = ", ".join(str(v) for v in timed_rows[name].head(_SHOW).to_list())
                raise InputError(
                    f"{path}: {_rows_text(rows)}: column {name!r} must be a date; got timestamps with a "
                    f"time of day: {values}", file=str(path), rows=rows, rule=f"{name} is a date")
            out.append(pl.col(name).dt.date().alias(name))
            continue
        if dtype == pl.String and src.dtype == pl.String:
            text = pl.col(name).str.strip_chars()
            out.append(pl.when(text != "").then(text).alias(name))  # blank is missing
            continue
        if src.dtype == dtype or (dtype == pl.Float64 and src.dtype.is_numeric()):
            out.append(pl.col(name).cast(dtype))
            continue
        parsed = frame.select(_parse(pl.col(name), dtype)).to_series()
        given = frame.select(pl.col(name).cast(pl.String).str.strip_chars().replace("", None).is_not_null()).to_series()
        bad = frame.filter(given & parsed.is_null())
        if bad.height:
            rows = bad[ROW].to_list()
            values = ", ".join(repr(v) for v in bad[name].head(_SHOW).to_list())
            raise InputError(
                f"{path}: {_rows_text(rows)}: column {name!r} must be {kind}; got {values}",
                file=str(path), rows=rows, rule=f"{name} is {kind}",
            )
        out.append(_parse(pl.col(name), dtype).alias(name))
    return frame.select(*out, ROW)


@dataclass(frozen=True)
class SizeLimits:
    max_bytes: int = 8 * 1024**3
    max_rows: int = 50_000_000


def _check_bytes(name: str, size: int, limits: SizeLimits) -> None:
    if size > limits.max_bytes:
        raise InputError(
            f"{name}: {_bytes_text(size)}, over the {_bytes_text(limits.max_bytes)} limit "
            "(max_input_bytes); split the drop or raise the limit", file=name, rule="file size limit")


def _bytes_text(n: int) -> str:
    """Exact bytes, with GiB beside them where that says more (never "0.00 GiB")."""
    return f"{n:,} bytes" + (f" ({n / 1024**3:.2f} GiB)" if n >= 1024**3 // 100 else "")


def check_size(path: Path, limits: SizeLimits) -> None:
    """Refuse an oversized file before loading it: bytes from the file system, rows by
    streaming a count (CSV) or from the footer (Parquet), so memory stays bounded."""
    _check_bytes(str(path), path.stat().st_size, limits)
    try:
        if path.suffix == ".parquet":
            rows = pq.read_metadata(path).num_rows
        else:
            rows = pl.scan_csv(path, infer_schema=False).select(pl.len()).collect(engine="streaming").item()
    except Exception:  # unreadable: the full read names the problem
        return
    if rows > limits.max_rows:
        raise InputError(
            f"{path}: {rows:,} rows, over the {limits.max_rows:,}-row limit (max_input_rows); "
            "split the drop or raise the limit", file=str(path), rule="row count limit")


def read_table_file(path: Path, schema: TableSchema, limits: SizeLimits = SizeLimits()
                    ) -> tuple[pl.DataFrame, pl.DataFrame]:
    check_size(path, limits)
    if path.suffix == ".parquet":
        raw = _read_parquet(path)
        return type_table(raw, schema, path), raw
    raw = _read_csv_strings(path)
    typed = type_table(raw, schema, path)
    # a blank line (or one of bare commas) holds no record: skipped, the others keep
    # their row numbers so messages still point at the right lines
    blank = typed.select(pl.all_horizontal(pl.exclude(ROW).is_null())).to_series()
    return (typed.filter(~blank) if blank.any() else typed), raw


def _load(folder: Path, specs: tuple[TableSchema, ...], optional: tuple[TableSchema, ...] = (),
          limits: SizeLimits = SizeLimits(), shown: str | None = None) -> LoadedTables:
    """The tables of a local `folder`; `shown` is how sources name it (the URI it was copied from)."""
    tables, raw, sources, files = {}, {}, {}, {}
    for schema, required in [(s, True) for s in specs] + [(s, False) for s in optional]:
        path = find_table_file(folder, schema.name, required=required)
        if path is None:
            continue
        tables[schema.name], raw[schema.name] = read_table_file(path, schema, limits)
        sources[schema.name] = f"{shown}/{path.name}" if shown else str(path)
        files[schema.name] = {**file_entries([path])[0], "path": sources[schema.name]}
    return LoadedTables(tables, raw, sources, files)


def open_location(uri: str) -> tuple[pafs.FileSystem, str]:
    """The file system and the path within it of an object-store URI: pyarrow's own
    (`s3://`, `gs://`, `abfs://`, `hdfs://`, `file://`; credentials from the environment,
    as those file systems read them) where it has one, else fsspec's for the protocol."""
    try:
        return pafs.FileSystem.from_uri(uri)
    except ValueError as exc:  # ArrowInvalid: no pyarrow file system for the scheme
        if "Unrecognized filesystem type" not in str(exc):
            raise InputError(f"{uri}: cannot open: {exc}", file=uri, rule="readable location") from None
    import fsspec
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    try:
        fs, path = fsspec.core.url_to_fs(uri)
    except (ValueError, ImportError) as exc:
        raise InputError(f"{uri}: no file system for this location ({exc})", file=uri,
                         rule="readable location") from None
    return PyFileSystem(FSSpecHandler(fs)), path


def folder_files(where: Path | str) -> list[str] | None:
    """The names of the files in a folder (local or URI), or None if there is no such folder."""
    if not is_uri(where):
        folder = Path(where)
        return sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.is_dir() else None
    with _reading(str(where)):
        listing = _store_files(str(where))
    return None if listing is None else sorted(i.base_name for i in listing[1])


def _store_files(uri: str) -> tuple[pafs.FileSystem, list[pafs.FileInfo]] | None:
    """The file system of an object-store folder and the files in it, or None if there is
    no such folder (called inside `_reading`, which names a failing store)."""
    fs, root = open_location(uri)
    if fs.get_file_info(root).type != pafs.FileType.Directory:
        return None
    return fs, [i for i in fs.get_file_info(pafs.FileSelector(root)) if i.type == pafs.FileType.File]


@contextlib.contextmanager
def _reading(uri: str) -> Iterator[None]:
    """An object store's failure (network, credentials, permissions) named by its URI; still
    an OSError, which the flow's ingest task retries as transient."""
    try:
        yield
    except OSError as exc:
        raise OSError(f"{uri}: cannot read: {exc}") from exc


@contextlib.contextmanager
def local_folder(where: Path | str, tables: Iterable[TableSchema], limits: SizeLimits) -> Iterator[Path | None]:
    """`where` as a local folder (None if there is no such folder): itself, or for a URI
    a private copy of the files of `tables` in it (in `TMPDIR`), removed afterwards. The
    copy is what the run reads and hashes, so the manifest's digests are those of the
    bytes measured even if the store changes meanwhile. A file over `max_input_bytes` is
    refused before it is copied, and errors name the URI, not the copy."""
    if not is_uri(where):
        yield Path(where) if Path(where).is_dir() else None
        return
    uri = str(where)
    wanted = {f"{t.name}.{ext}" for t in tables for ext in ("csv", "parquet")}
    with tempfile.TemporaryDirectory(prefix="levtrack-inputs-") as tmp:
        with _reading(uri):  # the store's calls only: reading the copy is local
            listing = _store_files(uri)
            fs, infos = listing or (None, [])
            for info in infos:
                if info.base_name not in wanted:
                    continue
                _check_bytes(f"{uri}/{info.base_name}", info.size, limits)
                with fs.open_input_stream(info.path) as src, open(Path(tmp) / info.base_name, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
        try:
            yield Path(tmp) if listing is not None else None
        except InputError as exc:
            named = exc.file.replace(tmp, uri, 1) if exc.file else exc.file
            raise InputError(str(exc).replace(tmp, uri), file=named, rows=exc.rows, rule=exc.rule) from None


def drop_folder(inbox: Path | str, business_date: date) -> Path | str:
    return f"{inbox}/{business_date.isoformat()}" if is_uri(inbox) else Path(inbox) / business_date.isoformat()


def read_drop(inbox: Path | str, business_date: date, limits: SizeLimits = SizeLimits()) -> LoadedTables:
    """Read the end-of-day drop `<inbox>/<YYYY-MM-DD>/` (section 1.1, plus optional price_history)."""
    folder = drop_folder(inbox, business_date)
    with local_folder(folder, DROP_TABLES + OPTIONAL_DROP_TABLES, limits) as local:
        if local is None:
            raise InputError(f"{folder}: no drop folder for business date {business_date}",
                             file=str(folder), rule="drop folder present")
        return _load(local, DROP_TABLES, OPTIONAL_DROP_TABLES, limits, shown=str(folder))


def read_reference(reference: Path | str, limits: SizeLimits = SizeLimits()) -> LoadedTables:
    """Read the reference data folder (section 1.3)."""
    with local_folder(reference, REFERENCE_TABLES, limits) as local:
        if local is None:
            raise InputError(f"{reference}: reference data folder not found", file=str(reference),
                             rule="reference folder present")
        return _load(local, REFERENCE_TABLES, limits=limits, shown=str(reference))


def history_to_store(earlier: pl.DataFrame | None, drop: pl.DataFrame | None, asset_prices: pl.DataFrame,
                     business_date: date) -> pl.DataFrame:
    """The rows a date adds to the lake's `price_history`: the drop's file up to the date,
    then today's closes (which win), less the closes the lake held before this date (`earlier`, its
    partitions before the date) with exactly the same value. A feed that sends its whole
    look-back every day then stores each close once and each restatement when it comes:
    the history every run reads grows by a day's closes a day, not by a look-back."""
    rows = _latest_closes([drop, _todays_closes(asset_prices, business_date)], business_date)
    if earlier is None or earlier.is_empty():
        return rows
    held = _latest_closes([earlier.sort("business_date", maintain_order=True)], business_date)
    return (rows.join(held.rename({"close_usd": "_held"}), on=["date", "asset"], how="left", maintain_order="left")
            .filter(pl.col("_held").is_null() | (pl.col("_held") != pl.col("close_usd")))
            .drop("_held"))


def merge_history(stored: pl.DataFrame | None, drop: pl.DataFrame | None, asset_prices: pl.DataFrame,
                  business_date: date) -> pl.DataFrame:
    """The price history as of `business_date`: the lake's, the drop's file, then today's closes.

    Later sources win for the same (date, asset): today's `asset_prices` is the
    close of the business date.
    """
    in_order = None if stored is None else stored.sort("business_date", maintain_order=True)
    return _latest_closes([in_order, drop, _todays_closes(asset_prices, business_date)], business_date).sort("asset", "date")


def _todays_closes(asset_prices: pl.DataFrame, business_date: date) -> pl.DataFrame:
    return asset_prices.select(pl.lit(business_date).alias("date"), "asset", pl.col("price_usd").alias("close_usd"))


def _latest_closes(sources: list[pl.DataFrame | None], business_date: date) -> pl.DataFrame:
    """One close per (date, asset) up to the business date, a later source (and a later
    row) winning; rows dated after it are not history yet."""
    cols = list(PRICE_HISTORY.columns)
    parts = [src.select(cols).cast(PRICE_HISTORY.columns) for src in sources if src is not None]
    return (pl.concat(parts).filter(pl.col("date") <= business_date)
            .unique(subset=["date", "asset"], keep="last", maintain_order=True))
