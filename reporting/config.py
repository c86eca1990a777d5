"""One frozen settings object, built at the entry point, never at import.

Defaults are the methodology's (docs/methodology.md); each can be overridden by a
`levtrack.toml` file, then by the `LEVTRACK_*` environment variables listed in
`ENV_VARS`, then by command-line flags.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Settings:
    inbox: Path | str = Path("inbox")
    """A local folder, or an object-store URI (`s3://bucket/drops`, any pyarrow or fsspec
    file system) kept as a string: see `ingest.open_location`."""
    reference: Path | str = Path("reference")
    lake: Path = Path("lake")
    archive: Path = Path("archive")

    lookback: int = 250
    """Returns in the VaR window, ending on the business date (contract 2.1)."""
    backtest_days: int = 250
    var_confidence: float = 0.99
    es_confidence: float = 0.975
    ewma_lambda: float = 0.94
    horizon_days: int = 10
    """The multi-day VaR horizon, scaled by sqrt(horizon_days)."""

    cash_assets: tuple[str, ...] = ("USD", "USDT", "USDC", "DAI", "FDUSD", "TUSD", "PYUSD")
    """USD and the stablecoins treated as cash: no price exposure."""

    saccr_alpha: float = 1.4
    saccr_supervisory_factor: float = 0.32
    saccr_correlation: float = 0.50
    saccr_min_maturity_days: int = 10
    leverage_ratio_floor_pct: float = 3.0
    crypto_exposure_limit_pct: float = 1.0
    default_warn_at: float = 0.8

    off_market_tolerance: float = 0.10
    """A perpetual's mark further than this from spot (as a fraction) is flagged off-market."""
    price_jump_tolerance: float = 0.5
    """A held asset whose close moved more than this (as a fraction, either way) since
    yesterday's is flagged: a bad print or a unit change moves every figure on it."""

    cascade_impact: float = 0.10
    """Extra price move per unit of liquidated notional over open interest."""
    cascade_max_rounds: int = 10
    depeg_stablecoin: str = "USDT"
    """The stablecoin the built-in depeg stress scenario (`BUILTIN_DEPEG_10`) moves by −10 %."""

    max_input_bytes: int = 8 * 1024**3
    """A drop or reference file larger than this is refused before it is read."""
    max_input_rows: int = 50_000_000
    """A file with more rows than this is refused; rows are counted by streaming the file."""

    schedule_timezone: str = "UTC"
    """The time zone whose previous calendar day a scheduled run reports on."""
    ready_wait_seconds: float = 0.0
    """If > 0, wait up to this long for a complete drop with a `_READY` marker before failing."""
    ready_poll_seconds: float = 10.0

    retention_years: int = 6
    """How long archived reports must be kept (SEC 17a-4: six years); `verify` reports against
    it. Nothing in levtrack ever deletes an archived run."""

    lock_wait_seconds: float = 0.0
    """How long a run waits for another run of the same date before failing."""

    liquidation_search_max_up: float = 10.0
    """Largest upward move (as a fraction) searched for a short book's liquidation."""

    entity_reports_max: int = 500
    """Books with more entities than this get an entity report only for entities in warning
    or breach and those in `report_entities`; the summary prints those and attaches the
    complete entity table (`levtrack report` renders any other entity later)."""
    leverage_history_days: int = 365
    """Calendar days, ending on the business date, of each entity's earlier figures that its
    report shows (leverage chart, C 48 table) and attaches (`entity_metrics_history.csv`).
    At least 92, so the C 48 table's quarter is always inside. A window, not the whole lake,
    so the reports' inputs stay the same size however many years of runs the lake holds."""
    limit_history_days: int = 14
    """Calendar days before the business date searched for an entity's previous limit rows
    (`prev_utilization`, `days_in_breach`): an entity missing for longer starts a new
    breach streak. A window, so a run reads the same rows however many years the lake holds."""
    report_entities: tuple[str, ...] = ()
    """Entities whose report is rendered every day, whatever their status."""
    render_workers: int = 0
    """Worker processes rendering entity PDFs in parallel (0: one per CPU)."""
    measure_shard_entities: int = 0
    """The per-entity measure families run on shards of this many entities, in entity id
    order (0: the whole book at once). On a Dask cluster each shard is one task; in-process
    the shards run one after another (slower than one shard: bench/README.md). A shard's
    figures are the whole book's up to floating-point rounding (matrix products sum in
    another order), and bit for bit the same wherever the shards run, so the size is a
    parameter of the run."""
    dask_address: str = ""
    """A Dask scheduler (`tcp://host:8786`): the measure shards run there, and the entity
    reports render there in shards of `dask_shard_entities`, through Prefect's Dask task
    runner. Empty: in-process."""
    dask_shard_entities: int = 100

    templates_dir: Path = PROJECT_ROOT / "templates"
    expectations_dir: Path = PROJECT_ROOT / "expectations"

    def check(self, sources: Mapping[str, str] | None = None) -> "Settings":
        """Refuse out-of-range settings; ``sources`` (setting -> where its value was read)
        lets the message say which file or variable to fix."""
        for name, ok, rule in self._rules():
            if not ok:
                where = (sources or {}).get(name)
                raise ConfigError(f"{name} must be {rule}, got {getattr(self, name)!r}"
                                  + (f" ({where})" if where else ""))
        return self

    def _rules(self) -> list[tuple[str, bool, str]]:
        fraction = "a fraction strictly between 0 and 1 (write 0.99, not 99)"
        return [
            ("lookback", 2 <= self.lookback <= 5000, "between 2 and 5000 returns"),
            ("var_confidence", 0.0 < self.var_confidence < 1.0, fraction),
            ("es_confidence", 0.0 < self.es_confidence < 1.0, fraction),
            ("ewma_lambda", 0.0 < self.ewma_lambda < 1.0, fraction),
            ("entity_reports_max", self.entity_reports_max >= 0, "0 or more"),
            ("render_workers", self.render_workers >= 0, "0 (one per CPU) or more"),
            ("measure_shard_entities", self.measure_shard_entities >= 0, "0 (no shards) or positive"),
            ("dask_shard_entities", self.dask_shard_entities >= 1, "positive"),
            ("limit_history_days", self.limit_history_days >= 1, "at least 1"),
            ("leverage_history_days", self.leverage_history_days >= 92,
             "at least 92 (a calendar quarter, for the C 48 table)"),
            ("backtest_days", self.backtest_days >= 1, "positive"),
            ("horizon_days", self.horizon_days >= 1, "at least 1 (the multi-day VaR's horizon)"),
        ]

    def parameters(self) -> dict[str, Any]:
        """The settings that shape the numbers, for the manifest and the report."""
        skip = {"inbox", "reference", "lake", "archive", "templates_dir", "expectations_dir",
                "lock_wait_seconds", "max_input_bytes", "max_input_rows", "schedule_timezone",
                "ready_wait_seconds", "ready_poll_seconds", "retention_years", "render_workers",
                "dask_address", "dask_shard_entities"}
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name in skip:
                continue
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out


ENV_VARS: dict[str, str] = {f"LEVTRACK_{f.name.upper()}": f.name for f in fields(Settings)}
"""Every setting has its variable, `LEVTRACK_` and its name in capitals
(`LEVTRACK_VAR_CONFIDENCE=0.975`): a scheduled job configured by its environment must
not run at a default it believes it changed."""


def is_uri(where: Path | str) -> bool:
    """A location with a scheme (`s3://…`, `file://…`): read through a file system
    object, not as a local path."""
    return isinstance(where, str) and "://" in where


def location(raw: Path | str) -> Path | str:
    """A folder setting: a URI stays a string (`Path` would fold its `//`), anything
    else is a local path."""
    text = str(raw)
    return text.rstrip("/") if is_uri(text) else Path(text)


def _coerce(name: str, raw: Any, source: str = "") -> Any:
    kind = {f.name: f.type for f in fields(Settings)}[name]
    try:
        if kind == "Path":
            return Path(raw)
        if kind == "Path | str":
            return location(raw)
        if kind == "int":
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError("not a whole number")  # int() would cut 2.5 to 2 silently
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind.startswith("tuple"):
            items = raw.split(",") if isinstance(raw, str) else raw
            return tuple(str(i).strip() for i in items if str(i).strip())
    except (TypeError, ValueError) as exc:
        where = f" ({source})" if source else ""
        raise ConfigError(f"setting {name}{where}: cannot read {raw!r} as {kind}") from exc
    return raw


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    *,
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build the settings: defaults < config file < environment < explicit overrides."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    path = config_file or (Path(environ["LEVTRACK_CONFIG"]) if "LEVTRACK_CONFIG" in environ else None)
    if path is None and Path("levtrack.toml").is_file():
        path = Path("levtrack.toml")
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"config file {path}: {exc}") from exc
        known = {f.name for f in fields(Settings)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"config file {path}: unknown settings {unknown}")
        for k, v in data.items():
            sources[k] = f"config file {path}"
            values[k] = _coerce(k, v, sources[k])
    for var, name in ENV_VARS.items():
        if environ.get(var):
            sources[name] = f"environment variable {var}"
            values[name] = _coerce(name, environ[var], sources[name])
    for k, v in (overrides or {}).items():
        if v is not None:
            sources[k] = "command-line flag or flow parameter"
            values[k] = _coerce(k, v, sources[k])
    return replace(Settings(), **values).check(sources)
