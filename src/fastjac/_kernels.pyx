# Design note
# -----------
# The kernels' front: ``derivative_into`` and ``derivative_sum`` (for
# _api.pyx) run one derivative code over arrays, through the loops of
# _loops.pxd, compiled once per instruction set in the _level_* modules.
# fastjac._simd.select installs the table (``KernelTable``) of the level
# chosen: one indirect call per kernel call, no check in any loop.
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

from cpython.pycapsule cimport PyCapsule_GetPointer

from ._derivatives cimport *
from ._tables cimport KernelTable

# Smallest n worth several threads, per kind of tag
# (measured: benchmarks/bench_threads.py).
cdef Py_ssize_t MIN_SIZE_CHEAP = 1 << 15
cdef Py_ssize_t MIN_SIZE_COSTLY = 1 << 13


cdef bint in_chunks(Py_ssize_t n) noexcept nogil:
    """True if a memory-bound loop of n elements runs in chunks on the
    pool's threads (for the loops of other modules)."""
    return n >= MIN_SIZE_CHEAP


# -- the table of kernels in use ------------------------------------------------

cdef KernelTable TABLE


def _use_table(capsule):
    """Run the kernels of a KernelTable capsule from now on (for
    fastjac._simd.select, which chose a level this CPU runs)."""
    cdef KernelTable* found = <KernelTable*>PyCapsule_GetPointer(capsule, b"fastjac.KernelTable")
    TABLE.f64, TABLE.f32 = found.f64, found.f32


from . import _level_baseline                    # runs anywhere, until _simd.select()
from ._operators import DERIVATIVES as _DERIVATIVES
_use_table(_level_baseline.tables()[0])


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


# Python-visible names of the codes, for the op registry in _ops.py: the
# records of _operators.py, in the order of the enum generated from them.
DERIVATIVE_CODES = {d.code: code for code, d in enumerate(_DERIVATIVES)}
if len(DERIVATIVE_CODES) != N_DERIVATIVE_CODES:
    raise ImportError("fastjac._kernels was built from other operator records than "
                      "fastjac._operators holds: build it again")


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
