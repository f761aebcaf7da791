# The body of _expr_avx2.pyx and _expr_avx512.pyx (and the baseline table
# of _expr.pyx): the loops of _expr_loops.pxd compiled for one instruction
# set (the flags are in setup.py), exported as an ExprTable that _expr.pyx
# takes at import, and only on a CPU that runs them.

from cpython.pycapsule cimport PyCapsule_New

from ._expr_loops cimport ExprTable, neuron_pass, run_program


cdef int program_f64(const int* prog, Py_ssize_t n_instr, Py_ssize_t n_regs,
                     const int* kind, const int* index, const int* slot, Py_ssize_t n_slots,
                     double** arrays, const double* scalars, double** outs, double* sums,
                     Py_ssize_t n_acc, Py_ssize_t n) noexcept nogil:
    return run_program(prog, n_instr, n_regs, kind, index, slot, n_slots, arrays, scalars,
                       outs, sums, n_acc, n)


cdef int program_f32(const int* prog, Py_ssize_t n_instr, Py_ssize_t n_regs,
                     const int* kind, const int* index, const int* slot, Py_ssize_t n_slots,
                     float** arrays, const double* scalars, float** outs, double* sums,
                     Py_ssize_t n_acc, Py_ssize_t n) noexcept nogil:
    return run_program(prog, n_instr, n_regs, kind, index, slot, n_slots, arrays, scalars,
                       outs, sums, n_acc, n)


cdef int neuron_f64(const double* X, const double* y, const double* w, double b,
                    Py_ssize_t N, Py_ssize_t n, double* gw, double* gb_loss) noexcept nogil:
    return neuron_pass(X, y, w, b, N, n, gw, gb_loss)


cdef int neuron_f32(const float* X, const float* y, const float* w, double b,
                    Py_ssize_t N, Py_ssize_t n, double* gw, double* gb_loss) noexcept nogil:
    return neuron_pass(X, y, w, b, N, n, gw, gb_loss)


cdef ExprTable TABLE
TABLE.program_f64 = program_f64
TABLE.program_f32 = program_f32
TABLE.neuron_f64 = neuron_f64
TABLE.neuron_f32 = neuron_f32


def expr_table():
    """A capsule holding this module's ExprTable, for _expr.pyx."""
    return PyCapsule_New(<void*>&TABLE, b"fastjac.ExprTable", NULL)
