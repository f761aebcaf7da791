# The tables of function pointers through which the loops of one instruction
# set are called: each _level_* module (_level.pxi) fills one KernelTable
# (``kernel`` of _loops.pxd, for _kernels.pyx) and one ExprTable
# (``run_program``, ``neuron_pass`` and ``row_pass`` of _expr_loops.pxd, for _expr.pyx and
# _neuron.pyx), and fastjac._simd installs those of the level it chose.
#
# Declared apart from the loops: Cython compiles every inline function of a
# .pxd into each module that cimports it, so a module that only calls
# through a table would otherwise carry (and compile) every loop.

# -- the derivative kernels ----------------------------------------------------

ctypedef double (*run_f64_t)(int code, bint summing, const double* a, Py_ssize_t a_step,
                             const double* b, Py_ssize_t b_step, double* out, Py_ssize_t n,
                             Py_ssize_t min_cheap, Py_ssize_t min_costly) noexcept nogil
ctypedef double (*run_f32_t)(int code, bint summing, const float* a, Py_ssize_t a_step,
                             const float* b, Py_ssize_t b_step, float* out, Py_ssize_t n,
                             Py_ssize_t min_cheap, Py_ssize_t min_costly) noexcept nogil

cdef struct KernelTable:
    run_f64_t f64
    run_f32_t f32


# -- the expression interpreter and the neuron pass -----------------------------

ctypedef int (*program_f64_t)(const int* prog, Py_ssize_t n_instr, Py_ssize_t n_regs,
                              const int* kind, const int* index, const int* slot,
                              Py_ssize_t n_slots, double** arrays, const double* scalars,
                              double** outs, double* sums, Py_ssize_t n_acc,
                              Py_ssize_t n) noexcept nogil
ctypedef int (*program_f32_t)(const int* prog, Py_ssize_t n_instr, Py_ssize_t n_regs,
                              const int* kind, const int* index, const int* slot,
                              Py_ssize_t n_slots, float** arrays, const double* scalars,
                              float** outs, double* sums, Py_ssize_t n_acc,
                              Py_ssize_t n) noexcept nogil
ctypedef int (*neuron_f64_t)(const double* X, const double* y, const double* w, double b,
                             Py_ssize_t N, Py_ssize_t n, double* gw,
                             double* gb_loss) noexcept nogil
ctypedef int (*neuron_f32_t)(const float* X, const float* y, const float* w, double b,
                             Py_ssize_t N, Py_ssize_t n, double* gw,
                             double* gb_loss) noexcept nogil

ctypedef int (*batch_f64_t)(const double* X, const double* w, const double* v,
                           Py_ssize_t N, Py_ssize_t n, const int* prog, Py_ssize_t n_instr,
                           Py_ssize_t n_regs, const int* kind, const int* index,
                           const int* slot, Py_ssize_t n_slots, double** arrays, int z_array,
                           int t_array, const double* scalars, Py_ssize_t n_outs,
                           Py_ssize_t n_xw, Py_ssize_t n_xx, double** full_outs,
                           Py_ssize_t n_acc, Py_ssize_t compiled, double* result) noexcept nogil
ctypedef int (*batch_f32_t)(const float* X, const float* w, const float* v,
                           Py_ssize_t N, Py_ssize_t n, const int* prog, Py_ssize_t n_instr,
                           Py_ssize_t n_regs, const int* kind, const int* index,
                           const int* slot, Py_ssize_t n_slots, float** arrays, int z_array,
                           int t_array, const double* scalars, Py_ssize_t n_outs,
                           Py_ssize_t n_xw, Py_ssize_t n_xx, float** full_outs,
                           Py_ssize_t n_acc, Py_ssize_t compiled, double* result) noexcept nogil

# One block of m elements through the interpreter (exec_block of
# _expr_loops.pxd): _jit.py's compiled loops call it for the instructions
# they do not compile themselves, so those give the interpreter's bits.
ctypedef void (*block_f64_t)(const int* prog, Py_ssize_t n_instr, double** R, double* acc,
                             Py_ssize_t m) noexcept nogil
ctypedef void (*block_f32_t)(const int* prog, Py_ssize_t n_instr, float** R, double* acc,
                             Py_ssize_t m) noexcept nogil

cdef struct ExprTable:
    program_f64_t program_f64
    program_f32_t program_f32
    neuron_f64_t neuron_f64
    neuron_f32_t neuron_f32
    batch_f64_t batch_f64        # a batch loss's pass over the rows of X
    batch_f32_t batch_f32
    block_f64_t block_f64        # the interpreter on one block, for _jit.py
    block_f32_t block_f32
