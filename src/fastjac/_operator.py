"""Jacobians as ``scipy.sparse.linalg.LinearOperator`` objects that know their structure.

``format="operator"`` (of ``fastjac.jacobian``, ``fastjac.sum_gradient`` and
a compiled expression's ``jacobian``) returns one of these. This module
imports SciPy, so fastjac imports it only when that format is asked for
(``_layout.as_operator``).

The operator is the linear map J: R^n -> R^m of the Jacobian with both
sides flattened in C order (numerator layout: J[i, j] = dy_i/dx_j; the
denominator layout gives its transpose). Five structures, each stored in
O(its entries):

============== ================================== =====================
class          matrix                             stored
============== ================================== =====================
Diagonal       n x n diag(d)                      d (n)
Row            1 x n, the gradient of a scalar    g (n)
Column         m x 1, d y / d z for a scalar z    c (m)
Broadcast      one entry per compact element      the compact values
               (``_broadcast.Structure``, or      (and the Structure)
               ``_hessian.MixedBlock``)
LowRank        diag(d) + U V^T                    d (or None), U, V
============== ================================== =====================

Products (``matvec``, ``rmatvec``, ``matmat``, ``rmatmat``, ``@``) cost
O(stored entries) and allocate their result only (LowRank with a diagonal
part allocates one more vector of m). Composition with ``@``, ``+``, ``-``
and scaling between these operators stays in this table (diagonal times
diagonal is a diagonal, row times diagonal a row, column times row a
rank-1 LowRank, ...) and never builds an m x n matrix; with any other
LinearOperator, and between two structures whose product has no compact
form here (two Broadcasts, or a Broadcast and a LowRank), SciPy's lazy
composition is returned.
"""
import numbers

import numpy as np
from scipy.sparse.linalg import LinearOperator

from . import _checks, _expr, _layout
from .expr_factors import Factor

__all__ = ["JacobianOperator", "DiagonalOperator", "RowOperator", "ColumnOperator",
           "BroadcastOperator", "LowRankOperator"]

# From this many elements a product of two arrays runs as fastjac's compiled
# expression a * b (one fused loop on the thread pool, streaming stores):
# np.multiply runs on one core. Dot products use np.einsum from DOT_EINSUM
# on: np.dot and np.matmul call OpenBLAS, whose threads can stall a dot
# product on a loaded machine where einsum does not (measured:
# docs/performance.md, 'Measurements behind the code').
LARGE = 1 << 20
DOT_EINSUM = 4096
# Up to this many stored entries, a broadcast product that sums runs as
# np.multiply then np.add.reduce: np.einsum's setup costs more than both
# calls at these sizes (measured: docs/performance.md, 'Measurements
# behind the code').
SMALL_SUMS = 256
_PRODUCT = []


def _product_into(a, b, out):
    """out = a * b (b an array like a, or a 0-d array) on fastjac's threads."""
    if not _PRODUCT:
        from . import expr
        _PRODUCT.append(expr.compile(expr.var("a") * expr.var("b")))
    return _PRODUCT[0].value(a=a, b=b, out=out)


def _multiply(d, x, out):
    """d * x for 1-D d and x (or a 0-d x) of the same dtype when large."""
    if (d.size >= LARGE and x.dtype == d.dtype and x.flags.c_contiguous
            and (out is None or (out.dtype == d.dtype and out.flags.c_contiguous))):
        if out is None:
            out = np.empty(d.size, d.dtype)
        return _product_into(d, x, out)
    return np.multiply(d, x, out=out)


def _dot(g, x, out):
    """The (1,) array [g . x] (x 1-D) or the (1, k) row g @ X (x 2-D)."""
    if g.size < DOT_EINSUM:
        return np.matmul(g[None, :], x, out=out)
    if out is None:
        out = np.empty((1,) + x.shape[1:], np.result_type(g.dtype, x.dtype))
    np.einsum("i,i...->...", g, x, out=out.reshape(out.shape[1:]))
    return out


_NUMERIC = "biufc"         # dtype kinds a product takes: bool, integers, floats, complex
_REAL = "fiu"              # those of the hot path (bool and complex take the checked one)


class JacobianOperator(LinearOperator):
    """A structured Jacobian as a SciPy ``LinearOperator`` (the base class).

    Subclasses: :class:`DiagonalOperator`, :class:`RowOperator`,
    :class:`ColumnOperator`, :class:`BroadcastOperator`,
    :class:`LowRankOperator`; ``structure`` names which. ``matvec``,
    ``rmatvec``, ``matmat`` and ``rmatmat`` accept ``out=`` (exact shape and
    dtype, the NumPy promotion of the operator's and the operand's dtypes).
    """

    __array_ufunc__ = None      # ndarray @ op defers to op.__rmatmul__
    structure = None

    def __init__(self, dtype, shape, structurally_zero=False):
        super().__init__(dtype, shape)
        self.structurally_zero = bool(structurally_zero)
        self._dtypes = {}
        self._in_shape, self._out_shape = (self.shape[1],), (self.shape[0],)

    def __repr__(self):
        m, n = self.shape
        return (f"<{m}x{n} fastjac {type(self).__name__} with dtype={self.dtype}, "
                f"{self.nbytes} bytes stored>")

    # -- the lean products (SciPy's wrappers cost microseconds at n = 16) ----
    def _result_dtype(self, dtype):
        if dtype is self.dtype:
            return dtype
        found = self._dtypes.get(dtype)
        if found is None:
            found = self._dtypes[dtype] = np.result_type(self.dtype, dtype)
        return found

    def _prepare(self, x, out, transposed, matrix, name):
        """Check x (and out); return (x, out, as_matrix). out stays None
        when not given: the kernels then let NumPy allocate the result."""
        if type(x) is not np.ndarray:
            if isinstance(x, LinearOperator) or hasattr(x, "tocsr"):
                raise TypeError(f"{name} takes an array; compose operators with @ "
                                f"(for a sparse matrix, pass x.toarray())")
            x = np.asarray(x)
        if x.dtype.kind not in _NUMERIC:
            raise TypeError(f"{name}: x has dtype {x.dtype}; it must be numeric (bool, "
                            f"integer, float or complex)")
        m, n = self.shape
        if transposed:
            m, n = n, m
        shape = x.shape
        if matrix:
            if len(shape) != 2 or shape[0] != n:
                raise ValueError(f"{name}: the operator has shape {self.shape} and x has "
                                 f"shape {shape}; x must be an {n} x k matrix")
            result_shape = (m, shape[1])
        elif shape == (n,):
            result_shape = (m,)
        elif shape == (n, 1):
            result_shape = (m, 1)
            matrix = True
        else:
            raise ValueError(f"{name}: the operator has shape {self.shape} and x has shape "
                             f"{shape}; x must have shape ({n},) or ({n}, 1)")
        if out is not None:
            _checks.check_out(out, result_shape, self._result_dtype(x.dtype),
                              f"{name} result")
            if not out.flags.c_contiguous:
                raise ValueError(f"{name}: out must be C-contiguous")
            if np.may_share_memory(out, x):
                raise ValueError(f"{name}: out shares memory with x; pass a separate array")
        return x, out, matrix

    def _out_ok(self, x, out, shape):
        """The checks of _prepare for the hot path's out=, without messages."""
        if type(out) is not np.ndarray or out.shape != shape:
            return False
        flags = out.flags
        # two arrays that own their memory cannot overlap, and two contiguous
        # ones overlap when their byte ranges do (np.may_share_memory costs
        # about 0.6 us, next to a whole call at n = 16; measured:
        # docs/performance.md, 'Measurements behind the code')
        return (flags.c_contiguous and flags.writeable
                and out.dtype is self._result_dtype(x.dtype) and out is not x
                and ((out.base is None and x.base is None)
                     or not (_expr.overlaps(out, x) if x.flags.c_contiguous
                             else np.may_share_memory(out, x))))

    def matvec(self, x, out=None):
        """``J @ x`` for x of shape (n,) (result (m,)) or (n, 1) (result (m, 1))."""
        if type(x) is np.ndarray and x.shape == self._in_shape and x.dtype.kind in _REAL:
            # the hot path, a few attribute reads
            if out is None or self._out_ok(x, out, self._out_shape):
                return self._mv(x, out)
        x, out, matrix = self._prepare(x, out, False, False, "matvec")
        return self._mm(x, out) if matrix else self._mv(x, out)

    def rmatvec(self, x, out=None):
        """``J^H @ x`` (J is real: ``J^T @ x``) for x of shape (m,) or (m, 1)."""
        if (out is None and type(x) is np.ndarray and x.shape == self._out_shape
                and x.dtype.kind in _REAL):
            return self._rmv(x, None)
        x, out, matrix = self._prepare(x, out, True, False, "rmatvec")
        return self._rmm(x, out) if matrix else self._rmv(x, out)

    def matmat(self, X, out=None):
        """``J @ X`` for an n x k matrix X (an m x k result)."""
        X, out, _ = self._prepare(X, out, False, True, "matmat")
        return self._mm(X, out)

    def rmatmat(self, X, out=None):
        """``J^T @ X`` for an m x k matrix X (an n x k result)."""
        X, out, _ = self._prepare(X, out, True, True, "rmatmat")
        return self._rmm(X, out)

    # SciPy's own entry points, used by its composite operators
    def _matvec(self, x):
        return self.matvec(x)

    def _rmatvec(self, x):
        return self.rmatvec(x)

    def _matmat(self, X):
        return self.matmat(X)

    def _rmatmat(self, X):
        return self.rmatmat(X)

    def _adjoint(self):
        return self.T

    def _transpose(self):
        return self.T

    @property
    def H(self):
        """The adjoint, equal to the transpose (the entries are real)."""
        return self.T

    def adjoint(self):
        """The adjoint, equal to :attr:`T` (the entries are real)."""
        return self.T

    def transpose(self):
        """The transposed operator, with the same structure (row <-> column)."""
        return self.T

    # -- products and composition ---------------------------------------------------
    def dot(self, x):
        """``J @ x``: a product with a vector (n,) or (n, 1) or a matrix (n, k),
        a composed operator for an operator, the scaled operator for a number."""
        if isinstance(x, JacobianOperator):
            return _compose(self, x)
        if isinstance(x, LinearOperator):
            return LinearOperator.dot(self, x)
        if _is_scalar(x):
            return self._scaled(x)
        if type(x) is np.ndarray and x.ndim == 1:
            return self.matvec(x)
        x = x if type(x) is np.ndarray else _as_array(x, "dot")
        if x.ndim == 1 or (x.ndim == 2 and x.shape[1] == 1):
            return self.matvec(x)
        if x.ndim == 2:
            return self.matmat(x)
        raise ValueError(f"dot: expected a 1-d or 2-d array, got shape {x.shape}")

    def __matmul__(self, x):
        if type(x) is np.ndarray and x.shape == self._in_shape and x.dtype.kind in _REAL:
            return self._mv(x, None)                    # the hot path, as in matvec
        if _is_scalar(x):
            raise ValueError("scalar operands are not allowed with @, use '*' instead")
        return self.dot(x)

    def __rmatmul__(self, x):
        if _is_scalar(x):
            raise ValueError("scalar operands are not allowed with @, use '*' instead")
        if isinstance(x, LinearOperator):
            return LinearOperator.dot(x, self)          # SciPy's lazy product
        x = x if type(x) is np.ndarray else _as_array(x, "x @ J")
        if x.ndim == 1:
            return self.rmatvec(x)
        if x.ndim == 2:
            return self.rmatmat(x.T).T
        raise ValueError(f"x @ J: expected a 1-d or 2-d array, got shape {x.shape}")

    def __call__(self, x):
        return self.dot(x)

    def __mul__(self, x):
        return self.dot(x)

    def __rmul__(self, x):
        if _is_scalar(x):
            return self._scaled(x)
        return self.__rmatmul__(x)

    def __truediv__(self, x):
        if not _is_scalar(x):
            raise ValueError("an operator can only be divided by a number")
        return self._scaled(1 / x)

    def __neg__(self):
        return self._scaled(-1)

    def __pos__(self):
        return self

    def __add__(self, other):
        if isinstance(other, JacobianOperator):
            return _add(self, other)
        if isinstance(other, LinearOperator):
            return LinearOperator.__add__(self, other)
        return NotImplemented

    def __sub__(self, other):
        if isinstance(other, LinearOperator):
            return self + (-other)
        return NotImplemented

    def _scaled(self, alpha):
        if not isinstance(alpha, (numbers.Real, np.floating, np.integer, np.bool_)):
            return LinearOperator.__rmul__(self, alpha)        # complex: SciPy's
        return self._scale(alpha)

    # -- matrices ---------------------------------------------------------------------
    def toarray(self):
        """The dense m x n matrix. MemoryError, before allocating, when it
        would not fit in memory (the message gives the bytes it needs)."""
        _checks.check_dense_size(self.shape, self.dtype,
                                 instead="the operator's products, or .tosparse()")
        return self._dense()

    def todense(self):
        """The same as :meth:`toarray`."""
        return self.toarray()

    def tosparse(self, format="csr"):
        """The matrix as a ``scipy.sparse`` array of ``format`` ("csr", "csc",
        "coo", "dia"; "sparse" is "csr"), storing exactly the structure's
        entries (none for a structurally zero Jacobian)."""
        if not (isinstance(format, str) and format in _layout.SPARSE_FORMATS + ("sparse",)):
            raise ValueError(f"format must be one of "
                             f"{', '.join(repr(f) for f in _layout.SPARSE_FORMATS)} or "
                             f"'sparse', got {format!r}")
        return self._sparse("csr" if format == "sparse" else format)

    @property
    def nbytes(self):
        """Bytes of the arrays the operator stores."""
        return int(sum(a.nbytes for a in self._storage() if a is not None))


# =============================================================================
# The five structures
# =============================================================================

class DiagonalOperator(JacobianOperator):
    """``diag(d)``, n x n, stored as ``diag`` (a 1-D array of n)."""

    structure = "diagonal"

    def __init__(self, d, structurally_zero=False):
        d = np.ascontiguousarray(d).reshape(-1)
        super().__init__(d.dtype, (d.size, d.size), structurally_zero)
        self.diag = d
        self._small = d.size < LARGE

    def _storage(self):
        return (self.diag,)

    def _mv(self, x, out):
        if self._small:
            return np.multiply(self.diag, x, out=out)
        return _multiply(self.diag, x, out)

    def _mm(self, X, out):
        return np.multiply(self.diag[:, None], X, out=out)

    _rmv, _rmm = _mv, _mm

    @property
    def T(self):
        return self

    def _scale(self, alpha):
        return DiagonalOperator(self.diag * alpha, self.structurally_zero)

    def diagonal(self):
        """The diagonal, a new 1-D array."""
        return self.diag.copy()

    def _dense(self):
        return _layout.as_matrix(self.diag, "diagonal", False, "dense", False)

    def _sparse(self, fmt):
        return _layout.as_matrix(self.diag, "diagonal", False, fmt, self.structurally_zero)

    def _parts(self):
        return self.diag, None, None


class RowOperator(JacobianOperator):
    """A 1 x n row (the gradient of a scalar), stored as ``row`` (1-D, n)."""

    structure = "row"

    def __init__(self, g, structurally_zero=False):
        g = np.ascontiguousarray(g).reshape(-1)
        super().__init__(g.dtype, (1, g.size), structurally_zero)
        self.row = g
        self._row2d = g[None, :]
        self._t = None

    def _storage(self):
        return (self.row,)

    def _mv(self, x, out):
        if out is None and x.dtype is self.dtype and x.ndim == 1 and x.size < DOT_EINSUM:
            # np.dot into a 1-element array: half the time of np.matmul at n = 16
            out = np.empty(1, self.dtype)
            return np.dot(self._row2d, x, out=out)
        return _dot(self.row, x, out)

    _mm = _mv

    def _rmv(self, u, out):
        return _multiply(self.row, u[0:1].reshape(()), out)

    def _rmm(self, U, out):
        return np.multiply(self.row[:, None], U, out=out)

    @property
    def T(self):
        if self._t is None:
            self._t = ColumnOperator(self.row, self.structurally_zero)
            self._t._t = self
        return self._t

    def _scale(self, alpha):
        return RowOperator(self.row * alpha, self.structurally_zero)

    def diagonal(self):
        """The diagonal of the 1 x n matrix: its first entry (none if n = 0)."""
        return self.row[:1].copy()

    def _dense(self):
        return self.row[None, :].copy()

    def _sparse(self, fmt):
        return _layout.as_matrix(self.row, "gradient", False, fmt, self.structurally_zero)

    def _parts(self):
        return None, np.ones((1, 1), self.dtype), self.row[:, None]


class ColumnOperator(JacobianOperator):
    """An m x 1 column (dy/dz for a scalar z), stored as ``column`` (1-D, m)."""

    structure = "column"

    def __init__(self, c, structurally_zero=False):
        c = np.ascontiguousarray(c).reshape(-1)
        super().__init__(c.dtype, (c.size, 1), structurally_zero)
        self.column = c
        self._row2d = c[None, :]
        self._t = None

    def _storage(self):
        return (self.column,)

    def _mv(self, x, out):
        return _multiply(self.column, x[0:1].reshape(()), out)

    def _mm(self, X, out):
        return np.multiply(self.column[:, None], X, out=out)

    def _rmv(self, u, out):
        return _dot(self.column, u, out)

    _rmm = _rmv

    @property
    def T(self):
        if self._t is None:
            self._t = RowOperator(self.column, self.structurally_zero)
            self._t._t = self
        return self._t

    def _scale(self, alpha):
        return ColumnOperator(self.column * alpha, self.structurally_zero)

    def diagonal(self):
        """The diagonal of the m x 1 matrix: its first entry (none if m = 0)."""
        return self.column[:1].copy()

    def _dense(self):
        return self.column[:, None].copy()

    def _sparse(self, fmt):
        return _layout.as_matrix(self.column, "by_scalar", False, fmt, self.structurally_zero)

    def _parts(self):
        return None, self.column[:, None], np.ones((1, 1), self.dtype)


class LowRankOperator(JacobianOperator):
    """``diag(d) + U V^T`` (m x n, U m x k, V n x k, d of n or None): the
    Jacobian of a reduction feeding element-wise work, or a composition.
    Stored as ``diag``, ``U`` and ``V``."""

    structure = "lowrank"

    def __init__(self, d, U, V, structurally_zero=False):
        U, V = np.asarray(U), np.asarray(V)
        m, n = U.shape[0], V.shape[0]
        if d is not None:
            d = np.asarray(d).reshape(-1)
        dtype = np.result_type(*(a for a in (d, U, V) if a is not None))
        super().__init__(dtype, (m, n), structurally_zero)
        self.diag, self.U, self.V = d, U, V
        self._t = None

    @property
    def rank(self):
        """k, the number of columns of U and V."""
        return self.U.shape[1]

    def _storage(self):
        return (self.diag, self.U, self.V)

    def _apply(self, d, U, V, x, out):
        # einsum, not matmul: see DOT_EINSUM (OpenBLAS's threads)
        small = np.einsum("ik,i...->k...", V, x)
        if d is None:
            if out is None:
                out = np.empty((U.shape[0],) + x.shape[1:], self._result_dtype(x.dtype))
            return np.einsum("ik,k...->i...", U, small, out=out)
        out = np.multiply(d if x.ndim == 1 else d[:, None], x, out=out)
        if U.shape[1]:
            out += np.einsum("ik,k...->i...", U, small)
        return out

    def _mv(self, x, out):
        return self._apply(self.diag, self.U, self.V, x, out)

    _mm = _mv

    def _rmv(self, u, out):
        return self._apply(self.diag, self.V, self.U, u, out)

    _rmm = _rmv

    @property
    def T(self):
        if self._t is None:
            self._t = LowRankOperator(self.diag, self.V, self.U, self.structurally_zero)
            self._t._t = self
        return self._t

    def _scale(self, alpha):
        d = None if self.diag is None else self.diag * alpha
        return LowRankOperator(d, self.U * alpha, self.V, self.structurally_zero)

    def diagonal(self):
        """The min(m, n) diagonal entries: d + the row-wise sums of U * V."""
        k = min(self.shape)
        diag = np.einsum("ij,ij->i", self.U[:k], self.V[:k]).astype(self.dtype, copy=False)
        return diag + self.diag if self.diag is not None else diag

    def _factor(self):
        m, n = self.shape
        return Factor((m,), (n,), d=self.diag, U=self.U, V=self.V,
                      structurally_zero=self.structurally_zero)

    def _dense(self):
        return self._factor()._full().astype(self.dtype, copy=False)

    def _sparse(self, fmt):
        return self._factor().to_matrix(False, fmt)

    def _parts(self):
        return self.diag, self.U, self.V


class BroadcastOperator(JacobianOperator):
    """The Jacobian of broadcast operands (``_broadcast.Structure``): each
    element of the compact result ``values`` is one entry of J. For
    ``jacobian`` each row has one entry (y[s] reads k[k(s)]); a
    ``sum_gradient`` over an axis adds up entries along the summed axes.
    Products are one NumPy pass over ``values`` (``np.multiply`` with
    broadcasting, or ``np.einsum`` when the product sums)."""

    structure = "broadcast"

    def __init__(self, st, values, denominator, structurally_zero=False):
        values = np.ascontiguousarray(values).reshape(st.compact_shape)
        shape = (st.n_cols, st.n_rows) if denominator else (st.n_rows, st.n_cols)
        super().__init__(values.dtype, shape, structurally_zero)
        self.values, self.st, self.denominator = values, st, bool(denominator)
        self._t = None
        rows, cols = st.roles()             # per compact axis: indexes J's rows, columns
        if denominator:
            rows, cols = cols, rows
        lengths = values.shape
        self._rows_view = tuple(n if r else 1 for n, r in zip(lengths, rows))
        self._cols_view = tuple(n if c else 1 for n, c in zip(lengths, cols))
        letters = "abcdefghijklmnopqrstuvwxy"[:len(lengths)]
        sub_r = "".join(a for a, r in zip(letters, rows) if r)
        sub_c = "".join(a for a, c in zip(letters, cols) if c)
        self._rows_only = tuple(n for n, r in zip(lengths, rows) if r)
        self._cols_only = tuple(n for n, c in zip(lengths, cols) if c)
        # J x sums over the axes that are columns only; all rows: one multiply
        self._mv_summed = tuple(i for i, r in enumerate(rows) if not r)
        self._rmv_summed = tuple(i for i, c in enumerate(cols) if not c)
        self._mv_sums, self._rmv_sums = bool(self._mv_summed), bool(self._rmv_summed)
        self._sub_mv = f"{letters},{sub_c}->{sub_r}"
        self._sub_mm = f"{letters},{sub_c}z->{sub_r}z"
        self._sub_rmv = f"{letters},{sub_r}->{sub_c}"
        self._sub_rmm = f"{letters},{sub_r}z->{sub_c}z"

    def _storage(self):
        return (self.values,)

    # Each product writes into a reshaped view of out (a view: out is
    # C-contiguous, as check_out's callers get it from np.empty or check).
    def _mv(self, x, out):
        if out is None:
            if not self._mv_sums:       # one entry per row: NumPy allocates, no reshape
                out = np.multiply(self.values, x.reshape(self._cols_view))
                out.shape = self._out_shape
                return out
            out = np.empty(self.shape[0], self._result_dtype(x.dtype))
        if self._mv_sums:
            self._sum_products(self._sub_mv, x, self._cols_only, self._cols_view,
                               self._mv_summed, out.reshape(self._rows_only))
        else:
            np.multiply(self.values, x.reshape(self._cols_view), out=out.reshape(self._rows_view))
        return out

    def _mm(self, X, out):
        m, k = self.shape[0], X.shape[1]
        if out is None:
            out = np.empty((m, k), self._result_dtype(X.dtype))
        np.einsum(self._sub_mm, self.values, X.reshape(self._cols_only + (k,)),
                  out=out.reshape(self._rows_only + (k,)))
        return out

    def _rmv(self, u, out):
        if out is None:
            if not self._rmv_sums:
                out = np.multiply(self.values, u.reshape(self._rows_view))
                out.shape = self._in_shape
                return out
            out = np.empty(self.shape[1], self._result_dtype(u.dtype))
        if self._rmv_sums:
            self._sum_products(self._sub_rmv, u, self._rows_only, self._rows_view,
                               self._rmv_summed, out.reshape(self._cols_only))
        else:
            np.multiply(self.values, u.reshape(self._rows_view), out=out.reshape(self._cols_view))
        return out

    def _sum_products(self, subscripts, x, only, view, summed, out):
        """out = values * x (x seen through ``view``) summed over the axes
        ``summed``: np.einsum(subscripts) with x of shape ``only``, or for
        few entries np.multiply then np.add.reduce."""
        if self.values.size > SMALL_SUMS:
            np.einsum(subscripts, self.values, x.reshape(only), out=out)
        else:
            np.add.reduce(np.multiply(self.values, x.reshape(view)), axis=summed, out=out)

    def _rmm(self, U, out):
        n, k = self.shape[1], U.shape[1]
        if out is None:
            out = np.empty((n, k), self._result_dtype(U.dtype))
        np.einsum(self._sub_rmm, self.values, U.reshape(self._rows_only + (k,)),
                  out=out.reshape(self._cols_only + (k,)))
        return out

    @property
    def T(self):
        if self._t is None:
            self._t = BroadcastOperator(self.st, self.values, not self.denominator,
                                        self.structurally_zero)
            self._t._t = self
        return self._t

    def _with(self, values):
        return BroadcastOperator(self.st, values, self.denominator, self.structurally_zero)

    def _scale(self, alpha):
        return self._with(self.values * alpha)

    def _scaled_rows(self, d):
        """diag(d) @ self."""
        return self._with(self.values * d.reshape(self._rows_view))

    def _scaled_cols(self, d):
        """self @ diag(d)."""
        return self._with(self.values * d.reshape(self._cols_view))

    def _indices(self):
        rows, cols = self.st.indices()
        return (cols, rows) if self.denominator else (rows, cols)

    def diagonal(self):
        """The min(m, n) diagonal entries (O(stored entries))."""
        rows, cols = self._indices()
        on = rows == cols
        diag = np.zeros(min(self.shape), self.dtype)
        np.add.at(diag, rows[on], self.values[on])
        return diag

    def _dense(self):
        from . import _broadcast
        return _broadcast._dense(self.st, self.values, self.denominator, None)

    def _sparse(self, fmt):
        from . import _broadcast
        return _broadcast._sparse(self.st, self.values, self.denominator, fmt,
                                  self.structurally_zero)

    def _simplified(self):
        """A Row or Column operator when J has one row or one column."""
        if self.shape[0] == 1:
            return RowOperator(self.rmatvec(np.ones(1, self.dtype)), self.structurally_zero)
        if self.shape[1] == 1:
            return ColumnOperator(self.matvec(np.ones(1, self.dtype)), self.structurally_zero)
        return self


# =============================================================================
# Construction and composition
# =============================================================================

def from_compact(compact, kind, denominator, structurally_zero):
    """The operator of a compact result of one of _layout's kinds."""
    compact = np.asarray(compact)
    if kind in ("diagonal", "scalar"):
        return DiagonalOperator(compact, structurally_zero)
    if kind == "gradient":
        op = RowOperator(compact, structurally_zero)
    elif kind == "by_scalar":
        op = ColumnOperator(compact, structurally_zero)
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return op.T if denominator else op


def from_structure(st, compact, denominator, structurally_zero):
    """The operator of a broadcast call (``_broadcast.differentiate``), or
    of sum_hessian's mixed block (``_hessian.MixedBlock``)."""
    rows, cols = st.roles()
    if all(rows) and all(cols):             # every compact element on the diagonal
        return DiagonalOperator(compact, structurally_zero)
    return BroadcastOperator(st, compact, denominator, structurally_zero)._simplified()


def from_factor(factor, denominator):
    """The operator of an expression's ``Factor`` (diag + U V^T)."""
    kind = factor.kind
    zero = factor.structurally_zero
    if kind != "general":
        op = from_compact(np.asarray(factor.compact()), kind, False, zero)
    else:
        op = _from_parts(factor.shape, factor.d, factor.U, factor.V, zero)
    return op.T if denominator else op


def from_matrix(M, denominator):
    """A small m x n matrix (the stacked gradients of m scalar functions),
    held exactly as I_m M (rank m, m * n entries)."""
    M = np.asarray(M)
    m = M.shape[0]
    op = _from_parts(M.shape, None, np.eye(m, dtype=M.dtype), M.T, False)
    return op.T if denominator else op


def _from_parts(shape, d, U, V, structurally_zero):
    """The most specific operator for diag(d) + U V^T of ``shape``."""
    m, n = shape
    if U is None or U.shape[1] == 0:
        if d is not None:
            return DiagonalOperator(d, structurally_zero)
        return LowRankOperator(None, np.zeros((m, 0), _dtype_of(d, U, V)),
                               np.zeros((n, 0), _dtype_of(d, U, V)), structurally_zero)
    if m == 1 and n == 1:
        v = (U @ V.T).reshape(1)
        return DiagonalOperator(v + d if d is not None else v, structurally_zero)
    if d is None and m == 1:
        return RowOperator(V @ U[0], structurally_zero)
    if d is None and n == 1:
        return ColumnOperator(U @ V[0], structurally_zero)
    return LowRankOperator(d, U, V, structurally_zero)


def _dtype_of(*arrays):
    present = [a for a in arrays if a is not None]
    return np.result_type(*present) if present else np.float64


def _check_shapes(a, b, what, ok, why):
    if not ok:
        raise ValueError(f"{what}: the operators have shapes {a.shape} and {b.shape}, which "
                         f"do not {why}")


def _compose(a, b):
    """a @ b between fastjac operators, in the most specific structure."""
    _check_shapes(a, b, "A @ B", a.shape[1] == b.shape[0],
                  "chain (the columns of the first are not the rows of the second)")
    if isinstance(a, BroadcastOperator):
        a = a._simplified()
    if isinstance(b, BroadcastOperator):
        b = b._simplified()
    zero = a.structurally_zero or b.structurally_zero
    if isinstance(a, DiagonalOperator) and isinstance(b, DiagonalOperator):
        return DiagonalOperator(a.diag * b.diag, zero)
    if isinstance(a, BroadcastOperator) or isinstance(b, BroadcastOperator):
        if isinstance(a, BroadcastOperator) and isinstance(b, DiagonalOperator):
            return a._scaled_cols(b.diag)
        if isinstance(b, BroadcastOperator) and isinstance(a, DiagonalOperator):
            return b._scaled_rows(a.diag)
        if isinstance(a, BroadcastOperator) and isinstance(b, ColumnOperator):
            return ColumnOperator(a.matvec(b.column), zero)
        if isinstance(b, BroadcastOperator) and isinstance(a, RowOperator):
            return RowOperator(b.rmatvec(a.row), zero)
        # no compact form here for this product: SciPy's lazy one
        return LinearOperator.dot(a, b)
    m, k = a.shape
    n = b.shape[1]
    fa = Factor((m,), (k,), *a._parts(), structurally_zero=a.structurally_zero)
    fb = Factor((k,), (n,), *b._parts(), structurally_zero=b.structurally_zero)
    f = fa._chain(fb)
    return _from_parts((m, n), f.d, f.U, f.V, f.structurally_zero)


def _add(a, b):
    """a + b between fastjac operators, in the most specific structure."""
    _check_shapes(a, b, "A + B", a.shape == b.shape, "match")
    zero = a.structurally_zero and b.structurally_zero
    if isinstance(a, BroadcastOperator) or isinstance(b, BroadcastOperator):
        if (isinstance(a, BroadcastOperator) and isinstance(b, BroadcastOperator)
                and a.st is b.st and a.denominator == b.denominator):
            return BroadcastOperator(a.st, a.values + b.values, a.denominator, zero)
        a = a._simplified() if isinstance(a, BroadcastOperator) else a
        b = b._simplified() if isinstance(b, BroadcastOperator) else b
        if isinstance(a, BroadcastOperator) or isinstance(b, BroadcastOperator):
            return LinearOperator.__add__(a, b)
    if isinstance(a, DiagonalOperator) and isinstance(b, DiagonalOperator):
        return DiagonalOperator(a.diag + b.diag, zero)
    if isinstance(a, RowOperator) and isinstance(b, RowOperator):
        return RowOperator(a.row + b.row, zero)
    if isinstance(a, ColumnOperator) and isinstance(b, ColumnOperator):
        return ColumnOperator(a.column + b.column, zero)
    m, n = a.shape
    f = (Factor((m,), (n,), *a._parts(), structurally_zero=a.structurally_zero)
         + Factor((m,), (n,), *b._parts(), structurally_zero=b.structurally_zero))
    return _from_parts((m, n), f.d, f.U, f.V, f.structurally_zero)


def _is_scalar(x):
    return isinstance(x, (numbers.Number, np.generic)) or (
        type(x) is np.ndarray and x.ndim == 0)


def _as_array(x, name):
    if hasattr(x, "tocsr"):
        raise TypeError(f"{name} takes an array, got a sparse matrix: pass x.toarray()")
    return np.asarray(x)
