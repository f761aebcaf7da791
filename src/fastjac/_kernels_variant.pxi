# The body of _kernels_avx2.pyx and _kernels_avx512.pyx: the loops of
# _loops.pxd compiled for one instruction set (the flags are in setup.py),
# exported as a KernelTable that _kernels.pyx takes at import, and only on a
# CPU that runs them. Nothing else here: importing this module must execute
# as little as possible.

from cpython.pycapsule cimport PyCapsule_New

from ._loops cimport KernelTable, kernel


cdef double run_f64(int code, bint summing, const double* a, Py_ssize_t a_step,
                    const double* b, Py_ssize_t b_step, double* out, Py_ssize_t n,
                    Py_ssize_t min_cheap, Py_ssize_t min_costly) noexcept nogil:
    return kernel(code, summing, a, a_step, b, b_step, out, n, min_cheap, min_costly)


cdef double run_f32(int code, bint summing, const float* a, Py_ssize_t a_step,
                    const float* b, Py_ssize_t b_step, float* out, Py_ssize_t n,
                    Py_ssize_t min_cheap, Py_ssize_t min_costly) noexcept nogil:
    return kernel(code, summing, a, a_step, b, b_step, out, n, min_cheap, min_costly)


cdef KernelTable TABLE
TABLE.f64 = run_f64
TABLE.f32 = run_f32


def kernel_table():
    """A capsule holding this module's KernelTable, for _kernels.pyx."""
    return PyCapsule_New(<void*>&TABLE, b"fastjac.KernelTable", NULL)
