"""The Parquet lake: one Hive-partitioned dataset per table.

Layout: `<lake>/<table>/business_date=<YYYY-MM-DD>/part-0.parquet`, which polars,
DuckDB, Spark and pyarrow read as it is. A partition is one file, replaced with
`os.replace` from a temporary file in the same folder, so a reader sees the old
partition or the new one, never half of either; temporary files start with `.`
and do not end in `.parquet`, so no reader picks them up.
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import date
from pathlib import Path
from typing import Sequence

import polars as pl
import pyarrow.parquet as pq

PART_FILE = "part-0.parquet"
COLUMNS_KEY = b"levtrack:columns"
"""Parquet metadata: the frame's column order, `business_date` included where it was, so a
partition reads back as the very frame that was written (a re-render depends on it)."""


def partition_dir(lake: Path, table: str, business_date: date) -> Path:
    return Path(lake) / table / f"business_date={business_date.isoformat()}"


def write_partition(lake: Path, table: str, business_date: date, frame: pl.DataFrame) -> Path:
    """Replace `table`'s partition for `business_date` with `frame`, atomically.

    The `business_date` column, if present, is dropped from the file: the partition
    path carries it (Hive style).
    """
    folder = partition_dir(lake, table, business_date)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / PART_FILE
    tmp = folder / f".{PART_FILE}.{uuid.uuid4().hex}.tmp"
    try:
        write_file(frame, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(folder)
    return target


def write_file(frame: pl.DataFrame, path: Path) -> None:
    """Write one partition file durably (fsync'd); `business_date` lives in the path, not the file."""
    table = frame.drop("business_date", strict=False).to_arrow()
    meta = {**(table.schema.metadata or {}), COLUMNS_KEY: json.dumps(frame.columns).encode()}
    pq.write_table(table.replace_schema_metadata(meta), path, compression="zstd")
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def partitions(lake: Path, table: str) -> list[date]:
    """Business dates that have a partition for `table`, in order."""
    root = Path(lake) / table
    if not root.is_dir():
        return []
    out = []
    for p in root.glob(f"business_date=*/{PART_FILE}"):
        out.append(date.fromisoformat(p.parent.name.split("=", 1)[1]))
    return sorted(out)


def read_table(lake: Path, table: str, *, since: date | None = None, before: date | None = None,
               up_to: date | None = None, on: date | None = None,
               columns: Sequence[str] | None = None) -> pl.DataFrame | None:
    """Read `table` with its `business_date` column, optionally restricted to some dates
    and `columns` (those a partition lacks are null); None if absent."""
    dates = [d for d in partitions(lake, table)
             if (since is None or d >= since) and (before is None or d < before)
             and (up_to is None or d <= up_to) and (on is None or d == on)]
    if not dates:
        return None
    frame = pl.concat([read_partition(lake, table, d, columns=columns) for d in dates], how="diagonal_relaxed")
    return frame if columns is None else frame.select([c for c in columns if c in frame.columns])


def read_partition(lake: Path, table: str, business_date: date, *, as_written: bool = False,
                   columns: Sequence[str] | None = None) -> pl.DataFrame:
    """One partition, columns in the order they were written, with its `business_date`
    (appended if the written frame had none, unless `as_written`); with `columns`, only
    those it has of them, in that order (`business_date` included if asked for)."""
    path = partition_dir(lake, table, business_date) / PART_FILE
    if columns is not None:
        stored = set(pq.read_schema(path).names)
        frame = pl.read_parquet(path, columns=[c for c in columns if c in stored and c != "business_date"])
        if "business_date" in columns:
            frame = frame.with_columns(business_date=pl.lit(business_date))
        return frame.select([c for c in columns if c in frame.columns])
    frame = pl.read_parquet(path).with_columns(business_date=pl.lit(business_date))
    written = (pq.read_schema(path).metadata or {}).get(COLUMNS_KEY)
    if written is None:  # written before the order was recorded
        return frame
    columns = json.loads(written)
    if not as_written and "business_date" not in columns:
        columns.append("business_date")
    return frame.select(columns)
