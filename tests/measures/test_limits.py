"""Limit resolution, utilization, status and breach streaks."""

from datetime import date

import polars as pl
import pytest

from reporting.measures.limits import exposure_reduction, limit_utilization, resolve_limits

D = date(2026, 11, 24)


def metrics(**cols):
    base = {"business_date": [D, D, D], "entity_id": ["A", "B", "C"]}
    return pl.DataFrame({**base, **cols})


LIMITS = pl.DataFrame({
    "entity_id": ["*", "*", "A"], "metric": ["gross_leverage", "leverage_ratio_pct", "gross_leverage"],
    "limit": [5.0, 3.0, 3.0], "kind": ["max", "min", "max"], "warn_at": [0.8, None, None],
})
INSOLVENT = pl.DataFrame({"entity_id": ["A", "B", "C"], "insolvent": [False, False, True]})


def test_entity_limit_overrides_default():
    r = resolve_limits(LIMITS, ["A", "B"], 0.8)
    got = {(x["entity_id"], x["metric"]): x["limit"] for x in r.iter_rows(named=True)}
    assert got == {("A", "gross_leverage"): 3.0, ("A", "leverage_ratio_pct"): 3.0,
                   ("B", "gross_leverage"): 5.0, ("B", "leverage_ratio_pct"): 3.0}


def test_status_for_max_min_and_undefined_values():
    m = metrics(gross_leverage=[2.7, 4.1, None], leverage_ratio_pct=[10.0, 2.5, -4.0])
    u = limit_utilization(m, LIMITS, INSOLVENT, None, 0.8)
    got = {(x["entity_id"], x["metric"]): x for x in u.iter_rows(named=True)}
    a = got[("A", "gross_leverage")]  # 2.7 / 3 = 0.9 ≥ 0.8
    assert a["utilization"] == pytest.approx(0.9) and a["status"] == "warning"
    assert got[("B", "gross_leverage")]["status"] == "warning"  # 4.1 / 5 = 0.82
    assert got[("A", "leverage_ratio_pct")]["utilization"] == pytest.approx(0.3)  # 3 / 10
    assert got[("B", "leverage_ratio_pct")]["status"] == "breach"  # 2.5 % < 3 %
    assert got[("B", "leverage_ratio_pct")]["utilization"] == pytest.approx(3 / 2.5)
    c = got[("C", "gross_leverage")]  # undefined leverage of an insolvent entity
    assert c["value"] is None and c["utilization"] is None and c["status"] == "breach"
    assert got[("C", "leverage_ratio_pct")]["status"] == "breach"  # negative capital


def test_days_in_breach_and_previous_utilization_from_history():
    prev = pl.DataFrame({
        "business_date": [date(2026, 11, 22), date(2026, 11, 23), date(2026, 11, 23)],
        "entity_id": ["A", "A", "B"], "metric": ["gross_leverage"] * 3,
        "utilization": [1.2, 1.1, 0.5], "status": ["breach", "breach", "ok"], "days_in_breach": [1, 2, 0],
    })
    m = metrics(gross_leverage=[3.6, 6.0, 1.0], leverage_ratio_pct=[10.0, 10.0, 10.0])
    u = limit_utilization(m, LIMITS, INSOLVENT, prev, 0.8).filter(pl.col("metric") == "gross_leverage")
    got = {x["entity_id"]: x for x in u.iter_rows(named=True)}
    assert got["A"]["prev_utilization"] == pytest.approx(1.1)
    assert got["A"]["days_in_breach"] == 3  # breach on 22nd, 23rd and today
    assert got["B"]["days_in_breach"] == 1 and got["B"]["prev_utilization"] == pytest.approx(0.5)
    assert got["C"]["days_in_breach"] == 0 and got["C"]["prev_utilization"] is None


def test_exposure_reduction_brings_worst_breach_back_to_limit():
    m = metrics(gross_leverage=[6.0, 1.0, 1.0], leverage_ratio_pct=[10.0, 10.0, 10.0],
                gross_exposure_usd=[600.0, 100.0, 100.0])
    u = limit_utilization(m, LIMITS, INSOLVENT, None, 0.8)
    r = {x["entity_id"]: x["exposure_reduction_usd"] for x in exposure_reduction(u, m, INSOLVENT).iter_rows(named=True)}
    assert r["A"] == pytest.approx(600 * (1 - 3 / 6))  # gross leverage 6× against 3×: halve the book
    assert r["B"] == 0.0
    assert r["C"] is None  # insolvent: no cut restores undefined leverage


def test_max_gross_leverage_within_var_limit():
    from reporting.measures.limits import max_leverage_for_var_limit

    m = pl.DataFrame({"entity_id": ["A", "B", "C"], "equity_usd": [1_000_000.0, 2_000_000.0, -5.0],
                      "var_loss_per_gross": [0.05, 0.04, 0.05]})
    limits = pl.DataFrame({"entity_id": ["*", "A"], "metric": ["var_99_1d_hist_pct", "var_99_1d_hist_usd"],
                           "limit": [10.0, 80_000.0], "kind": ["max", "max"], "warn_at": [None, None]})
    got = dict(max_leverage_for_var_limit(limits, m, 0.8).iter_rows())
    assert got["A"] == pytest.approx((80_000 / 1_000_000) / 0.05)  # USD limit (8 %) tighter than 10 %: 1.6x
    assert got["B"] == pytest.approx(0.10 / 0.04)  # 10 % of equity -> 2.5x
    assert got["C"] is None  # no leverage on negative equity


def test_undefined_crypto_check_breaches_only_when_tier1_is_not_positive():
    """A: Tier 1 given and positive (1 % of it is held: a breach of the 0.5 % limit
    by value). B: Tier 1 given as zero, so the ratio is undefined: a breach. C: insolvent
    and no Tier 1 given: the check does not apply, so not a breach (its leverage is)."""
    m = metrics(gross_leverage=[2.0, 2.0, None], crypto_exposure_pct_tier1=[1.0, None, None])
    limits = pl.DataFrame({"entity_id": ["*", "*"], "metric": ["gross_leverage", "crypto_exposure_pct_tier1"],
                           "limit": [5.0, 0.5], "kind": ["max", "max"], "warn_at": [None, None]})
    insolvent = INSOLVENT.with_columns(tier1_not_positive=pl.Series([False, True, False]))
    u = limit_utilization(m, limits, insolvent, None, 0.8)
    got = {(x["entity_id"], x["metric"]): x["status"] for x in u.iter_rows(named=True)}
    assert got == {("A", "gross_leverage"): "ok", ("A", "crypto_exposure_pct_tier1"): "breach",
                   ("B", "gross_leverage"): "ok", ("B", "crypto_exposure_pct_tier1"): "breach",
                   ("C", "gross_leverage"): "breach", ("C", "crypto_exposure_pct_tier1"): "ok"}
    # without the column every undefined crypto check is not applicable
    u = limit_utilization(m, limits, INSOLVENT, None, 0.8)
    assert u.filter(pl.col("metric") == "crypto_exposure_pct_tier1")["status"].to_list() == ["breach", "ok", "ok"]


def test_contract_limits_apply_where_the_table_is_silent():
    """Contract section 2: the 3 % leverage-ratio floor and the 1 % crypto limit are
    defaults. A limits file without them still checks them; a `*` row replaces them and
    an entity's own row overrides them."""
    from reporting.measures.limits import with_contract_limits

    m = metrics(gross_leverage=[1.0, 1.0, 1.0], leverage_ratio_pct=[2.0, 3.6, 50.0],
                crypto_exposure_pct_tier1=[0.5, 1.2, None])
    solvent = INSOLVENT.with_columns(insolvent=pl.lit(False), tier1_not_positive=pl.Series([False, False, True]))
    only_gross = LIMITS.filter(pl.col("metric") == "gross_leverage")
    u = limit_utilization(m, with_contract_limits(only_gross, 3.0, 1.0), solvent, None, 0.8)
    got = {(x["entity_id"], x["metric"]): (x["limit"], x["kind"], x["status"]) for x in u.iter_rows(named=True)}
    assert got[("A", "leverage_ratio_pct")] == (3.0, "min", "breach")  # 2 % < 3 %
    assert got[("B", "leverage_ratio_pct")] == (3.0, "min", "warning")  # 3 / 3.6 = 0.83 ≥ 0.8
    assert got[("C", "leverage_ratio_pct")] == (3.0, "min", "ok")  # 3 / 50 = 0.06
    assert got[("A", "crypto_exposure_pct_tier1")] == (1.0, "max", "ok")  # 0.5 / 1 = 0.5
    assert got[("B", "crypto_exposure_pct_tier1")] == (1.0, "max", "breach")  # 1.2 % > 1 %
    assert got[("C", "crypto_exposure_pct_tier1")] == (1.0, "max", "breach")  # Tier 1 ≤ 0
    # the table's own `*` row for a metric replaces the default; an entity's row overrides both
    own = pl.concat([only_gross, pl.DataFrame({
        "entity_id": ["*", "B"], "metric": ["crypto_exposure_pct_tier1", "leverage_ratio_pct"],
        "limit": [2.0, 4.0], "kind": ["max", "min"], "warn_at": [None, 0.9]})])
    r = resolve_limits(with_contract_limits(own, 3.0, 1.0), ["A", "B"], 0.8)
    limits = {(x["entity_id"], x["metric"]): x["limit"] for x in r.iter_rows(named=True)}
    assert limits == {("A", "gross_leverage"): 3.0, ("B", "gross_leverage"): 5.0,
                      ("A", "crypto_exposure_pct_tier1"): 2.0, ("B", "crypto_exposure_pct_tier1"): 2.0,
                      ("A", "leverage_ratio_pct"): 3.0, ("B", "leverage_ratio_pct"): 4.0}
    assert with_contract_limits(LIMITS.vstack(own.filter(pl.col("entity_id") == "*")[1:]), 3.0, 1.0).height == 4
