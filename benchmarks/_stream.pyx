# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
# Design note
# -----------
# The physical limit of a memory-bound kernel is the machine's streaming
# bandwidth with all its cores. These are the STREAM kernels (McCalpin),
# written as one ``prange(schedule="static")`` loop each, like fastjac's own
# kernels, so that the probe and the kernels it judges run the same kind of
# code with the same OpenMP runtime. Bytes are counted the STREAM way: the
# bytes the loop names (a copy moves 2 arrays, a triad 3), not the extra
# read-for-ownership traffic of ordinary stores.
#
# ``triad2`` (two inputs, two outputs: c = a + s*b and d = b + s*a, 4 arrays
# counted) is no STREAM kernel and not part of the probe: it is the twin,
# timed beside fastjac (_harness.stream_twin), of kernels that read two
# arrays and write two, like a compiled expression's value and derivative.
#
# Each store kernel also has a ``_nt`` twin with non-temporal stores
# (_stream_nt.h), which skip the read for ownership of ordinary stores.
#
# Built on first use by _bandwidth.py into benchmarks/results/build/; it is
# no part of the fastjac package.

from cython.parallel cimport prange, parallel
cimport openmp

cdef extern from "_stream_nt.h":
    void stream_copy_nt(const double* a, double* c, Py_ssize_t n) noexcept nogil
    void stream_triad_nt(const double* b, const double* c, double* a, double s,
                         Py_ssize_t n) noexcept nogil
    void stream_triad2_nt(const double* a, const double* b, double* c, double* d,
                          double s, Py_ssize_t n) noexcept nogil
    void stream_fill_nt(double* a, double value, Py_ssize_t n) noexcept nogil
    void stream_fence() noexcept nogil


def threads():
    """The number of OpenMP threads a parallel region gets."""
    return openmp.omp_get_max_threads()


def init(double[::1] a, double value):       # OUT a
    """Fill a in parallel (first touch puts each page near its thread)."""
    cdef Py_ssize_t i, n = a.shape[0]
    for i in prange(n, nogil=True, schedule="static"):
        a[i] = value


def copy(const double[::1] a, double[::1] c):     # IN a; OUT c
    cdef Py_ssize_t i, n = a.shape[0]
    for i in prange(n, nogil=True, schedule="static"):
        c[i] = a[i]


def scale(const double[::1] c, double[::1] b, double s):     # IN c; OUT b
    cdef Py_ssize_t i, n = c.shape[0]
    for i in prange(n, nogil=True, schedule="static"):
        b[i] = s * c[i]


def triad(const double[::1] b, const double[::1] c, double[::1] a, double s):
    # IN b, c; OUT a
    cdef Py_ssize_t i, n = a.shape[0]
    for i in prange(n, nogil=True, schedule="static"):
        a[i] = b[i] + s * c[i]


def triad2(const double[::1] a, const double[::1] b, double[::1] c, double[::1] d,
           double s):
    # IN a, b; OUT c, d (one pass: two inputs, two outputs)
    cdef Py_ssize_t i, n = c.shape[0]
    for i in prange(n, nogil=True, schedule="static"):
        c[i] = a[i] + s * b[i]
        d[i] = b[i] + s * a[i]


def fill(double[::1] a, double value):          # OUT a (write-only traffic)
    cdef Py_ssize_t i, n = a.shape[0]
    for i in prange(n, nogil=True, schedule="static"):
        a[i] = value


cdef double chunk_sum(const double* a, Py_ssize_t n) noexcept nogil:
    # Eight accumulators, as fastjac's summed kernels use: one chain of
    # dependent additions would be bound by the adder's latency, not memory.
    cdef double acc[8]
    cdef Py_ssize_t i, j, n8 = n - n % 8
    for j in range(8):
        acc[j] = 0
    for i in range(0, n8, 8):
        for j in range(8):
            acc[j] += a[i + j]
    for i in range(n8, n):
        acc[0] += a[i]
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))


def read(const double[::1] a):                  # IN a (read-only traffic)
    cdef Py_ssize_t c, n = a.shape[0]
    cdef int chunks = openmp.omp_get_max_threads()
    cdef Py_ssize_t size = (n + chunks - 1) // chunks
    cdef double total = 0
    for c in prange(chunks, nogil=True, schedule="static", num_threads=chunks):
        if c * size < n:
            total += chunk_sum(&a[c * size], min(size, n - c * size))
    return total


cdef inline Py_ssize_t chunk_of(Py_ssize_t n, int chunks) noexcept nogil:
    return ((n + chunks - 1) // chunks + 7) // 8 * 8


def copy_nt(const double[::1] a, double[::1] c):     # IN a; OUT c
    cdef Py_ssize_t k, n = a.shape[0]
    cdef int chunks = openmp.omp_get_max_threads()
    cdef Py_ssize_t size = chunk_of(n, chunks)
    for k in prange(chunks, nogil=True, schedule="static", num_threads=chunks):
        if k * size < n:
            stream_copy_nt(&a[k * size], &c[k * size], min(size, n - k * size))
            stream_fence()


def triad_nt(const double[::1] b, const double[::1] c, double[::1] a, double s):
    cdef Py_ssize_t k, n = a.shape[0]
    cdef int chunks = openmp.omp_get_max_threads()
    cdef Py_ssize_t size = chunk_of(n, chunks)
    for k in prange(chunks, nogil=True, schedule="static", num_threads=chunks):
        if k * size < n:
            stream_triad_nt(&b[k * size], &c[k * size], &a[k * size], s, min(size, n - k * size))
            stream_fence()


def triad2_nt(const double[::1] a, const double[::1] b, double[::1] c, double[::1] d,
              double s):
    cdef Py_ssize_t k, n = c.shape[0]
    cdef int chunks = openmp.omp_get_max_threads()
    cdef Py_ssize_t size = chunk_of(n, chunks)
    for k in prange(chunks, nogil=True, schedule="static", num_threads=chunks):
        if k * size < n:
            stream_triad2_nt(&a[k * size], &b[k * size], &c[k * size], &d[k * size], s,
                             min(size, n - k * size))
            stream_fence()


def fill_nt(double[::1] a, double value):
    cdef Py_ssize_t k, n = a.shape[0]
    cdef int chunks = openmp.omp_get_max_threads()
    cdef Py_ssize_t size = chunk_of(n, chunks)
    for k in prange(chunks, nogil=True, schedule="static", num_threads=chunks):
        if k * size < n:
            stream_fill_nt(&a[k * size], value, min(size, n - k * size))
            stream_fence()
