"""Sections 2 and 3: element-wise operators and functions have diagonal Jacobians.

Every binary operator x wrt x dtype x shape, and every unary function x dtype
x shape, in every layout and format, against central finite differences;
then the closed forms of the spec's tables and the conventions at the
non-differentiable points.
"""
import numpy as np
import pytest

import fastjac
from helpers import REAL_ABOVE, check_jacobian, operand_pair, rng_for, unary_operand
from oracle import derivative

SHAPES = [(5,), (1,), (3, 4), (2, 3, 2)]
DTYPES = [np.float64, np.float32]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("wrt", [0, 1])
@pytest.mark.parametrize("op", fastjac.BINARY_OPS)
def test_binary_against_finite_differences(op, wrt, shape, dtype):
    a, b = operand_pair(op, shape, shape, rng_for(op, wrt, shape))
    check_jacobian(op, a, b, wrt, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [()] + SHAPES, ids=str)
@pytest.mark.parametrize("op", fastjac.UNARY_OPS)
def test_unary_against_finite_differences(op, shape, dtype):
    x = unary_operand(op, shape, rng_for(op, shape))
    check_jacobian(op, x, None, 0, dtype)


@pytest.mark.parametrize("op", fastjac.BINARY_OPS)
def test_binary_closed_forms(op):
    rng = np.random.default_rng(7)
    w = rng.uniform(0.2, 3.0, 1000)
    x = rng.uniform(0.2, 3.0, 1000)
    x[:10] = w[:10]                       # some ties
    np.testing.assert_allclose(fastjac.jacobian(op, w, x, wrt=0), derivative(op, w, x, 0),
                               rtol=1e-13)
    np.testing.assert_allclose(fastjac.jacobian(op, w, x, wrt=1), derivative(op, w, x, 1),
                               rtol=1e-13)


@pytest.mark.parametrize("op", fastjac.UNARY_OPS)
def test_unary_closed_forms(op):
    x = np.linspace(-5, 5, 1001)
    if op in REAL_ABOVE:
        x = np.linspace(REAL_ABOVE[op] + 0.01, 10, 1001)
    np.testing.assert_allclose(fastjac.jacobian(op, x), derivative(op, x),
                               rtol=1e-13, atol=1e-300)


def test_large_arrays_use_the_same_formulas():
    # Large enough for the threaded and GIL-free paths of the kernels.
    rng = np.random.default_rng(3)
    w, x = rng.uniform(0.5, 2, 300_001), rng.uniform(0.5, 2, 300_001)
    np.testing.assert_allclose(fastjac.jacobian("divide", w, x, wrt=1), -w / x**2, rtol=1e-15)
    np.testing.assert_allclose(fastjac.jacobian("tanh", x), 1 / np.cosh(x) ** 2, rtol=1e-13)
    x32 = x.astype(np.float32)
    np.testing.assert_allclose(fastjac.jacobian("square", x32), 2 * x32, rtol=0)


class TestConventions:
    """The documented values at points where the derivative is not defined."""

    def test_maximum_minimum_tie_splits_one_half(self):
        w = np.array([1.0, 2.0, 3.0])
        x = np.array([2.0, 2.0, 2.0])
        np.testing.assert_array_equal(fastjac.jacobian("maximum", w, x, wrt=0), [0, 0.5, 1])
        np.testing.assert_array_equal(fastjac.jacobian("maximum", w, x, wrt=1), [1, 0.5, 0])
        np.testing.assert_array_equal(fastjac.jacobian("minimum", w, x, wrt=0), [1, 0.5, 0])
        np.testing.assert_array_equal(fastjac.jacobian("minimum", w, x, wrt=1), [0, 0.5, 1])

    def test_relu_and_abs_at_zero(self):
        x = np.array([-1.0, -0.0, 0.0, 1.0])
        np.testing.assert_array_equal(fastjac.jacobian("relu", x), [0, 0, 0, 1])
        np.testing.assert_array_equal(fastjac.jacobian("abs", x), [-1, 0, 0, 1])

    def test_power_special_points(self):
        # d(a**b)/da = 0 where b == 0; d(a**b)/db = 0 where a == 0 and b >= 0.
        np.testing.assert_array_equal(
            fastjac.jacobian("power", np.array([0.0, 2.0]), np.array([0.0, 0.0])), [0, 0])
        np.testing.assert_array_equal(
            fastjac.jacobian("power", np.array([0.0, 0.0]), np.array([0.0, 2.0]), wrt=1),
            [0, 0])
        assert fastjac.jacobian("power", 0.0, 1.0) == 1.0        # 1 * 0**0

    def test_comparisons_are_zero_even_at_ties(self):
        w = np.array([1.0, 2.0, np.nan])
        for op in ("greater", "less"):
            for wrt in (0, 1):
                np.testing.assert_array_equal(fastjac.jacobian(op, w, w, wrt=wrt), 0)

    def test_nan_and_inf_follow_ieee(self):
        with np.errstate(all="ignore"):
            nan = np.nan
            assert np.isnan(fastjac.jacobian("relu", nan))
            assert np.isnan(fastjac.jacobian("abs", nan))
            assert np.isnan(fastjac.jacobian("maximum", nan, 1.0))
            assert np.isnan(fastjac.jacobian("minimum", 1.0, nan, wrt=1))
            assert fastjac.jacobian("divide", 1.0, 0.0, wrt=0) == np.inf
            assert fastjac.jacobian("log", 0.0) == np.inf
            assert fastjac.jacobian("exp", np.inf) == np.inf
            assert fastjac.jacobian("exp", -np.inf) == 0.0
            assert fastjac.jacobian("tanh", np.inf) == 0.0
            assert fastjac.jacobian("sigmoid", -np.inf) == 0.0
            assert np.isnan(fastjac.jacobian("sin", np.inf))
            assert np.isnan(fastjac.jacobian("multiply", 1.0, nan))
            assert fastjac.jacobian("multiply", nan, 2.0) == 2.0      # d(w x)/dw = x

    def test_tanh_and_sigmoid_keep_relative_accuracy_in_the_tails(self):
        # 1 - tanh(x)**2 would round to 0 here; the true value is ~4 exp(-2x).
        x = np.array([10.0, 20.0, 300.0])
        np.testing.assert_allclose(fastjac.jacobian("tanh", x), 1 / np.cosh(x) ** 2, rtol=1e-13)
        np.testing.assert_allclose(fastjac.jacobian("sigmoid", -x),
                                   np.exp(-x) / (1 + np.exp(-x)) ** 2, rtol=1e-13)


def test_numpy_ufuncs_are_accepted_as_ops():
    w, x = np.array([1.0, 2.0]), np.array([3.0, 4.0])
    np.testing.assert_array_equal(fastjac.jacobian(np.multiply, w, x), x)
    np.testing.assert_array_equal(fastjac.jacobian(np.absolute, -w), [-1, -1])
    np.testing.assert_array_equal(fastjac.jacobian(np.true_divide, w, x, wrt=1), -w / x**2)
