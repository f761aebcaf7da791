"""Structured Jacobian factors and the chain rule between them (spec, section 6).

Every Jacobian fastjac composes is held as

    J = diag(d) + U V^T         (numerator layout, m x n)

with ``d`` the diagonal (or None: no diagonal part), ``U`` m x k and ``V``
n x k (k small: one column per reduction the path goes through). The usual
kinds are special cases, named by :attr:`Factor.kind`:

========== ======================= =========================================
kind       when                    compact form
========== ======================= =========================================
scalar     y and x both scalars    a NumPy scalar
gradient   y scalar (a row, 1 x n) an array shaped like x
by_scalar  x scalar (column, m x 1) an array shaped like y
diagonal   k = 0, y and x alike    the diagonal, shaped like y
general    anything else           the Factor itself (diag + low rank)
========== ======================= =========================================

``F @ v`` (or ``F.dot(v)``) is the Jacobian-vector product for a vector of
n (or an n x k matrix of columns), ``u @ F`` the vector-Jacobian product,
and ``F.T`` the transposed factor diag(d) + V U^T; all three use the
structure, in time proportional to the entries stored. A factor is not an
array: ``np.asarray(F)`` raises TypeError (``F.toarray(layout)`` builds the
matrix).

The product of two factors (the chain rule, ``A @ B``) is computed in this
form without any m x n matrix:

    (D1 + U1 V1^T)(D2 + U2 V2^T)
        = D1 D2 + (D1 U2 + U1 (V1^T U2)) V2^T + U1 (D2 V1)^T

so diagonal x diagonal stays diagonal, row x diagonal stays a row, column x
row is a rank-1 outer product, row x column a scalar, and so on. Only
:meth:`Factor.to_matrix` with format "dense" (or a sparse format, whose
storage of a rank-1 block is its m*n entries anyway) builds a matrix; it
goes through ``_layout.as_matrix``, the one place that knows layouts.
"""
import math

import numpy as np

from . import _checks, _layout


class Factor:
    """A structured Jacobian ``diag(d) + U V^T`` of y (y_shape) by x (x_shape).

    Numerator layout: ``shape`` is (m, n) with m = y's size and n = x's.
    ``F @ v`` applies it to a vector of n (or to the columns of an n x k
    matrix), ``u @ F`` to a vector of m from the left, ``F @ G`` is the chain
    rule, ``F.T`` the transpose, ``F.toarray(layout)`` the dense matrix.
    """

    __slots__ = ("y_shape", "x_shape", "d", "U", "V", "structurally_zero")
    __array_ufunc__ = None        # ndarray @ Factor defers to Factor.__rmatmul__

    def __init__(self, y_shape, x_shape, d=None, U=None, V=None, structurally_zero=False):
        self.y_shape = tuple(y_shape)
        self.x_shape = tuple(x_shape)
        m, n = self.shape
        if d is not None:
            d = np.asarray(d)
            if m != n or d.size != m:
                raise ValueError(f"a diagonal part needs a square Jacobian, got {m} x {n} "
                                 f"with {d.size} diagonal entries")
            d = d.reshape(-1)
        if U is None:
            dtype = d.dtype if d is not None else np.float64
            U = np.zeros((m, 0), dtype)
            V = np.zeros((n, 0), dtype)
        U, V = np.asarray(U), np.asarray(V)
        if U.ndim != 2:         # (m, k) and (n, k); reshape(m, -1) fails for m = 0
            U = U.reshape(m, -1) if m else U.reshape(0, V.size // max(n, 1))
        if V.ndim != 2:
            V = V.reshape(n, -1) if n else V.reshape(0, U.shape[1])
        self.d = d
        self.U, self.V = U, V
        self.structurally_zero = structurally_zero

    # -- constructors of the named kinds -------------------------------------
    @classmethod
    def diagonal(cls, d, shape=None):
        d = np.asarray(d)
        shape = d.shape if shape is None else shape
        return cls(shape, shape, d=d)

    @classmethod
    def row(cls, g, x_shape=None):
        g = np.asarray(g)
        x_shape = g.shape if x_shape is None else x_shape
        return cls((), x_shape, U=np.ones((1, 1), g.dtype), V=g.reshape(-1, 1))

    @classmethod
    def column(cls, c, y_shape=None):
        c = np.asarray(c)
        y_shape = c.shape if y_shape is None else y_shape
        return cls(y_shape, (), U=c.reshape(-1, 1), V=np.ones((1, 1), c.dtype))

    @classmethod
    def scalar(cls, v, dtype=None):
        v = np.asarray(v, dtype=dtype)
        return cls((), (), U=v.reshape(1, 1), V=np.ones((1, 1), v.dtype))

    @classmethod
    def zero(cls, y_shape, x_shape, dtype=np.float64):
        y_shape, x_shape = tuple(y_shape), tuple(x_shape)
        if y_shape == x_shape and y_shape != ():
            return cls(y_shape, x_shape, d=np.zeros(y_shape, dtype), structurally_zero=True)
        m, n = int(np.prod(y_shape)), int(np.prod(x_shape))
        return cls(y_shape, x_shape, U=np.zeros((m, 0), dtype), V=np.zeros((n, 0), dtype),
                   structurally_zero=True)

    @classmethod
    def from_dense(cls, M, y_shape, x_shape):
        """A general m x n matrix, held exactly as U = M, V = I (rank n)."""
        M = np.asarray(M)
        n = M.shape[1]
        return cls(y_shape, x_shape, U=M, V=np.eye(n, dtype=M.dtype))

    # -- properties -------------------------------------------------------------
    @property
    def shape(self):
        return (math.prod(self.y_shape), math.prod(self.x_shape))

    @property
    def dtype(self):
        return self.d.dtype if self.d is not None else self.U.dtype

    @property
    def rank(self):
        return self.U.shape[1]

    @property
    def kind(self):
        if self.y_shape == () and self.x_shape == ():
            return "scalar"
        if self.y_shape == ():
            return "gradient"
        if self.x_shape == ():
            return "by_scalar"
        if self.rank == 0 and self.y_shape == self.x_shape:
            return "diagonal"
        return "general"

    def __repr__(self):
        return (f"<fastjac Factor {self.kind}: d{self.y_shape}/d{self.x_shape}, "
                f"{'diagonal + ' if self.d is not None else ''}rank {self.rank}>")

    # -- algebra ----------------------------------------------------------------
    def __add__(self, other):
        if not isinstance(other, Factor):
            return NotImplemented
        if self.shape != other.shape:
            raise ValueError(f"cannot add Jacobians of shapes {self.shape} and {other.shape}")
        if self.structurally_zero:
            return other
        if other.structurally_zero:
            return self
        if self.d is None:
            d = other.d
        elif other.d is None:
            d = self.d
        else:
            d = self.d + other.d
        return Factor(self.y_shape, self.x_shape, d=d,
                      U=np.hstack([self.U, other.U]), V=np.hstack([self.V, other.V]))

    @property
    def T(self):
        """The transposed Jacobian ``diag(d) + V U^T`` (of shape (n, m)), as a Factor."""
        return Factor(self.x_shape, self.y_shape, d=self.d, U=self.V, V=self.U,
                      structurally_zero=self.structurally_zero)

    def __array__(self, dtype=None, copy=None):
        raise TypeError(
            f"a fastjac Factor is a structured Jacobian diag(d) + U V^T of shape "
            f"{self.shape}, not an array: call .toarray(layout) for the dense matrix, "
            f"or ask the compiled expression for format='dense'")

    def __matmul__(self, other):
        """``F @ G``: the chain rule (F = dy/dg, G = dg/dx, result dy/dx).
        ``F @ v``: the product with a vector of n, or with each column of an
        n x k matrix (see :meth:`dot`)."""
        if isinstance(other, Factor):
            return self._chain(other)
        if isinstance(other, (np.ndarray, list, tuple)):
            return self._times(other, "F @ v")
        return NotImplemented

    def __rmatmul__(self, other):
        """``u @ F``: the product of a vector of m (or of each row of a k x m
        matrix) with the Jacobian, a vector of n (a k x n matrix)."""
        if not isinstance(other, (np.ndarray, list, tuple)):
            return NotImplemented
        u = np.asarray(other)
        m = self.shape[0]
        if u.ndim not in (1, 2) or u.shape[-1] != m:
            raise ValueError(
                f"u @ F: the operand has shape {u.shape} and the Factor has shape "
                f"{self.shape}; the operand must be a vector of {m} or a k x {m} matrix")
        return self.T._times(u.T, "u @ F").T

    def dot(self, other):
        """``F @ other``: a Factor's product with a vector v of n (``J v``, a
        vector of m), with an n x k matrix (one column per vector, m x k), or
        with another Factor (the chain rule). O(stored entries): the
        structure diag(d) + U V^T is used, no m x n matrix is built.

        Raises ValueError when the shapes do not match, TypeError for an
        operand that is not numeric."""
        if isinstance(other, Factor):
            return self._chain(other)
        return self._times(other, "F.dot(v)")

    def _times(self, v, how):
        """diag(d) v + U (V^T v) for v of shape (n,) or (n, k)."""
        v = np.asarray(v)
        if v.dtype.kind not in "biufc":
            raise TypeError(f"{how} needs a numeric array, got dtype {v.dtype}")
        m, n = self.shape
        if v.ndim not in (1, 2) or v.shape[0] != n:
            raise ValueError(
                f"{how}: the Factor has shape {self.shape} and the operand has shape "
                f"{v.shape}; the operand must be a vector of {n} or a {n} x k matrix")
        dtype = np.result_type(self.dtype, v.dtype)
        if self.structurally_zero or (self.d is None and self.rank == 0):
            return np.zeros((m,) + v.shape[1:], dtype)
        result = self.U @ (self.V.T @ v) if self.rank else None
        if self.d is not None:
            scaled = self.d * v if v.ndim == 1 else self.d[:, None] * v
            result = scaled if result is None else result + scaled
        return result.astype(dtype, copy=False)

    def _chain(self, other):
        """The chain rule: self = dy/dg, other = dg/dx, result dy/dx."""
        if self.shape[1] != other.shape[0]:
            raise ValueError(f"chain rule shape mismatch: dy/dg is {self.shape} but dg/dx "
                             f"is {other.shape}")
        if self.structurally_zero or other.structurally_zero:
            return Factor.zero(self.y_shape, other.x_shape, np.result_type(self.dtype, other.dtype))
        d1, U1, V1 = self.d, self.U, self.V
        d2, U2, V2 = other.d, other.U, other.V
        d = d1 * d2 if (d1 is not None and d2 is not None) else None
        # first new block of columns, paired with V2
        Ua = U1 @ (V1.T @ U2)
        if d1 is not None:
            Ua = Ua + d1[:, None] * U2
        # second block, paired with D2 V1
        Vb = d2[:, None] * V1 if d2 is not None else None
        if Vb is None:
            U, V = Ua, V2
        else:
            U, V = np.hstack([Ua, U1]), np.hstack([V2, Vb])
        if d is None and U.shape[1] == 0:
            return Factor.zero(self.y_shape, other.x_shape, U.dtype)
        return Factor(self.y_shape, other.x_shape, d=d, U=U, V=V)

    # -- output -------------------------------------------------------------------
    def compact(self):
        """The smallest exact form (see the module table)."""
        kind = self.kind
        if kind == "scalar":
            return self._full().reshape(())[()]
        if kind == "gradient":
            return self._full().reshape(self.x_shape)
        if kind == "by_scalar":
            return self._full().reshape(self.y_shape)
        if kind == "diagonal":
            return self.d.reshape(self.y_shape)
        return self

    def toarray(self, layout="numerator"):
        """The dense 2-D Jacobian (m x n in numerator layout, its transpose in
        denominator layout); layout is checked as by ``fastjac.jacobian``."""
        denominator = _checks.check_layout(layout)
        M = self._full()
        return M.T.copy() if denominator else M

    def _full(self):
        m, n = self.shape
        _checks.check_dense_size((m, n), self.dtype)
        M = self.U @ self.V.T if self.rank else np.zeros((m, n), self.dtype)
        if self.d is not None:
            np.einsum("ii->i", M)[...] += self.d
        return M

    def to_matrix(self, denominator, fmt, out=None):
        """Format ``fmt`` ("dense", sparse or "operator") in either layout,
        via _layout.as_matrix (an operator keeps diag + U V^T as it is)."""
        kind = self.kind
        zero = self.structurally_zero
        if fmt == "operator":
            _checks.check_no_out(fmt, out)
            return _layout.operators().from_factor(self, denominator)
        if kind == "diagonal":
            return _layout.as_matrix(self.d.reshape(self.y_shape), "diagonal", denominator,
                                     fmt, zero, out)
        if kind == "general":
            return _layout.as_matrix(self._full(), "by_scalar", denominator, fmt, zero, out)
        return _layout.as_matrix(np.asarray(self.compact()), kind, denominator, fmt, zero, out)
