"""Black-76 prices and greeks, vectorised over numpy arrays.

Convention (data contract section 2): the forward is the underlying's `price_usd`,
rates are zero, time to expiry is calendar days / 365, sigma is the mark's
annualised implied vol. Prices are in USD per unit of underlying; an inverse
(coin-margined) option's USD value is the same number, its coin mark times spot.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr

_SQRT_2PI = np.sqrt(2.0 * np.pi)


def _d1_d2(forward, strike, years, sigma):
    forward = np.asarray(forward, dtype=float)
    vol_t = np.asarray(sigma, dtype=float) * np.sqrt(np.asarray(years, dtype=float))
    with np.errstate(divide="ignore", invalid="ignore"):
        d1 = (np.log(forward / strike) + 0.5 * vol_t**2) / vol_t
    return d1, d1 - vol_t, vol_t


def black76_price(forward, strike, years, sigma, is_call) -> np.ndarray:
    """Black-76 undiscounted price: call F N(d1) - K N(d2), put K N(-d2) - F N(-d1).

    At zero time or zero vol the price is the intrinsic value.
    """
    forward, strike = np.asarray(forward, float), np.asarray(strike, float)
    is_call = np.asarray(is_call, bool)
    d1, d2, vol_t = _d1_d2(forward, strike, years, sigma)
    # One formula for both, w = +1 (call) or −1 (put): w (F N(w d1) − K N(w d2)). The
    # sign flips are exact, so the put is K N(−d2) − F N(−d1) to the bit, for half the
    # normal CDFs of valuing both and picking one.
    w = np.where(is_call, 1.0, -1.0)
    price = w * (forward * ndtr(w * d1) - strike * ndtr(w * d2))
    intrinsic = np.where(is_call, np.maximum(forward - strike, 0.0), np.maximum(strike - forward, 0.0))
    return np.where(vol_t > 0, price, intrinsic)


def black76_delta(forward, strike, years, sigma, is_call) -> np.ndarray:
    """dPrice/dForward: N(d1) for a call, N(d1) - 1 for a put."""
    forward, strike = np.asarray(forward, float), np.asarray(strike, float)
    is_call = np.asarray(is_call, bool)
    d1, _, vol_t = _d1_d2(forward, strike, years, sigma)
    delta = np.where(is_call, ndtr(d1), ndtr(d1) - 1.0)
    itm = np.where(is_call, forward > strike, forward < strike)
    expired = np.where(itm, np.where(is_call, 1.0, -1.0), 0.0)
    return np.where(vol_t > 0, delta, expired)


def black76_gamma(forward, strike, years, sigma) -> np.ndarray:
    """d2Price/dForward2, the same for calls and puts."""
    d1, _, vol_t = _d1_d2(forward, strike, years, sigma)
    with np.errstate(divide="ignore", invalid="ignore"):
        gamma = np.exp(-0.5 * d1**2) / (_SQRT_2PI * np.asarray(forward, float) * vol_t)
    return np.where(vol_t > 0, gamma, 0.0)


def black76_vega(forward, strike, years, sigma) -> np.ndarray:
    """dPrice/dsigma per unit of vol (1.00 = 100 vol points)."""
    d1, _, vol_t = _d1_d2(forward, strike, years, sigma)
    vega = np.asarray(forward, float) * np.exp(-0.5 * d1**2) / _SQRT_2PI * np.sqrt(np.asarray(years, float))
    return np.where(vol_t > 0, vega, 0.0)
