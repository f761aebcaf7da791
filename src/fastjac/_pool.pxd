# fastjac's worker threads (see _pool.h): the one pool every kernel module
# shares, through these C functions (cimported: no Python call on the way).

# Run chunk `chunk` of `job`; `worker` (0 = the calling thread) is below the
# max_workers given to parallel_for and indexes per-thread scratch space.
ctypedef void (*chunk_fn)(void* job, Py_ssize_t chunk, int worker) noexcept nogil

# Chunk counts above this run serially (callers stay far below it).
cdef enum:
    MAX_CHUNKS = 0xffff

cdef void parallel_for(chunk_fn fn, void* job, Py_ssize_t n_chunks,
                       int max_workers) noexcept nogil
# The same for a job of a few microseconds: helpers that sleep are woken
# only in a hot loop (see _pool.h), as waking one costs about that much.
cdef void parallel_for_small(chunk_fn fn, void* job, Py_ssize_t n_chunks,
                             int max_workers) noexcept nogil
cdef int pool_threads() noexcept nogil
