"""Black-76 against the textbook formula in plain Python and known closed forms."""

import math

import numpy as np
import pytest

from reporting.measures.options import black76_delta, black76_gamma, black76_price, black76_vega

from .reference import black_delta, black_price


@pytest.mark.parametrize("f,k,t,s,call", [
    (100, 100, 1.0, 0.2, True), (100, 90, 0.5, 0.8, False), (91_000, 100_000, 30 / 365, 0.55, True),
    (3_100, 3_000, 38 / 365, 0.6, False),
])
def test_price_and_delta_match_reference(f, k, t, s, call):
    assert black76_price(f, k, t, s, call) == pytest.approx(black_price(f, k, t, s, call), rel=1e-12)
    assert black76_delta(f, k, t, s, call) == pytest.approx(black_delta(f, k, t, s, call), rel=1e-12)


def test_atm_closed_form_and_put_call_parity():
    # ATM: C = P = F (2 N(σ√T / 2) − 1)
    want = 100 * (2 * 0.5 * (1 + math.erf(0.1 / math.sqrt(2))) - 1)
    assert black76_price(100, 100, 1.0, 0.2, True) == pytest.approx(want, rel=1e-12)
    f, k = np.array([80.0, 120.0]), np.array([100.0, 100.0])
    c = black76_price(f, k, 0.3, 0.7, True)
    p = black76_price(f, k, 0.3, 0.7, False)
    np.testing.assert_allclose(c - p, f - k, rtol=1e-12)


def test_gamma_and_vega_against_finite_differences():
    f, k, t, s, h = 3_000.0, 3_200.0, 0.25, 0.65, 1e-2
    gamma_fd = (black_price(f + h, k, t, s, True) - 2 * black_price(f, k, t, s, True) + black_price(f - h, k, t, s, True)) / h**2
    vega_fd = (black_price(f, k, t, s + 1e-6, True) - black_price(f, k, t, s - 1e-6, True)) / 2e-6
    assert black76_gamma(f, k, t, s) == pytest.approx(gamma_fd, rel=1e-4)
    assert black76_vega(f, k, t, s) == pytest.approx(vega_fd, rel=1e-6)


def test_zero_time_is_intrinsic():
    assert black76_price(110.0, 100.0, 0.0, 0.5, True) == pytest.approx(10.0)
    assert black76_price(110.0, 100.0, 0.0, 0.5, False) == pytest.approx(0.0)
    assert black76_delta(90.0, 100.0, 0.0, 0.5, False) == pytest.approx(-1.0)
