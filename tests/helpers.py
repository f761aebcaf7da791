"""Shared checks: every layout and format of one derivative against the oracle."""
import zlib

import numpy as np
import pytest

import fastjac
from fastjac._operators import OPERATORS
from oracle import expected_gradient_matrix, expected_jacobian_matrix, fd_jacobian, forward

# The functions real only above some x (sqrt, log: 0; log1p: -1), from the
# operator records: operands are drawn there.
REAL_ABOVE = {op.name: op.real_above for op in OPERATORS if op.real_above is not None}

SPARSE_FORMATS = ("csr", "csc", "coo", "dia", "sparse")
SPARSE_CLASS = {"csr": "csr_array", "csc": "csc_array", "coo": "coo_array",
                "dia": "dia_array", "sparse": "csr_array"}
LAYOUTS = ("numerator", "denominator")

# Finite differences in float64 are good to ~1e-9 relative here; float32
# results carry float32 rounding (and a few ulp in transcendental functions).
TOLERANCE = {np.float64: dict(rtol=1e-6, atol=1e-8), np.float32: dict(rtol=3e-5, atol=1e-5)}


def rng_for(*key):
    """A generator seeded by the test's parameters (stable across processes)."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def operand_pair(op, shape_a, shape_b, rng):
    """Operands away from every kink and outside every singularity of ``op``."""
    shape = shape_a if len(shape_a) else shape_b
    a = rng.uniform(0.5, 2.0, shape)
    ratio = rng.uniform(1.2, 1.6, shape)
    b = np.where(rng.random(shape) < 0.5, a * ratio, a / ratio)
    a = a if len(shape_a) else np.float64(a.reshape(-1)[0] if a.size else 1.0)
    b = b if len(shape_b) else np.float64(b.reshape(-1)[0] if b.size else 1.3)
    if len(shape_a) == 0 and len(shape_b) == 0:
        b = np.float64(a * 1.4)
    return a, b


def unary_operand(op, shape, rng):
    x = rng.uniform(0.5, 2.0, shape)
    if op not in REAL_ABOVE:
        x = x * np.where(rng.random(shape) < 0.5, -1.0, 1.0)
    return x if len(shape) else np.float64(x)


def cast(v, dtype):
    return np.asarray(v, dtype=dtype) if np.ndim(v) else np.asarray(v, dtype=dtype)[()]


def assert_close(actual, expected, dtype, what):
    __tracebackhide__ = True
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected,
                               err_msg=what, **TOLERANCE[dtype])


def assert_dtype(result, dtype, what):
    __tracebackhide__ = True
    assert np.asarray(result).dtype == dtype if not hasattr(result, "toarray") \
        else result.dtype == dtype, f"{what}: dtype {result.dtype}, expected {np.dtype(dtype)}"


def check_jacobian(op, a, b, wrt, dtype):
    """jacobian(op, a, b, wrt) in every layout and format against the oracle."""
    a_t = cast(a, dtype)
    b_t = None if b is None else cast(b, dtype)
    fd = fd_jacobian(op, np.float64(a_t) if np.ndim(a_t) == 0 else a_t.astype(np.float64),
                     None if b_t is None else np.asarray(b_t, dtype=np.float64), wrt)
    y_shape = np.shape(forward(op, a_t, b_t))
    v_shape = np.shape(a_t if wrt == 0 else b_t)
    diagonal = len(v_shape) > 0

    compact = fastjac.jacobian(op, a_t, b_t, wrt=wrt)
    assert np.shape(compact) == y_shape, f"compact shape {np.shape(compact)} != {y_shape}"
    assert_dtype(compact, dtype, "compact")
    expected_compact = np.diagonal(fd) if diagonal else fd[:, 0]
    assert_close(np.reshape(compact, -1), expected_compact, dtype, "compact")

    for layout in LAYOUTS:
        expected = expected_jacobian_matrix(fd, y_shape, v_shape, layout)
        dense = fastjac.jacobian(op, a_t, b_t, wrt=wrt, layout=layout, format="dense")
        assert dense.shape == expected.shape, f"{layout} dense shape {dense.shape}"
        assert_dtype(dense, dtype, f"{layout} dense")
        assert_close(dense, expected, dtype, f"{layout} dense")
        check_sparse(lambda fmt: fastjac.jacobian(op, a_t, b_t, wrt=wrt, layout=layout,
                                                  format=fmt),
                     dense, op, dtype, layout)
    numerator = fastjac.jacobian(op, a_t, b_t, wrt=wrt, format="dense")
    denominator = fastjac.jacobian(op, a_t, b_t, wrt=wrt, format="dense", layout="denominator")
    np.testing.assert_array_equal(denominator, numerator.T)


def check_sum_gradient(op, a, b, wrt, dtype):
    """sum_gradient(op, a, b, wrt) in every layout and format against the oracle."""
    a_t = cast(a, dtype)
    b_t = None if b is None else cast(b, dtype)
    a64 = np.asarray(a_t, dtype=np.float64)
    b64 = None if b_t is None else np.asarray(b_t, dtype=np.float64)
    fd = fd_jacobian(op, a64, b64, wrt)       # m x n
    gradient = fd.sum(axis=0)                 # d sum(y) / dv
    v_shape = np.shape(a_t if wrt == 0 else b_t)
    opname = None if op == "identity" else op

    compact = fastjac.sum_gradient(opname, a_t, b_t, wrt=wrt)
    assert np.shape(compact) == v_shape, f"compact shape {np.shape(compact)} != {v_shape}"
    assert_dtype(compact, dtype, "compact")
    assert_close(np.reshape(compact, -1), gradient, dtype, "compact")

    for layout in LAYOUTS:
        expected = expected_gradient_matrix(gradient, v_shape, layout)
        dense = fastjac.sum_gradient(opname, a_t, b_t, wrt=wrt, layout=layout, format="dense")
        assert dense.shape == expected.shape, f"{layout} dense shape {dense.shape}"
        assert_dtype(dense, dtype, f"{layout} dense")
        assert_close(dense, expected, dtype, f"{layout} dense")
        check_sparse(lambda fmt: fastjac.sum_gradient(opname, a_t, b_t, wrt=wrt,
                                                      layout=layout, format=fmt),
                     dense, op, dtype, layout)
    numerator = fastjac.sum_gradient(opname, a_t, b_t, wrt=wrt, format="dense")
    denominator = fastjac.sum_gradient(opname, a_t, b_t, wrt=wrt, format="dense",
                                       layout="denominator")
    np.testing.assert_array_equal(denominator, numerator.T)


def check_sparse(make, dense, op, dtype, layout):
    """Every sparse format: right class, shape, dtype, values; no entries if zero."""
    pytest.importorskip("scipy.sparse")
    for fmt in SPARSE_FORMATS:
        result = make(fmt)
        what = f"{layout} {fmt}"
        assert type(result).__name__ == SPARSE_CLASS[fmt], f"{what}: {type(result).__name__}"
        assert result.shape == dense.shape, f"{what}: shape {result.shape}"
        assert result.dtype == dtype, f"{what}: dtype {result.dtype}"
        np.testing.assert_array_equal(result.toarray(), dense, err_msg=what)
        if op in ("greater", "less"):
            assert result.nnz == 0, f"{what}: a structurally zero Jacobian stored entries"
