# The loops behind every derivative; see _kernels.pyx.
from cython cimport floating

# The derivative codes (DerivativeCode) are declared in _derivatives.pxd,
# next to the tags they name.

cdef void derivative_into(int code, const floating* a, Py_ssize_t a_step,
                          const floating* b, Py_ssize_t b_step,
                          floating* out, Py_ssize_t n) noexcept nogil

cdef double derivative_sum(int code, const floating* a, Py_ssize_t a_step,
                           const floating* b, Py_ssize_t b_step,
                           Py_ssize_t n) noexcept nogil

cdef bint in_chunks(Py_ssize_t n) noexcept nogil
