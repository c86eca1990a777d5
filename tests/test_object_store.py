"""Drops and reference data read from an object-store URI instead of a local folder.

`file://` goes through pyarrow's own file system (as `s3://`, `gs://` and `abfs://` do),
`memory://` through fsspec's: both must read exactly what the local folder gives, name
the URI (never the private copy) in every error, and hash the bytes read for the manifest.
"""

import hashlib
import json
import uuid
from pathlib import Path

import fsspec
import polars as pl
import pytest

from reporting.config import Settings, load_settings
from reporting.daily import missing_from_drop, wait_for_drop
from reporting.errors import DropNotReady, InputError
from reporting.ingest import SizeLimits, read_drop, read_reference
from reporting.sample import DEFAULT_BUSINESS_DATE, write_sample_book

D = DEFAULT_BUSINESS_DATE


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    return write_sample_book(tmp_path_factory.mktemp("store") / "book")


def to_memory(folder: Path) -> str:
    """A copy of `folder`'s files in fsspec's in-memory file system; returns its URI."""
    fs = fsspec.filesystem("memory")
    root = f"/levtrack-{uuid.uuid4().hex}"
    for path in folder.rglob("*"):
        if path.is_file():
            fs.pipe(f"{root}/{path.relative_to(folder).as_posix()}", path.read_bytes())
    return f"memory://{root}"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_same_tables(got, want):
    assert sorted(got.tables) == sorted(want.tables)
    for name in want.tables:
        assert got.tables[name].equals(want.tables[name]), name
        assert got.raw[name].equals(want.raw[name]), name


@pytest.mark.parametrize("scheme", ["file", "memory"])
def test_a_drop_and_reference_at_a_uri_read_as_the_local_folders(book, scheme):
    inbox = f"file://{book.inbox}" if scheme == "file" else to_memory(book.inbox)
    reference = f"file://{book.reference}" if scheme == "file" else to_memory(book.reference)
    drop, ref = read_drop(inbox, D), read_reference(reference)
    assert_same_tables(drop, read_drop(book.inbox, D))
    assert_same_tables(ref, read_reference(book.reference))
    folder = book.inbox / D.isoformat()
    assert drop.sources["balances"] == f"{inbox}/{D.isoformat()}/balances.csv"
    assert ref.sources["entities"] == f"{reference}/entities.csv"
    # the manifest's digests are those of the files' bytes, under the names they were read by
    assert drop.files["balances"] == {"path": drop.sources["balances"], "sha256": sha256(folder / "balances.csv"),
                                      "bytes": (folder / "balances.csv").stat().st_size}
    assert ref.files["entities"]["sha256"] == sha256(book.reference / "entities.csv")


def test_a_bad_row_at_a_uri_is_named_by_the_uri_and_row(book):
    inbox = to_memory(book.inbox)
    fs = fsspec.filesystem("memory")
    path = f"{inbox.removeprefix('memory://')}/{D.isoformat()}/balances.csv"
    lines = fs.cat(path).decode().splitlines()
    header = lines[0].split(",")
    cells = lines[3].split(",")
    cells[header.index("amount")] = "twelve"
    fs.pipe(path, ("\n".join(lines[:3] + [",".join(cells)] + lines[4:]) + "\n").encode())
    with pytest.raises(InputError) as err:
        read_drop(inbox, D)
    uri = f"{inbox}/{D.isoformat()}/balances.csv"
    assert str(err.value).startswith(f"{uri}: row 3: column 'amount' must be a Float64; got 'twelve'")
    assert err.value.file == uri and err.value.rows == [3]
    assert "levtrack-inputs-" not in str(err.value)


def test_an_oversized_file_at_a_uri_is_refused_before_it_is_copied(book):
    inbox = to_memory(book.inbox)
    size = (book.inbox / D.isoformat() / "positions.csv").stat().st_size
    with pytest.raises(InputError, match=rf"/positions.csv: {size:,} bytes, over the {size - 1:,} bytes limit "
                                         r"\(max_input_bytes\)") as err:
        read_drop(inbox, D, SizeLimits(max_bytes=size - 1))
    assert err.value.file.startswith(inbox)


def test_only_the_contract_files_at_a_uri_are_fetched(book):
    """Another file beside the drop's (an export, a log) is neither copied nor size-checked."""
    inbox = to_memory(book.inbox)
    folder = book.inbox / D.isoformat()
    largest = max(p.stat().st_size for p in folder.glob("*.csv"))
    fsspec.filesystem("memory").pipe(f"{inbox.removeprefix('memory://')}/{D.isoformat()}/full_export.csv",
                                     b"x" * (largest + 1000))
    drop = read_drop(inbox, D, SizeLimits(max_bytes=largest))
    assert sorted(drop.tables) == sorted(p.stem for p in folder.glob("*.csv"))


def test_a_missing_folder_or_file_system_at_a_uri(book, tmp_path):
    with pytest.raises(InputError, match=r"memory:///nowhere/2026-11-24: no drop folder for business date"):
        read_drop("memory:///nowhere", D)
    with pytest.raises(InputError, match=r"file://.*/absent: reference data folder not found"):
        read_reference(f"file://{tmp_path}/absent")
    with pytest.raises(InputError, match=r"nosuchscheme://x: no file system for this location"):
        read_reference("nosuchscheme://x")
    inbox = to_memory(book.inbox)
    fsspec.filesystem("memory").rm(f"{inbox.removeprefix('memory://')}/{D.isoformat()}/marks.csv")
    with pytest.raises(InputError, match=rf"{inbox}/{D.isoformat()}/marks.csv: missing file"):
        read_drop(inbox, D)


def test_a_store_that_fails_is_an_os_error_naming_the_uri(monkeypatch):
    """Network, credentials, permissions: transient for the flow's ingest retries (an
    OSError, not an InputError), and named by the URI."""
    import reporting.ingest as ingest

    class Refusing:
        def get_file_info(self, *_):
            raise PermissionError("AWS Error ACCESS_DENIED during ListObjectsV2")

    monkeypatch.setattr(ingest, "open_location", lambda uri: (Refusing(), "bucket/drops"))
    with pytest.raises(OSError, match=r"^s3://bucket/drops/2026-11-24: cannot read: AWS Error ACCESS_DENIED") as err:
        read_drop("s3://bucket/drops", D)
    assert not isinstance(err.value, InputError)


def test_waiting_for_a_drop_at_a_uri(book):
    inbox = to_memory(book.inbox)
    assert missing_from_drop(inbox, D) == ["_READY"]  # the sample book has every file, no marker
    with pytest.raises(DropNotReady, match=rf"{inbox}/{D.isoformat()}: drop incomplete .* missing _READY"):
        wait_for_drop(Settings(inbox=inbox, ready_wait_seconds=0.1, ready_poll_seconds=0.05), D)
    fsspec.filesystem("memory").pipe(f"{inbox.removeprefix('memory://')}/{D.isoformat()}/_READY", b"")
    assert missing_from_drop(inbox, D) == []


def test_uri_settings_stay_uris():
    s = load_settings({"inbox": "s3://bucket/drops/", "reference": "gs://bucket/reference"})
    assert s.inbox == "s3://bucket/drops" and s.reference == "gs://bucket/reference"
    s = load_settings(environ={"LEVTRACK_INBOX": "abfs://container/drops"})
    assert s.inbox == "abfs://container/drops"
    assert load_settings({"inbox": "drops"}).inbox == Path("drops")


@pytest.mark.slow
def test_a_run_from_uris_archives_their_digests_and_the_same_figures(prefect_harness, book, tmp_path, capsys):
    from flows.cli import main
    from reporting import lake
    from reporting.archive import runs_for_date

    figures = {}
    for name, inbox, reference in [("local", str(book.inbox), str(book.reference)),
                                   ("uri", f"file://{book.inbox}", f"file://{book.reference}")]:
        root = tmp_path / name
        code = main(["run", "--date", D.isoformat(), "--inbox", inbox, "--reference", reference,
                     "--lake", str(root / "lake"), "--archive", str(root / "archive")])
        assert code == 0, capsys.readouterr().err
        figures[name] = lake.read_partition(root / "lake", "entity_metrics", D)
    (run,) = runs_for_date(tmp_path / "uri" / "archive", D)
    manifest = json.loads((run.path / "manifest.json").read_text())
    entries = {e["path"]: e for e in manifest["inputs"]}
    drop = book.inbox / D.isoformat()
    for path in list(drop.glob("*.csv")) + list(book.reference.glob("*.csv")):
        entry = entries[f"file://{path}"]
        assert entry["sha256"] == sha256(path) and entry["bytes"] == path.stat().st_size
    assert entries[f"file://{drop}/balances.csv"]["table"] == "balances"
    assert figures["uri"].equals(figures["local"])
    assert pl.read_parquet(next((tmp_path / "uri" / "lake" / "raw_balances").rglob("*.parquet"))).height > 0
