"""Independent reference formulas for the tests: plain Python `math`, no numpy/scipy."""

import math


def norm_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def black_price(f: float, k: float, t: float, sigma: float, call: bool) -> float:
    """Black-76 with zero rates (Hull, Options, Futures and Other Derivatives, ch. 18)."""
    d1 = (math.log(f / k) + 0.5 * sigma * sigma * t) / (sigma * math.sqrt(t))
    d2 = d1 - sigma * math.sqrt(t)
    if call:
        return f * norm_cdf(d1) - k * norm_cdf(d2)
    return k * norm_cdf(-d2) - f * norm_cdf(-d1)


def black_delta(f: float, k: float, t: float, sigma: float, call: bool) -> float:
    d1 = (math.log(f / k) + 0.5 * sigma * sigma * t) / (sigma * math.sqrt(t))
    return norm_cdf(d1) if call else norm_cdf(d1) - 1.0
