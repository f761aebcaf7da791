"""Section 4: scalar expansion, y = x o z with z a scalar.

The Jacobian by the array x is diagonal; by the scalar z it is a vector (a
column in numerator layout), or for a matrix X a matrix-by-scalar derivative.
"""
import numpy as np
import pytest

import fastjac
from helpers import check_jacobian, operand_pair, rng_for

# (shape of a, shape of b): one of them a scalar.
SCALAR_PAIRS = [((5,), ()), ((), (5,)), ((3, 4), ()), ((), (3, 4)), ((2, 3, 2), ()),
                ((), ()), ((1,), ())]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shapes", SCALAR_PAIRS, ids=str)
@pytest.mark.parametrize("wrt", [0, 1])
@pytest.mark.parametrize("op", fastjac.BINARY_OPS)
def test_every_operator_with_a_scalar_operand(op, wrt, shapes, dtype):
    a, b = operand_pair(op, *shapes, rng_for(op, wrt, shapes))
    check_jacobian(op, a, b, wrt, dtype)


X = np.array([0.5, -1.5, 2.0, 4.0])
Z = 1.7

# The table of section 4, written out: (op, a, b, dy/dx diagonal, dy/dz).
TABLE = [
    ("x + z", "add", X, Z, np.ones(4), np.ones(4)),
    ("x - z", "subtract", X, Z, np.ones(4), -np.ones(4)),
    ("z - x", "subtract", Z, X, -np.ones(4), np.ones(4)),
    ("x z", "multiply", X, Z, Z * np.ones(4), X),
    ("x / z", "divide", X, Z, np.ones(4) / Z, -X / Z**2),
    ("z / x", "divide", Z, X, -Z / X**2, 1 / X),
]


@pytest.mark.parametrize("label, op, a, b, d_dx, d_dz", TABLE, ids=[t[0] for t in TABLE])
def test_section_4_table(label, op, a, b, d_dx, d_dz):
    x_is_a = np.ndim(a) == 1
    np.testing.assert_allclose(fastjac.jacobian(op, a, b, wrt=0 if x_is_a else 1), d_dx,
                               rtol=1e-15)
    np.testing.assert_allclose(fastjac.jacobian(op, a, b, wrt=1 if x_is_a else 0), d_dz,
                               rtol=1e-15)
    column = fastjac.jacobian(op, a, b, wrt=1 if x_is_a else 0, format="dense")
    assert column.shape == (4, 1)
    np.testing.assert_allclose(column[:, 0], d_dz, rtol=1e-15)


def test_matrix_by_scalar_keeps_the_matrix_shape():
    Xm = np.arange(1.0, 7.0).reshape(2, 3)
    numerator = fastjac.jacobian("multiply", Xm, 3.0, wrt=1, format="dense")
    denominator = fastjac.jacobian("multiply", Xm, 3.0, wrt=1, format="dense",
                                   layout="denominator")
    np.testing.assert_array_equal(numerator, Xm)          # p x q, entry dY_ij/dz = X_ij
    np.testing.assert_array_equal(denominator, Xm.T)      # q x p


def test_scalar_operands_of_every_kind_are_scalars():
    x = np.array([1.0, 2.0])
    expected = np.array([-1.0, -2.0]) / 4
    for z in (2.0, 2, np.float64(2.0), np.array(2.0), True + 1):
        np.testing.assert_allclose(fastjac.jacobian("divide", x, z, wrt=1), expected)


def test_large_array_with_scalar():
    x = np.linspace(1, 2, 200_003)
    np.testing.assert_allclose(fastjac.jacobian("divide", 3.0, x, wrt=0), 1 / x, rtol=1e-15)
    np.testing.assert_allclose(fastjac.jacobian("power", x, 2.5), 2.5 * x**1.5, rtol=1e-14)
