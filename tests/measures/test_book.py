"""All measures together on the tiny book with a hand-made price history."""

from datetime import timedelta

import numpy as np
import polars as pl
import pytest

from reporting.config import Settings
from reporting.measures.book import apply_limits, compute_measures

from .conftest import BUSINESS_DATE

BTC_RETURNS = [0.01, -0.02, 0.005, -0.04, 0.03, 0.0, -0.01, 0.02, -0.005, 0.015]
ETH_RETURNS = [0.001 * (i + 1) * (-1) ** i for i in range(10)]  # moves every day: not stale
Z99 = 2.3263478740408408


def history() -> pl.DataFrame:
    rows = []
    for asset, last, rets in (("BTC", 91_000.0, BTC_RETURNS), ("ETH", 3_100.0, ETH_RETURNS)):
        closes = [last]
        for r in reversed(rets):
            closes.insert(0, closes[0] / (1 + r))
        for i, c in enumerate(closes):
            rows.append((BUSINESS_DATE - timedelta(days=len(closes) - 1 - i), asset, c))
    return pl.DataFrame(rows, schema={"date": pl.Date, "asset": pl.String, "close_usd": pl.Float64}, orient="row")


def test_var_family_and_limits_on_the_tiny_book(tiny_book):
    settings = Settings(lookback=10, backtest_days=5)
    res = compute_measures(tiny_book, history(), BUSINESS_DATE, settings)
    a = res.entity_metrics.filter(pl.col("entity_id") == "A").row(0, named=True)
    losses = [-273_000 * r for r in BTC_RETURNS]  # A is linear in BTC: 91,000 spot + 182,000 perp
    # N = 10 at 99 %: m = ceil(0.1) = 1, the worst loss; ES at 97.5 %: k = 0.25, also the worst.
    assert a["var_99_1d_hist_usd"] == pytest.approx(max(losses))
    assert a["es_975_1d_hist_usd"] == pytest.approx(max(losses))
    assert a["var_99_10d_hist_usd"] == pytest.approx(max(losses) * 10**0.5)
    assert a["var_99_1d_hist_pct"] == pytest.approx(max(losses) / 43_000 * 100)
    assert a["var_99_1d_param_usd"] == pytest.approx(Z99 * 273_000 * np.std(BTC_RETURNS, ddof=1))
    w = np.array([(1 - 0.94) * 0.94**i / (1 - 0.94**10) for i in range(10)])[::-1]
    assert a["var_99_1d_ewma_usd"] == pytest.approx(Z99 * 273_000 * np.sqrt(np.sum(w * np.square(BTC_RETURNS))))
    assert a["var_observations"] == 10
    # The built-in uniform −50 % crash is worse than the reference table's BTC −40 %.
    assert a["worst_stress_loss_usd"] == pytest.approx(0.5 * 273_000)
    assert a["worst_stress_scenario"] == "BUILTIN_CRASH_50"
    # With 10 returns of history and a 10-return look-back, the backtest has no observations.
    assert res.backtest.filter(pl.col("entity_id") == "A")["observations"].item() == 0

    metrics, util = apply_limits(res, tiny_book["limits"], None, settings)
    row = util.filter((pl.col("entity_id") == "A") & (pl.col("metric") == "gross_leverage")).row(0, named=True)
    assert row["limit"] == 3.0 and row["status"] == "breach"
    assert row["utilization"] == pytest.approx(273_000 / 43_000 / 3)
    a = metrics.filter(pl.col("entity_id") == "A").row(0, named=True)
    assert a["exposure_reduction_usd"] == pytest.approx(273_000 * (1 - 3 / (273_000 / 43_000)))


def test_stale_and_off_market_marks_are_flagged(tiny_book):
    settings = Settings(lookback=10, backtest_days=5)
    hist = history()
    # BTC closed yesterday exactly where it closes today: a feed that stopped
    stale = hist.with_columns(close_usd=pl.when((pl.col("asset") == "BTC") & (
        pl.col("date") == BUSINESS_DATE - timedelta(days=1))).then(91_000.0).otherwise(pl.col("close_usd")))
    book = dict(tiny_book)
    book["marks"] = tiny_book["marks"].with_columns(  # ETH-INV perpetual 20 % off its 3,100 spot
        mark_price=pl.when(pl.col("instrument_id") == "ETH-INV").then(3_720.0).otherwise(pl.col("mark_price")))
    flags = compute_measures(book, stale, BUSINESS_DATE, settings).flags
    got = {(r["entity_id"], r["flag"]) for r in flags.iter_rows(named=True)}
    assert ("A", "stale_price") in got and ("B", "stale_price") not in got
    assert ("B", "off_market_mark") in got and ("A", "off_market_mark") not in got
    text = {r["flag"]: r["message"] for r in flags.iter_rows(named=True)}
    assert text["stale_price"].startswith("BTC closed at 91000.0 USD on ")
    assert text["off_market_mark"].startswith("ETH-INV marked at 3720.0 against 3100.0 spot (20.0% away)")
    clean = compute_measures(tiny_book, hist, BUSINESS_DATE, settings).flags
    assert clean.filter(pl.col("flag").is_in(["stale_price", "off_market_mark"])).is_empty()


def test_a_close_that_jumps_from_yesterday_is_flagged(tiny_book):
    """ETH (held by B only) closed at 3,100 today; yesterday's close set to 1,000 makes a
    +210 % day, over the 50 % tolerance; 2,000 (+55 %) too; 2,100 (+47.6 %) is not."""
    settings = Settings(lookback=10, backtest_days=5)
    hist = history()
    yesterday = BUSINESS_DATE - timedelta(days=1)

    def with_eth_yesterday(close):
        return hist.with_columns(close_usd=pl.when((pl.col("asset") == "ETH") & (pl.col("date") == yesterday))
                                 .then(close).otherwise(pl.col("close_usd")))

    def jumps(close):
        flags = compute_measures(tiny_book, with_eth_yesterday(close), BUSINESS_DATE, settings).flags
        return [(r["entity_id"], r["message"]) for r in flags.filter(pl.col("flag") == "price_jump").iter_rows(named=True)]

    assert jumps(1_000.0) == [("B", f"ETH closed at 3100.0 USD on {BUSINESS_DATE} against 1000.0 on {yesterday} "
                                    "(+210.0%): check the price; every figure on it moves with it")]
    assert [e for e, _ in jumps(2_000.0)] == ["B"] and "(+55.0%)" in jumps(2_000.0)[0][1]
    assert jumps(2_100.0) == []
    assert "(-69.0%)" in jumps(10_000.0)[0][1]  # 3,100 / 10,000 − 1: a fall is flagged too


def test_a_backtest_shorter_than_set_is_flagged(tiny_book):
    """10 returns of history: a 7-return look-back leaves 3 days to backtest (of 5 set);
    a 5-return look-back leaves all 5; a 10-return one none (no zone, nothing to flag)."""
    def short(lookback):
        flags = compute_measures(tiny_book, history(), BUSINESS_DATE, Settings(lookback=lookback, backtest_days=5)).flags
        return {(r["entity_id"], r["message"]) for r in flags.filter(pl.col("flag") == "short_backtest").iter_rows(named=True)}

    msg = "Backtest over 3 days, fewer than the 5 set (short history): its traffic-light zone is judged on those days"
    assert short(7) == {("A", msg), ("B", msg)}
    assert short(5) == set() and short(10) == set()


def test_a_tiny_price_in_a_flag_is_a_plain_decimal():
    """polars writes 1.2e-9 as '1.2e-9'; a compliance reader gets 0.0000000012."""
    from reporting.measures.book import _plain_price
    got = pl.DataFrame({"p": [1.2e-9, 0.00001234, 91_000.0]}).select(_plain_price("p")).to_series().to_list()
    assert got == ["0.0000000012", "0.00001234", "91000.0"]


def test_measures_run_with_blas_on_one_thread_and_restore_it(tiny_book, monkeypatch):
    """The measure steps run with numpy's BLAS on one thread (every thread of them), and
    the caller's setting is back afterwards."""
    from threadpoolctl import threadpool_info, threadpool_limits

    import reporting.measures.book as book_module

    def blas_threads() -> set[int]:
        return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

    if not blas_threads():
        pytest.skip("numpy reports no BLAS thread pool here")
    seen = []
    var_family = book_module._var_family

    def spy(*args, **kwargs):  # runs in the VaR family's own thread
        seen.append(blas_threads())
        return var_family(*args, **kwargs)

    monkeypatch.setattr(book_module, "_var_family", spy)
    with threadpool_limits(limits=3, user_api="blas"):  # the caller's own setting
        compute_measures(tiny_book, history(), BUSINESS_DATE, Settings(lookback=5, backtest_days=3))
        assert seen == [{1}]
        assert blas_threads() == {3}


def test_tier1_of_zero_breaches_the_crypto_check_and_is_flagged(tiny_book):
    """B's Tier 1 set to 0: its crypto check is undefined, flagged and a breach. A gives no
    Tier 1: the check does not apply to it, so it is not a breach (its leverage, 6.3×, is)."""
    settings = Settings(lookback=10, backtest_days=5)
    book = dict(tiny_book)
    book["entities"] = tiny_book["entities"].with_columns(tier1_capital_usd=pl.Series([None, 0.0]))
    book["limits"] = pl.concat([tiny_book["limits"], pl.DataFrame({
        "entity_id": ["*"], "metric": ["crypto_exposure_pct_tier1"], "limit": [1.0], "kind": ["max"],
        "warn_at": [None]})])
    res = compute_measures(book, history(), BUSINESS_DATE, settings)
    assert {(r["entity_id"], r["flag"]) for r in res.flags.iter_rows(named=True)
            if r["flag"] == "tier1_not_positive"} == {("B", "tier1_not_positive")}
    metrics, util = apply_limits(res, book["limits"], None, settings)
    check = {r["entity_id"]: r for r in util.filter(pl.col("metric") == "crypto_exposure_pct_tier1")
             .iter_rows(named=True)}
    assert check["B"]["value"] is None and check["B"]["status"] == "breach"
    assert check["A"]["value"] is None and check["A"]["status"] == "ok"
    assert "tier1_not_positive" not in metrics.columns


def test_a_book_that_does_not_move_has_losses_of_plus_zero(tiny_book):
    """C holds only USD: its VaR, ES, stress loss and their limits' utilization are 0,
    and +0.0, not −0.0 (a negated zero P&L), in every table the lake and the CSVs get."""
    settings = Settings(lookback=10, backtest_days=5)
    book = dict(tiny_book)
    book["balances"] = pl.concat([tiny_book["balances"], pl.DataFrame({
        "business_date": [BUSINESS_DATE], "entity_id": ["C"], "account_id": ["c1"], "venue": ["X"],
        "asset": ["USD"], "amount": [1_000_000.0]})])
    book["entities"] = pl.concat([tiny_book["entities"], pl.DataFrame(
        {"entity_id": ["C"], "name": ["Cash"], "tier1_capital_usd": [None]},
        schema=tiny_book["entities"].schema)])
    book["limits"] = pl.concat([tiny_book["limits"], pl.DataFrame({
        "entity_id": ["*"], "metric": ["var_99_1d_hist_usd"], "limit": [1e6], "kind": ["max"], "warn_at": [None]})])
    res = compute_measures(book, history(), BUSINESS_DATE, settings)
    metrics, util = apply_limits(res, book["limits"], None, settings)
    c = metrics.filter(pl.col("entity_id") == "C").row(0, named=True)
    for column in ("var_99_1d_hist_usd", "es_975_1d_hist_usd", "var_99_10d_hist_usd", "worst_stress_loss_usd"):
        assert c[column] == 0.0 and np.copysign(1.0, c[column]) == 1.0, column
    assert c["worst_stress_scenario"] is None
    frames = [metrics, util] + [getattr(res, name) for name in ("exposures", "account_metrics", "stress_results",
                                                                 "backtest", "backtest_series", "entity_metrics")]
    for frame in frames:
        for column in frame.select(pl.selectors.float()).columns:
            values = frame[column].drop_nulls().to_numpy()
            assert not np.any((values == 0) & np.signbit(values)), column
