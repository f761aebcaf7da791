# The C entries of _broadcast_loops.pyx's sums over rows and along rows
# (cimported by _api.pyx, whose fast path for a shared parameter or a
# per-row scale calls them without a Python call).

cdef int sum_rows_into(int code, bint k_is_a, int typenum, const void* k, const void* x,
                       Py_ssize_t rows, Py_ssize_t width, double* total) except -1

cdef int sum_inner_into(int code, bint k_is_a, int typenum, const void* k, const void* x,
                        Py_ssize_t rows, Py_ssize_t length, double* total) except -1
