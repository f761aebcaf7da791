# Design note
# -----------
# Two loops serve every derivative of sections 2 to 5 of the specification:
#
# * ``apply_serial``: out[i] = derivative(a_i, b_i), the compact Jacobian (the
#   diagonal, or the vector of a derivative with respect to a scalar), and the
#   gradient of a sum with respect to an array;
# * ``total_serial``: sum_i derivative(a_i, b_i), the gradient of a sum with respect
#   to a scalar operand (e.g. d sum(x * z) / dz = sum(x)).
#
# Scalar expansion (section 4) is a *step* of 0: an operand with a_step == 0
# is one number read once, not an array; each loop has a branch per case so
# that the compiler sees unit-stride loads and vectorises.
#
# Both loops are fused over the derivative tag (see _derivatives.pxd) and
# the float type; ``dispatch`` maps a runtime code to a compile-time tag,
# once per call (and once per chunk), outside any loop. ``kernel`` is the
# entry point.
#
# Why a .pxd of inline functions: the loops are compiled into several
# extension modules from this one source, one per instruction set
# (_level.pxi), and fastjac._simd.select installs the best one the CPU runs.
#
# Threads: below a size threshold a loop runs on the calling thread (waking
# a helper costs about a microsecond, more than the whole loop at small n);
# above it the array is cut into chunks of at least MIN_CHUNK elements, which
# the threads of _pool take one by one (a thread that loses its core to
# another process delays only its current chunk; see _pool.h). The
# ``costly`` (compute-bound) tags use threads from far fewer elements, as a
# "small job" of SMALL_JOB_CHUNKS chunks, which wakes no sleeping helper
# outside a hot loop (_pool.h). Measured in a hot loop, one thread against
# two: 2 000 elements of exp 2.2 us / 1.8, of sin 3.4 / 2.2; 1 000 of a**b
# (``very_costly``, from 512 on) 4.7 / 2.8; exp at 1 000 gains nothing. A chunk's
# boundaries depend on n only, and sums add their chunk totals in chunk
# order: a result is the same bit for bit on any number of threads.
#
# Large results (STREAM_MIN_BYTES and more, far beyond the caches) are
# written with non-temporal stores: each block of BLOCK elements is computed
# into a buffer in L1, then streamed out (fj_stream_*, _vecmath.h). That saves
# the read of every destination cache line an ordinary store costs first:
# measured with benchmarks/bench_threads.py bandwidth. A fill of a number
# other than zero (a derivative that reads no array, such as d(x + w)/dw)
# is the exception: it keeps ordinary stores, faster there (see kernel()).
#
# Vectorised sin and cos are not valid for huge arguments (_vecmath.h): the
# loop of such a tag ORs ``exceptional`` over its elements (a vectorised
# reduction) and, only if one is set, recomputes those elements on libm.
#
# No function here checks anything: the Python-facing layer (_api.pyx) has
# already validated pointers, steps, sizes and dtypes.

from cpython.pyport cimport PY_SSIZE_T_MAX
from libc.float cimport DBL_MAX
from libc.math cimport fabs

from ._derivatives cimport *
from ._pool cimport parallel_for, parallel_for_small, pool_threads

cdef extern from "_vecmath.h" nogil:
    void fj_stream_f64(double* dst, const double* src, Py_ssize_t n)
    void fj_stream_f32(float* dst, const float* src, Py_ssize_t n)
    void fj_stream_fence()

cdef enum:
    # Chunks per call at most (chunk totals fit a stack array). Each chunk
    # of a streamed result ends with a store fence (about 0.2 us): at n =
    # 1e7 this makes chunks of 40 000 elements, 128 per thread on two.
    MAX_LOOP_CHUNKS = 256
    # Elements per chunk at least: a chunk's bookkeeping (an atomic claim,
    # about 0.1 us) stays a few percent of its work.
    MIN_CHUNK = 4096
    # Small jobs: costly tags from min_costly >> COSTLY_SHIFT elements,
    # very_costly ones from min_costly >> VERY_COSTLY_SHIFT, up to min_costly,
    # in up to SMALL_JOB_CHUNKS chunks of SMALL_CHUNK elements at least.
    COSTLY_SHIFT = 3
    VERY_COSTLY_SHIFT = 4
    SMALL_JOB_CHUNKS = 2
    SMALL_CHUNK = 128
    # Chunk boundaries are multiples of this many elements (whole cache lines).
    CHUNK_ALIGN = 16
    # Elements per block of a streamed result (a multiple of 16: whole lines).
    BLOCK = 512
    # Results of this many bytes and more bypass the cache (half this
    # machine's L3; a smaller result is likely to be read again soon, from
    # the cache, and ordinary stores leave it there).
    STREAM_MIN_BYTES = 1 << 24

# ``kernel`` (below) is exported as a KernelTable (_tables.pxd, _level.pxi).


# One call's operands and result, shared by the threads that run its chunks.
cdef struct LoopJob:
    int code                    # DerivativeCode
    bint summing                # a sum rather than out[i] = ...
    bint streamed               # non-temporal stores (apply_serial)
    const void* a               # const floating*, as the kernel's dtype
    Py_ssize_t a_step           # 0: a scalar expanded
    const void* b
    Py_ssize_t b_step
    void* out                   # floating*; NULL when summing
    Py_ssize_t n
    Py_ssize_t chunk            # elements per chunk
    double* partial             # chunk totals of a sum


# -- out[i] = derivative(a_i, b_i) ----------------------------------------

cdef inline void compute_span(Derivative* tag,
                              const floating* a, Py_ssize_t a_step,   # IN
                              const floating* b, Py_ssize_t b_step,   # IN
                              floating* out, Py_ssize_t n             # OUT
                              ) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating s
    cdef int rare = 0           # any exceptional() element (sin, cos, power)
    if Derivative is SqrtD and a_step == 1:
        # 0.5 / sqrt(a), with AVX-512 without a square root and a division
        # (_vecmath.h)
        if floating is double:
            fj_half_rsqrt_f64(a, out, n)
        else:
            fj_half_rsqrt_f32(a, out, n)
        return
    if a_step and b_step:
        for i in range(n):
            out[i] = derivative(tag, a[i], b[i])
            if has_exceptions(tag):
                rare |= exceptional(tag, a[i], b[i])
    elif b_step:                    # a is a scalar expanded over b
        s = a[0]
        for i in range(n):
            out[i] = derivative(tag, s, b[i])
            if has_exceptions(tag):
                rare |= exceptional(tag, s, b[i])
    elif a_step:                    # b is a scalar expanded over a
        s = b[0]
        for i in range(n):
            out[i] = derivative(tag, a[i], s)
            if has_exceptions(tag):
                rare |= exceptional(tag, a[i], s)
    elif n > 0:                     # both scalars
        out[0] = derivative_exceptional(tag, a[0], b[0])
    if has_exceptions(tag) and rare:
        for i in range(n):
            if exceptional(tag, a[i * a_step], b[i * b_step]):
                out[i] = derivative_exceptional(tag, a[i * a_step], b[i * b_step])


cdef inline void compute_block(Derivative* tag,
                              const floating* a, Py_ssize_t a_step,   # IN
                              const floating* b, Py_ssize_t b_step,   # IN
                              floating* out, Py_ssize_t n             # OUT
                              ) noexcept nogil:
    # The first elements up to a 64-byte boundary of out on their own: NumPy
    # aligns arrays to 16 bytes, and a 64-byte vector store that straddles
    # two cache lines costs about twice an aligned one (a fill of 1 000
    # doubles: 123 ns against 70 ns on this project's AMD EPYC).
    cdef Py_ssize_t head = 0
    if n >= 64:
        head = (<Py_ssize_t>(-(<size_t>out) % 64)) // sizeof(floating)
    if head:
        compute_span(tag, a, a_step, b, b_step, out, head)
        compute_span(tag, a + head * a_step, a_step, b + head * b_step, b_step,
                     out + head, n - head)
    else:
        compute_span(tag, a, a_step, b, b_step, out, n)


cdef inline void apply_serial(Derivative* tag,
                              const floating* a, Py_ssize_t a_step,   # IN
                              const floating* b, Py_ssize_t b_step,   # IN
                              floating* out, Py_ssize_t n,            # OUT
                              bint streamed) noexcept nogil:
    """out[i] = derivative(a_i, b_i), on the calling thread.

    Directly when that is safe and best. Otherwise block by block through a
    buffer in L1: for streamed results (non-temporal stores from the buffer),
    and for the tags with exceptions in an in-place call (out is a or b):
    their second pass re-reads a and b, which the buffer leaves unwritten
    until the block is done. (out never overlaps an operand otherwise:
    _api.pyx copies one that would.)
    """
    cdef floating buf[BLOCK]
    cdef Py_ssize_t start = 0, m, i, head = 0
    cdef bint aligned
    cdef bint in_place = <const void*>out == <const void*>a or <const void*>out == <const void*>b
    if not streamed and not (has_exceptions(tag) and in_place):
        compute_block(tag, a, a_step, b, b_step, out, n)
        return
    if streamed:
        # Ordinary stores up to the first 64-byte boundary of out (NumPy's
        # arrays are aligned to the element, not always to a cache line).
        head = (<Py_ssize_t>(-(<size_t>out) % 64)) // sizeof(floating)
    while start < n:
        if start == 0 and head > 0:
            m = min(head, n)
            aligned = False
        else:
            m = min(<Py_ssize_t>BLOCK, n - start)
            aligned = streamed
        compute_block(tag, a + start * a_step, a_step, b + start * b_step, b_step, buf, m)
        if aligned:
            if floating is double:
                fj_stream_f64(out + start, buf, m)
            else:
                fj_stream_f32(out + start, buf, m)
        else:
            for i in range(m):
                out[start + i] = buf[i]
        start += m
    if streamed:
        fj_stream_fence()


# -- sum_i derivative(a_i, b_i) --------------------------------------------

cdef inline double total_serial(Derivative* tag,
                                const floating* a, Py_ssize_t a_step,
                                const floating* b, Py_ssize_t b_step,
                                Py_ssize_t n) noexcept nogil:
    # Eight independent accumulators in double: the additions pipeline (and
    # vectorise) without reassociation flags, the rounding error grows like
    # n/8 rather than n, and float32 terms are summed without float32
    # rounding at each step (the result is rounded to float32 once, by the
    # caller).
    cdef double acc[8]
    cdef Py_ssize_t i, j, n8 = n - n % 8
    cdef floating s
    cdef int rare = 0
    for j in range(8):
        acc[j] = 0
    if a_step and b_step:
        for i in range(0, n8, 8):
            for j in range(8):
                acc[j] += derivative(tag, a[i + j], b[i + j])
                if has_exceptions(tag):
                    rare |= exceptional(tag, a[i + j], b[i + j])
        for i in range(n8, n):
            acc[0] += derivative(tag, a[i], b[i])
            if has_exceptions(tag):
                rare |= exceptional(tag, a[i], b[i])
    elif b_step:                    # a is a scalar expanded over b
        s = a[0]
        for i in range(0, n8, 8):
            for j in range(8):
                acc[j] += derivative(tag, s, b[i + j])
                if has_exceptions(tag):
                    rare |= exceptional(tag, s, b[i + j])
        for i in range(n8, n):
            acc[0] += derivative(tag, s, b[i])
            if has_exceptions(tag):
                rare |= exceptional(tag, s, b[i])
    elif a_step:                    # b is a scalar expanded over a
        s = b[0]
        for i in range(0, n8, 8):
            for j in range(8):
                acc[j] += derivative(tag, a[i + j], s)
                if has_exceptions(tag):
                    rare |= exceptional(tag, a[i + j], s)
        for i in range(n8, n):
            acc[0] += derivative(tag, a[i], s)
            if has_exceptions(tag):
                rare |= exceptional(tag, a[i], s)
    elif n > 0:
        acc[0] = derivative_exceptional(tag, a[0], b[0])
    if has_exceptions(tag) and rare:
        # Rare (a huge argument of sin or cos, a power outside the vector
        # domain): start again, one term at a
        # time, each on the path that is valid for it.
        for j in range(8):
            acc[j] = 0
        for i in range(n):
            if exceptional(tag, a[i * a_step], b[i * b_step]):
                acc[i % 8] += derivative_exceptional(tag, a[i * a_step], b[i * b_step])
            else:
                acc[i % 8] += derivative(tag, a[i * a_step], b[i * b_step])
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))


# -- chunks on the threads of _pool --------------------------------------------

cdef inline void run_chunk(floating* dtype, LoopJob* job, Py_ssize_t c) noexcept nogil:
    cdef Py_ssize_t start = c * job.chunk
    cdef Py_ssize_t m = min(job.chunk, job.n - start)
    cdef floating* out = NULL
    cdef double total
    if not job.summing:
        out = <floating*>job.out + start
    # thresholds that no chunk reaches: this runs on the calling thread
    total = dispatch(job.code, job.summing,
                     <const floating*>job.a + start * job.a_step, job.a_step,
                     <const floating*>job.b + start * job.b_step, job.b_step,
                     out, m, PY_SSIZE_T_MAX, PY_SSIZE_T_MAX, job.streamed)
    if job.summing:
        job.partial[c] = total


cdef inline void chunk_f64(void* job, Py_ssize_t c, int worker) noexcept nogil:
    run_chunk(<double*>NULL, <LoopJob*>job, c)


cdef inline void chunk_f32(void* job, Py_ssize_t c, int worker) noexcept nogil:
    run_chunk(<float*>NULL, <LoopJob*>job, c)


cdef inline double run_chunks(int code, bint summing,
                              const floating* a, Py_ssize_t a_step,
                              const floating* b, Py_ssize_t b_step,
                              floating* out, Py_ssize_t n, bint small,
                              bint streamed) noexcept nogil:
    """The whole call, chunk by chunk, on the pool's threads (``small``: a
    job of a few microseconds, see SMALL_JOB_CHUNKS)."""
    cdef double partial[MAX_LOOP_CHUNKS]
    cdef double result = 0
    cdef Py_ssize_t c, n_chunks
    cdef LoopJob job
    job.code, job.summing, job.streamed = code, summing, streamed
    job.a, job.a_step, job.b, job.b_step, job.out, job.n = a, a_step, b, b_step, out, n
    if small:
        job.chunk = max(<Py_ssize_t>SMALL_CHUNK, (n + SMALL_JOB_CHUNKS - 1) // SMALL_JOB_CHUNKS)
    else:
        job.chunk = max(<Py_ssize_t>MIN_CHUNK, (n + MAX_LOOP_CHUNKS - 1) // MAX_LOOP_CHUNKS)
    job.chunk = (job.chunk + CHUNK_ALIGN - 1) // CHUNK_ALIGN * CHUNK_ALIGN
    job.partial = partial
    n_chunks = (n + job.chunk - 1) // job.chunk
    if small:
        if floating is double:
            parallel_for_small(chunk_f64, &job, n_chunks, pool_threads())
        else:
            parallel_for_small(chunk_f32, &job, n_chunks, pool_threads())
    elif floating is double:
        parallel_for(chunk_f64, &job, n_chunks, pool_threads())
    else:
        parallel_for(chunk_f32, &job, n_chunks, pool_threads())
    if summing:
        for c in range(n_chunks):
            result += partial[c]
    return result


# -- runtime code -> compile-time tag ----------------------------------------

cdef inline double run(Derivative* tag, int code, bint summing,
                       const floating* a, Py_ssize_t a_step,
                       const floating* b, Py_ssize_t b_step,
                       floating* out, Py_ssize_t n,
                       Py_ssize_t min_cheap, Py_ssize_t min_costly, bint streamed) noexcept nogil:
    """On this thread, or in chunks on the pool's when n reaches the
    threshold of the tag's kind."""
    if n >= (min_costly if costly(tag) else min_cheap):
        return run_chunks(code, summing, a, a_step, b, b_step, out, n, False, streamed)
    if costly(tag) and n >= min_costly >> (VERY_COSTLY_SHIFT if very_costly(tag)
                                           else COSTLY_SHIFT):
        return run_chunks(code, summing, a, a_step, b, b_step, out, n, True, streamed)
    if summing:
        return total_serial(tag, a, a_step, b, b_step, n)
    apply_serial(tag, a, a_step, b, b_step, out, n, streamed)
    return 0


cdef inline double dispatch(int code, bint summing,
                            const floating* a, Py_ssize_t a_step,
                            const floating* b, Py_ssize_t b_step,
                            floating* out, Py_ssize_t n,
                            Py_ssize_t min_cheap, Py_ssize_t min_costly,
                            bint streamed) noexcept nogil:
    if code == ADD_DA:
        return run(<AddDa*>NULL, code, summing, a, a_step, b, b_step, out, n,
                   min_cheap, min_costly, streamed)
    elif code == ADD_DB:
        return run(<AddDb*>NULL, code, summing, a, a_step, b, b_step, out, n,
                   min_cheap, min_costly, streamed)
    elif code == SUBTRACT_DA:
        return run(<SubtractDa*>NULL, code, summing, a, a_step, b, b_step, out, n,
                   min_cheap, min_costly, streamed)
    elif code == SUBTRACT_DB:
        return run(<SubtractDb*>NULL, code, summing, a, a_step, b, b_step, out, n,
                   min_cheap, min_costly, streamed)
    elif code == MULTIPLY_DA:
        return run(<MultiplyDa*>NULL, code, summing, a, a_step, b, b_step, out, n,
                   min_cheap, min_costly, streamed)
    elif code == MULTIPLY_DB:
        return run(<MultiplyDb*>NULL, code, summing, a, a_step, b, b_step, out, n,
                   min_cheap, min_costly, streamed)
    elif code == DIVIDE_DA:
        return run(<DivideDa*>NULL, code, summing, a, a_step, b, b_step, out, n,
                   min_cheap, min_costly, streamed)
    elif code == DIVIDE_DB:
        return run(<DivideDb*>NULL, code, summing, a, a_step, b, b_step, out, n,
                   min_cheap, min_costly, streamed)
    elif code == MAXIMUM_DA:
        return run(<MaximumDa*>NULL, code, summing, a, a_step, b, b_step, out, n,
                   min_cheap, min_costly, streamed)
    elif code == MAXIMUM_DB:
        return run(<MaximumDb*>NULL, code, summing, a, a_step, b, b_step, out, n,
                   min_cheap, min_costly, streamed)
    elif code == MINIMUM_DA:
        return run(<MinimumDa*>NULL, code, summing, a, a_step, b, b_step, out, n,
                   min_cheap, min_costly, streamed)
    elif code == MINIMUM_DB:
        return run(<MinimumDb*>NULL, code, summing, a, a_step, b, b_step, out, n,
                   min_cheap, min_costly, streamed)
    elif code == POWER_DA:
        return run(<PowerDa*>NULL, code, summing, a, a_step, b, b_step, out, n,
                   min_cheap, min_costly, streamed)
    elif code == POWER_DB:
        return run(<PowerDb*>NULL, code, summing, a, a_step, b, b_step, out, n,
                   min_cheap, min_costly, streamed)
    elif code == ZERO:
        return run(<Zero*>NULL, code, summing, a, a_step, b, b_step, out, n,
                   min_cheap, min_costly, streamed)
    elif code == ONE:
        return run(<One*>NULL, code, summing, a, a_step, b, b_step, out, n,
                   min_cheap, min_costly, streamed)
    elif code == NEGATIVE_D:
        return run(<NegativeD*>NULL, code, summing, a, a_step, b, b_step, out, n,
                   min_cheap, min_costly, streamed)
    elif code == SQUARE_D:
        return run(<SquareD*>NULL, code, summing, a, a_step, b, b_step, out, n,
                   min_cheap, min_costly, streamed)
    elif code == SQRT_D:
        return run(<SqrtD*>NULL, code, summing, a, a_step, b, b_step, out, n,
                   min_cheap, min_costly, streamed)
    elif code == EXP_D:
        return run(<ExpD*>NULL, code, summing, a, a_step, b, b_step, out, n,
                   min_cheap, min_costly, streamed)
    elif code == LOG_D:
        return run(<LogD*>NULL, code, summing, a, a_step, b, b_step, out, n,
                   min_cheap, min_costly, streamed)
    elif code == SIN_D:
        return run(<SinD*>NULL, code, summing, a, a_step, b, b_step, out, n,
                   min_cheap, min_costly, streamed)
    elif code == COS_D:
        return run(<CosD*>NULL, code, summing, a, a_step, b, b_step, out, n,
                   min_cheap, min_costly, streamed)
    elif code == TANH_D:
        return run(<TanhD*>NULL, code, summing, a, a_step, b, b_step, out, n,
                   min_cheap, min_costly, streamed)
    elif code == SIGMOID_D:
        return run(<SigmoidD*>NULL, code, summing, a, a_step, b, b_step, out, n,
                   min_cheap, min_costly, streamed)
    elif code == RELU_D:
        return run(<ReluD*>NULL, code, summing, a, a_step, b, b_step, out, n,
                   min_cheap, min_costly, streamed)
    elif code == ABS_D:
        return run(<AbsD*>NULL, code, summing, a, a_step, b, b_step, out, n,
                   min_cheap, min_costly, streamed)
    elif code == TWO:
        return run(<Two*>NULL, code, summing, a, a_step, b, b_step, out, n,
                   min_cheap, min_costly, streamed)
    elif code == DIVIDE_DAB:
        return run(<DivideDab*>NULL, code, summing, a, a_step, b, b_step, out, n,
                   min_cheap, min_costly, streamed)
    elif code == DIVIDE_DBB:
        return run(<DivideDbb*>NULL, code, summing, a, a_step, b, b_step, out, n,
                   min_cheap, min_costly, streamed)
    elif code == POWER_DAA:
        return run(<PowerDaa*>NULL, code, summing, a, a_step, b, b_step, out, n,
                   min_cheap, min_costly, streamed)
    elif code == POWER_DAB:
        return run(<PowerDab*>NULL, code, summing, a, a_step, b, b_step, out, n,
                   min_cheap, min_costly, streamed)
    elif code == POWER_DBB:
        return run(<PowerDbb*>NULL, code, summing, a, a_step, b, b_step, out, n,
                   min_cheap, min_costly, streamed)
    elif code == SQRT_DD:
        return run(<SqrtDD*>NULL, code, summing, a, a_step, b, b_step, out, n,
                   min_cheap, min_costly, streamed)
    elif code == LOG_DD:
        return run(<LogDD*>NULL, code, summing, a, a_step, b, b_step, out, n,
                   min_cheap, min_costly, streamed)
    elif code == COS_DD:
        return run(<CosDD*>NULL, code, summing, a, a_step, b, b_step, out, n,
                   min_cheap, min_costly, streamed)
    elif code == TANH_DD:
        return run(<TanhDD*>NULL, code, summing, a, a_step, b, b_step, out, n,
                   min_cheap, min_costly, streamed)
    elif code == SIGMOID_DD:
        return run(<SigmoidDD*>NULL, code, summing, a, a_step, b, b_step, out, n,
                   min_cheap, min_costly, streamed)
    elif code == SOFTPLUS_D:
        return run(<SoftplusD*>NULL, code, summing, a, a_step, b, b_step, out, n,
                   min_cheap, min_costly, streamed)
    elif code == LOG_SIGMOID_D:
        return run(<LogSigmoidD*>NULL, code, summing, a, a_step, b, b_step, out, n,
                   min_cheap, min_costly, streamed)
    elif code == LOG_SIGMOID_DD:
        return run(<LogSigmoidDD*>NULL, code, summing, a, a_step, b, b_step, out, n,
                   min_cheap, min_costly, streamed)
    elif code == LOGADDEXP_DA:
        return run(<LogaddexpDa*>NULL, code, summing, a, a_step, b, b_step, out, n,
                   min_cheap, min_costly, streamed)
    elif code == LOGADDEXP_DB:
        return run(<LogaddexpDb*>NULL, code, summing, a, a_step, b, b_step, out, n,
                   min_cheap, min_costly, streamed)
    elif code == LOGADDEXP_DAA:
        return run(<LogaddexpDaa*>NULL, code, summing, a, a_step, b, b_step, out, n,
                   min_cheap, min_costly, streamed)
    elif code == LOGADDEXP_DAB:
        return run(<LogaddexpDab*>NULL, code, summing, a, a_step, b, b_step, out, n,
                   min_cheap, min_costly, streamed)
    elif code == LOG1P_D:
        return run(<Log1pD*>NULL, code, summing, a, a_step, b, b_step, out, n,
                   min_cheap, min_costly, streamed)
    elif code == LOG1P_DD:
        return run(<Log1pDD*>NULL, code, summing, a, a_step, b, b_step, out, n,
                   min_cheap, min_costly, streamed)
    return 0


cdef inline bint nonzero_fill(int code, const floating* a, Py_ssize_t a_step,
                              const floating* b, Py_ssize_t b_step) noexcept nogil:
    """derivative(a_i, b_i) is one number, not zero, for every i: the loop
    reads no array and writes no zeros."""
    if code == ADD_DA or code == ADD_DB or code == SUBTRACT_DA or code == SUBTRACT_DB \
            or code == ONE or code == NEGATIVE_D:
        return True
    if code == MULTIPLY_DA:                            # b
        return b_step == 0 and b[0] != 0
    if code == DIVIDE_DA:                              # 1 / b
        return b_step == 0
    if code == MULTIPLY_DB:                            # a
        return a_step == 0 and a[0] != 0
    return False


cdef inline double kernel(int code, bint summing,
                          const floating* a, Py_ssize_t a_step,
                          const floating* b, Py_ssize_t b_step,
                          floating* out, Py_ssize_t n,
                          Py_ssize_t min_cheap, Py_ssize_t min_costly) noexcept nogil:
    """out[i] = derivative(a_i, b_i) (returns 0), or, when ``summing``, the
    sum over i of derivative(a_i, b_i) (out unused)."""
    # A fill (nothing read) of a number other than zero keeps ordinary
    # stores: on this project's EPYC two threads fill 80 MB with ones in
    # 2.1-2.5 ms with them and in 2.85 ms with non-temporal ones, while
    # zeros take 0.8 ms non-temporal and 1.8 ms ordinary (benchmarks/
    # diagnose.py fill); a kernel that reads as well streams (a copy: 3.2 ms
    # against 4.3 ms with ordinary stores).
    cdef bint streamed = (not summing and n * <Py_ssize_t>sizeof(floating) >= STREAM_MIN_BYTES
                          and not nonzero_fill(code, a, a_step, b, b_step))
    cdef double total
    if summing and code == DIVIDE_DB and a_step and not b_step and n > 0 \
            and square_is_normal(b[0]):
        # d sum(a / z)/dz = -(sum a) / z**2: one division instead of n (the
        # loop is then a plain sum, at the speed of reading a), and one
        # rounding of the quotient instead of n. The sum is d sum(a z)/dz.
        # Where sum a overflows (or a holds inf or NaN) the terms are summed
        # one by one after all: -a_i / z**2 may still add up to a finite total.
        # So are they where z**2 is not a normal number (z = 0: a term
        # -0 / 0 is NaN, which the shortcut's -(sum a) / 0 would not give),
        # and for n = 0 (the empty sum is 0).
        total = dispatch(MULTIPLY_DB, True, a, a_step, b, 0, out, n, min_cheap, min_costly,
                         False)
        if fabs(total) <= DBL_MAX:
            return derivative(<DivideDb*>NULL, total, <double>b[0])
    return dispatch(code, summing, a, a_step, b, b_step, out, n, min_cheap, min_costly,
                    streamed)
