"""From a compact result to a 2-D matrix: layouts, dense and sparse.

This is the only module that knows numerator and denominator layout and the
dense and sparse formats (specification, section 1). A compact result comes
in one of four *kinds*:

========== ============================== ============== ==============
kind       compact result                 numerator      denominator
========== ============================== ============== ==============
diagonal   d, the Jacobian's diagonal     n x n diag(d)  n x n diag(d)
by_scalar  dy/dz, shaped like y           p x q, or m x 1 q x p, or 1 x m
gradient   dy/dX, shaped like X           q x p, or 1 x n p x q, or n x 1
scalar     one number                     1 x 1          1 x 1
========== ============================== ============== ==============

Matrices (2-D) keep their two axes as in section 1; any other number of
dimensions is flattened in C order to a vector of n = size elements.

Sparse results are ``scipy.sparse`` arrays built straight from the compact
values in O(n): index arrays come from ``arange``, never from a dense
matrix. Every entry of the structure is stored (a diagonal stores n entries
even where a value is 0), except for the structurally-zero Jacobians of the
comparisons, which store none. SciPy is imported here, lazily, only when a
sparse format is asked for. ``format="operator"`` hands the compact result
to _operator.py (which imports SciPy), again only when it is asked for.
"""
import numpy as np

from ._checks import check_dense_size, check_no_out, check_out

SPARSE_FORMATS = ("csr", "csc", "coo", "dia")


def as_matrix(compact, kind, denominator, fmt, structurally_zero, out=None):
    """Return the compact result as a 2-D matrix in format ``fmt``."""
    compact = np.asarray(compact)
    if fmt == "dense":
        return _dense(compact, kind, denominator, out)
    check_no_out(fmt, out)
    if fmt == "operator":
        return operators().from_compact(compact, kind, denominator, structurally_zero)
    sparse = _scipy_sparse(fmt)
    if kind == "diagonal":
        return _sparse_diagonal(sparse, compact.ravel(), fmt, structurally_zero)
    full = _full_matrix(compact, kind, denominator)
    return _sparse_full(sparse, full, fmt, structurally_zero)


def operators():
    """The _operator module (it imports SciPy: imported here, when needed)."""
    try:
        import scipy.sparse.linalg  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            "format='operator' returns a scipy.sparse.linalg.LinearOperator and needs "
            "SciPy, which is not installed: pip install 'fastjac[sparse]' "
            "(or pip install scipy)") from exc
    from . import _operator
    return _operator


def _full_matrix(compact, kind, denominator):
    """The numerator (or, transposed, denominator) matrix of a non-diagonal kind."""
    if kind == "scalar":
        matrix = compact.reshape(1, 1)
    elif compact.ndim == 2:
        # by_scalar: p x q entries dY_ij/dz; gradient: q x p entries dy/dX_ji.
        matrix = compact if kind == "by_scalar" else compact.T
    else:
        flat = compact.reshape(-1)
        matrix = flat[:, None] if kind == "by_scalar" else flat[None, :]
    return matrix.T if denominator else matrix


def _dense(compact, kind, denominator, out):
    if kind == "diagonal":
        n = compact.size
        shape = (n, n)
    else:
        full = _full_matrix(compact, kind, denominator)
        shape = full.shape
    if out is not None:
        check_out(out, shape, compact.dtype, "dense result")
        result = out
    else:
        check_dense_size(shape, compact.dtype)
        result = np.zeros(shape, compact.dtype)
    if kind == "diagonal":
        if out is not None:
            result[...] = 0
        np.einsum("ii->i", result)[...] = compact.ravel()
    else:
        result[...] = full
    return result


def _index_dtype(n):
    return np.int32 if n < np.iinfo(np.int32).max else np.int64


def _sparse_diagonal(sparse, diag, fmt, structurally_zero):
    n = diag.size
    shape = (n, n)
    itype = _index_dtype(n)
    if fmt == "dia":
        if structurally_zero:
            return sparse.dia_array((np.empty((0, n), diag.dtype), np.empty(0, itype)),
                                    shape=shape)
        return sparse.dia_array((diag[None, :].copy(), np.zeros(1, itype)), shape=shape)
    if structurally_zero:
        return _empty(sparse, fmt, shape, diag.dtype)
    idx = np.arange(n, dtype=itype)
    if fmt == "coo":
        return sparse.coo_array((diag.copy(), (idx, idx.copy())), shape=shape)
    indptr = np.arange(n + 1, dtype=itype)
    cls = sparse.csr_array if fmt == "csr" else sparse.csc_array
    return cls((diag.copy(), idx, indptr), shape=shape)


def _sparse_full(sparse, matrix, fmt, structurally_zero):
    """Every entry of the r x c ``matrix`` stored (none if structurally zero)."""
    r, c = matrix.shape
    itype = _index_dtype(max(r, c, r * c))
    if structurally_zero:
        if fmt == "dia":
            return sparse.dia_array((np.empty((0, c), matrix.dtype), np.empty(0, itype)),
                                    shape=(r, c))
        return _empty(sparse, fmt, (r, c), matrix.dtype)
    if fmt == "csr":
        indptr = np.arange(r + 1, dtype=itype) * c
        indices = np.tile(np.arange(c, dtype=itype), r)
        return sparse.csr_array((matrix.ravel(order="C").copy(), indices, indptr),
                                shape=(r, c))
    if fmt == "csc":
        indptr = np.arange(c + 1, dtype=itype) * r
        indices = np.tile(np.arange(r, dtype=itype), c)
        return sparse.csc_array((matrix.ravel(order="F").copy(), indices, indptr),
                                shape=(r, c))
    rows = np.repeat(np.arange(r, dtype=itype), c)
    cols = np.tile(np.arange(c, dtype=itype), r)
    coo = sparse.coo_array((matrix.ravel(order="C").copy(), (rows, cols)), shape=(r, c))
    if fmt == "coo":
        return coo
    # DIA stores one row of length c per occupied diagonal: r + c - 1 of them
    # for a full matrix, which for a 1 x n row is n x n numbers.
    check_dense_size((r + c - 1, c), matrix.dtype, what="DIA storage",
                     instead="format='csr', 'csc' or 'coo' (each stores the "
                             f"{r * c} entries once) or format='compact'")
    return coo.todia()


def _empty(sparse, fmt, shape, dtype):
    itype = _index_dtype(max(shape))
    if fmt == "coo":
        return sparse.coo_array((np.empty(0, dtype), (np.empty(0, itype), np.empty(0, itype))),
                                shape=shape)
    cls = sparse.csr_array if fmt == "csr" else sparse.csc_array
    n_ptr = shape[0] if fmt == "csr" else shape[1]
    return cls((np.empty(0, dtype), np.empty(0, itype), np.zeros(n_ptr + 1, itype)),
               shape=shape)


def _scipy_sparse(fmt):
    try:
        import scipy.sparse as sparse
    except ImportError as exc:
        raise ImportError(
            f"format={fmt!r} returns a scipy.sparse array and needs SciPy, which is "
            f"not installed: pip install 'fastjac[sparse]' (or pip install scipy)"
        ) from exc
    return sparse
