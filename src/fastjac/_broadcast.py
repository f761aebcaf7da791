"""Operands of different shapes (NumPy broadcasting) and sums over axes.

``jacobian`` and ``sum_gradient`` (_api.pyx) hand a call here when the two
operands have different shapes, neither of them a scalar, or when
``sum_gradient`` is given an ``axis``; equal shapes and scalar operands
without an axis never come here and keep their own path. Nor do the
compact sums that run in one pass over an X in C or Fortran order (a
shared parameter, a per-row scale), nor jacobian's partials for a small
shared parameter: _api.pyx computes them with the loops used here
(``one_pass_gradient``, ``shared_parameter_partials``), with the same bits.

The structure. y = op(a, b) has the broadcast shape S; each element s of y
reads one element k(s) of the differentiated operand k, and its partial
p(s) = d op / d k at s is computed by the ordinary kernels. Let the sum run
over the axes ``reduced`` of S (none for ``jacobian``), and call *summed*
those reduced axes along which k has length 1 (or which k lacks): the
partials along them land on one entry of J and are added. The *compact*
result is p summed over the summed axes, those axes removed (the other axes
keep their order). Each of its elements is exactly one structural entry of
J = dy/dk (numerator layout, |y| x |k|): its row is the element's place along
the kept axes, its column the element of k it read. For ``jacobian`` (no
axis reduced) the compact result has shape S; for ``sum_gradient`` with
``axis=None`` it is reshaped to k's shape (the gradient: the kind
"gradient" of _layout.py, whose dense and sparse forms are those of today's
gradients).

Sizes. Nothing of size |y| x |k| exists unless ``format="dense"`` asks for
it; sparse results are built in O(size of the compact result) from the
strides of the kept and reduced axes. The sums over the leading or the
trailing axes of S of an other operand X in C or Fortran order (w of shape
(n,) against X of shape (N, n); a per-row scale s of shape (N, 1)) run in
one pass over X (_broadcast_loops.pyx). Every other case computes the partials over S (one
array of |S| elements, plus a copy of each broadcast operand) and sums them
with NumPy in float64.
"""
import functools

import numpy as np

from . import _broadcast_loops, _checks, _kernels, _layout

try:                                    # NumPy 2
    from numpy.lib.array_utils import normalize_axis_tuple
except ImportError:                     # NumPy 1.x
    from numpy.core.numeric import normalize_axis_tuple


@functools.lru_cache(maxsize=256)
def check_shapes(a_shape, b_shape):
    """The broadcast shape of a and b, else ValueError naming both shapes.

    NumPy's rule, written out: np.broadcast_shapes costs several times this
    on a path that runs on every call."""
    ndim = max(len(a_shape), len(b_shape))
    a_aligned = (1,) * (ndim - len(a_shape)) + tuple(a_shape)
    b_aligned = (1,) * (ndim - len(b_shape)) + tuple(b_shape)
    shape = []
    for m, n in zip(a_aligned, b_aligned):
        if m != n and m != 1 and n != 1:
            raise ValueError(
                f"a has shape {a_shape} and b has shape {b_shape}; the operands of an "
                f"element-wise operator must broadcast together (NumPy's rule: aligned "
                f"from the last axis, each pair of lengths equal or one of them 1)")
        shape.append(n if m == 1 else m)
    return tuple(shape)


@functools.lru_cache(maxsize=256)
def _broadcast_shapes(shapes):
    return np.broadcast_shapes(*shapes)


def broadcast_named(named, what):
    """The shape the shapes of ``named`` (name -> shape, in order) broadcast
    to, else ValueError naming each ("a has shape (2,) and b has shape (3,);
    <what> must broadcast together ...")."""
    try:
        return _broadcast_shapes(tuple(named.values()))
    except ValueError:
        listed = " and ".join(f"{name} has shape {s}" for name, s in named.items())
        raise ValueError(f"{listed}; {what} must broadcast together (NumPy's rule: aligned "
                         f"from the last axis, each pair of lengths equal or one of them "
                         f"1), or be scalars") from None


def as_operand(x, dtype):
    """x in ``dtype``, in whatever memory order it has (a Fortran-order array
    is not copied: the sums read it as it is)."""
    return np.asarray(x, dtype=dtype)


@functools.lru_cache(maxsize=256)
def _structure(shape, k_shape, reduced):
    """The Structure of these shapes (made once: it is only read)."""
    return Structure(shape, k_shape, reduced)


class Structure:
    """Shapes and axes of one call: S, k's shape aligned to S, which axes
    are reduced and which summed, the compact shape and the matrix shape,
    and how the sums run in one pass (``one_pass``)."""

    def __init__(self, shape, k_shape, reduced):
        self.shape = tuple(shape)
        ndim = len(self.shape)
        self.k_shape = k_shape
        self.k_aligned = (1,) * (ndim - len(k_shape)) + tuple(k_shape)
        self.reduced = frozenset(reduced)
        self.summed = tuple(i for i in range(ndim)
                            if i in self.reduced and self.k_aligned[i] == 1)
        self.axes = tuple(i for i in range(ndim) if i not in self.summed)   # compact's
        self.compact_shape = tuple(self.shape[i] for i in self.axes)
        self.y_shape = tuple(self.shape[i] for i in range(ndim) if i not in self.reduced)
        self.n_rows = _size(self.y_shape)
        self.n_cols = _size(k_shape)
        self.one_pass = self._one_pass()

    def _one_pass(self):
        """(summed_first, rows, width, rest_shape) when, after dropping the
        axes of length 1, the summed axes are the leading or the trailing
        axes of S and k spans all the others; None otherwise."""
        if not self.summed:
            return None
        shape = self.shape
        long_axes = [i for i in range(len(shape)) if shape[i] != 1]
        summed = [i for i in long_axes if i in self.summed]
        rest = [i for i in long_axes if i not in self.summed]
        if any(self.k_aligned[i] != shape[i] for i in rest):
            return None
        if summed == long_axes[:len(summed)]:
            summed_first = True
        elif summed == long_axes[len(rest):]:
            summed_first = False
        else:
            return None
        return (summed_first, _size(shape[i] for i in summed), _size(shape[i] for i in rest),
                tuple(shape[i] for i in rest))

    def roles(self):
        """(rows, cols): per compact axis, whether it indexes J's rows (an
        axis of y) and whether it indexes its columns (an axis of k)."""
        return ([i not in self.reduced for i in self.axes],
                [self.k_aligned[i] != 1 for i in self.axes])

    def indices(self):
        """(rows, cols): each compact element's place in the numerator matrix,
        int64 arrays of the compact shape."""
        y_strides = _c_strides(self.y_shape)
        k_strides = _c_strides(self.k_aligned)
        kept = [i for i in range(len(self.shape)) if i not in self.reduced]
        rows = np.zeros(self.compact_shape, np.int64)
        cols = np.zeros(self.compact_shape, np.int64)
        for pos, i in enumerate(self.axes):
            along = np.arange(self.shape[i], dtype=np.int64).reshape(
                (-1,) + (1,) * (len(self.axes) - pos - 1))
            if i not in self.reduced:
                rows += along * y_strides[kept.index(i)]
            if self.k_aligned[i] != 1:
                cols += along * k_strides[i]
        return rows, cols

    def row_major(self):
        """Compact axes ordered so that C order walks J by rows (columns
        rising within a row); the number of entries per row."""
        kept = [p for p, i in enumerate(self.axes) if i not in self.reduced]
        rest = [p for p, i in enumerate(self.axes) if i in self.reduced]
        return kept + rest, _size(self.compact_shape[p] for p in rest)

    def column_major(self):
        """Compact axes ordered so that C order walks J by columns (rows
        rising within a column); the number of entries per column."""
        own = [p for p, i in enumerate(self.axes) if self.k_aligned[i] != 1]
        shared = [p for p, i in enumerate(self.axes) if self.k_aligned[i] == 1]
        return own + shared, _size(self.compact_shape[p] for p in shared)


def _size(shape):
    size = 1
    for n in shape:
        size *= n
    return size


def _c_strides(shape):
    strides, step = [], 1
    for n in reversed(shape):
        strides.append(step)
        step *= n
    return strides[::-1]


def differentiate(summing, op, code, a, b, wrt, axis, denominator, fmt, out):
    """jacobian (summing False) or sum_gradient of ``op`` over broadcast
    operands and/or along ``axis``; a, b are arrays of the result dtype (b is
    None for a unary function); wrt, layout and format are already checked."""
    dtype = a.dtype
    shape = a.shape if b is None else check_shapes(a.shape, b.shape)
    k = a if wrt == 0 else b
    if not summing:
        reduced = ()
    elif axis is None:
        reduced = tuple(range(len(shape)))
    else:
        reduced = normalize_axis_tuple(axis, len(shape), "axis")
    structure = _structure(shape, k.shape, reduced)
    gradient = summing and axis is None
    check_result(structure, gradient, dtype, denominator, fmt, out)
    compact = _compute(code, a, b, wrt, structure, dtype)
    return deliver(structure, compact, gradient, denominator, fmt, op.structurally_zero, out)


def check_result(structure, gradient, dtype, denominator, fmt, out):
    """The checks of a result's ``out`` (and of a dense result's size) that
    come before any work: the compact result has k's shape for a gradient
    (``gradient``: a sum over every axis), the compact shape otherwise."""
    if fmt == "compact" and out is not None:
        result_shape = structure.k_shape if gradient else structure.compact_shape
        _checks.check_out(out, result_shape, dtype)
    elif fmt != "compact" and not gradient:
        _check_matrix_out(structure, denominator, fmt, dtype, out)


def deliver(structure, compact, gradient, denominator, fmt, structurally_zero, out):
    """The result in ``fmt`` from the compact one (an array of the compact
    shape, or of k's shape for a gradient); check_result has run."""
    compact = compact.reshape(structure.k_shape if gradient else structure.compact_shape)
    if gradient:
        if fmt != "compact":
            kind = "gradient" if structure.k_shape else "scalar"
            return _layout.as_matrix(compact, kind, denominator, fmt, structurally_zero, out)
    if fmt == "operator":
        return _layout.operators().from_structure(structure, compact, denominator,
                                                  structurally_zero)
    if fmt == "dense":
        return _dense(structure, compact, denominator, out)
    if fmt != "compact":
        return _sparse(structure, compact, denominator, fmt, structurally_zero)
    if out is not None:
        out[...] = compact
        return out
    return compact[()] if compact.ndim == 0 else compact


def structure_of(shape, k_shape, summing):
    """The Structure of y (of ``shape``) by an operand of ``k_shape``
    broadcast to it; ``summing``: of the sum of y over every axis."""
    return _structure(tuple(shape), tuple(k_shape),
                      tuple(range(len(shape))) if summing else ())


# d(k x)/dk = x: with it, the fused loops of the one-pass sums add up x itself
_PLAIN = _kernels.DERIVATIVE_CODES["multiply_da"]


def sum_to_shape(partials, k_shape):
    """Per-element partials (an array of S) by an operand of ``k_shape``
    broadcast to S, summed over the axes it was broadcast along: of
    ``k_shape``, in float64 (``partials`` itself when k_shape is S)."""
    k_shape = tuple(k_shape)
    if partials.shape == k_shape:
        return partials
    st = structure_of(partials.shape, k_shape, True)
    if st.one_pass is not None and partials.dtype in _checks.FLOAT_DTYPES \
            and partials.flags.c_contiguous and partials.flags.aligned:
        # the summed axes lead or trail: one pass in C (NumPy's reduction
        # along a leading axis of short rows is several times slower)
        leading, rows, width, _ = st.one_pass
        ones = np.ones(width, partials.dtype)
        return _sum_2d(_PLAIN, True, ones, partials.reshape(-1), leading, rows,
                       width).reshape(k_shape)
    return sum_broadcast(partials, st).reshape(k_shape)



def sum_broadcast(partials, structure):
    """The partials (of S) summed over the structure's summed axes, in
    float64: the compact result, or for a sum over every axis the gradient
    (then of k's shape)."""
    if not structure.summed:
        return partials
    return np.add.reduce(partials, axis=structure.summed, dtype=np.float64)


# -- computing the compact result -------------------------------------------------

def _aligned(x, dtype):
    return np.require(x, dtype, ["C_CONTIGUOUS", "ALIGNED"])


def _compute(code, a, b, wrt, st, dtype):
    """The partials summed over the summed axes: an array of st.compact_shape
    (C-contiguous, of ``dtype``)."""
    if st.summed and b is not None:
        fast = _sum_in_one_pass(code, a, b, wrt, st, dtype)
        if fast is not None:
            return fast
    shape = st.shape
    full_a = _aligned(np.broadcast_to(a, shape), dtype)
    full_b = full_a if b is None else _aligned(np.broadcast_to(b, shape), dtype)
    partials = np.empty(shape, dtype)
    _broadcast_loops.partials_into(code, full_a, full_b, partials)
    if not st.summed:
        return partials
    return np.ascontiguousarray(sum_broadcast(partials, st), dtype=dtype)


def _sum_in_one_pass(code, a, b, wrt, st, dtype):
    """The compact result straight from the operands when the structure
    allows a pass (Structure.one_pass) and the other operand X has shape S
    in C or Fortran order; None otherwise."""
    k, x = (a, b) if wrt == 0 else (b, a)
    if st.one_pass is None or x.shape != st.shape or not x.flags.aligned:
        return None
    leading, rows, width, rest_shape = st.one_pass
    if x.flags.c_contiguous:
        k_vec = _aligned(k, dtype).reshape(width)
        total = _sum_2d(code, wrt == 0, k_vec, x.reshape(-1), leading, rows, width)
    elif x.flags.f_contiguous:
        # X transposed is C-ordered, its axes reversed (leading summed axes
        # become trailing ones), k's elements in k's Fortran order.
        k_vec = _aligned(k.reshape(rest_shape).T, dtype).reshape(width)
        total = _sum_2d(code, wrt == 0, k_vec, x.T.reshape(-1), not leading, rows, width)
        total = total.reshape(rest_shape[::-1]).T
    else:
        return None
    return np.ascontiguousarray(total, dtype=dtype).reshape(st.compact_shape)


def _sum_2d(code, k_is_a, k_vec, x_flat, summed_first, rows, width):
    """Sum over ``rows`` of a C-ordered X seen as (rows, width) when the
    summed axes come first, else as (width, rows); float64 of k's length."""
    if summed_first and width != 1:
        return _broadcast_loops.sum_rows(code, k_is_a, k_vec, x_flat.reshape(rows, width))
    if summed_first:            # k is one number: a scalar expansion
        return _broadcast_loops.sum_inner(code, k_is_a, k_vec, x_flat.reshape(1, rows))
    return _broadcast_loops.sum_inner(code, k_is_a, k_vec, x_flat.reshape(width, rows))


# -- dense and sparse -------------------------------------------------------------

def _matrix_shape(st, denominator):
    return (st.n_cols, st.n_rows) if denominator else (st.n_rows, st.n_cols)


def _check_matrix_out(st, denominator, fmt, dtype, out):
    """The checks of a dense or sparse result that come before any work."""
    if fmt != "dense":
        _checks.check_no_out(fmt, out)
        return
    shape = _matrix_shape(st, denominator)
    if out is not None:
        _checks.check_out(out, shape, dtype, "dense result")
    else:
        _checks.check_dense_size(shape, dtype)


def _dense(st, compact, denominator, out):
    shape = _matrix_shape(st, denominator)
    if out is None:
        result = np.zeros(shape, compact.dtype)
    else:
        result = out
        result[...] = 0
    rows, cols = st.indices()
    if denominator:
        rows, cols = cols, rows
    result[rows.ravel(), cols.ravel()] = compact.ravel()
    return result


def _sparse(st, compact, denominator, fmt, structurally_zero):
    sparse = _layout._scipy_sparse(fmt)
    shape = _matrix_shape(st, denominator)
    itype = _layout._index_dtype(max(st.n_rows, st.n_cols, compact.size))
    if structurally_zero or compact.size == 0:
        if fmt == "dia":
            return sparse.dia_array((np.empty((0, shape[1]), compact.dtype),
                                     np.empty(0, itype)), shape=shape)
        if structurally_zero:
            return _layout._empty(sparse, fmt, shape, compact.dtype)
    rows, cols = st.indices()
    if denominator:
        rows, cols = cols, rows
    if fmt in ("coo", "dia"):
        coo = sparse.coo_array((compact.ravel().copy(), (rows.ravel().astype(itype),
                                                         cols.ravel().astype(itype))),
                               shape=shape)
        if fmt == "coo":
            return coo
        diagonals = np.unique(cols - rows).size
        _checks.check_dense_size((diagonals, shape[1]), compact.dtype, what="DIA storage",
                                 instead="format='csr', 'csc' or 'coo' (each stores the "
                                         f"{compact.size} entries once) or format='compact'")
        return coo.todia()
    # CSR walks the matrix by rows, CSC by columns: in denominator layout
    # the matrix's rows are J's columns.
    by_rows = (fmt == "csr") != denominator
    order, per_line = st.row_major() if by_rows else st.column_major()
    index = cols if fmt == "csr" else rows
    n_lines = shape[0] if fmt == "csr" else shape[1]
    data = compact.transpose(order).ravel()
    indices = index.transpose(order).ravel().astype(itype)
    indptr = np.arange(n_lines + 1, dtype=itype) * per_line
    cls = sparse.csr_array if fmt == "csr" else sparse.csc_array
    return cls((data, indices, indptr), shape=shape)
