# Design note
# -----------
# The gradient of the single-neuron squared-error loss (specification,
# section 6):
#
#     C(w, b) = (1/N) sum_i (y_i - relu(w . x_i + b))**2
#     dC/dw   = (2/N) sum_{i: z_i > 0} (z_i - y_i) x_i,   z_i = w . x_i + b
#     dC/db   = (2/N) sum_{i: z_i > 0} (z_i - y_i)
#
# in one pass over the rows of X: for each row the dot product, the
# activation mask, the residual and the accumulation into the gradient, with
# nothing N-long or N x n ever stored. The loop is ``neuron_pass`` of
# _expr_loops.pxd, run from the table of _expr.pyx (baseline, AVX2 or
# AVX-512, as the core kernels). Threads: one contiguous range of rows per
# thread, each with its own accumulators (double, whatever the dtype), added
# in thread order, so a result does not depend on scheduling.

cimport numpy as cnp
from cpython.pycapsule cimport PyCapsule_GetPointer
from cpython.pystate cimport PyThreadState

from ._limits cimport NOGIL_MIN_SIZE
from ._tables cimport ExprTable

cdef extern from "Python.h":
    PyThreadState* PyEval_SaveThread() noexcept
    void PyEval_RestoreThread(PyThreadState*) noexcept

import numpy as np

from . import _expr, _layout
from ._checks import check_format, check_layout, check_out, coerce_named

cnp.import_array()

cdef ExprTable* LOOPS = <ExprTable*>PyCapsule_GetPointer(_expr.current_table(),
                                                         b"fastjac.ExprTable")


def _neuron_sums(cnp.ndarray X, cnp.ndarray y, cnp.ndarray w, double b):
    """(sum of gradient terms over rows (n,), dC/db sum, loss sum), all float64.

    X (N, n), y (N,), w (n,): C-contiguous, one dtype (float32 or float64),
    checked by the caller (fastjac.neuron_gradient).
    """
    cdef Py_ssize_t N = X.shape[0], n = X.shape[1]
    cdef cnp.ndarray acc = np.zeros(n + 2, dtype=np.float64)
    cdef double* g = <double*>cnp.PyArray_DATA(acc)
    cdef double gb_loss[2]
    cdef int status
    cdef PyThreadState* state = NULL
    gb_loss[0] = 0
    gb_loss[1] = 0
    if N * n >= NOGIL_MIN_SIZE:
        state = PyEval_SaveThread()
    if cnp.PyArray_TYPE(X) == cnp.NPY_DOUBLE:
        status = LOOPS.neuron_f64(<double*>cnp.PyArray_DATA(X), <double*>cnp.PyArray_DATA(y),
                             <double*>cnp.PyArray_DATA(w), b, N, n, g, gb_loss)
    else:
        status = LOOPS.neuron_f32(<float*>cnp.PyArray_DATA(X), <float*>cnp.PyArray_DATA(y),
                             <float*>cnp.PyArray_DATA(w), b, N, n, g, gb_loss)
    if state != NULL:
        PyEval_RestoreThread(state)
    if status != 0:
        raise MemoryError("fastjac: could not allocate per-thread accumulators")
    return acc[:n], gb_loss[0], gb_loss[1]


def neuron_gradient(X, y, w, b, *, layout="numerator", format="compact", out=None,
                    return_loss=False):
    """Gradient of the single-neuron squared-error loss, in one pass over X.

    C(w, b) = (1/N) sum_i (y_i - max(0, w . x_i + b))**2, with x_i the rows of X.

    Parameters
    ----------
    X : array_like of shape (N, n)
        The batch, one example per row (read once, row by row).
    y : array_like of shape (N,)
        The targets.
    w : array_like of shape (n,)
        The weights.
    b : float or 0-d array
        The bias.
    layout : {"numerator", "denominator"}
        dC/dw is 1 x n in numerator layout, n x 1 in denominator layout
        (only visible with a non-compact format).
    format : {"compact", "dense", "csr", "csc", "coo", "dia", "sparse"}
        Format of dC/dw, as in :func:`fastjac.sum_gradient`; "compact" is an
        array of shape (n,).
    out : ndarray, optional
        Where to write dC/dw ("compact" or "dense").
    return_loss : bool
        Also return C (computed in the same pass).

    Returns
    -------
    (dC/dw, dC/db) or (dC/dw, dC/db, C)
        dC/db and C are NumPy scalars of the computation dtype (float32 when
        X, y and w are float32, float64 otherwise).

    Examples
    --------
    >>> import numpy as np, fastjac
    >>> X = np.array([[1.0, 2.0], [3.0, -4.0]]); y = np.array([1.0, 0.0])
    >>> gw, gb = fastjac.neuron_gradient(X, y, np.array([1.0, 1.0]), 0.0)
    >>> gw, gb                      # only row 0 is active: z = 3, residual 2
    (array([2., 4.]), np.float64(2.0))
    """
    denominator = check_layout(layout)
    fmt = check_format(format)
    if _ready(X, y, w) and (type(b) is float or type(b) is int):
        # already C-contiguous native arrays of one float dtype: no coercion
        dtype = (<cnp.ndarray>X).dtype
        b = np.array(b, dtype)
    else:
        dtype, v = coerce_named({"X": X, "y": y, "w": w, "b": b})
        X, y, w, b = v["X"], v["y"], v["w"], v["b"]
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (N examples x n features), got shape {X.shape}")
    if y.shape != (X.shape[0],):
        raise ValueError(f"y has shape {y.shape} but X has shape {X.shape}; y must have "
                         f"shape ({X.shape[0]},), one target per row of X")
    if w.shape != (X.shape[1],):
        raise ValueError(f"w has shape {w.shape} but X has shape {X.shape}; w must have "
                         f"shape ({X.shape[1]},), one weight per column of X")
    if b.ndim != 0:
        raise ValueError(f"b must be a scalar, got shape {b.shape}")
    N = X.shape[0]
    if N == 0:
        raise ValueError("X has no rows: the loss of an empty batch is undefined")
    sums, gb, loss = _neuron_sums(X, y, w, float(b))
    scale = 2.0 / N
    gw = (sums * scale).astype(dtype, copy=False)
    gb = dtype.type(gb * scale)
    if fmt == "compact":
        if out is not None:
            check_out(out, gw.shape, dtype)
            out[...] = gw
            gw = out
    else:
        gw = _layout.as_matrix(gw, "gradient", denominator, fmt, False, out)
    if return_loss:
        return gw, gb, dtype.type(loss / N)
    return gw, gb


cdef bint _ready(object X, object y, object w):
    """True when X, y, w are exact ndarrays of one dtype (float32 or float64),
    C-contiguous, aligned and native: the kernel can read them as they are."""
    if not (cnp.PyArray_CheckExact(X) and cnp.PyArray_CheckExact(y)
            and cnp.PyArray_CheckExact(w)):
        return False
    cdef int t = cnp.PyArray_TYPE(<cnp.ndarray>X)
    if t != cnp.NPY_DOUBLE and t != cnp.NPY_FLOAT:
        return False
    for a in (X, y, w):
        if cnp.PyArray_TYPE(<cnp.ndarray>a) != t or not cnp.PyArray_ISCARRAY_RO(<cnp.ndarray>a) \
                or not cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>a):
            return False
    return True
