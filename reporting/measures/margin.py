"""Tiered initial and maintenance margin, margin utilization and liquidation distance.

Margin tiers work like tax brackets (data contract section 2): each slice of a
position's notional is charged at its own tier's rate, i.e.
`notional × rate_k − cum_k` with `cum_k = floor_k × (rate_k − rate_(k−1)) + cum_(k−1)`.

Project choices (docs/methodology.md): tiers apply per position line; long options
carry no margin (their premium is paid and their loss is bounded by it); a spot
borrowing is margined only where the venue publishes `spot` tiers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy import sparse

from ..config import Settings
from .aggregate import group_sum, grouped, pair_key
from .exposure import ACCOUNT_KEY, DistinctContracts, option_rows


def _unit(notional: np.ndarray | float) -> np.ndarray:
    """A strictly increasing map of notionals into (0, 1): added to a tier group's number,
    it sorts every group's brackets into one array (`BracketTable.key`)."""
    notional = np.asarray(notional, float)
    return 0.5 + 0.5 * notional / (np.abs(notional) + _UNIT_SCALE)


_UNIT_SCALE = 1e6  # USD; any positive scale keeps the order, this one spreads usual floors apart


@dataclass(frozen=True)
class BracketTable:
    """One measure's brackets of every tier group, flattened in (group, floor) order."""

    key: np.ndarray  # (T,) group + _unit(floor): ascending
    floor: np.ndarray  # (T,)
    rate: np.ndarray  # (T,)
    cum: np.ndarray  # (T,) cum_k of the data contract
    step: np.ndarray  # (T,) rate_k − rate_(k−1): what the bracket's floor adds (0 on a group's first)
    first: np.ndarray  # (G,) each group's first bracket
    bound_slope: np.ndarray  # (G,) see Brackets.bound
    bound_offset: np.ndarray  # (G,)

    @classmethod
    def of(cls, group: np.ndarray, floor: np.ndarray, rate: np.ndarray, cum: np.ndarray, n_groups: int) -> "BracketTable":
        if n_groups == 0:  # no tiers at all: one empty group, so lines without margin still index one
            group, floor, rate, cum, n_groups = np.zeros(1, np.int64), np.zeros(1), np.zeros(1), np.zeros(1), 1
        first = np.searchsorted(group, np.arange(n_groups), side="left")
        step = np.where(np.arange(group.size) > first[group], np.diff(rate, prepend=0.0), 0.0)
        up = np.maximum(step, 0.0)
        slope = rate[first] + np.bincount(group, up, minlength=n_groups)
        offset = -cum[first] + np.bincount(group, up * np.maximum(-floor, 0.0), minlength=n_groups)
        return cls(group + _unit(floor), floor, rate, cum, step, first, slope, offset)

    def bracket(self, group: np.ndarray, notional: np.ndarray, side: str = "right") -> np.ndarray:
        """Each line's bracket (a flat index) at its notional: the last floor at or below
        it (`side="left"`: strictly below); below its group's first floor, the first."""
        pos = np.searchsorted(self.key, group + _unit(notional), side=side) - 1
        return np.maximum(pos, self.first[group])


@dataclass(frozen=True)
class TierTable:
    """Margin brackets of every (venue, instrument_type), one `BracketTable` per measure."""

    keys: pl.DataFrame  # venue, instrument_type, tier_group
    tables: dict[str, BracketTable]  # "im"/"mm"

    @classmethod
    def from_frame(cls, tiers: pl.DataFrame) -> "TierTable":
        t = tiers.sort("venue", "instrument_type", "notional_floor_usd")
        keys = t.select("venue", "instrument_type").unique(maintain_order=True).with_row_index("tier_group")
        t = t.join(keys, on=["venue", "instrument_type"], maintain_order="left")
        group, floor = t["tier_group"].cast(pl.Int64).to_numpy(), t["notional_floor_usd"].to_numpy()
        tables = {}
        for m, col in (("im", "initial_margin_rate"), ("mm", "maintenance_margin_rate")):
            # cum_k = floor_k (rate_k - rate_{k-1}) + cum_{k-1}, per group.
            cum = t.select(
                (pl.col("notional_floor_usd") * pl.col(col).diff().over("tier_group").fill_null(pl.col(col)))
                .cum_sum().over("tier_group")
            ).to_series().to_numpy()
            tables[m] = BracketTable.of(group, floor, t[col].to_numpy(), cum, keys.height)
        return cls(keys=keys.with_columns(pl.col("tier_group").cast(pl.Int64)), tables=tables)

    def charge(self, notional: np.ndarray, group: np.ndarray, measure: str) -> np.ndarray:
        """Bracketed charge for each notional in its tier group (group −1: no margin)."""
        return self.brackets(group, measure).charge(notional)

    def brackets(self, group: np.ndarray, measure: str) -> "Brackets":
        """The lines' brackets, for a line set charged many times."""
        has = np.asarray(group) >= 0
        return Brackets(np.where(has, group, 0), has, self.tables[measure])


@dataclass(frozen=True)
class Brackets:
    """Per line, its tier group's brackets: the tax-bracket charge `N · rate_k − cum_k`
    in the bracket k its notional falls in, found by one search over every group's
    floors (`BracketTable.key`)."""

    group: np.ndarray  # (n,) tier group (0 where the line carries no margin)
    has: np.ndarray  # False: the line carries no margin
    table: BracketTable

    def charge(self, notional: np.ndarray) -> np.ndarray:
        notional = np.asarray(notional, float)
        k = self.table.bracket(self.group, notional)
        return np.where(self.has, notional * self.table.rate[k] - self.table.cum[k], 0.0)

    def bound(self) -> tuple[np.ndarray, np.ndarray]:
        """Per line, `(slope, offset)` with `charge(N) ≤ slope · N + offset` for every
        N ≥ 0. The charge is `N·rate_0 − cum_0 + Σ_(k≥1) step_k · max(N − floor_k, 0)`
        (step_k = rate_k − rate_(k−1); `cum` telescopes the same sum), and each step term
        is at most `max(step, 0) · (N + max(−floor, 0))`."""
        t = self.table
        return np.where(self.has, t.bound_slope[self.group], 0.0), np.where(self.has, t.bound_offset[self.group], 0.0)

    def take(self, lines: np.ndarray) -> "Brackets":
        """The brackets of the lines `lines` only."""
        return Brackets(self.group[lines], self.has[lines], self.table)

    def kinks(self, notional: np.ndarray, x_lo: float, x_hi: float) -> tuple[np.ndarray, ...]:
        """For lines whose notional N moves with the price factor x, the charge on
        [x_lo, x_hi] as `x·N·rate − cum` of its bracket at x_lo, plus
        `w · max(x − b, 0)` at each floor crossed above it (b = floor / N < x_hi, w = N · step):
        returns (rate, cum) per line and (line, b, w) per kink, zero steps left out."""
        t = self.table
        lo = t.bracket(self.group, notional * x_lo)
        hi = np.maximum(t.bracket(self.group, notional * x_hi, side="left"), lo)
        count = hi - lo
        line = np.repeat(np.arange(notional.size), count)
        start = np.cumsum(count) - count
        at = lo[line] + 1 + np.arange(line.size) - start[line]  # the floors lo+1 … hi of each line
        n = notional[line]
        w = n * t.step[at]
        keep = w != 0
        return t.rate[lo], t.cum[lo], line[keep], (t.floor[at] / n)[keep], w[keep]


def margined_lines(lines: pl.DataFrame, tiers: TierTable) -> pl.DataFrame:
    """Attach each line's tier group (−1 where it carries no margin); lines that have
    one already (the book's, keyed once for margin and cascade) are returned as given."""
    if "tier_group" in lines.columns:
        return lines
    keyed = lines.join(tiers.keys, on=["venue", "instrument_type"], how="left", maintain_order="left")
    no_margin = (
        pl.col("tier_group").is_null()
        | ((pl.col("line_kind") == "option") & (pl.col("quantity") > 0))
        | ((pl.col("line_kind") == "spot") & (pl.col("quantity") >= 0))
    )
    return keyed.with_columns(tier_group=pl.when(no_margin).then(-1).otherwise(pl.col("tier_group")))


def account_margin(lines: pl.DataFrame, tiers: TierTable, settings: Settings) -> pl.DataFrame:
    """Per account: equity, exposures, IM, MM, margin utilization, liquidation distance.

    Margin utilization = maintenance requirement / account equity, null when equity
    ≤ 0 (the account is under water: flagged, never shown as a ratio).
    """
    m = margined_lines(lines, tiers)
    group = m["tier_group"].to_numpy()
    notional = m["notional_usd"].to_numpy()
    delta, account = m["delta_exposure_usd"].to_numpy(), m["account_row"].to_numpy()
    margined = np.flatnonzero(group >= 0)
    maintenance = tiers.brackets(group[margined], "mm")  # charged here, and moved by the liquidation search
    charges = {"initial_margin_usd": tiers.brackets(group[margined], "im"), "maintenance_margin_usd": maintenance}
    acc, acct = grouped(m, account, (*ACCOUNT_KEY, "account_row"), {
        "equity_usd": m["value_usd"].to_numpy(), "gross_exposure_usd": np.abs(delta),
    })
    acc = acc.with_columns(pl.Series(name, group_sum(acct[margined], b.charge(notional[margined]), acc.height))
                           for name, b in charges.items())
    # net: Σ over underlyings of |Σ delta| within the account (cash carries no delta)
    risky = ~m["is_cash"].to_numpy()
    pairs, _ = grouped(m.select("account_row").filter(risky),
                       pair_key(account[risky], m["underlying_row"].to_numpy()[risky]),
                       ("account_row",), {"delta": delta[risky]})
    net = group_sum(np.searchsorted(acc["account_row"].to_numpy(), pairs["account_row"].to_numpy()),
                    np.abs(pairs["delta"].to_numpy()), acc.height)
    acc = acc.drop("account_row").with_columns(pl.Series("net_exposure_usd", net))
    distance = liquidation_distance(m, acct, acc, tiers, settings, maintenance)
    solvent = pl.col("equity_usd") > 0
    return acc.with_columns(
        gross_leverage=pl.when(solvent).then(pl.col("gross_exposure_usd") / pl.col("equity_usd")),
        margin_utilization=pl.when(solvent).then(pl.col("maintenance_margin_usd") / pl.col("equity_usd")),
        liquidation_distance=pl.Series(distance).fill_nan(None),
        under_water=(pl.col("maintenance_margin_usd") > 0) & ~solvent,
    )


def liquidation_distance(m: pl.DataFrame, acct: np.ndarray, acc: pl.DataFrame, tiers: TierTable,
                         settings: Settings, brackets: "Brackets | None" = None, tol: float = 1e-10) -> np.ndarray:
    """Smallest uniform adverse move of the account's underlyings that brings equity to maintenance.

    `acct` is each line's row in `acc` (`aggregate.grouped`); `brackets`, the margined
    lines' maintenance brackets when the caller has them. Searched in both
    directions — down to −99 % and up to
    `settings.liquidation_search_max_up` — taking the nearer root. Without options an
    account's surplus is piecewise linear in the move (`_SurplusCurve`), so its first
    root either way is found exactly, piece by piece. With options it is solved by a
    bracketed root-finder: geometric bracketing (the first grid magnitude at which
    the account fails), then the Illinois variant of false position inside the
    bracket, falling back to a bisection step whenever two steps do not halve it, to
    `tol`. 0 when equity is already at or below maintenance; null when the account
    carries no maintenance requirement or no move in range liquidates it.
    """
    n = acc.height
    has_mm = acc["maintenance_margin_usd"].to_numpy() > 0
    curve = _SurplusCurve(m, acct, n, tiers, 1.0 - 0.99, 1.0 + settings.liquidation_search_max_up, brackets)
    everyone = np.arange(n)
    at_zero = curve.surplus(everyone, np.ones(n))
    best = np.full(n, np.inf)
    best[has_mm & (at_zero <= 0)] = 0.0
    todo = has_mm & (at_zero > 0)
    linear = np.flatnonzero(todo & ~curve.has_options)
    best[linear] = curve.nearest_root(linear)
    searched = np.flatnonzero(todo & curve.has_options)
    if searched.size:
        best[searched] = _bracketed_roots(curve, searched, settings, tol)
    return np.where(np.isfinite(best), best, np.nan)


def _bracketed_roots(curve: "_SurplusCurve", ids: np.ndarray, settings: Settings, tol: float) -> np.ndarray:
    """Nearest root of the accounts `ids` (surplus > 0 at no move), inf where none."""
    k = ids.size
    best = np.full(k, np.inf)

    def surplus(s: np.ndarray, wanted: np.ndarray) -> np.ndarray:
        out = np.full(k, np.nan)
        out[wanted] = curve.surplus(ids[wanted], 1.0 + s[wanted])
        return out

    rows = np.arange(k)
    for sign, limit in ((-1.0, 0.99), (1.0, settings.liquidation_search_max_up)):
        # bracket: the first grid magnitude at which the account fails, every account
        # valued on the whole grid at once (magnitude 0 first)
        grid = np.concatenate([[0.0], np.geomspace(1e-4, limit, 48)])
        f_grid = curve.surplus_on_grid(ids, 1.0 + sign * grid)
        fails = f_grid[:, 1:] <= 0
        found = fails.any(axis=1)
        first = np.where(found, np.argmax(fails, axis=1) + 1, grid.size - 1)
        lo, f_lo = grid[first - 1], f_grid[rows, first - 1]
        hi_f, f_hi = np.where(found, grid[first], 1.0), np.where(found, f_grid[rows, first], -1.0)
        last = np.zeros(k)  # +1: the last step moved hi, −1: lo (Illinois halves the other end)
        bisect = np.zeros(k, bool)
        older = np.full(k, np.inf)  # the bracket's width before the previous step
        for _ in range(200):
            active = found & (hi_f - lo > tol) & (f_hi < 0)
            if not active.any():
                break
            with np.errstate(divide="ignore", invalid="ignore"):
                secant = hi_f - f_hi * (hi_f - lo) / (f_hi - f_lo)
            mid = 0.5 * (lo + hi_f)
            x = np.where(bisect | ~np.isfinite(secant), mid, secant)
            # At least half the tolerance from either end: once one end sits on the root,
            # the secant lands on it again, and this step just past it closes the bracket.
            x = np.clip(x, lo + 0.5 * tol, hi_f - 0.5 * tol)
            f = surplus(sign * np.where(active, x, hi_f), active)
            fails = active & (f <= 0)
            moves = active & ~fails
            width = hi_f - lo
            f_lo = np.where(fails & (last > 0), 0.5 * f_lo, f_lo)
            f_hi = np.where(moves & (last < 0), 0.5 * f_hi, f_hi)
            hi_f, f_hi = np.where(fails, x, hi_f), np.where(fails, f, f_hi)
            lo, f_lo = np.where(moves, x, lo), np.where(moves, f, f_lo)
            last = np.where(fails, 1.0, np.where(moves, -1.0, last))
            # Bisect when two steps did not halve the bracket: one Illinois step moves one
            # end only and the next, the other, so a single step that does not halve it
            # is normal, and bisecting after it would forgo the superlinear convergence.
            bisect = active & (hi_f - lo > 0.5 * older)
            older = width
        best = np.where(found, np.minimum(best, hi_f), best)
    return best


class _SurplusCurve:
    """Equity − maintenance of every account as a function of the uniform price
    factor x = 1 + s, for x in [x_lo, x_hi], arranged for a search over many accounts.

    Spot and linear values are `A + B·(x − 1)` per account. A line whose notional moves
    with the price is charged `N·x·rate_0 − cum_0 + Σ_k step_k·N·max(x − floor_k/N, 0)`:
    piecewise linear, with a kink where its notional crosses a floor. Per account the
    margined lines therefore sum to

        f_lin(x) = α + β·x − Σ_(kinks b_j < x) w_j·(x − b_j)

    kept as the account's kinks in order with running sums of w and w·b, so one binary
    search evaluates any account at any x; kinks below x_lo are folded into α and β,
    kinks above x_hi never bind. Options are revalued by Black-76 on top.
    """

    def __init__(self, m: pl.DataFrame, acct: np.ndarray, n: int, tiers: TierTable, x_lo: float, x_hi: float,
                 brackets: "Brackets | None" = None):
        self.n, self.x_lo, self.x_hi = n, x_lo, x_hi
        cash = m["is_cash"].to_numpy()
        v0 = m["value_usd"].to_numpy()
        group = m["tier_group"].to_numpy()
        is_spot, is_opt = (m["line_kind"] == "spot").to_numpy(), (m["line_kind"] == "option").to_numpy()
        slope = np.where(cash | is_opt, 0.0, np.where(is_spot, v0, m["delta_exposure_usd"].to_numpy()))
        beta = np.bincount(acct, slope, minlength=n)
        alpha = np.bincount(acct, v0, minlength=n) - beta
        margined = np.flatnonzero(group >= 0)
        a, notional = acct[margined], m["notional_usd"].to_numpy()[margined]
        fixed = ((~is_spot) & (~is_opt) & (m["settlement"] == "inverse").fill_null(False).to_numpy())[margined]
        moving = ~cash[margined] & ~fixed  # the notional moves with x (cash and inverse faces do not)
        brackets = tiers.brackets(group[margined], "mm") if brackets is None else brackets
        still = np.flatnonzero(~moving)  # charged at today's notional over the whole range
        alpha -= np.bincount(a[still], brackets.take(still).charge(notional[still]), minlength=n)
        # a moving line is charged x·N·rate − cum of its bracket at x_lo (the floors
        # below it bind over the whole range: part of the straight line), plus its kinks
        moved = np.flatnonzero(moving)
        rate, cum, line, b, w = brackets.take(moved).kinks(notional[moved], x_lo, x_hi)
        alpha += np.bincount(a[moved], cum, minlength=n)
        beta -= np.bincount(a[moved], notional[moved] * rate, minlength=n)
        ka = a[moved][line]
        key = ka + self._position(b)
        order = np.argsort(key)  # not stable, 5x faster: ties (equal floors in one account) only reorder a sum
        b, w, ka, key = b[order], w[order], ka[order], key[order]
        # running sums within each account (never across accounts: no cancellation)
        sums = pl.DataFrame({"a": ka, "w": w, "wb": w * b}).select(
            pl.col("w", "wb").cum_sum().over("a"))
        self.alpha, self.beta = alpha, beta
        self.kink_x, self.kink_account, self.kink_key, self.kink_w = b, ka, key, w
        self.w_sum, self.wb_sum = sums["w"].to_numpy(), sums["wb"].to_numpy()
        self.first_kink = np.searchsorted(ka, np.arange(n), side="left")
        self.opt_account = acct[is_opt]
        self.has_options = np.bincount(self.opt_account, minlength=n) > 0
        self.contracts = DistinctContracts.of(option_rows(m, is_opt)) if is_opt.any() else None
        if self.contracts is not None:
            self.contract_v0 = self.contracts.terms.value(np.ones((1, 1)))[:, 0]

    def _position(self, x: np.ndarray) -> np.ndarray:
        """x in [x_lo, x_hi] mapped into [0, 0.5]: with the account number, one sort key."""
        return 0.5 * (np.asarray(x, float) - self.x_lo) / (self.x_hi - self.x_lo)

    def _line(self, ids: np.ndarray, x: np.ndarray, side: str) -> tuple[np.ndarray, np.ndarray]:
        """Slope and intercept of f_lin at x: the kinks below x (`side="left"`) or at or
        below x (`"right"`) bind."""
        pos = np.searchsorted(self.kink_key, ids + self._position(x), side=side)
        binds = pos > self.first_kink[ids]
        last = np.maximum(pos - 1, 0)
        w = np.where(binds, self.w_sum[last] if self.w_sum.size else 0.0, 0.0)
        wb = np.where(binds, self.wb_sum[last] if self.wb_sum.size else 0.0, 0.0)
        return self.beta[ids] - w, self.alpha[ids] + wb

    def surplus(self, ids: np.ndarray, x: np.ndarray) -> np.ndarray:
        """f(x) of the accounts `ids` (one factor each)."""
        slope, intercept = self._line(ids, x, "left")
        out = intercept + slope * x
        if self.contracts is not None:
            out = out + self._option_change(ids, x)
        return out

    def surplus_on_grid(self, ids: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """f of the accounts `ids` at every factor of `xs` (the same for all): (k, len(xs)).

        The same sums as `surplus`, arranged for a common grid: each kink binds from the
        first grid factor above it on, so its weight is added at that grid point and
        carried along by a cumulative sum; options are valued once per contract and
        grid point and weighted per account by one sparse product."""
        xs = np.asarray(xs, float)
        k, g = ids.size, xs.size
        order = np.argsort(xs)
        slot = np.full(self.n, -1)
        slot[ids] = np.arange(k)
        on = np.flatnonzero(slot[self.kink_account] >= 0)
        start = np.searchsorted(xs[order], self.kink_x[on], side="right")  # kinks below x bind
        binds = start < g
        cell = slot[self.kink_account[on]][binds] * g + start[binds]
        w, b = self.kink_w[on][binds], self.kink_x[on][binds]
        w_sum = np.bincount(cell, w, minlength=k * g).reshape(k, g).cumsum(axis=1)
        wb_sum = np.bincount(cell, w * b, minlength=k * g).reshape(k, g).cumsum(axis=1)
        f = np.empty((k, g))
        f[:, order] = (self.alpha[ids, None] + wb_sum) + (self.beta[ids, None] - w_sum) * xs[order][None, :]
        if self.contracts is not None:
            c = self.contracts
            lines = np.flatnonzero(slot[self.opt_account] >= 0)
            change = c.terms.value(xs[None, :]) - self.contract_v0[:, None]  # (contracts, g)
            weights = sparse.csr_matrix((c.units[lines], (slot[self.opt_account[lines]], c.of_line[lines])),
                                        shape=(k, change.shape[0]))
            f += np.asarray(weights @ change)
        return f

    def _option_change(self, ids: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Black-76 value change of each account's options at its factor: one valuation
        per contract when every account is moved alike (no move at all: the start of the search)."""
        c = self.contracts
        factor = np.full(self.n, np.nan)
        factor[ids] = x
        lines = np.flatnonzero(~np.isnan(factor[self.opt_account]))
        if lines.size == 0:
            return np.zeros(ids.size)
        contract = c.of_line[lines]
        if np.all(x == x[0]):
            change = (c.terms.value(np.full((1, 1), x[0]))[:, 0] - self.contract_v0)[contract]
        else:
            change = (c.terms.take(contract).value(factor[self.opt_account[lines]][:, None])[:, 0]
                      - self.contract_v0[contract])
        return np.bincount(self.opt_account[lines], c.units[lines] * change, minlength=self.n)[ids]

    def nearest_root(self, ids: np.ndarray) -> np.ndarray:
        """Nearest root either way of accounts without options (f(1) > 0), inf where none:
        f_lin is straight between consecutive kinks, so the first failing kink (or range
        end) on a side and the straight piece beside it give the root exactly."""
        out = np.full(ids.size, np.inf)
        if ids.size == 0:
            return out
        slot = np.full(self.n, -1)
        slot[ids] = np.arange(ids.size)
        on = slot[self.kink_account] >= 0
        pts_acct = np.concatenate([self.kink_account[on], ids, ids])
        pts_x = np.concatenate([self.kink_x[on], np.full(ids.size, self.x_lo), np.full(ids.size, self.x_hi)])
        slope, intercept = self._line(pts_acct, pts_x, "right")
        fails = intercept + slope * pts_x <= 0
        for down in (True, False):
            side = (pts_x < 1.0) if down else (pts_x > 1.0)
            cand = np.flatnonzero(fails & side)
            if cand.size == 0:
                continue
            # per account the failing point nearest 1: the largest below, the smallest above
            first = np.full(ids.size, np.nan)
            where = slot[pts_acct[cand]]
            if down:
                first[:] = -np.inf
                np.maximum.at(first, where, pts_x[cand])
            else:
                first[:] = np.inf
                np.minimum.at(first, where, pts_x[cand])
            has = np.isfinite(first)
            x_fail = first[has]
            # the straight piece between that point and the next one towards 1
            s, c = self._line(ids[has], x_fail, "right" if down else "left")
            with np.errstate(divide="ignore", invalid="ignore"):
                root = np.where(slope_ok := (s != 0), -c / np.where(slope_ok, s, 1.0), x_fail)
            root = np.clip(root, x_fail, 1.0) if down else np.clip(root, 1.0, x_fail)
            out[has] = np.minimum(out[has], np.abs(root - 1.0))
        return out
