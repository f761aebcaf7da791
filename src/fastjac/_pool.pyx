# Design note
# -----------
# The threads of every kernel (the core loops of _loops.pxd, the compiled
# expressions and the neuron of _expr_loops.pxd) come from this one pool,
# written in C in _pool.h, whose comment says why it is not OpenMP: the
# caller works and never waits for a helper that has not started, which
# matters on machines whose cores other jobs share.
#
# The number of threads: set_num_threads(), else $FASTJAC_NUM_THREADS, else
# $OMP_NUM_THREADS (the convention most numerical libraries follow), else
# the CPUs this process may run on (os.sched_getaffinity).

import atexit
import os

cdef extern from "_pool.h" nogil:
    ctypedef void (*fj_chunk_fn)(void* job, Py_ssize_t chunk, int worker) noexcept nogil
    void fj_parallel_for(fj_chunk_fn fn, void* job, Py_ssize_t n_chunks, int max_workers)
    void fj_parallel_for_small(fj_chunk_fn fn, void* job, Py_ssize_t n_chunks, int max_workers)
    int fj_pool_threads()
    int fj_pool_resize(int threads)
    void fj_pool_close()
    int fj_set_thread_serial(int serial)
    enum: FJ_MAX_THREADS


cdef void parallel_for(chunk_fn fn, void* job, Py_ssize_t n_chunks,
                       int max_workers) noexcept nogil:
    fj_parallel_for(<fj_chunk_fn>fn, job, n_chunks, max_workers)


cdef void parallel_for_small(chunk_fn fn, void* job, Py_ssize_t n_chunks,
                             int max_workers) noexcept nogil:
    fj_parallel_for_small(<fj_chunk_fn>fn, job, n_chunks, max_workers)


cdef int pool_threads() noexcept nogil:
    return fj_pool_threads()


MAX_THREADS = FJ_MAX_THREADS


def _threads_from_environment():
    """Threads asked for by the environment, else the CPUs available."""
    for name in ("FASTJAC_NUM_THREADS", "OMP_NUM_THREADS"):
        text = os.environ.get(name, "").split(",")[0].strip()
        if text:
            try:
                value = int(text)
            except ValueError:
                value = 0
            if value >= 1:
                return min(value, FJ_MAX_THREADS)
            # an unusable value is ignored, as OpenMP runtimes do
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def get_num_threads():
    """The number of threads a large kernel call uses (the caller included)."""
    return fj_pool_threads()


def set_num_threads(threads):
    """Use ``threads`` threads (the calling one included) in kernel calls
    large enough to gain from them; 1 runs every call on the calling thread.

    The default comes from $FASTJAC_NUM_THREADS, else $OMP_NUM_THREADS, else
    the number of CPUs the process may use. Returns the previous number.
    Waits for a call running on the threads to end; safe from any thread.

    Raises
    ------
    TypeError
        ``threads`` is not an integer.
    ValueError
        ``threads`` is not between 1 and ``fastjac.MAX_THREADS`` (64).
    """
    if isinstance(threads, bool) or not hasattr(threads, "__index__"):
        raise TypeError(f"threads must be an integer, got {type(threads).__name__}")
    value = threads.__index__()
    if not 1 <= value <= FJ_MAX_THREADS:
        raise ValueError(f"threads must be between 1 and {FJ_MAX_THREADS}, got {value}")
    cdef int wanted = value
    previous = fj_pool_threads()
    with nogil:
        fj_pool_resize(wanted)
    return previous


def _serial_in_this_thread(serial):
    """With a true ``serial``, kernel calls made by the calling thread run
    on that thread alone (the pool's other threads are left to other
    callers); False restores the pool. Returns the previous setting.

    Per thread, unlike set_num_threads: _dask.py sets it inside each Dask
    task, whose scheduler already runs one task per core."""
    return bool(fj_set_thread_serial(1 if serial else 0))


def _close():
    """Join the helper threads (at interpreter exit)."""
    with nogil:
        fj_pool_close()


fj_pool_resize(_threads_from_environment())
atexit.register(_close)
