# The loops behind every derivative; see _kernels.pyx.
from cython cimport floating

# One code per tag of _derivatives.pxd, so that Python can name a derivative
# by an integer and the kernels turn it back into a compile-time tag.
cdef enum DerivativeCode:
    ADD_DA
    ADD_DB
    SUBTRACT_DA
    SUBTRACT_DB
    MULTIPLY_DA
    MULTIPLY_DB
    DIVIDE_DA
    DIVIDE_DB
    MAXIMUM_DA
    MAXIMUM_DB
    MINIMUM_DA
    MINIMUM_DB
    POWER_DA
    POWER_DB
    ZERO
    ONE
    NEGATIVE_D
    SQUARE_D
    SQRT_D
    EXP_D
    LOG_D
    SIN_D
    COS_D
    TANH_D
    SIGMOID_D
    RELU_D
    ABS_D
    N_DERIVATIVE_CODES

cdef void derivative_into(int code, const floating* a, Py_ssize_t a_step,
                          const floating* b, Py_ssize_t b_step,
                          floating* out, Py_ssize_t n) noexcept nogil

cdef double derivative_sum(int code, const floating* a, Py_ssize_t a_step,
                           const floating* b, Py_ssize_t b_step,
                           Py_ssize_t n) noexcept nogil

cdef int threads_for(Py_ssize_t n) noexcept nogil
