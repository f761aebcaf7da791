# Design note
# -----------
# Two loops serve every derivative of sections 2 to 5 of the specification:
#
# * ``apply``: out[i] = derivative(a_i, b_i), the compact Jacobian (the
#   diagonal, or the vector of a derivative with respect to a scalar), and the
#   gradient of a sum with respect to an array;
# * ``total``: sum_i derivative(a_i, b_i), the gradient of a sum with respect
#   to a scalar operand (e.g. d sum(x * z) / dz = sum(x)).
#
# Scalar expansion (section 4) is a *step* of 0: an operand with a_step == 0
# is one number read once, not an array; each loop has a branch per case so
# that the compiler sees unit-stride loads and vectorises.
#
# Both loops are fused over the derivative tag (see _derivatives.pxd) and
# the float type; ``dispatch`` maps a runtime code to a compile-time tag,
# once per call, outside any loop.
#
# Why a .pxd of inline functions: the loops are compiled into several
# extension modules from this one source, each for an instruction set
# (_kernels: baseline x86-64 / any CPU; _kernels_avx2, _kernels_avx512: see
# setup.py), and _kernels.pyx picks the best one the CPU runs, at import.
#
# Threads: below a size threshold a loop runs on the calling thread (an
# OpenMP team costs a few microseconds to start, more than the whole loop at
# small n); above it the array is cut into one contiguous chunk per thread
# and each chunk runs the same serial loop. The threshold is smaller for the
# ``costly`` (compute-bound) tags. Sums add their chunk totals in chunk
# order, so a result does not depend on scheduling.
#
# Large results (STREAM_MIN_BYTES and more, far beyond the caches) are
# written with non-temporal stores: each block of BLOCK elements is computed
# into a buffer in L1, then streamed out (fj_stream_*, _vecmath.h). That saves
# the read of every destination cache line an ordinary store costs first:
# measured with benchmarks/bench_threads.py bandwidth.
#
# Vectorised sin and cos are not valid for huge arguments (_vecmath.h): the
# loop of such a tag ORs ``exceptional`` over its elements (a vectorised
# reduction) and, only if one is set, recomputes those elements on libm.
#
# No function here checks anything: the Python-facing layer (_api.pyx) has
# already validated pointers, steps, sizes and dtypes.

from cython.parallel cimport prange

from ._derivatives cimport *

cdef extern from "_openmp_helpers.h":
    int fastjac_max_threads() noexcept nogil

cdef extern from "_vecmath.h" nogil:
    void fj_stream_f64(double* dst, const double* src, Py_ssize_t n)
    void fj_stream_f32(float* dst, const float* src, Py_ssize_t n)
    void fj_stream_fence()

cdef enum:
    # Upper bound on threads, so chunk totals fit a stack array.
    MAX_THREADS = 256
    # Chunk boundaries are multiples of this many elements (whole cache lines).
    CHUNK_ALIGN = 16
    # Elements per block of a streamed result (a multiple of 16: whole lines).
    BLOCK = 512
    # Results of this many bytes and more bypass the cache (half this
    # machine's L3; a smaller result is likely to be read again soon, from
    # the cache, and ordinary stores leave it there).
    STREAM_MIN_BYTES = 1 << 24


# The kernels of one instruction set, as _kernels.pyx calls them.
ctypedef double (*run_f64_t)(int code, bint summing, const double* a, Py_ssize_t a_step,
                             const double* b, Py_ssize_t b_step, double* out, Py_ssize_t n,
                             Py_ssize_t min_cheap, Py_ssize_t min_costly) noexcept nogil
ctypedef double (*run_f32_t)(int code, bint summing, const float* a, Py_ssize_t a_step,
                             const float* b, Py_ssize_t b_step, float* out, Py_ssize_t n,
                             Py_ssize_t min_cheap, Py_ssize_t min_costly) noexcept nogil

cdef struct KernelTable:
    run_f64_t f64
    run_f32_t f32


cdef inline int threads_above(Py_ssize_t n, Py_ssize_t min_size) noexcept nogil:
    if n < min_size:
        return 1
    cdef int t = fastjac_max_threads()
    return MAX_THREADS if t > MAX_THREADS else t


cdef inline Py_ssize_t chunk_size(Py_ssize_t n, int n_chunks) noexcept nogil:
    cdef Py_ssize_t chunk = (n + n_chunks - 1) // n_chunks
    return (chunk + CHUNK_ALIGN - 1) // CHUNK_ALIGN * CHUNK_ALIGN


# -- out[i] = derivative(a_i, b_i) ----------------------------------------

cdef inline void compute_block(Derivative* tag,
                              const floating* a, Py_ssize_t a_step,   # IN
                              const floating* b, Py_ssize_t b_step,   # IN
                              floating* out, Py_ssize_t n             # OUT
                              ) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating s
    cdef int rare = 0           # any exceptional() element (sin, cos, power)
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


cdef inline void apply_serial(Derivative* tag,
                              const floating* a, Py_ssize_t a_step,   # IN
                              const floating* b, Py_ssize_t b_step,   # IN
                              floating* out, Py_ssize_t n,            # OUT
                              bint streamed) noexcept nogil:
    """out[i] = derivative(a_i, b_i), on the calling thread.

    Directly when that is safe and best. Otherwise block by block through a
    buffer in L1: for streamed results (non-temporal stores from the buffer),
    and for the tags with exceptions, whose second pass over a block re-reads
    a and b, which an in-place call (out is a) has not overwritten yet then.
    """
    cdef floating buf[BLOCK]
    cdef Py_ssize_t start = 0, m, i, head = 0
    cdef bint aligned
    if not streamed and not has_exceptions(tag):
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


cdef inline void apply(Derivative* tag,
                       const floating* a, Py_ssize_t a_step,
                       const floating* b, Py_ssize_t b_step,
                       floating* out, Py_ssize_t n, int n_threads) noexcept nogil:
    cdef Py_ssize_t c, start, chunk
    cdef bint streamed = n * <Py_ssize_t>sizeof(floating) >= STREAM_MIN_BYTES
    if n_threads <= 1:
        apply_serial(tag, a, a_step, b, b_step, out, n, streamed)
        return
    chunk = chunk_size(n, n_threads)
    for c in prange(n_threads, num_threads=n_threads, schedule="static"):
        start = c * chunk
        if start < n:
            apply_serial(tag, a + start * a_step, a_step, b + start * b_step,
                         b_step, out + start, min(chunk, n - start), streamed)


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


cdef inline double total(Derivative* tag,
                         const floating* a, Py_ssize_t a_step,
                         const floating* b, Py_ssize_t b_step,
                         Py_ssize_t n, int n_threads) noexcept nogil:
    cdef double partial[MAX_THREADS]
    cdef double result = 0
    cdef Py_ssize_t c, start, chunk
    if n_threads <= 1:
        return total_serial(tag, a, a_step, b, b_step, n)
    chunk = chunk_size(n, n_threads)
    for c in prange(n_threads, num_threads=n_threads, schedule="static"):
        start = c * chunk
        partial[c] = 0
        if start < n:
            partial[c] = total_serial(tag, a + start * a_step, a_step,
                                      b + start * b_step, b_step,
                                      min(chunk, n - start))
    for c in range(n_threads):
        result += partial[c]
    return result


# -- runtime code -> compile-time tag ----------------------------------------

cdef inline double run(Derivative* tag, bint summing,
                       const floating* a, Py_ssize_t a_step,
                       const floating* b, Py_ssize_t b_step,
                       floating* out, Py_ssize_t n,
                       Py_ssize_t min_cheap, Py_ssize_t min_costly) noexcept nogil:
    cdef int n_threads = threads_above(n, min_costly if costly(tag) else min_cheap)
    if summing:
        return total(tag, a, a_step, b, b_step, n, n_threads)
    apply(tag, a, a_step, b, b_step, out, n, n_threads)
    return 0


cdef inline double dispatch(int code, bint summing,
                            const floating* a, Py_ssize_t a_step,
                            const floating* b, Py_ssize_t b_step,
                            floating* out, Py_ssize_t n,
                            Py_ssize_t min_cheap, Py_ssize_t min_costly) noexcept nogil:
    if code == ADD_DA:
        return run(<AddDa*>NULL, summing, a, a_step, b, b_step, out, n, min_cheap, min_costly)
    elif code == ADD_DB:
        return run(<AddDb*>NULL, summing, a, a_step, b, b_step, out, n, min_cheap, min_costly)
    elif code == SUBTRACT_DA:
        return run(<SubtractDa*>NULL, summing, a, a_step, b, b_step, out, n, min_cheap, min_costly)
    elif code == SUBTRACT_DB:
        return run(<SubtractDb*>NULL, summing, a, a_step, b, b_step, out, n, min_cheap, min_costly)
    elif code == MULTIPLY_DA:
        return run(<MultiplyDa*>NULL, summing, a, a_step, b, b_step, out, n, min_cheap, min_costly)
    elif code == MULTIPLY_DB:
        return run(<MultiplyDb*>NULL, summing, a, a_step, b, b_step, out, n, min_cheap, min_costly)
    elif code == DIVIDE_DA:
        return run(<DivideDa*>NULL, summing, a, a_step, b, b_step, out, n, min_cheap, min_costly)
    elif code == DIVIDE_DB:
        return run(<DivideDb*>NULL, summing, a, a_step, b, b_step, out, n, min_cheap, min_costly)
    elif code == MAXIMUM_DA:
        return run(<MaximumDa*>NULL, summing, a, a_step, b, b_step, out, n, min_cheap, min_costly)
    elif code == MAXIMUM_DB:
        return run(<MaximumDb*>NULL, summing, a, a_step, b, b_step, out, n, min_cheap, min_costly)
    elif code == MINIMUM_DA:
        return run(<MinimumDa*>NULL, summing, a, a_step, b, b_step, out, n, min_cheap, min_costly)
    elif code == MINIMUM_DB:
        return run(<MinimumDb*>NULL, summing, a, a_step, b, b_step, out, n, min_cheap, min_costly)
    elif code == POWER_DA:
        return run(<PowerDa*>NULL, summing, a, a_step, b, b_step, out, n, min_cheap, min_costly)
    elif code == POWER_DB:
        return run(<PowerDb*>NULL, summing, a, a_step, b, b_step, out, n, min_cheap, min_costly)
    elif code == ZERO:
        return run(<Zero*>NULL, summing, a, a_step, b, b_step, out, n, min_cheap, min_costly)
    elif code == ONE:
        return run(<One*>NULL, summing, a, a_step, b, b_step, out, n, min_cheap, min_costly)
    elif code == NEGATIVE_D:
        return run(<NegativeD*>NULL, summing, a, a_step, b, b_step, out, n, min_cheap, min_costly)
    elif code == SQUARE_D:
        return run(<SquareD*>NULL, summing, a, a_step, b, b_step, out, n, min_cheap, min_costly)
    elif code == SQRT_D:
        return run(<SqrtD*>NULL, summing, a, a_step, b, b_step, out, n, min_cheap, min_costly)
    elif code == EXP_D:
        return run(<ExpD*>NULL, summing, a, a_step, b, b_step, out, n, min_cheap, min_costly)
    elif code == LOG_D:
        return run(<LogD*>NULL, summing, a, a_step, b, b_step, out, n, min_cheap, min_costly)
    elif code == SIN_D:
        return run(<SinD*>NULL, summing, a, a_step, b, b_step, out, n, min_cheap, min_costly)
    elif code == COS_D:
        return run(<CosD*>NULL, summing, a, a_step, b, b_step, out, n, min_cheap, min_costly)
    elif code == TANH_D:
        return run(<TanhD*>NULL, summing, a, a_step, b, b_step, out, n, min_cheap, min_costly)
    elif code == SIGMOID_D:
        return run(<SigmoidD*>NULL, summing, a, a_step, b, b_step, out, n, min_cheap, min_costly)
    elif code == RELU_D:
        return run(<ReluD*>NULL, summing, a, a_step, b, b_step, out, n, min_cheap, min_costly)
    elif code == ABS_D:
        return run(<AbsD*>NULL, summing, a, a_step, b, b_step, out, n, min_cheap, min_costly)
    return 0
