# Design note
# -----------
# The fused pass behind compiled expressions (fastjac.compile, expr.py).
#
# expr.py turns an expression DAG into a *program*: a short list of
# instructions over *registers*, each register a block of BLOCK numbers.
# Forward mode is already spelled out in the program: for every variable we
# differentiate with respect to, the tangent of each node is computed by
# ordinary instructions (t_y = f'(a) * t_a, ...), so this file only knows how
# to run straight-line vector code, not calculus. Derivative formulas come
# from _derivatives.pxd through ``derivative_into`` of _kernels (one formula,
# one place): the DERIV instruction applies one of its codes to a block.
#
# Registers are of four kinds:
#   TEMP    scratch memory of the thread (L1-resident: BLOCK * 8 bytes each);
#   SCALAR  scratch filled once per thread with one number (a constant, a
#           scalar variable, a reduction computed by an earlier stage);
#   ARRAY   a window into an input array: no copy, each input is read once;
#   OUT     a window into an output array: the instruction that computes an
#           output writes it in place, so each output is written once.
#
# The data is cut into one contiguous chunk per thread (as in _kernels.pyx)
# and each chunk into blocks of BLOCK elements; the program runs on one block
# at a time. The ``switch`` on the opcode happens once per instruction and
# block, so every inner loop is a plain loop the compiler can vectorise, and
# no temporary ever has the length of the data.
#
# SUM instructions add a register's block into a per-thread accumulator (in
# double, four lanes); the thread totals are added in thread order, so a
# result does not depend on scheduling.
#
# Nothing here validates anything: expr.py has built a consistent program
# and _expr.pyx's callers (the Compiled object) have checked every array.

from cython.parallel cimport prange, threadid
from libc.stdlib cimport malloc, free
from libc.math cimport tanh, tanhf

import numpy as np
cimport numpy as cnp
from cpython.pystate cimport PyThreadState

from cython cimport floating
from ._derivatives cimport (f_exp, f_log, f_sqrt, f_sin, f_cos, f_pow, f_abs, v_sin, v_cos,
                            fj_trig_fast)
from ._kernels cimport derivative_into, threads_for

cdef extern from "Python.h":
    PyThreadState* PyEval_SaveThread() noexcept
    void PyEval_RestoreThread(PyThreadState*) noexcept

cnp.import_array()

cdef enum:
    BLOCK = 256            # elements per register: 2 KiB of float64
    MAX_THREADS = 256
    MAX_REGS = 4096

# Below this many elements the GIL is kept (as in _api.pyx).
cdef Py_ssize_t NOGIL_MIN_SIZE = 2048

# -- opcodes (mirrored by OPCODES for expr.py) -----------------------------------
cdef enum Opcode:
    OP_COPY
    OP_ADD
    OP_SUB
    OP_MUL
    OP_DIV
    OP_MAX
    OP_MIN
    OP_GT
    OP_LT
    OP_POW
    OP_NEG
    OP_SQUARE
    OP_SQRT
    OP_EXP
    OP_LOG
    OP_SIN
    OP_COS
    OP_TANH
    OP_SIGMOID
    OP_RELU
    OP_ABS
    OP_MULADD        # d = a * b + c
    OP_DERIV         # d = derivative(code c, a, b), formulas of _derivatives.pxd
    OP_SUM           # acc[d] += sum(a)

OPCODES = {
    "copy": OP_COPY, "add": OP_ADD, "subtract": OP_SUB, "multiply": OP_MUL,
    "divide": OP_DIV, "maximum": OP_MAX, "minimum": OP_MIN, "greater": OP_GT,
    "less": OP_LT, "power": OP_POW, "negative": OP_NEG, "square": OP_SQUARE,
    "sqrt": OP_SQRT, "exp": OP_EXP, "log": OP_LOG, "sin": OP_SIN, "cos": OP_COS,
    "tanh": OP_TANH, "sigmoid": OP_SIGMOID, "relu": OP_RELU, "abs": OP_ABS,
    "muladd": OP_MULADD, "deriv": OP_DERIV, "sum": OP_SUM,
}

# register kinds
cdef enum:
    K_TEMP = 0
    K_SCALAR = 1
    K_ARRAY = 2
    K_OUT = 3

REGISTER_KINDS = {"temp": K_TEMP, "scalar": K_SCALAR, "array": K_ARRAY, "out": K_OUT}
BLOCK_SIZE = BLOCK


cdef inline floating f_tanh(floating x) noexcept nogil:
    if floating is float:
        return tanhf(x)
    else:
        return tanh(x)


cdef inline floating f_sigmoid(floating x) noexcept nogil:
    # 1 / (1 + e) for x >= 0, e / (1 + e) below, e = exp(-|x|): never exp of
    # a large positive number, so no overflow and no cancellation; a select,
    # not a branch, so the loop vectorises (f_exp is _vecmath.h's).
    cdef floating e = f_exp(-f_abs(x))
    cdef floating s = 1 / (1 + e)
    return s if x >= 0 else e * s


cdef void trig_block(bint cosine, const floating* a, floating* d, Py_ssize_t m) noexcept nogil:
    """sin or cos of a block: vectorised (_vecmath.h), with the rare
    arguments beyond its range (|x| >= 2**17) redone on libm afterwards."""
    cdef Py_ssize_t i
    cdef int slow = 0
    if cosine:
        for i in range(m):
            d[i] = v_cos(a[i])
            slow |= not fj_trig_fast(a[i])
    else:
        for i in range(m):
            d[i] = v_sin(a[i])
            slow |= not fj_trig_fast(a[i])
    if slow:
        for i in range(m):
            if not fj_trig_fast(a[i]):
                d[i] = f_cos(a[i]) if cosine else f_sin(a[i])


cdef inline double block_sum(const floating* a, Py_ssize_t m) noexcept nogil:
    cdef double s0 = 0, s1 = 0, s2 = 0, s3 = 0
    cdef Py_ssize_t i, m4 = m - m % 4
    for i in range(0, m4, 4):
        s0 += a[i]
        s1 += a[i + 1]
        s2 += a[i + 2]
        s3 += a[i + 3]
    for i in range(m4, m):
        s0 += a[i]
    return (s0 + s1) + (s2 + s3)


cdef void exec_block(const int* prog, Py_ssize_t n_instr, floating** R,
                     double* acc, Py_ssize_t m) noexcept nogil:
    """Run the program once over one block of m elements."""
    cdef Py_ssize_t k, i
    cdef int op
    cdef floating* d
    cdef const floating* a
    cdef const floating* b
    cdef const floating* c
    cdef floating u, v
    for k in range(n_instr):
        op = prog[5 * k]
        if op == OP_SUM:
            acc[prog[5 * k + 1]] += block_sum(R[prog[5 * k + 2]], m)
            continue
        d = R[prog[5 * k + 1]]
        a = R[prog[5 * k + 2]]
        if op == OP_DERIV:
            derivative_into(prog[5 * k + 4], a, 1, R[prog[5 * k + 3]], 1, d, m)
            continue
        if op == OP_COPY:
            for i in range(m):
                d[i] = a[i]
        elif op == OP_NEG:
            for i in range(m):
                d[i] = -a[i]
        elif op == OP_SQUARE:
            for i in range(m):
                d[i] = a[i] * a[i]
        elif op == OP_SQRT:
            for i in range(m):
                d[i] = f_sqrt(a[i])
        elif op == OP_EXP:
            for i in range(m):
                d[i] = f_exp(a[i])
        elif op == OP_LOG:
            for i in range(m):
                d[i] = f_log(a[i])
        elif op == OP_SIN:
            trig_block(False, a, d, m)
        elif op == OP_COS:
            trig_block(True, a, d, m)
        elif op == OP_TANH:
            for i in range(m):
                d[i] = f_tanh(a[i])
        elif op == OP_SIGMOID:
            for i in range(m):
                d[i] = f_sigmoid(a[i])
        elif op == OP_RELU:
            for i in range(m):
                d[i] = 0 if a[i] <= 0 else a[i]      # NaN stays NaN
        elif op == OP_ABS:
            for i in range(m):
                d[i] = f_abs(a[i])
        else:
            b = R[prog[5 * k + 3]]
            if op == OP_ADD:
                for i in range(m):
                    d[i] = a[i] + b[i]
            elif op == OP_SUB:
                for i in range(m):
                    d[i] = a[i] - b[i]
            elif op == OP_MUL:
                for i in range(m):
                    d[i] = a[i] * b[i]
            elif op == OP_DIV:
                for i in range(m):
                    d[i] = a[i] / b[i]
            elif op == OP_MULADD:
                c = R[prog[5 * k + 4]]
                for i in range(m):
                    d[i] = a[i] * b[i] + c[i]
            elif op == OP_MAX:
                # NaN in either operand gives NaN, as np.maximum; two selects
                # (no branch), so the loop vectorises
                for i in range(m):
                    u = a[i]
                    v = b[i]
                    u = v if v > u else u           # a NaN u stays
                    d[i] = v if v != v else u       # a NaN v wins
            elif op == OP_MIN:
                for i in range(m):
                    u = a[i]
                    v = b[i]
                    u = v if v < u else u
                    d[i] = v if v != v else u
            elif op == OP_GT:
                for i in range(m):
                    d[i] = 1 if a[i] > b[i] else 0
            elif op == OP_LT:
                for i in range(m):
                    d[i] = 1 if a[i] < b[i] else 0
            elif op == OP_POW:
                for i in range(m):
                    d[i] = f_pow(a[i], b[i])


cdef void run_chunk(const int* prog, Py_ssize_t n_instr, Py_ssize_t n_regs,
                    const int* kind, const int* index, const int* slot,
                    floating** arrays, const double* scalars, floating** outs,
                    floating* scratch, floating** R, double* acc, Py_ssize_t n_acc,
                    Py_ssize_t start, Py_ssize_t stop) noexcept nogil:
    cdef Py_ssize_t r, i, pos, m
    cdef floating s
    for i in range(n_acc):
        acc[i] = 0
    for r in range(n_regs):
        if kind[r] == K_TEMP:
            R[r] = scratch + <Py_ssize_t>slot[r] * BLOCK
        elif kind[r] == K_SCALAR:
            R[r] = scratch + <Py_ssize_t>slot[r] * BLOCK
            s = <floating>scalars[index[r]]
            for i in range(BLOCK):
                R[r][i] = s
    pos = start
    while pos < stop:
        m = stop - pos
        if m > BLOCK:
            m = BLOCK
        for r in range(n_regs):
            if kind[r] == K_ARRAY:
                R[r] = arrays[index[r]] + pos
            elif kind[r] == K_OUT:
                R[r] = outs[index[r]] + pos
        exec_block(prog, n_instr, R, acc, m)
        pos += m


cdef int run_program(const int* prog, Py_ssize_t n_instr, Py_ssize_t n_regs,
                     const int* kind, const int* index, const int* slot, Py_ssize_t n_slots,
                     floating** arrays, const double* scalars, floating** outs,
                     double* sums, Py_ssize_t n_acc, Py_ssize_t n) noexcept nogil:
    """Run the program over n elements; sums[j] receives accumulator j. -1 on OOM."""
    cdef int n_threads = threads_for(n)
    cdef Py_ssize_t chunk, c, j, start, stop
    cdef Py_ssize_t per_thread = n_slots * BLOCK
    cdef floating* scratch = <floating*>malloc(
        (n_threads * per_thread + 1) * sizeof(floating))
    cdef floating** R = <floating**>malloc((n_threads * n_regs + 1) * sizeof(floating*))
    cdef double* acc = <double*>malloc((n_threads * n_acc + 1) * sizeof(double))
    if scratch == NULL or R == NULL or acc == NULL:
        free(scratch)
        free(R)
        free(acc)
        return -1
    if n_threads <= 1:
        run_chunk(prog, n_instr, n_regs, kind, index, slot, arrays, scalars, outs,
                  scratch, R, acc, n_acc, 0, n)
    else:
        # one contiguous chunk per thread, a whole number of blocks
        chunk = (n + n_threads - 1) // n_threads
        chunk = (chunk + BLOCK - 1) // BLOCK * BLOCK
        for c in prange(n_threads, num_threads=n_threads, schedule="static"):
            start = c * chunk
            stop = start + chunk
            if stop > n:
                stop = n
            if start < stop:
                run_chunk(prog, n_instr, n_regs, kind, index, slot, arrays, scalars, outs,
                          scratch + c * per_thread, R + c * n_regs, acc + c * n_acc,
                          n_acc, start, stop)
            else:
                for j in range(n_acc):
                    acc[c * n_acc + j] = 0
    for j in range(n_acc):
        sums[j] = 0
    for c in range(n_threads):
        for j in range(n_acc):
            sums[j] += acc[c * n_acc + j]
    free(scratch)
    free(R)
    free(acc)
    return 0


cdef class Program:
    """A compiled straight-line program; see the design note.

    Built by expr.py (``_build_stage``); ``run`` executes it over n elements.
    """
    cdef readonly cnp.ndarray prog, kind, index, slot
    cdef readonly Py_ssize_t n_instr, n_regs, n_slots, n_acc, n_arrays, n_scalars, n_outs
    cdef readonly object listing          # human-readable instructions (debugging)

    def __init__(self, prog, kind, index, slot, n_slots, n_acc, n_arrays, n_scalars,
                 n_outs, listing=None):
        self.prog = np.ascontiguousarray(prog, dtype=np.intc).reshape(-1)
        self.kind = np.ascontiguousarray(kind, dtype=np.intc)
        self.index = np.ascontiguousarray(index, dtype=np.intc)
        self.slot = np.ascontiguousarray(slot, dtype=np.intc)
        self.n_instr = self.prog.shape[0] // 5
        self.n_regs = self.kind.shape[0]
        if self.n_regs > MAX_REGS:
            raise ValueError(f"expression too large: {self.n_regs} registers "
                             f"(at most {MAX_REGS})")
        self.n_slots = n_slots
        self.n_acc = n_acc
        self.n_arrays = n_arrays
        self.n_scalars = n_scalars
        self.n_outs = n_outs
        self.listing = listing

    cpdef list run(self, tuple arrays, object scalars, tuple outs, Py_ssize_t n,
                   bint is_double):
        """Run over n elements.

        arrays, outs: C-contiguous arrays of the run's dtype, at least n long
        (checked by the caller); scalars: float values of the SCALAR
        registers' indices. Returns the n_acc sums as Python floats.
        """
        cdef void* aptr[64]
        cdef void* optr[64]
        cdef double svals[256]
        cdef double sums[256]
        cdef Py_ssize_t i
        cdef int status
        cdef PyThreadState* state = NULL
        if len(arrays) != self.n_arrays or len(outs) != self.n_outs or \
                len(scalars) != self.n_scalars:
            raise ValueError("internal error: program called with the wrong operands")
        if self.n_arrays > 64 or self.n_outs > 64 or self.n_scalars > 256 or self.n_acc > 256:
            raise ValueError("expression too large for one fused pass")
        for i in range(self.n_arrays):
            aptr[i] = cnp.PyArray_DATA(<cnp.ndarray>arrays[i])
        for i in range(self.n_outs):
            optr[i] = cnp.PyArray_DATA(<cnp.ndarray>outs[i])
        for i in range(self.n_scalars):
            svals[i] = scalars[i]
        cdef const int* prog = <const int*>cnp.PyArray_DATA(self.prog)
        cdef const int* kind = <const int*>cnp.PyArray_DATA(self.kind)
        cdef const int* index = <const int*>cnp.PyArray_DATA(self.index)
        cdef const int* slot = <const int*>cnp.PyArray_DATA(self.slot)
        if n >= NOGIL_MIN_SIZE:
            state = PyEval_SaveThread()
        if is_double:
            status = run_program(prog, self.n_instr, self.n_regs, kind, index, slot,
                                 self.n_slots, <double**>aptr, svals, <double**>optr,
                                 sums, self.n_acc, n)
        else:
            status = run_program(prog, self.n_instr, self.n_regs, kind, index, slot,
                                 self.n_slots, <float**>aptr, svals, <float**>optr,
                                 sums, self.n_acc, n)
        if state != NULL:
            PyEval_RestoreThread(state)
        if status != 0:
            raise MemoryError("fastjac: could not allocate scratch registers")
        return [sums[i] for i in range(self.n_acc)]


# -- hot loops: a resolved derivative, called with arrays only --------------------

cdef class FastPlan:
    """One signature of an ExprKernel: the program and where each result lands."""
    cdef public Program program
    cdef public cnp.ndarray array_pos      # program array j <- argument array_pos[j]
    cdef public cnp.ndarray scalar_pos     # program scalar j <- argument (or -1: constant)
    cdef public cnp.ndarray scalar_const   # constant values where scalar_pos == -1
    cdef public int value_out, value_acc   # out / accumulator index of the value, or -1
    cdef public int tan_out, tan_acc       # same for the tangent (both -1: zero)
    cdef public bint is_sum


cdef class ExprKernel:
    """A compiled derivative resolved once, for calls inside a hot loop.

    Obtain one with :meth:`CompiledExpression.kernel`. Call it with one
    ndarray per variable (in the order of ``compiled.variables``; a 0-d
    array for a scalar), then ``out`` for the compact Jacobian, and, when
    created with ``value=True``, ``value_out`` before it:
    ``k(w, x, out)`` or ``k(w, x, value_out, out)``. It returns ``out``.

    Like :class:`fastjac.Kernel` it skips the conveniences of
    ``jacobian``: every argument must be a C-contiguous, aligned, native
    ndarray of one dtype, float32 or float64, and the outputs must have the
    exact shape of the results; the checks that remain keep a wrong call
    from crashing or computing garbage.
    """
    cdef readonly object compiled
    cdef readonly str wrt
    cdef readonly bint with_value
    cdef readonly int n_vars
    cdef dict plans

    def __init__(self, compiled, wrt, with_value):
        self.compiled = compiled
        self.wrt = wrt
        self.with_value = with_value
        self.n_vars = len(compiled.variables)
        self.plans = {}

    def __repr__(self):
        return (f"<fastjac expression kernel d/d{self.wrt} "
                f"({', '.join(self.compiled.variables)}"
                f"{', value_out' if self.with_value else ''}, out)>")

    def __call__(self, *args):
        cdef Py_ssize_t nargs = len(args), i, n = 1
        cdef Py_ssize_t n_out_args = 2 if self.with_value else 1
        cdef cnp.ndarray arr, shaped = None, out, vout = None
        cdef int t, mask = 0
        cdef FastPlan plan
        cdef Program prog
        cdef void* aptr[64]
        cdef void* optr[64]
        cdef double svals[256]
        cdef double sums[256]
        cdef const int* pos
        cdef int status
        cdef PyThreadState* state = NULL
        if nargs != self.n_vars + n_out_args:
            raise TypeError(
                f"this kernel takes {self.n_vars + n_out_args} arrays "
                f"({', '.join(self.compiled.variables)}"
                f"{', value_out' if self.with_value else ''}, out), got {nargs}")
        for i in range(nargs):
            if not cnp.PyArray_CheckExact(args[i]):
                raise TypeError("kernel arguments must all be numpy.ndarray (use "
                                "CompiledExpression.jacobian for lists and Python numbers)")
        out = <cnp.ndarray>args[nargs - 1]
        t = cnp.PyArray_TYPE(out)
        if t != cnp.NPY_DOUBLE and t != cnp.NPY_FLOAT:
            raise TypeError(f"kernel arrays must share one dtype, float32 or float64; "
                            f"out has {(<object>out).dtype}")
        for i in range(nargs):
            arr = <cnp.ndarray>args[i]
            if cnp.PyArray_TYPE(arr) != t:
                raise TypeError(f"kernel arrays must share one dtype, float32 or float64; "
                                f"got {(<object>arr).dtype} and out {(<object>out).dtype}")
            if not (cnp.PyArray_ISCARRAY_RO(arr) and cnp.PyArray_ISNOTSWAPPED(arr)):
                raise ValueError("kernel arrays must be C-contiguous, aligned and in native "
                                 "byte order")
            if i < self.n_vars:
                if cnp.PyArray_NDIM(arr) == 0:
                    mask |= 1 << i
                elif shaped is None:
                    shaped = arr
                elif not cnp.PyArray_SAMESHAPE(arr, shaped):
                    raise ValueError(
                        f"{self.compiled.variables[i]} has shape {(<object>arr).shape} but another "
                        f"variable has shape {(<object>shaped).shape}; they must match")
            elif not cnp.PyArray_ISWRITEABLE(arr):
                raise ValueError("out is read-only; pass a writeable array")
        if self.with_value:
            vout = <cnp.ndarray>args[self.n_vars]
        plan = self.plans.get(mask)
        if plan is None:
            plan = self.compiled._fast_plan(self.wrt, mask, self.with_value)
            self.plans[mask] = plan
        if shaped is not None:
            n = cnp.PyArray_SIZE(shaped)
        # output shapes: the data's shape, or () after a sum / for a sum of a scalar
        self._check_out(out, shaped, plan.tan_acc >= 0, "out")
        if vout is not None:
            self._check_out(vout, shaped, plan.is_sum, "value_out")
        for i in range(self.n_vars):
            arr = <cnp.ndarray>args[i]
            if _overlaps(arr, out) or (vout is not None and _overlaps(arr, vout)):
                raise ValueError("out overlaps an input; use a separate array")
        if vout is not None and _overlaps(out, vout):
            raise ValueError("out and value_out overlap; use separate arrays")
        prog = plan.program
        pos = <const int*>cnp.PyArray_DATA(plan.array_pos)
        for i in range(prog.n_arrays):
            aptr[i] = cnp.PyArray_DATA(<cnp.ndarray>args[pos[i]])
        pos = <const int*>cnp.PyArray_DATA(plan.scalar_pos)
        cdef const double* consts = <const double*>cnp.PyArray_DATA(plan.scalar_const)
        for i in range(prog.n_scalars):
            if pos[i] < 0:
                svals[i] = consts[i]
            else:
                arr = <cnp.ndarray>args[pos[i]]
                if t == cnp.NPY_DOUBLE:
                    svals[i] = (<double*>cnp.PyArray_DATA(arr))[0]
                else:
                    svals[i] = (<float*>cnp.PyArray_DATA(arr))[0]
        for i in range(prog.n_outs):
            optr[i] = NULL
        if plan.tan_out >= 0:
            optr[plan.tan_out] = cnp.PyArray_DATA(out)
        if plan.value_out >= 0:
            optr[plan.value_out] = cnp.PyArray_DATA(vout)
        if n >= NOGIL_MIN_SIZE:
            state = PyEval_SaveThread()
        if t == cnp.NPY_DOUBLE:
            status = run_program(
                <const int*>cnp.PyArray_DATA(prog.prog), prog.n_instr, prog.n_regs,
                <const int*>cnp.PyArray_DATA(prog.kind), <const int*>cnp.PyArray_DATA(prog.index),
                <const int*>cnp.PyArray_DATA(prog.slot), prog.n_slots,
                <double**>aptr, svals, <double**>optr, sums, prog.n_acc, n)
        else:
            status = run_program(
                <const int*>cnp.PyArray_DATA(prog.prog), prog.n_instr, prog.n_regs,
                <const int*>cnp.PyArray_DATA(prog.kind), <const int*>cnp.PyArray_DATA(prog.index),
                <const int*>cnp.PyArray_DATA(prog.slot), prog.n_slots,
                <float**>aptr, svals, <float**>optr, sums, prog.n_acc, n)
        if state != NULL:
            PyEval_RestoreThread(state)
        if status != 0:
            raise MemoryError("fastjac: could not allocate scratch registers")
        if plan.tan_acc >= 0:
            _store0(out, sums[plan.tan_acc], t)
        elif plan.tan_out < 0:
            out[...] = 0                    # structurally zero
        if plan.value_acc >= 0:
            _store0(vout, sums[plan.value_acc], t)
        return out

    cdef int _check_out(self, cnp.ndarray o, cnp.ndarray shaped, bint scalar,
                        str name) except -1:
        cdef bint ok
        if scalar or shaped is None:
            ok = cnp.PyArray_NDIM(o) == 0
        else:
            ok = cnp.PyArray_SAMESHAPE(o, shaped)
        if not ok:
            raise ValueError(
                f"{name} has shape {(<object>o).shape} but the result has shape "
                f"{() if (scalar or shaped is None) else (<object>shaped).shape}; they must match")
        return 0


cdef inline bint _overlaps(cnp.ndarray x, cnp.ndarray y):
    cdef char* x0 = <char*>cnp.PyArray_DATA(x)
    cdef char* y0 = <char*>cnp.PyArray_DATA(y)
    return x0 < y0 + cnp.PyArray_NBYTES(y) and y0 < x0 + cnp.PyArray_NBYTES(x)


cdef inline void _store0(cnp.ndarray o, double v, int t):
    if t == cnp.NPY_DOUBLE:
        (<double*>cnp.PyArray_DATA(o))[0] = v
    else:
        (<float*>cnp.PyArray_DATA(o))[0] = <float>v


def overlaps(cnp.ndarray x, cnp.ndarray y):
    """True when the (contiguous) buffers of x and y share a byte."""
    return _overlaps(x, y)
