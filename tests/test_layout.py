"""Section 1 at scale: sparse results are built in O(n), never through a dense matrix."""
import numpy as np
import pytest

import fastjac

sparse = pytest.importorskip("scipy.sparse")

N = 2_000_000   # a dense float64 n x n here would be 32 TB


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo", "dia"])
def test_diagonal_of_millions_as_sparse(fmt):
    x = np.linspace(0.5, 1.5, N)
    result = fastjac.jacobian("square", x, format=fmt)
    assert result.shape == (N, N) and result.nnz == N
    np.testing.assert_array_equal(result.diagonal(), 2 * x)


@pytest.mark.parametrize("layout, shape", [("numerator", (1, N)), ("denominator", (N, 1))])
@pytest.mark.parametrize("fmt", ["csr", "csc", "coo"])
def test_gradient_of_millions_as_sparse(fmt, layout, shape):
    x = np.linspace(0.5, 1.5, N)
    result = fastjac.sum_gradient("multiply", x, 3.0, layout=layout, format=fmt)
    assert result.shape == shape and result.nnz == N
    assert result.sum() == pytest.approx(3.0 * N)


def test_csr_is_canonical():
    result = fastjac.jacobian("multiply", np.ones((3, 4)), 2.0, wrt=1, format="csr")
    assert result.has_sorted_indices and result.has_canonical_format
    np.testing.assert_array_equal(result.toarray(), np.ones((3, 4)))


def test_structurally_zero_jacobians_store_nothing_at_scale():
    x = np.ones(N)
    for fmt in ("csr", "csc", "coo", "dia"):
        assert fastjac.jacobian("greater", x, x, format=fmt).nnz == 0
        assert fastjac.sum_gradient("less", x, 1.0, wrt=1, format=fmt).nnz == 0


def test_denominator_is_the_transpose_in_every_sparse_format():
    X = np.arange(1.0, 7.0).reshape(2, 3)
    for fmt in ("csr", "csc", "coo", "dia"):
        num = fastjac.sum_gradient("square", X, format=fmt).toarray()
        den = fastjac.sum_gradient("square", X, format=fmt, layout="denominator").toarray()
        np.testing.assert_array_equal(den, num.T)
        np.testing.assert_array_equal(den, 2 * X)
