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
# nothing N-long or N x n ever stored. Rows are taken four at a time so that
# the four dot products are independent chains (the FMA latency is hidden
# without reassociating sums) and the four axpy's into the accumulator form
# one loop over the features that vectorises.
#
# Threads: one contiguous range of rows per thread, each with its own
# accumulators (double, whatever the dtype); the partial results are added
# in thread order, so a result does not depend on scheduling.
#
# relu'(0) = 0 (the mask is z > 0), as in the core; a NaN z contributes NaN.

from cython.parallel cimport prange
from libc.stdlib cimport malloc, free
from cython cimport floating

cimport numpy as cnp
from cpython.pystate cimport PyThreadState

from ._kernels cimport threads_for

cdef extern from "Python.h":
    PyThreadState* PyEval_SaveThread() noexcept
    void PyEval_RestoreThread(PyThreadState*) noexcept

import numpy as np

cnp.import_array()

cdef enum:
    MAX_THREADS = 256


cdef inline double residual(double z, double y) noexcept nogil:
    """dC_i/dz_i divided by 2: z - y where the neuron is active, else 0."""
    if z <= 0:
        return 0
    return z - y                      # z > 0, or NaN (propagates)


cdef inline double row_loss(double z, double y) noexcept nogil:
    cdef double a = z if not (z <= 0) else 0
    return (y - a) * (y - a)


cdef void rows_serial(const floating* X, const floating* y, const floating* w, double b,
                      Py_ssize_t start, Py_ssize_t stop, Py_ssize_t n,
                      double* gw, double* gb_loss) noexcept nogil:
    """Add rows start..stop into gw[0:n], gb_loss[0] (dC/db) and gb_loss[1] (loss)."""
    cdef Py_ssize_t i, j
    cdef const floating* x0
    cdef const floating* x1
    cdef const floating* x2
    cdef const floating* x3
    cdef double z0, z1, z2, z3, r0, r1, r2, r3, e0, e1, e2, e3
    cdef Py_ssize_t n2 = n - n % 2
    cdef double gb = 0, loss = 0
    for j in range(n):
        gw[j] = 0
    i = start
    while i + 4 <= stop:
        x0 = X + i * n
        x1 = x0 + n
        x2 = x1 + n
        x3 = x2 + n
        # two partial sums per row (even and odd features): eight
        # independent chains, which the compiler packs into vector registers
        z0 = z1 = z2 = z3 = 0
        e0 = e1 = e2 = e3 = 0
        for j in range(0, n2, 2):
            z0 += x0[j] * w[j]
            e0 += x0[j + 1] * w[j + 1]
            z1 += x1[j] * w[j]
            e1 += x1[j + 1] * w[j + 1]
            z2 += x2[j] * w[j]
            e2 += x2[j + 1] * w[j + 1]
            z3 += x3[j] * w[j]
            e3 += x3[j + 1] * w[j + 1]
        if n2 < n:
            z0 += x0[n2] * w[n2]
            z1 += x1[n2] * w[n2]
            z2 += x2[n2] * w[n2]
            z3 += x3[n2] * w[n2]
        z0 = (z0 + e0) + b
        z1 = (z1 + e1) + b
        z2 = (z2 + e2) + b
        z3 = (z3 + e3) + b
        r0 = residual(z0, y[i])
        r1 = residual(z1, y[i + 1])
        r2 = residual(z2, y[i + 2])
        r3 = residual(z3, y[i + 3])
        loss += (row_loss(z0, y[i]) + row_loss(z1, y[i + 1])) + \
                (row_loss(z2, y[i + 2]) + row_loss(z3, y[i + 3]))
        if r0 != 0 or r1 != 0 or r2 != 0 or r3 != 0:
            gb += (r0 + r1) + (r2 + r3)
            for j in range(n):
                gw[j] += (r0 * x0[j] + r1 * x1[j]) + (r2 * x2[j] + r3 * x3[j])
        i += 4
    while i < stop:
        x0 = X + i * n
        z0 = b
        for j in range(n):
            z0 += x0[j] * w[j]
        r0 = residual(z0, y[i])
        loss += row_loss(z0, y[i])
        if r0 != 0:
            gb += r0
            for j in range(n):
                gw[j] += r0 * x0[j]
        i += 1
    gb_loss[0] = gb
    gb_loss[1] = loss


cdef int neuron_pass(const floating* X, const floating* y, const floating* w, double b,
                     Py_ssize_t N, Py_ssize_t n, double* gw, double* gb_loss) noexcept nogil:
    """Sums over all rows (not yet scaled by 2/N): gw[0:n], dC/db, loss. -1 on OOM."""
    cdef int n_threads = threads_for(N * n)
    cdef Py_ssize_t c, j, chunk, start, stop
    cdef double* part
    if n_threads <= 1 or N < 4 * n_threads:
        rows_serial(X, y, w, b, 0, N, n, gw, gb_loss)
        return 0
    part = <double*>malloc(n_threads * (n + 2) * sizeof(double))
    if part == NULL:
        return -1
    chunk = (N + n_threads - 1) // n_threads
    for c in prange(n_threads, num_threads=n_threads, schedule="static"):
        start = c * chunk
        stop = start + chunk
        if stop > N:
            stop = N
        if start > stop:
            start = stop
        rows_serial(X, y, w, b, start, stop, n, part + c * (n + 2), part + c * (n + 2) + n)
    for j in range(n + 2):
        gw[j] = 0          # gw is n + 2 long: gradient, dC/db, loss
    for c in range(n_threads):
        for j in range(n + 2):
            gw[j] += part[c * (n + 2) + j]
    gb_loss[0] = gw[n]
    gb_loss[1] = gw[n + 1]
    free(part)
    return 0


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
    if N * n >= 2048:
        state = PyEval_SaveThread()
    if cnp.PyArray_TYPE(X) == cnp.NPY_DOUBLE:
        status = neuron_pass(<double*>cnp.PyArray_DATA(X), <double*>cnp.PyArray_DATA(y),
                             <double*>cnp.PyArray_DATA(w), b, N, n, g, gb_loss)
    else:
        status = neuron_pass(<float*>cnp.PyArray_DATA(X), <float*>cnp.PyArray_DATA(y),
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
    from .expr import coerce_named, check_out, _check_layout, _check_format
    from . import _layout
    denominator = _check_layout(layout)
    fmt = _check_format(format)
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
