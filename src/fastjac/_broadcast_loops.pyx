# Design note
# -----------
# The sums of sum_gradient over the axes along which the differentiated
# operand k is broadcast (see _broadcast.py), for the two layouts that
# _broadcast.py reduces the common cases to, both in one pass over the other
# operand X and with nothing of the size of X allocated:
#
# * ``sum_rows``: k has ``width`` elements repeated along ``rows`` rows of a
#   C-contiguous X (w of shape (n,) against X of shape (N, n)):
#   out[j] = sum_r d(k_j, X_rj). Rows are taken in blocks of about BLOCK
#   elements against k tiled to the block's length; the fused loop of
#   _rows.pxd (compiled per instruction set, from the _level module in use)
#   adds each partial straight into a double accumulator of its own.
# * ``sum_inner``: k has one element per row of a C-contiguous X, repeated
#   along the row (w against a Fortran-order X, seen transposed):
#   out[i] = sum_j d(k_i, X_ij), the scalar-expansion sum of the ordinary
#   kernels (derivative_sum) once per row; rows shorter than SHORT, for
#   which a call per row would cost as much as the row, go in blocks through
#   the fused loop of _rows.pxd, one call per column of a block.
#
# Threads: work is cut into chunks that are either ranges of rows with
# their own accumulators, added in chunk order (sum_rows, narrow rows; the
# boundaries depend on the sizes only), or ranges of columns or rows that
# own their results outright (one range per thread for wide rows) -- so a
# result is the same bit for bit on any number of threads. A kernel called
# inside a chunk that would use the pool itself finds it busy and runs on
# its thread (_pool.h), with the same result.

cimport numpy as cnp
from cpython.pycapsule cimport PyCapsule_GetPointer
from cpython.pystate cimport PyThreadState
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset
from cython cimport floating

from ._kernels cimport derivative_into, derivative_sum
from ._limits cimport NOGIL_MIN_SIZE
from ._pool cimport parallel_for, pool_threads
from ._rows cimport RowsTable

cdef extern from "Python.h":
    PyThreadState* PyEval_SaveThread() noexcept
    void PyEval_RestoreThread(PyThreadState*) noexcept

import importlib

import numpy as np

from . import _simd

cnp.import_array()

cdef dict ROWS_TABLES = {}      # level -> RowsTable capsule of its _level module
cdef object ROWS_LEVEL = None   # the level of ROWS
cdef RowsTable* ROWS = NULL


cdef RowsTable* rows_table() except NULL:
    """The fused loops of the level in use (fastjac._simd.select may change
    it): one attribute read when the level is the one of the last call."""
    global ROWS, ROWS_LEVEL
    level = _simd._in_use
    if level is None or level is not ROWS_LEVEL:
        level = _simd.current()
        capsule = ROWS_TABLES.get(level)
        if capsule is None:
            capsule = importlib.import_module(f"fastjac._level_{level}").rows_table()
            ROWS_TABLES[level] = capsule
        ROWS = <RowsTable*>PyCapsule_GetPointer(capsule, b"fastjac.RowsTable")
        ROWS_LEVEL = level
    return ROWS

cdef enum:
    # Elements per fused call of sum_rows over narrow rows (whole rows of
    # the tiled k): the accumulators and the tile stay in L1.
    BLOCK = 1024
    # Elements per chunk at least (a chunk's bookkeeping stays negligible).
    MIN_CHUNK_ELEMENTS = 1 << 15
    # Chunks per call at most: bounds the accumulators of sum_rows
    # (MAX_CHUNKS x width doubles).
    MAX_CHUNKS = 64
    # sum_inner: rows shorter than this go through the fused loop in blocks;
    # longer ones take a call of derivative_sum each, which costs about as
    # much as 16 elements of the blocks (docs/performance.md).
    SHORT = 16
    # Rows at least this wide are cut into ranges of columns, not of rows:
    # narrower ones keep MAX_CHUNKS x width accumulators (at most 4 MiB).
    WIDE = 8192


cdef struct RowsJob:
    RowsTable* fused            # the fused loops of the level in use
    int code
    bint k_is_a                 # k is operand a (wrt=0), X is b
    const void* k               # narrow rows: tile_rows copies of k; wide rows: k
    Py_ssize_t tile_rows
    const void* x               # rows x width, C-contiguous
    Py_ssize_t rows, width
    Py_ssize_t chunk_rows       # row chunks (narrow rows) ...
    Py_ssize_t chunk_cols       # ... or column chunks (wide rows): one is 0
    double* acc                 # row chunks: n_chunks x width; column chunks: width
    bint failed                 # the accumulators could not be allocated


cdef inline void add_partials(RowsJob* job, const floating* k, const floating* x,
                              double* lanes, Py_ssize_t n) noexcept nogil:
    """lanes[t] += d(k_t, x_t), t < n (the fused loop of _rows.pxd)."""
    if floating is double:
        job.fused.f64(job.code, job.k_is_a, k, x, lanes, n)
    else:
        job.fused.f32(job.code, job.k_is_a, k, x, lanes, n)


cdef inline void rows_chunk(floating* dtype, RowsJob* job, Py_ssize_t c) noexcept nogil:
    cdef Py_ssize_t r0, r1, c0, c1, r, j, m, step, w = job.width
    cdef Py_ssize_t span = job.tile_rows * w
    cdef const floating* k = <const floating*>job.k
    cdef const floating* x = <const floating*>job.x
    cdef double* acc
    cdef double* lanes
    if job.chunk_rows:
        r0 = c * job.chunk_rows
        r1 = min(r0 + job.chunk_rows, job.rows)
        acc = job.acc + c * w
        # Narrow rows: blocks of tile_rows whole rows against the tiled k,
        # added element-wise into as many accumulators (one long loop that
        # vectorises, however narrow the rows), folded once at the end.
        lanes = <double*>malloc(span * sizeof(double))
        if lanes == NULL:
            job.failed = True
            return
        memset(lanes, 0, span * sizeof(double))
        r = r0
        while r < r1:
            m = min(job.tile_rows, r1 - r)
            add_partials(job, k, x + r * w, lanes, m * w)
            r += m
        memset(acc, 0, w * sizeof(double))
        for step in range(job.tile_rows):
            for j in range(w):
                acc[j] += lanes[step * w + j]
        free(lanes)
    else:
        # Wide rows: this chunk owns a range of columns, taken WIDE columns
        # at a time (their sums and k stay in L2) row after row.
        c0 = c * job.chunk_cols
        c1 = min(c0 + job.chunk_cols, w)
        acc = job.acc
        for j in range(c0, c1):
            acc[j] = 0
        while c0 < c1:
            m = min(<Py_ssize_t>WIDE, c1 - c0)
            for r in range(job.rows):
                add_partials(job, k + c0, x + r * w + c0, acc + c0, m)
            c0 += m


cdef void rows_chunk_f64(void* job, Py_ssize_t c, int worker) noexcept nogil:
    rows_chunk(<double*>NULL, <RowsJob*>job, c)


cdef void rows_chunk_f32(void* job, Py_ssize_t c, int worker) noexcept nogil:
    rows_chunk(<float*>NULL, <RowsJob*>job, c)


cdef Py_ssize_t chunk_count(Py_ssize_t elements, Py_ssize_t parts) noexcept nogil:
    """Chunks for a loop over ``elements`` cut along ``parts`` (sizes only)."""
    return max(<Py_ssize_t>1, min(<Py_ssize_t>MAX_CHUNKS, parts,
                                  elements // MIN_CHUNK_ELEMENTS))


cdef int sum_rows_into(int code, bint k_is_a, int typenum, const void* k, const void* x,
                       Py_ssize_t rows, Py_ssize_t width, double* total) except -1:
    """total[j] = sum over rows r of d(k_j, x[r, j]) (d(x[r, j], k_j) when k
    is operand b), j < width; k of width elements, x rows x width, both
    C-contiguous, aligned, of ``typenum`` (NPY_DOUBLE or NPY_FLOAT; checked
    by the caller). Called with the GIL (released here for large sums); the
    C entry of _api.pyx's fast path for a shared parameter, and of sum_rows."""
    cdef Py_ssize_t n_chunks, c, j, itemsize = 8 if typenum == cnp.NPY_DOUBLE else 4
    cdef RowsJob job
    cdef void* tile = NULL
    cdef double* acc = NULL
    cdef double* parts
    cdef PyThreadState* state = NULL
    memset(total, 0, width * sizeof(double))
    if rows == 0 or width == 0:
        return 0
    job.code, job.k_is_a, job.x, job.rows, job.width = code, k_is_a, x, rows, width
    job.failed = False
    job.fused = rows_table()
    if not job.fused.f64(code, k_is_a, NULL, NULL, NULL, 0):
        raise ValueError(f"sum_rows: derivative code {code} is not a binary operator's")
    if width >= WIDE:
        # a range of columns per thread: each reads long runs of a row (a
        # column's sum is the same on any number of threads)
        n_chunks = min(chunk_count(rows * width, width // BLOCK), pool_threads())
        job.chunk_rows = 0
        job.chunk_cols = (width + n_chunks - 1) // n_chunks
        n_chunks = (width + job.chunk_cols - 1) // job.chunk_cols
        job.k, job.tile_rows = k, 1
        job.acc = total
    else:
        n_chunks = chunk_count(rows * width, rows)
        job.chunk_rows = (rows + n_chunks - 1) // n_chunks
        n_chunks = (rows + job.chunk_rows - 1) // job.chunk_rows
        job.chunk_cols = 0
        # no more copies of k than a chunk has rows (the sums are the same:
        # the rows of a chunk go in one block either way)
        job.tile_rows = max(<Py_ssize_t>1, min(BLOCK // width, job.chunk_rows))
        tile = malloc(job.tile_rows * width * itemsize)
        acc = <double*>malloc(n_chunks * width * sizeof(double))
        if tile == NULL or acc == NULL:
            free(tile)
            free(acc)
            raise MemoryError("fastjac: no memory for the accumulators of sum_rows")
        for c in range(job.tile_rows):
            memcpy(<char*>tile + c * width * itemsize, k, width * itemsize)
        job.k = tile
        job.acc = acc
    if rows * width >= NOGIL_MIN_SIZE:
        state = PyEval_SaveThread()
    if typenum == cnp.NPY_DOUBLE:
        parallel_for(rows_chunk_f64, &job, n_chunks, pool_threads())
    else:
        parallel_for(rows_chunk_f32, &job, n_chunks, pool_threads())
    if job.chunk_rows:
        parts = job.acc
        for c in range(n_chunks):          # chunk order: the same bits on any thread count
            for j in range(width):
                total[j] += parts[c * width + j]
    if state != NULL:
        PyEval_RestoreThread(state)
    free(tile)
    free(acc)
    if job.failed:
        raise MemoryError("fastjac: no memory for the accumulators of sum_rows")
    return 0


def sum_rows(int code, bint k_is_a, cnp.ndarray k, cnp.ndarray x):
    """out[j] = sum over rows r of d(k_j, x[r, j]) (d(x[r, j], k_j) when k is
    operand b), in float64; k of shape (width,), x (rows, width), both
    C-contiguous, aligned and of one float dtype (checked by the caller)."""
    cdef cnp.ndarray out = np.empty(x.shape[1], np.float64)
    sum_rows_into(code, k_is_a, cnp.PyArray_TYPE(x), cnp.PyArray_DATA(k), cnp.PyArray_DATA(x),
                  x.shape[0], x.shape[1], <double*>cnp.PyArray_DATA(out))
    return out


cdef struct InnerJob:
    RowsTable* fused            # short rows: the fused loops; NULL for long rows
    int code
    bint k_is_a
    const void* k               # one element per row
    const void* x               # rows x length, C-contiguous
    Py_ssize_t rows, length
    Py_ssize_t chunk_rows
    double* out
    bint failed                 # a buffer could not be allocated


cdef inline void short_rows(floating* dtype, InnerJob* job, Py_ssize_t r0,
                            Py_ssize_t r1) noexcept nogil:
    """Rows too short for a kernel call each: blocks of whole rows, copied
    column by column into a buffer (a transpose in L1), then one fused call
    per column adds d(k_i, x_ij) into each row's sum out[i], which k's
    elements (contiguous, one per row) line up with. Each row's partials
    are added in column order."""
    cdef Py_ssize_t L = job.length, block = max(<Py_ssize_t>1, BLOCK // L), r, i, j, m
    cdef const floating* k = <const floating*>job.k
    cdef const floating* x
    cdef floating* columns = <floating*>malloc(block * L * sizeof(floating))
    if columns == NULL:
        job.failed = True
        return
    r = r0
    while r < r1:
        m = min(block, r1 - r)
        x = <const floating*>job.x + r * L
        for i in range(m):
            for j in range(L):
                columns[j * m + i] = x[i * L + j]
        memset(job.out + r, 0, m * sizeof(double))
        for j in range(L):
            if floating is double:
                job.fused.f64(job.code, job.k_is_a, k + r, columns + j * m, job.out + r, m)
            else:
                job.fused.f32(job.code, job.k_is_a, k + r, columns + j * m, job.out + r, m)
        r += m
    free(columns)


cdef inline void inner_chunk(floating* dtype, InnerJob* job, Py_ssize_t c) noexcept nogil:
    cdef Py_ssize_t r, r0 = c * job.chunk_rows
    cdef Py_ssize_t r1 = min(r0 + job.chunk_rows, job.rows)
    cdef const floating* k = <const floating*>job.k
    cdef const floating* x = <const floating*>job.x
    if job.fused != NULL:
        short_rows(dtype, job, r0, r1)
        return
    for r in range(r0, r1):
        if job.k_is_a:
            job.out[r] = derivative_sum(job.code, k + r, 0, x + r * job.length, 1, job.length)
        else:
            job.out[r] = derivative_sum(job.code, x + r * job.length, 1, k + r, 0, job.length)


cdef void inner_chunk_f64(void* job, Py_ssize_t c, int worker) noexcept nogil:
    inner_chunk(<double*>NULL, <InnerJob*>job, c)


cdef void inner_chunk_f32(void* job, Py_ssize_t c, int worker) noexcept nogil:
    inner_chunk(<float*>NULL, <InnerJob*>job, c)


cdef int sum_inner_into(int code, bint k_is_a, int typenum, const void* k, const void* x,
                        Py_ssize_t rows, Py_ssize_t length, double* total) except -1:
    """total[i] = sum over j of d(k_i, x[i, j]) (d(x[i, j], k_i) when k is
    operand b), i < rows; k of rows elements, x rows x length, both
    C-contiguous, aligned, of ``typenum`` (NPY_DOUBLE or NPY_FLOAT; checked
    by the caller). Called with the GIL (released here for large sums); the
    C entry of _api.pyx's fast path for a per-row scale, and of sum_inner."""
    cdef Py_ssize_t n_chunks
    cdef InnerJob job
    cdef PyThreadState* state = NULL
    memset(total, 0, rows * sizeof(double))
    if rows == 0 or length == 0:
        return 0
    n_chunks = chunk_count(rows * length, rows)
    job.code, job.k_is_a, job.rows, job.length = code, k_is_a, rows, length
    job.k, job.x, job.out = k, x, total
    job.failed = False
    job.fused = rows_table() if length < SHORT else NULL
    if job.fused != NULL and not job.fused.f64(code, k_is_a, NULL, NULL, NULL, 0):
        raise ValueError(f"sum_inner: derivative code {code} is not a binary operator's")
    job.chunk_rows = (rows + n_chunks - 1) // n_chunks
    n_chunks = (rows + job.chunk_rows - 1) // job.chunk_rows
    if rows * length >= NOGIL_MIN_SIZE:
        state = PyEval_SaveThread()
    if typenum == cnp.NPY_DOUBLE:
        parallel_for(inner_chunk_f64, &job, n_chunks, pool_threads())
    else:
        parallel_for(inner_chunk_f32, &job, n_chunks, pool_threads())
    if state != NULL:
        PyEval_RestoreThread(state)
    if job.failed:
        raise MemoryError("fastjac: no memory for the buffers of sum_inner")
    return 0


def sum_inner(int code, bint k_is_a, cnp.ndarray k, cnp.ndarray x):
    """out[i] = sum over j of d(k_i, x[i, j]) (d(x[i, j], k_i) when k is
    operand b), in float64; k of shape (rows,), x (rows, length), both
    C-contiguous, aligned and of one float dtype (checked by the caller)."""
    cdef cnp.ndarray out = np.empty(x.shape[0], np.float64)
    sum_inner_into(code, k_is_a, cnp.PyArray_TYPE(x), cnp.PyArray_DATA(k), cnp.PyArray_DATA(x),
                   x.shape[0], x.shape[1], <double*>cnp.PyArray_DATA(out))
    return out


def partials_into(int code, cnp.ndarray a, cnp.ndarray b, cnp.ndarray out):
    """out[i] = d(a_i, b_i) over arrays of one size, C-contiguous, aligned and
    of out's float dtype (checked by the caller)."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(out)
    cdef PyThreadState* state = PyEval_SaveThread()
    if cnp.PyArray_TYPE(out) == cnp.NPY_DOUBLE:
        derivative_into(code, <double*>cnp.PyArray_DATA(a), 1, <double*>cnp.PyArray_DATA(b), 1,
                        <double*>cnp.PyArray_DATA(out), n)
    else:
        derivative_into(code, <float*>cnp.PyArray_DATA(a), 1, <float*>cnp.PyArray_DATA(b), 1,
                        <float*>cnp.PyArray_DATA(out), n)
    PyEval_RestoreThread(state)
    return out
