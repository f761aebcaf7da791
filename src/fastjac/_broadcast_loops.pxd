# The C entry of _broadcast_loops.pyx's sum over rows (cimported by _api.pyx,
# whose fast path for a shared parameter calls it without a Python call).

cdef int sum_rows_into(int code, bint k_is_a, int typenum, const void* k, const void* x,
                       Py_ssize_t rows, Py_ssize_t width, double* total) except -1
