# The body of _level_baseline.pyx, _level_avx2.pyx and _level_avx512.pyx: the
# loops of _loops.pxd (the derivative kernels) and _expr_loops.pxd (the
# expression interpreter and the neuron pass) compiled for one instruction
# set, whose compiler flags are fastjac._simd.COMPILER_FLAGS[level]. Each
# module exports its two tables of function pointers; fastjac._simd.select,
# the only importer, installs them in _kernels and _expr.
#
# A module of a level the CPU lacks must never be imported: the compiler
# uses the wider encodings everywhere in it, module initialisation included.
# _simd asks cpu_simd() of the baseline module first; tables() checks again.

from cpython.pycapsule cimport PyCapsule_New

from ._expr_loops cimport exec_block, neuron_pass, row_pass, run_program
from ._loops cimport kernel
from ._rows cimport RowsTable, add_partials
from ._tables cimport ExprTable, KernelTable

cdef extern from "_cpu.h" nogil:
    int fastjac_cpu_simd()


def cpu_simd():
    """The highest level this CPU (and its OS) runs, as an index into
    fastjac._simd.LEVELS: 0 baseline, 1 AVX2 + FMA, 2 AVX-512."""
    return fastjac_cpu_simd()


cdef double kernel_f64(int code, bint summing, const double* a, Py_ssize_t a_step,
                       const double* b, Py_ssize_t b_step, double* out, Py_ssize_t n,
                       Py_ssize_t min_cheap, Py_ssize_t min_costly) noexcept nogil:
    return kernel(code, summing, a, a_step, b, b_step, out, n, min_cheap, min_costly)


cdef double kernel_f32(int code, bint summing, const float* a, Py_ssize_t a_step,
                       const float* b, Py_ssize_t b_step, float* out, Py_ssize_t n,
                       Py_ssize_t min_cheap, Py_ssize_t min_costly) noexcept nogil:
    return kernel(code, summing, a, a_step, b, b_step, out, n, min_cheap, min_costly)


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


cdef int batch_f64(const double* X, const double* w, const double* v, Py_ssize_t N, Py_ssize_t n,
                   const int* prog, Py_ssize_t n_instr, Py_ssize_t n_regs, const int* kind,
                   const int* index, const int* slot, Py_ssize_t n_slots, double** arrays,
                   int z_array, int t_array, const double* scalars, Py_ssize_t n_outs,
                   Py_ssize_t n_xw, Py_ssize_t n_xx, double** full_outs, Py_ssize_t n_acc,
                   Py_ssize_t compiled, double* result) noexcept nogil:
    return row_pass(X, w, v, N, n, prog, n_instr, n_regs, kind, index, slot, n_slots, arrays,
                    z_array, t_array, scalars, n_outs, n_xw, n_xx, full_outs, n_acc, compiled,
                    result)


cdef int batch_f32(const float* X, const float* w, const float* v, Py_ssize_t N, Py_ssize_t n,
                   const int* prog, Py_ssize_t n_instr, Py_ssize_t n_regs, const int* kind,
                   const int* index, const int* slot, Py_ssize_t n_slots, float** arrays,
                   int z_array, int t_array, const double* scalars, Py_ssize_t n_outs,
                   Py_ssize_t n_xw, Py_ssize_t n_xx, float** full_outs, Py_ssize_t n_acc,
                   Py_ssize_t compiled, double* result) noexcept nogil:
    return row_pass(X, w, v, N, n, prog, n_instr, n_regs, kind, index, slot, n_slots, arrays,
                    z_array, t_array, scalars, n_outs, n_xw, n_xx, full_outs, n_acc, compiled,
                    result)


cdef void block_f64(const int* prog, Py_ssize_t n_instr, double** R, double* acc,
                    Py_ssize_t m) noexcept nogil:
    exec_block(prog, n_instr, R, acc, m)


cdef void block_f32(const int* prog, Py_ssize_t n_instr, float** R, double* acc,
                    Py_ssize_t m) noexcept nogil:
    exec_block(prog, n_instr, R, acc, m)


cdef KernelTable KERNELS
KERNELS.f64 = kernel_f64
KERNELS.f32 = kernel_f32

cdef ExprTable EXPR
EXPR.program_f64 = program_f64
EXPR.program_f32 = program_f32
EXPR.neuron_f64 = neuron_f64
EXPR.neuron_f32 = neuron_f32
EXPR.batch_f64 = batch_f64
EXPR.batch_f32 = batch_f32
EXPR.block_f64 = block_f64
EXPR.block_f32 = block_f32


def tables():
    """(KernelTable capsule, ExprTable capsule) of this module's loops.

    Raises RuntimeError on a CPU without this module's instruction set."""
    if fastjac_cpu_simd() < LEVEL:
        raise RuntimeError(f"this CPU cannot run the loops of {__name__}")
    return (PyCapsule_New(<void*>&KERNELS, b"fastjac.KernelTable", NULL),
            PyCapsule_New(<void*>&EXPR, b"fastjac.ExprTable", NULL))


# The fused loop of the broadcast sums (_rows.pxd, for _broadcast_loops.pyx).

cdef bint rows_f64(int code, bint k_is_a, const double* k, const double* x,
                   double* lanes, Py_ssize_t n) noexcept nogil:
    return add_partials(code, k_is_a, k, x, lanes, n)


cdef bint rows_f32(int code, bint k_is_a, const float* k, const float* x,
                   double* lanes, Py_ssize_t n) noexcept nogil:
    return add_partials(code, k_is_a, k, x, lanes, n)


cdef RowsTable ROWS
ROWS.f64 = rows_f64
ROWS.f32 = rows_f32


def rows_table():
    """A RowsTable capsule of this module's fused broadcast-sum loop.

    Raises RuntimeError on a CPU without this module's instruction set."""
    if fastjac_cpu_simd() < LEVEL:
        raise RuntimeError(f"this CPU cannot run the loops of {__name__}")
    return PyCapsule_New(<void*>&ROWS, b"fastjac.RowsTable", NULL)
