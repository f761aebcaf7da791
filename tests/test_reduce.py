"""Section 5: sum reduction. The gradient of y = sum(op(a, b)).

With respect to an array it is a row (numerator) or column (denominator), or
for a matrix a scalar-by-matrix derivative; with respect to a scalar it is
one number, e.g. d sum(x z)/dz = sum(x).
"""
import math

import numpy as np
import pytest

import fastjac
from helpers import check_sum_gradient, operand_pair, rng_for, unary_operand

PAIRS = [((5,), (5,)), ((3, 4), (3, 4)), ((2, 3, 2), (2, 3, 2)), ((5,), ()), ((), (5,)),
         ((3, 4), ()), ((), (3, 4)), ((), ())]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shapes", PAIRS, ids=str)
@pytest.mark.parametrize("wrt", [0, 1])
@pytest.mark.parametrize("op", fastjac.BINARY_OPS)
def test_binary_sums_against_finite_differences(op, wrt, shapes, dtype):
    a, b = operand_pair(op, *shapes, rng_for("sum", op, wrt, shapes))
    check_sum_gradient(op, a, b, wrt, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(), (5,), (3, 4), (2, 3, 2)], ids=str)
@pytest.mark.parametrize("op", fastjac.UNARY_OPS)
def test_unary_sums_against_finite_differences(op, shape, dtype):
    check_sum_gradient(op, unary_operand(op, shape, rng_for("sum", op, shape)), None, 0, dtype)


def test_section_5_table():
    rng = np.random.default_rng(5)
    w, x, z = rng.normal(size=7), rng.normal(size=7), 0.75
    np.testing.assert_array_equal(fastjac.sum_gradient(None, x), np.ones(7))      # 1^T
    np.testing.assert_allclose(fastjac.sum_gradient("sin", x), np.cos(x), rtol=1e-15)
    np.testing.assert_allclose(fastjac.sum_gradient("multiply", x, z), z * np.ones(7))
    assert fastjac.sum_gradient("multiply", x, z, wrt=1) == pytest.approx(math.fsum(x),
                                                                          rel=1e-14)
    np.testing.assert_array_equal(fastjac.sum_gradient("multiply", w, x, wrt=0), x)  # x^T
    np.testing.assert_array_equal(fastjac.sum_gradient("multiply", w, x, wrt=1), w)  # w^T


def test_sum_of_matrix_gradient_shapes():
    X = np.ones((2, 3))
    assert fastjac.sum_gradient(None, X, format="dense").shape == (3, 2)       # q x p
    assert fastjac.sum_gradient(None, X, format="dense", layout="denominator").shape == (2, 3)


def test_gradient_by_scalar_is_a_numpy_scalar_of_the_dtype():
    x = np.arange(1.0, 5.0)
    g = fastjac.sum_gradient("multiply", x, 2.0, wrt=1)
    assert isinstance(g, np.float64) and g == 10.0
    g32 = fastjac.sum_gradient("multiply", x.astype(np.float32), 2.0, wrt=1)
    assert isinstance(g32, np.float32) and g32 == 10.0
    out = np.empty((), np.float64)
    assert fastjac.sum_gradient("multiply", x, 2.0, wrt=1, out=out) is out and out == 10.0


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 1000, 100_003, 1_000_001])
def test_large_sums_are_accurate(n):
    # Long sums run in chunks on several threads: compare to an exact sum.
    rng = np.random.default_rng(n)
    x = rng.uniform(-1, 2, n)
    z = 1.3
    expected = math.fsum(-x / z**2)        # d sum(x / z)/dz
    got = fastjac.sum_gradient("divide", x, z, wrt=1)
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-12)
    got32 = fastjac.sum_gradient("divide", x.astype(np.float32), np.float32(z), wrt=1)
    expected32 = math.fsum(-x.astype(np.float32).astype(np.float64)
                           / np.float64(np.float32(z)) ** 2)
    assert got32 == pytest.approx(expected32, rel=1e-5, abs=1e-5)


def test_empty_sum_is_zero():
    assert fastjac.sum_gradient("multiply", np.empty(0), 2.0, wrt=1) == 0.0
    assert fastjac.sum_gradient("multiply", np.empty(0), 2.0).shape == (0,)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("z", [0.0, 2.0, np.inf])
def test_empty_sum_by_a_divisor_is_zero(z, dtype):
    # d sum(a / z)/dz over no elements is the empty sum, 0, even where the
    # shortcut -(sum a) / z**2 would give 0 / 0 (found by hypothesis: z = 0)
    got = fastjac.sum_gradient("divide", np.empty(0, dtype), z, wrt=1)
    assert got == 0.0 and got.dtype == dtype


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sum_by_a_zero_divisor_adds_its_terms(dtype):
    # d sum(a / z)/dz at z = 0 is the sum of the terms -a_i / 0**2: -0 / 0 is
    # NaN, so any a_i = 0 makes it NaN, whatever -(sum a) / z**2 would say
    # (found by hypothesis: a = [0, ..., 0, 1], z = 0.0 gave -inf)
    a = np.zeros(12, dtype)
    a[-1] = 1
    assert np.isnan(fastjac.sum_gradient("divide", a, 0.0, wrt=1))
    assert fastjac.sum_gradient("divide", np.ones(5, dtype), 0.0, wrt=1) == -np.inf
    # z * z below the normal range: the terms -(a_i / z) / z, one by one
    tiny = 1e-160 if dtype == np.float64 else 1e-20
    a = np.array([1e-170, -2e-170] if dtype == np.float64 else [1e-30, -2e-30], dtype)
    expect = sum(-(float(v) / tiny) / tiny for v in a.astype(np.float64))
    got = fastjac.sum_gradient("divide", a, dtype(tiny), wrt=1)
    np.testing.assert_allclose(float(got), expect, rtol=1e-6)
