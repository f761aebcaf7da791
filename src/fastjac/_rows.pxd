# The fused loop of the broadcast sums (_broadcast_loops.pyx): compiled into
# every _level_*.pyx module from _level.pxi, like the loops of _loops.pxd,
# and fetched from the module of the level in use (``rows_table()``).
#
# ``add_partials``: lanes[t] += d(k_t, x_t) (or d(x_t, k_t) when k is
# operand b) for t < n: the partials of a block of rows added straight
# into double accumulators, with no buffer between the derivative and the
# sum. Each partial is rounded to the operands' float type first, as the
# kernels of _loops.pxd round their results, so the sums are those of
# adding the kernels' partials.
#
# Tags whose formula is not valid everywhere (has_exceptions) first look
# for an exceptional element in the block (a vectorised OR, on data then in
# the cache) and, only if there is one, take each element on its own path.

from cython cimport floating

from ._derivatives cimport *

ctypedef bint (*rows_f64_t)(int code, bint k_is_a, const double* k, const double* x,
                            double* lanes, Py_ssize_t n) noexcept nogil
ctypedef bint (*rows_f32_t)(int code, bint k_is_a, const float* k, const float* x,
                            double* lanes, Py_ssize_t n) noexcept nogil

cdef struct RowsTable:
    rows_f64_t f64
    rows_f32_t f32


cdef inline void add_span(Derivative* tag, const floating* a, const floating* b,
                          double* lanes, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t t
    cdef int rare = 0
    cdef floating d
    if has_exceptions(tag):
        for t in range(n):
            rare |= exceptional(tag, a[t], b[t])
    if not rare:
        for t in range(n):
            d = derivative(tag, a[t], b[t])
            lanes[t] += d
        return
    for t in range(n):
        if exceptional(tag, a[t], b[t]):
            d = derivative_exceptional(tag, a[t], b[t])
        else:
            d = derivative(tag, a[t], b[t])
        lanes[t] += d


cdef inline void add_tag(Derivative* tag, bint k_is_a, const floating* k, const floating* x,
                         double* lanes, Py_ssize_t n) noexcept nogil:
    if k_is_a:
        add_span(tag, k, x, lanes, n)
    else:
        add_span(tag, x, k, lanes, n)


cdef inline bint add_partials(int code, bint k_is_a, const floating* k, const floating* x,
                              double* lanes, Py_ssize_t n) noexcept nogil:
    """lanes[t] += d(k_t, x_t) for the derivatives of the binary operators
    (and their second derivatives); False, and nothing done, for any other
    code."""
    if code == ADD_DA:
        add_tag(<AddDa*>NULL, k_is_a, k, x, lanes, n)
    elif code == ADD_DB:
        add_tag(<AddDb*>NULL, k_is_a, k, x, lanes, n)
    elif code == SUBTRACT_DA:
        add_tag(<SubtractDa*>NULL, k_is_a, k, x, lanes, n)
    elif code == SUBTRACT_DB:
        add_tag(<SubtractDb*>NULL, k_is_a, k, x, lanes, n)
    elif code == MULTIPLY_DA:
        add_tag(<MultiplyDa*>NULL, k_is_a, k, x, lanes, n)
    elif code == MULTIPLY_DB:
        add_tag(<MultiplyDb*>NULL, k_is_a, k, x, lanes, n)
    elif code == DIVIDE_DA:
        add_tag(<DivideDa*>NULL, k_is_a, k, x, lanes, n)
    elif code == DIVIDE_DB:
        add_tag(<DivideDb*>NULL, k_is_a, k, x, lanes, n)
    elif code == MAXIMUM_DA:
        add_tag(<MaximumDa*>NULL, k_is_a, k, x, lanes, n)
    elif code == MAXIMUM_DB:
        add_tag(<MaximumDb*>NULL, k_is_a, k, x, lanes, n)
    elif code == MINIMUM_DA:
        add_tag(<MinimumDa*>NULL, k_is_a, k, x, lanes, n)
    elif code == MINIMUM_DB:
        add_tag(<MinimumDb*>NULL, k_is_a, k, x, lanes, n)
    elif code == POWER_DA:
        add_tag(<PowerDa*>NULL, k_is_a, k, x, lanes, n)
    elif code == POWER_DB:
        add_tag(<PowerDb*>NULL, k_is_a, k, x, lanes, n)
    elif code == ZERO:
        add_tag(<Zero*>NULL, k_is_a, k, x, lanes, n)
    elif code == LOGADDEXP_DA:
        add_tag(<LogaddexpDa*>NULL, k_is_a, k, x, lanes, n)
    elif code == LOGADDEXP_DB:
        add_tag(<LogaddexpDb*>NULL, k_is_a, k, x, lanes, n)
    # second derivatives with respect to one operand (sum_hessian)
    elif code == DIVIDE_DBB:
        add_tag(<DivideDbb*>NULL, k_is_a, k, x, lanes, n)
    elif code == POWER_DAA:
        add_tag(<PowerDaa*>NULL, k_is_a, k, x, lanes, n)
    elif code == POWER_DBB:
        add_tag(<PowerDbb*>NULL, k_is_a, k, x, lanes, n)
    elif code == LOGADDEXP_DAA:
        add_tag(<LogaddexpDaa*>NULL, k_is_a, k, x, lanes, n)
    else:
        return False
    return True
