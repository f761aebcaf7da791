# Design note
# -----------
# The kernels' front: ``derivative_into`` and ``derivative_sum`` (for
# _api.pyx) run one derivative code over arrays, through the loops of
# _loops.pxd, which are compiled here for baseline x86-64 (any CPU) and, in
# the modules _kernels_avx2 and _kernels_avx512, for wider vector units.
# At import this module asks the CPU which it runs and takes the best
# table of kernels (``KernelTable``): one indirect call per kernel call, no
# check in any loop. ``FASTJAC_SIMD=baseline|avx2|avx512`` caps the choice
# (for tests and benchmarks; ``simd()`` says what was chosen).
#
# Thread thresholds: below MIN_SIZE_CHEAP elements (memory-bound tags) or
# MIN_SIZE_COSTLY (compute-bound tags, ``costly`` in _derivatives.pxd) a
# kernel is not cut into the pool's chunks (measured with
# benchmarks/bench_threads.py); compute-bound tags run as two-chunk "small
# jobs" from an eighth of MIN_SIZE_COSTLY (a**b, ``very_costly``: a
# sixteenth) up to it, and below that on the calling thread (_loops.pxd).
#
# No function here checks anything: the Python-facing layer (_api.pyx) has
# already validated pointers, steps, sizes and dtypes.

import os

from cpython.pycapsule cimport PyCapsule_GetPointer

from ._loops cimport KernelTable, kernel
from ._derivatives cimport *

cdef extern from *:
    """
    /* Which wider x86-64 vector units the CPU (and the OS, which must save
     * their registers) offers: 2 = AVX-512 (F, CD, BW, DQ, VL) with AVX2+FMA,
     * 1 = AVX2 + FMA, 0 = neither, or not x86-64. */
    static int fastjac_cpu_simd(void) {
    #if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
        __builtin_cpu_init();
        if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")))
            return 0;
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd")
                && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq")
                && __builtin_cpu_supports("avx512vl"))
            return 2;
        return 1;
    #else
        return 0;
    #endif
    }
    """
    int fastjac_cpu_simd() noexcept nogil

# Smallest n worth several threads, per kind of tag
# (measured: benchmarks/bench_threads.py).
cdef Py_ssize_t MIN_SIZE_CHEAP = 1 << 15
cdef Py_ssize_t MIN_SIZE_COSTLY = 1 << 13


cdef bint in_chunks(Py_ssize_t n) noexcept nogil:
    """True if a memory-bound loop of n elements runs in chunks on the
    pool's threads (for the loops of other modules)."""
    return n >= MIN_SIZE_CHEAP


# -- the baseline kernels, and the choice of a table ----------------------------

cdef double baseline_f64(int code, bint summing, const double* a, Py_ssize_t a_step,
                         const double* b, Py_ssize_t b_step, double* out, Py_ssize_t n,
                         Py_ssize_t min_cheap, Py_ssize_t min_costly) noexcept nogil:
    return kernel(code, summing, a, a_step, b, b_step, out, n, min_cheap, min_costly)


cdef double baseline_f32(int code, bint summing, const float* a, Py_ssize_t a_step,
                         const float* b, Py_ssize_t b_step, float* out, Py_ssize_t n,
                         Py_ssize_t min_cheap, Py_ssize_t min_costly) noexcept nogil:
    return kernel(code, summing, a, a_step, b, b_step, out, n, min_cheap, min_costly)


cdef KernelTable TABLE
TABLE.f64 = baseline_f64
TABLE.f32 = baseline_f32
cdef str SIMD = "baseline"

LEVELS = ("baseline", "avx2", "avx512")


def _select(level=None):
    """Use the kernels of ``level`` (default: the best this CPU runs, capped
    by $FASTJAC_SIMD); return the level in use. For tests and benchmarks."""
    global SIMD
    cdef KernelTable* found
    if level is None:
        level = os.environ.get("FASTJAC_SIMD", "avx512").strip().lower() or "avx512"
    if level not in LEVELS:
        raise ValueError(f"SIMD level must be one of {LEVELS}, got {level!r}")
    cdef int want = min(LEVELS.index(level), fastjac_cpu_simd())
    while want > 0:
        try:
            module = __import__(f"fastjac._kernels_{LEVELS[want]}", fromlist=["kernel_table"])
            found = <KernelTable*>PyCapsule_GetPointer(module.kernel_table(), b"fastjac.KernelTable")
            TABLE.f64, TABLE.f32 = found.f64, found.f32
            SIMD = LEVELS[want]
            return SIMD
        except ImportError:         # not built (no compiler support): next best
            want -= 1
    TABLE.f64, TABLE.f32 = baseline_f64, baseline_f32
    SIMD = "baseline"
    return SIMD


_select()


def simd():
    """The instruction set of the kernels in use: 'baseline' (SSE2, any
    x86-64 CPU, or the compiler's default elsewhere), 'avx2' (AVX2 + FMA) or
    'avx512' (AVX-512 F/CD/BW/DQ/VL)."""
    return SIMD


cdef void derivative_into(int code, const floating* a, Py_ssize_t a_step,
                          const floating* b, Py_ssize_t b_step,
                          floating* out, Py_ssize_t n) noexcept nogil:
    if floating is double:
        TABLE.f64(code, False, a, a_step, b, b_step, out, n, MIN_SIZE_CHEAP, MIN_SIZE_COSTLY)
    else:
        TABLE.f32(code, False, a, a_step, b, b_step, out, n, MIN_SIZE_CHEAP, MIN_SIZE_COSTLY)


cdef double derivative_sum(int code, const floating* a, Py_ssize_t a_step,
                           const floating* b, Py_ssize_t b_step,
                           Py_ssize_t n) noexcept nogil:
    if floating is double:
        return TABLE.f64(code, True, a, a_step, b, b_step, NULL, n,
                         MIN_SIZE_CHEAP, MIN_SIZE_COSTLY)
    else:
        return TABLE.f32(code, True, a, a_step, b, b_step, NULL, n,
                         MIN_SIZE_CHEAP, MIN_SIZE_COSTLY)


# Python-visible names of the codes, for the op registry in _ops.py.
DERIVATIVE_CODES = {
    "add_da": ADD_DA, "add_db": ADD_DB,
    "subtract_da": SUBTRACT_DA, "subtract_db": SUBTRACT_DB,
    "multiply_da": MULTIPLY_DA, "multiply_db": MULTIPLY_DB,
    "divide_da": DIVIDE_DA, "divide_db": DIVIDE_DB,
    "maximum_da": MAXIMUM_DA, "maximum_db": MAXIMUM_DB,
    "minimum_da": MINIMUM_DA, "minimum_db": MINIMUM_DB,
    "power_da": POWER_DA, "power_db": POWER_DB,
    "zero": ZERO, "one": ONE,
    "negative": NEGATIVE_D, "square": SQUARE_D, "sqrt": SQRT_D,
    "exp": EXP_D, "log": LOG_D, "sin": SIN_D, "cos": COS_D,
    "tanh": TANH_D, "sigmoid": SIGMOID_D, "relu": RELU_D, "abs": ABS_D,
}


def parallel_min_sizes():
    """The thread thresholds: {"memory_bound": n, "compute_bound": n,
    "compute_bound_small_jobs": n, "power_small_jobs": n} (the last two
    follow compute_bound: an eighth and a sixteenth of it)."""
    return {"memory_bound": MIN_SIZE_CHEAP, "compute_bound": MIN_SIZE_COSTLY,
            "compute_bound_small_jobs": MIN_SIZE_COSTLY >> 3,
            "power_small_jobs": MIN_SIZE_COSTLY >> 4}


def _set_parallel_min_sizes(memory_bound, compute_bound):
    """Set the thread thresholds (for benchmarks/bench_threads.py); return
    the previous ones."""
    global MIN_SIZE_CHEAP, MIN_SIZE_COSTLY
    previous = parallel_min_sizes()
    MIN_SIZE_CHEAP, MIN_SIZE_COSTLY = memory_bound, compute_bound
    return previous
