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
# Threads: below PARALLEL_MIN_SIZE elements a loop runs on the calling
# thread (an OpenMP team costs about a microsecond to start, more than the
# whole loop at small n); above it the array is cut into one contiguous
# chunk per thread and each chunk runs the same serial loop. Sums add their
# chunk totals in chunk order, so a result does not depend on scheduling.
#
# No function here checks anything: the Python-facing layer (_api.pyx) has
# already validated pointers, steps, sizes and dtypes.

from cython.parallel cimport prange

from ._derivatives cimport *

cdef extern from "_openmp_helpers.h":
    int fastjac_max_threads() noexcept nogil

# Smallest n worth two threads (measured: benchmarks/bench_threads.py).
cdef Py_ssize_t PARALLEL_MIN_SIZE = 1 << 15
cdef enum:
    # Upper bound on threads, so chunk totals fit a stack array.
    MAX_THREADS = 256
    # Chunk boundaries are multiples of this many elements (whole cache lines).
    CHUNK_ALIGN = 16


cdef int threads_for(Py_ssize_t n) noexcept nogil:
    if n < PARALLEL_MIN_SIZE:
        return 1
    cdef int t = fastjac_max_threads()
    return MAX_THREADS if t > MAX_THREADS else t


cdef inline Py_ssize_t chunk_size(Py_ssize_t n, int n_chunks) noexcept nogil:
    cdef Py_ssize_t chunk = (n + n_chunks - 1) // n_chunks
    return (chunk + CHUNK_ALIGN - 1) // CHUNK_ALIGN * CHUNK_ALIGN


# -- out[i] = derivative(a_i, b_i) ----------------------------------------

cdef inline void apply_serial(Derivative* tag,
                              const floating* a, Py_ssize_t a_step,   # IN
                              const floating* b, Py_ssize_t b_step,   # IN
                              floating* out, Py_ssize_t n             # OUT
                              ) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating s
    if a_step and b_step:
        for i in range(n):
            out[i] = derivative(tag, a[i], b[i])
    elif b_step:                    # a is a scalar expanded over b
        s = a[0]
        for i in range(n):
            out[i] = derivative(tag, s, b[i])
    elif a_step:                    # b is a scalar expanded over a
        s = b[0]
        for i in range(n):
            out[i] = derivative(tag, a[i], s)
    elif n > 0:                     # both scalars
        out[0] = derivative(tag, a[0], b[0])


cdef void apply(Derivative* tag,
                const floating* a, Py_ssize_t a_step,
                const floating* b, Py_ssize_t b_step,
                floating* out, Py_ssize_t n, int n_threads) noexcept nogil:
    cdef Py_ssize_t c, start, chunk
    if n_threads <= 1:
        apply_serial(tag, a, a_step, b, b_step, out, n)
        return
    chunk = chunk_size(n, n_threads)
    for c in prange(n_threads, num_threads=n_threads, schedule="static"):
        start = c * chunk
        if start < n:
            apply_serial(tag, a + start * a_step, a_step, b + start * b_step,
                         b_step, out + start, min(chunk, n - start))


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
    for j in range(8):
        acc[j] = 0
    if a_step and b_step:
        for i in range(0, n8, 8):
            for j in range(8):
                acc[j] += derivative(tag, a[i + j], b[i + j])
        for i in range(n8, n):
            acc[0] += derivative(tag, a[i], b[i])
    elif b_step:                    # a is a scalar expanded over b
        s = a[0]
        for i in range(0, n8, 8):
            for j in range(8):
                acc[j] += derivative(tag, s, b[i + j])
        for i in range(n8, n):
            acc[0] += derivative(tag, s, b[i])
    elif a_step:                    # b is a scalar expanded over a
        s = b[0]
        for i in range(0, n8, 8):
            for j in range(8):
                acc[j] += derivative(tag, a[i + j], s)
        for i in range(n8, n):
            acc[0] += derivative(tag, a[i], s)
    elif n > 0:
        acc[0] = derivative(tag, a[0], b[0])
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))


cdef double total(Derivative* tag,
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
                       floating* out, Py_ssize_t n) noexcept nogil:
    cdef int n_threads = threads_for(n)
    if summing:
        return total(tag, a, a_step, b, b_step, n, n_threads)
    apply(tag, a, a_step, b, b_step, out, n, n_threads)
    return 0


cdef double dispatch(int code, bint summing,
                     const floating* a, Py_ssize_t a_step,
                     const floating* b, Py_ssize_t b_step,
                     floating* out, Py_ssize_t n) noexcept nogil:
    if code == ADD_DA:
        return run(<AddDa*>NULL, summing, a, a_step, b, b_step, out, n)
    elif code == ADD_DB:
        return run(<AddDb*>NULL, summing, a, a_step, b, b_step, out, n)
    elif code == SUBTRACT_DA:
        return run(<SubtractDa*>NULL, summing, a, a_step, b, b_step, out, n)
    elif code == SUBTRACT_DB:
        return run(<SubtractDb*>NULL, summing, a, a_step, b, b_step, out, n)
    elif code == MULTIPLY_DA:
        return run(<MultiplyDa*>NULL, summing, a, a_step, b, b_step, out, n)
    elif code == MULTIPLY_DB:
        return run(<MultiplyDb*>NULL, summing, a, a_step, b, b_step, out, n)
    elif code == DIVIDE_DA:
        return run(<DivideDa*>NULL, summing, a, a_step, b, b_step, out, n)
    elif code == DIVIDE_DB:
        return run(<DivideDb*>NULL, summing, a, a_step, b, b_step, out, n)
    elif code == MAXIMUM_DA:
        return run(<MaximumDa*>NULL, summing, a, a_step, b, b_step, out, n)
    elif code == MAXIMUM_DB:
        return run(<MaximumDb*>NULL, summing, a, a_step, b, b_step, out, n)
    elif code == MINIMUM_DA:
        return run(<MinimumDa*>NULL, summing, a, a_step, b, b_step, out, n)
    elif code == MINIMUM_DB:
        return run(<MinimumDb*>NULL, summing, a, a_step, b, b_step, out, n)
    elif code == POWER_DA:
        return run(<PowerDa*>NULL, summing, a, a_step, b, b_step, out, n)
    elif code == POWER_DB:
        return run(<PowerDb*>NULL, summing, a, a_step, b, b_step, out, n)
    elif code == ZERO:
        return run(<Zero*>NULL, summing, a, a_step, b, b_step, out, n)
    elif code == ONE:
        return run(<One*>NULL, summing, a, a_step, b, b_step, out, n)
    elif code == NEGATIVE_D:
        return run(<NegativeD*>NULL, summing, a, a_step, b, b_step, out, n)
    elif code == SQUARE_D:
        return run(<SquareD*>NULL, summing, a, a_step, b, b_step, out, n)
    elif code == SQRT_D:
        return run(<SqrtD*>NULL, summing, a, a_step, b, b_step, out, n)
    elif code == EXP_D:
        return run(<ExpD*>NULL, summing, a, a_step, b, b_step, out, n)
    elif code == LOG_D:
        return run(<LogD*>NULL, summing, a, a_step, b, b_step, out, n)
    elif code == SIN_D:
        return run(<SinD*>NULL, summing, a, a_step, b, b_step, out, n)
    elif code == COS_D:
        return run(<CosD*>NULL, summing, a, a_step, b, b_step, out, n)
    elif code == TANH_D:
        return run(<TanhD*>NULL, summing, a, a_step, b, b_step, out, n)
    elif code == SIGMOID_D:
        return run(<SigmoidD*>NULL, summing, a, a_step, b, b_step, out, n)
    elif code == RELU_D:
        return run(<ReluD*>NULL, summing, a, a_step, b, b_step, out, n)
    elif code == ABS_D:
        return run(<AbsD*>NULL, summing, a, a_step, b, b_step, out, n)
    return 0


cdef void derivative_into(int code, const floating* a, Py_ssize_t a_step,
                          const floating* b, Py_ssize_t b_step,
                          floating* out, Py_ssize_t n) noexcept nogil:
    dispatch(code, False, a, a_step, b, b_step, out, n)


cdef double derivative_sum(int code, const floating* a, Py_ssize_t a_step,
                           const floating* b, Py_ssize_t b_step,
                           Py_ssize_t n) noexcept nogil:
    return dispatch(code, True, a, a_step, b, b_step, <floating*>NULL, n)


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


def openmp_threads():
    """Threads a large kernel call uses (1 in a build without OpenMP)."""
    return fastjac_max_threads()


def parallel_min_size():
    """Smallest number of elements for which a kernel uses several threads."""
    return PARALLEL_MIN_SIZE
