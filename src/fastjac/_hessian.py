"""The mixed Hessian block of broadcast operands, for ``sum_hessian``.

With y = sum(op(a, b)) and a, b of different shapes broadcast to S, the
block H[i, j] = d2 y / da_i db_j is |a| x |b|. Each element s of S reads one
element p(s) of a and one q(s) of b, and two elements of S never read the
same pair (an axis along which both a and b have length 1 has length 1 in
S). So the block has exactly |S| entries, one per element: the mixed
partials over S, computed by the kernels of ``jacobian``, are its compact
form, and the dense and sparse forms are built from them by _broadcast's
builders, given this module's ``MixedBlock`` in place of a Structure.
"""
import numpy as np

from . import _broadcast, _layout
from ._kernels import DERIVATIVE_CODES

_ZERO = DERIVATIVE_CODES["zero"]


class MixedBlock:
    """Where each element of S sits in the |a| x |b| block (the interface
    of _broadcast.Structure that _broadcast._dense and _sparse read)."""

    def __init__(self, shape, a_shape, b_shape):
        ndim = len(shape)
        self.compact_shape = tuple(shape)
        self.a_aligned = (1,) * (ndim - len(a_shape)) + tuple(a_shape)
        self.b_aligned = (1,) * (ndim - len(b_shape)) + tuple(b_shape)
        self.n_rows = _broadcast._size(a_shape)
        self.n_cols = _broadcast._size(b_shape)

    def roles(self):
        """(rows, cols): per axis of S, whether it indexes the block's rows
        (a's axes) and whether it indexes its columns (b's)."""
        return ([n != 1 for n in self.a_aligned], [n != 1 for n in self.b_aligned])

    def indices(self):
        """(rows, cols): each element's row (its element of a, C order) and
        column (its element of b), int64 arrays of shape S."""
        shape = self.compact_shape
        rows = np.zeros(shape, np.int64)
        cols = np.zeros(shape, np.int64)
        a_strides = _broadcast._c_strides(self.a_aligned)
        b_strides = _broadcast._c_strides(self.b_aligned)
        for i, n in enumerate(shape):
            along = np.arange(n, dtype=np.int64).reshape((-1,) + (1,) * (len(shape) - i - 1))
            if self.a_aligned[i] != 1:
                rows += along * a_strides[i]
            if self.b_aligned[i] != 1:
                cols += along * b_strides[i]
        return rows, cols

    def row_major(self):
        """Axes of S ordered so that C order walks the block by rows (a's
        axes first; along the others b's index rises); entries per row."""
        return self._major(self.a_aligned)

    def column_major(self):
        return self._major(self.b_aligned)

    def _major(self, owner):
        own = [i for i, n in enumerate(owner) if n != 1]
        shared = [i for i, n in enumerate(owner) if n == 1]
        return own + shared, _broadcast._size(self.compact_shape[i] for i in shared)


def mixed_block(op, code, a, b, transposed, fmt, out):
    """The block d2 sum(op(a, b)) / da db of broadcast arrays a, b (of the
    result dtype) in format ``fmt``; ``transposed`` gives |b| x |a|."""
    shape = _broadcast.check_shapes(a.shape, b.shape)
    block = MixedBlock(shape, a.shape, b.shape)
    if fmt == "compact":
        return _broadcast.differentiate(False, op, code, a, b, 0, None, False, fmt, out)
    _broadcast._check_matrix_out(block, transposed, fmt, a.dtype, out)
    compact = _broadcast.differentiate(False, op, code, a, b, 0, None, False, "compact", None)
    compact = np.asarray(compact)
    if fmt == "operator":
        return _layout.operators().from_structure(block, compact, transposed, code == _ZERO)
    if fmt == "dense":
        return _broadcast._dense(block, compact, transposed, out)
    return _broadcast._sparse(block, compact, transposed, fmt, code == _ZERO)

