# Design note
# -----------
# The fused pass behind compiled expressions (fastjac.compile, _compiled.py): the
# Python-facing ``Program`` (one stage's straight-line block program) and
# ``ExprKernel`` (a resolved derivative for hot loops). The loops themselves
# are in _expr_loops.pxd (see its design note), compiled once per
# instruction set in the _level_* modules; fastjac._simd.select installs the
# table (``ExprTable``) of the level it chose, the level of the core kernels.
#
# Nothing here validates a program: _planner.py has built a consistent one. The
# arrays are checked by the callers (_compiled.py, or ExprKernel.__call__).

import numpy as np
cimport cython
cimport numpy as cnp
from cpython.dict cimport PyDict_GetItem
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.object cimport PyObject
from cpython.pycapsule cimport PyCapsule_GetPointer, PyCapsule_New
from cpython.pystate cimport PyThreadState
from cpython.ref cimport Py_INCREF
from cpython.sequence cimport PySequence_Fast_ITEMS

from libc.math cimport NAN
from libc.stdlib cimport free, malloc

from ._expr_loops cimport *
from ._kernels cimport in_chunks
from ._limits cimport NOGIL_MIN_SIZE
from ._pool cimport parallel_for, pool_threads
from ._tables cimport ExprTable
from ._operators import opcode_names as _opcode_names

cdef extern from "Python.h":
    PyThreadState* PyEval_SaveThread() noexcept
    void PyEval_RestoreThread(PyThreadState*) noexcept

cdef extern from "numpy/arrayobject.h":
    # a NumPy scalar of descr's type from the bytes at data (descr is not stolen)
    object PyArray_Scalar(void* data, cnp.dtype descr, object base)
    # the vectorcall protocol (PEP 590), for ExprKernel's calls
    ctypedef PyObject* (*vectorcallfunc)(PyObject*, PyObject* const*, size_t, PyObject*)
    Py_ssize_t PyVectorcall_NARGS(size_t nargsf) noexcept
    unsigned long Py_TPFLAGS_HAVE_VECTORCALL
    ctypedef struct TypeSlots "PyTypeObject":
        Py_ssize_t tp_vectorcall_offset
        unsigned long tp_flags
    void PyType_Modified(TypeSlots*) noexcept

cnp.import_array()

cdef enum:
    MAX_REGS = 4096
    MAX_KERNEL_ARGS = 66         # bound on the stack by ExprKernel's keyword calls

# instruction name -> opcode, in the order of the enum generated from the
# same list (_operators.opcode_names)
OPCODES = {name: code for code, name in enumerate(_opcode_names())}
if len(OPCODES) != N_OPCODES:
    raise ImportError("fastjac._expr was built from other operator records than "
                      "fastjac._operators holds: build it again")
REGISTER_KINDS = {"temp": K_TEMP, "scalar": K_SCALAR, "array": K_ARRAY, "out": K_OUT}
BLOCK_SIZE = BLOCK
STREAM_BYTES = STREAM_MIN_BYTES     # outputs of this many bytes and more: non-temporal stores

# -- the loops in use -------------------------------------------------------------

cdef ExprTable CURRENT


def _use_table(capsule):
    """Run the loops of an ExprTable capsule from now on (for
    fastjac._simd.select, which chose a level this CPU runs)."""
    global CURRENT
    CURRENT = (<ExprTable*>PyCapsule_GetPointer(capsule, b"fastjac.ExprTable"))[0]


def current_table():
    """A capsule pointing at the ExprTable in use (for _neuron.pyx); the
    struct is updated in place by _use_table())."""
    return PyCapsule_New(<void*>&CURRENT, b"fastjac.ExprTable", NULL)


def block_address(capsule, bint is_double):
    """The address of the interpreter's one-block function (exec_block) in
    an ExprTable capsule, for the given dtype: _jit.py's compiled loops call
    it for the instructions they leave to the interpreter."""
    cdef ExprTable* table = <ExprTable*>PyCapsule_GetPointer(capsule, b"fastjac.ExprTable")
    return <Py_ssize_t>(table.block_f64 if is_double else table.block_f32)


from . import _level_baseline                    # runs anywhere, until _simd.select()
_use_table(_level_baseline.tables()[1])


# A Program's instructions as C values, for the code that runs it without
# the GIL: there, touching a Python object -- even the reference count that
# Cython adds around an attribute such as ``prog.kind`` -- races with the
# other threads running the same program (two threads incrementing one count
# at once lose an update; the array is freed while in use).
cdef struct ProgramView:
    const int* code
    const int* kind
    const int* index
    const int* slot
    Py_ssize_t n_instr, n_regs, n_slots, n_acc


cdef class Program:
    """A compiled straight-line program; see the design note.

    Built by _planner.py (``_build_stage``); ``run`` executes it over n elements.
    Its arrays are private copies, read-only, so ``view`` (their C pointers,
    set once) stays valid for the Program's life.
    """
    cdef readonly cnp.ndarray prog, kind, index, slot
    cdef ProgramView view
    cdef readonly Py_ssize_t n_instr, n_regs, n_slots, n_acc, n_arrays, n_scalars, n_outs
    cdef readonly object listing          # human-readable instructions (debugging)
    # fused C code of _jit.py: the address of its chunk function per dtype,
    # 0 before the first large call, -1 where the interpreter runs
    cdef readonly Py_ssize_t jit_f64, jit_f32

    def __init__(self, prog, kind, index, slot, n_slots, n_acc, n_arrays, n_scalars,
                 n_outs, listing=None):
        self.prog = np.array(prog, dtype=np.intc).reshape(-1)
        self.kind = np.array(kind, dtype=np.intc)
        self.index = np.array(index, dtype=np.intc)
        self.slot = np.array(slot, dtype=np.intc)
        for arr in (self.prog, self.kind, self.index, self.slot):
            arr.flags.writeable = False
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
        self.view.code = <const int*>cnp.PyArray_DATA(self.prog)
        self.view.kind = <const int*>cnp.PyArray_DATA(self.kind)
        self.view.index = <const int*>cnp.PyArray_DATA(self.index)
        self.view.slot = <const int*>cnp.PyArray_DATA(self.slot)
        self.view.n_instr, self.view.n_regs = self.n_instr, self.n_regs
        self.view.n_slots, self.view.n_acc = self.n_slots, self.n_acc

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
        execute(self, is_double, aptr, svals, optr, sums, n)
        return [sums[i] for i in range(self.n_acc)]

    def __reduce__(self):
        # Its compiled code is an address in this process: a copy elsewhere
        # would jump into nothing. CompiledExpression pickles its expression.
        raise TypeError("a Program is not picklable; pickle the CompiledExpression "
                        "(it is rebuilt from its expression)")

    def _use_compiled(self, bint is_double, Py_ssize_t address):
        """For _jit.attach: run this program, in this dtype, through the chunk
        function at ``address`` (-1: on the interpreter)."""
        if is_double:
            self.jit_f64 = address
        else:
            self.jit_f32 = address


# -- running a program: fused C code (_jit.py) or the interpreter ------------------

# The chunk function _jit.py compiles for one program and dtype.
ctypedef void (*jit_chunk_t)(void** arrays, const double* scalars, void** outs, double* acc,
                             Py_ssize_t start, Py_ssize_t stop, int streamed) noexcept nogil

# One call of compiled code, shared by the pool's threads (as ProgramJob).
cdef struct JitJob:
    jit_chunk_t fn
    void** arrays
    const double* scalars
    void** outs
    double* acc                 # per chunk: n_acc accumulators
    Py_ssize_t n_acc, n, chunk
    int streamed


cdef void jit_chunk(void* job, Py_ssize_t c, int worker) noexcept nogil:
    cdef JitJob* j = <JitJob*>job
    cdef Py_ssize_t start = c * j.chunk
    j.fn(j.arrays, j.scalars, j.outs, j.acc + c * j.n_acc, start, min(start + j.chunk, j.n),
         j.streamed)


cdef int run_jit(jit_chunk_t fn, void** arrays, const double* scalars, void** outs,
                 double* sums, Py_ssize_t n_acc, Py_ssize_t n, Py_ssize_t itemsize) noexcept nogil:
    """run_program's chunking (the same chunks, so the same sums) around a
    compiled chunk function. -1 on OOM."""
    cdef JitJob job
    cdef int workers = pool_threads() if in_chunks(n) else 1
    cdef Py_ssize_t n_chunks
    job.chunk = program_chunk_size(n)
    n_chunks = (n + job.chunk - 1) // job.chunk if n else 1
    job.acc = <double*>malloc((n_chunks * n_acc + 1) * sizeof(double))
    if job.acc == NULL:
        return -1
    job.fn, job.arrays, job.scalars, job.outs = fn, arrays, scalars, outs
    job.n_acc, job.n = n_acc, n
    job.streamed = n * itemsize >= STREAM_MIN_BYTES
    parallel_for(jit_chunk, &job, n_chunks, workers)
    add_chunk_sums(job.acc, n_chunks, n_acc, sums)
    free(job.acc)
    return 0


# Programs run as compiled code from this many elements (-1: never); see _jit.py.
cdef Py_ssize_t JIT_MIN_SIZE = -1
_jit_module = None


def _set_jit(mode=None):
    """Set when programs are compiled (_jit.py): None reads $FASTJAC_JIT;
    'never', 'always' or 'auto'. Returns the threshold in elements (-1: never).
    For tests and benchmarks; programs compiled already stay compiled."""
    global JIT_MIN_SIZE, _jit_module
    from . import _jit
    _jit_module = _jit
    JIT_MIN_SIZE = _jit.min_size() if mode is None else \
        {"never": -1, "always": 0, "auto": _jit.JIT_MIN_SIZE}[mode]
    return JIT_MIN_SIZE


cdef int run_view(const ProgramView* p, Py_ssize_t fn, bint is_double, void** aptr,
                  double* svals, void** optr, double* sums, Py_ssize_t n) noexcept nogil:
    """execute's run: the chunk function ``fn`` where positive, else the interpreter."""
    if fn > 0:
        return run_jit(<jit_chunk_t>fn, aptr, svals, optr, sums, p.n_acc, n,
                       sizeof(double) if is_double else sizeof(float))
    if is_double:
        return CURRENT.program_f64(p.code, p.n_instr, p.n_regs, p.kind, p.index, p.slot,
                                   p.n_slots, <double**>aptr, svals, <double**>optr, sums,
                                   p.n_acc, n)
    return CURRENT.program_f32(p.code, p.n_instr, p.n_regs, p.kind, p.index, p.slot,
                               p.n_slots, <float**>aptr, svals, <float**>optr, sums,
                               p.n_acc, n)


cdef int execute(Program prog, bint is_double, void** aptr, double* svals, void** optr,
                 double* sums, Py_ssize_t n) except -1:
    """Run prog over n elements: compiled code where _jit.py made some (it
    is asked at the first call of JIT_MIN_SIZE elements or more), else the
    interpreter; with the GIL released from NOGIL_MIN_SIZE elements."""
    cdef Py_ssize_t fn = prog.jit_f64 if is_double else prog.jit_f32
    cdef int status
    if fn == 0 and 0 <= JIT_MIN_SIZE <= n:
        _jit_module.attach(prog, is_double)
        fn = prog.jit_f64 if is_double else prog.jit_f32
    cdef ProgramView view = prog.view       # C values only from here on
    if n >= NOGIL_MIN_SIZE:
        with nogil:
            status = run_view(&view, fn, is_double, aptr, svals, optr, sums, n)
    else:
        status = run_view(&view, fn, is_double, aptr, svals, optr, sums, n)
    if status != 0:
        raise MemoryError("fastjac: could not allocate scratch registers")
    return 0


# -- a batch loss's pass over the rows of X (_batch.py) ---------------------------

def run_rows(Program prog, cnp.ndarray X, cnp.ndarray w, object v, tuple arrays,
             int z_array, int t_array, object scalars, int n_xw, int n_xx,
             tuple full_outs, bint is_double):
    """Run ``prog`` over the rows of X (N x n) in one pass (row_pass of
    _expr_loops.pxd): program array ``z_array`` is X @ w, ``t_array`` X @ v
    (-1: not read); the other program arrays are N long (None for z and t).
    Outputs 0..n_xw-1 are accumulated as X^T out, the next n_xx as
    (X * X)^T out, the others copied to full_outs (N long, or None).

    Returns float64 [the program's n_acc sums, then n_xw + n_xx vectors of
    n]. Every array is C-contiguous of the run's dtype, checked by the caller.
    """
    cdef void* aptr[64]
    cdef void* optr[64]
    cdef double svals[256]
    cdef Py_ssize_t i, N = X.shape[0], n = X.shape[1]
    cdef Py_ssize_t n_outs = prog.n_outs
    cdef const void* vptr = NULL
    cdef int status
    if len(arrays) != prog.n_arrays or len(full_outs) != n_outs or \
            len(scalars) != prog.n_scalars or n_xw + n_xx > n_outs:
        raise ValueError("internal error: row program called with the wrong operands")
    if prog.n_arrays > 64 or n_outs > 64 or prog.n_scalars > 256:
        raise ValueError("expression too large for one fused pass")
    for i in range(prog.n_arrays):
        aptr[i] = NULL if arrays[i] is None else cnp.PyArray_DATA(<cnp.ndarray>arrays[i])
    for i in range(n_outs):
        optr[i] = NULL if full_outs[i] is None else cnp.PyArray_DATA(<cnp.ndarray>full_outs[i])
    for i in range(prog.n_scalars):
        svals[i] = scalars[i]
    if v is not None:
        vptr = cnp.PyArray_DATA(<cnp.ndarray>v)
    cdef cnp.ndarray result = np.empty(prog.n_acc + (n_xw + n_xx) * n, dtype=np.float64)
    cdef double* res = <double*>cnp.PyArray_DATA(result)
    cdef const void* xptr = cnp.PyArray_DATA(X)
    cdef const void* wptr = cnp.PyArray_DATA(w)
    cdef Py_ssize_t compiled = row_program_code(prog, is_double, N)
    cdef ProgramView p = prog.view          # C values only from here on
    with nogil:
        if is_double:
            status = CURRENT.batch_f64(<const double*>xptr, <const double*>wptr,
                                       <const double*>vptr, N, n, p.code, p.n_instr, p.n_regs,
                                       p.kind, p.index, p.slot, p.n_slots, <double**>aptr,
                                       z_array, t_array, svals, n_outs, n_xw, n_xx,
                                       <double**>optr, p.n_acc, compiled, res)
        else:
            status = CURRENT.batch_f32(<const float*>xptr, <const float*>wptr,
                                       <const float*>vptr, N, n, p.code, p.n_instr, p.n_regs,
                                       p.kind, p.index, p.slot, p.n_slots, <float**>aptr,
                                       z_array, t_array, svals, n_outs, n_xw, n_xx,
                                       <float**>optr, p.n_acc, compiled, res)
    if status != 0:
        raise MemoryError("fastjac: could not allocate the scratch of a batch pass")
    return result


cdef Py_ssize_t row_program_code(Program prog, bint is_double, Py_ssize_t N) except -2:
    """The address of prog's compiled chunk function for a row pass over N
    rows (0: the interpreter runs it). Compiled (_jit.py) at the first pass
    of JIT_MIN_SIZE rows or more, as expressions are at that many elements;
    programs with a vectorised transcendental function stay interpreted."""
    cdef Py_ssize_t fn = prog.jit_f64 if is_double else prog.jit_f32
    if fn == 0 and 0 <= JIT_MIN_SIZE <= N:
        _jit_module.attach(prog, is_double)
        fn = prog.jit_f64 if is_double else prog.jit_f32
    return fn if fn > 0 else 0


# -- a compiled loss's call, resolved for one signature (_batch.py) ---------------

cdef enum:
    LOSS_MAX_VARS = 32
    LOSS_MAX_COEF = 8
    LOSS_MAX_WRT = 4             # variables of one resolved gradient call
    LOSS_SCALAR = -1             # LossCall.kind_of: a scalar variable (else the ndim)
    ARRAY_Z = -2                 # LossTerm.array_var: the block's X @ w
    ARRAY_T = -3                 # ... X @ v (a row pass), or v itself (element-wise)


cdef class LossTerm:
    """One reduction of a LossCall: its program and where its inputs and
    results are (built once by _batch.py from a _TermRun)."""
    cdef Program program
    cdef int array_var[64]       # program array j <- variable position, ARRAY_Z or ARRAY_T
    cdef int scalar_var[256]     # program scalar j <- variable position, or -1: scalar_const
    cdef double scalar_const[256]
    cdef int x_var, w_var        # X and w of X @ w (-1: an element-wise term)
    cdef int shape_var           # element-wise: a variable of the term's shape (-1: scalars)
    cdef int value_acc
    # per differentiated variable: its derivative as a sum, an X-weighted
    # vector or a per-element output (-1 where not)
    cdef int grad_acc[LOSS_MAX_WRT]
    cdef int grad_vec[LOSS_MAX_WRT]
    cdef int grad_full[LOSS_MAX_WRT]
    cdef int n_xw, n_xx
    cdef double factor
    cdef int coef_var[LOSS_MAX_COEF]
    cdef int coef_pow[LOSS_MAX_COEF]
    cdef int n_coef
    cdef bint mean

    def __init__(self, Program program, array_var, scalar_var, scalar_const, int x_var,
                 int w_var, int shape_var, int value_acc, grad_acc, grad_vec,
                 grad_full, int n_xw, int n_xx, double factor, coef, bint mean):
        cdef Py_ssize_t j
        if len(array_var) != program.n_arrays or len(scalar_var) != program.n_scalars \
                or program.n_arrays > 64 or program.n_scalars > 256 or len(coef) > LOSS_MAX_COEF \
                or len(grad_acc) > LOSS_MAX_WRT:
            raise ValueError("internal error: a loss term that does not fit its program")
        self.program = program
        for j in range(program.n_arrays):
            self.array_var[j] = array_var[j]
        for j in range(program.n_scalars):
            self.scalar_var[j] = scalar_var[j]
            self.scalar_const[j] = scalar_const[j]
        self.x_var, self.w_var, self.shape_var = x_var, w_var, shape_var
        self.value_acc = value_acc
        for j in range(len(grad_acc)):
            self.grad_acc[j], self.grad_vec[j], self.grad_full[j] = \
                grad_acc[j], grad_vec[j], grad_full[j]
        self.n_xw, self.n_xx = n_xw, n_xx
        self.factor, self.mean = factor, mean
        self.n_coef = len(coef)
        for j in range(self.n_coef):
            self.coef_var[j], self.coef_pow[j] = coef[j]


cdef class LossCall:
    """``value``, ``value_and_jacobian`` (compact) or ``hvp`` of a compiled
    loss, resolved for one signature: the dtype, which variables are
    scalars and the number of dimensions of the others. Called with the
    keyword arguments' dict, it checks only what can differ between calls
    of that signature (types, contiguity, shapes) and returns None at the
    first difference -- the caller then takes the full path, which checks
    everything and says what is wrong. Same operations in the same order
    as that path: the same bits."""
    cdef tuple names
    cdef int n_vars, type_num
    cdef cnp.dtype descr                        # the result dtype
    cdef signed char kind_of[LOSS_MAX_VARS]     # LOSS_SCALAR, or the ndim of an array
    cdef list terms
    cdef double constant
    cdef int wrt[LOSS_MAX_WRT]                  # gradient / hvp variables
    cdef int n_wrt
    cdef bint stacked                           # a list of gradients (wrt was a list)
    cdef bint want_value, want_grad, is_hvp

    def __init__(self, tuple names, dtype, kinds, list terms, double constant, wrt,
                 bint stacked, bint want_value, bint want_grad, bint is_hvp):
        cdef Py_ssize_t i
        if len(names) > LOSS_MAX_VARS or len(wrt) > LOSS_MAX_WRT:
            raise ValueError("too many variables for a resolved call")
        self.n_wrt, self.stacked = len(wrt), stacked
        for i in range(self.n_wrt):
            self.wrt[i] = wrt[i]
        self.names, self.n_vars = names, len(names)
        self.type_num = np.dtype(dtype).num
        self.descr = np.dtype(dtype)
        for i in range(self.n_vars):
            self.kind_of[i] = kinds[i]
        self.terms, self.constant = terms, constant
        self.want_value, self.want_grad, self.is_hvp = want_value, want_grad, is_hvp

    def __call__(self, dict variables, v=None):
        cdef void* data[LOSS_MAX_VARS]
        cdef double sval[LOSS_MAX_VARS]
        cdef cnp.npy_intp* dims[LOSS_MAX_VARS]
        cdef PyObject* item
        cdef cnp.ndarray arr
        cdef Py_ssize_t i
        cdef bint is_double = self.type_num == cnp.NPY_DOUBLE
        if len(variables) != self.n_vars:
            return None
        for i in range(self.n_vars):
            item = PyDict_GetItem(variables, self.names[i])
            if item == NULL:
                return None
            data[i] = NULL
            if self.kind_of[i] == LOSS_SCALAR:
                if type(<object>item) is float:
                    sval[i] = PyFloat_AS_DOUBLE(<object>item)
                elif cnp.PyArray_CheckExact(<object>item) and \
                        cnp.PyArray_NDIM(<cnp.ndarray>item) == 0 and \
                        cnp.PyArray_TYPE(<cnp.ndarray>item) == self.type_num:
                    sval[i] = float((<cnp.ndarray>item)[()])
                else:
                    return None
                if not is_double:
                    sval[i] = <float>sval[i]        # as coerce_named: a 0-d float32 array
                continue
            if not cnp.PyArray_CheckExact(<object>item):
                return None
            arr = <cnp.ndarray>item
            if cnp.PyArray_TYPE(arr) != self.type_num or \
                    cnp.PyArray_NDIM(arr) != self.kind_of[i] or \
                    not cnp.PyArray_ISCARRAY_RO(arr) or not cnp.PyArray_ISNOTSWAPPED(arr):
                return None
            data[i] = cnp.PyArray_DATA(arr)
            dims[i] = cnp.PyArray_DIMS(arr)
        cdef void* vdata = NULL
        cdef int w0 = self.wrt[0]
        if self.is_hvp:
            if not cnp.PyArray_CheckExact(v):
                return None
            arr = <cnp.ndarray>v
            if cnp.PyArray_TYPE(arr) != self.type_num or \
                    cnp.PyArray_NDIM(arr) != self.kind_of[w0] or \
                    not cnp.PyArray_ISCARRAY_RO(arr) or not cnp.PyArray_ISNOTSWAPPED(arr):
                return None
            for i in range(self.kind_of[w0]):
                if cnp.PyArray_DIMS(arr)[i] != dims[w0][i]:
                    return None
            vdata = cnp.PyArray_DATA(arr)
        # the gradients (or the product): each of its variable's size, float64 until the end
        cdef Py_ssize_t n_grad[LOSS_MAX_WRT]
        cdef double* gptr[LOSS_MAX_WRT]
        cdef list grads = []
        cdef Py_ssize_t k
        for k in range(self.n_wrt if (self.want_grad or self.is_hvp) else 0):
            n_grad[k] = 1
            if self.kind_of[self.wrt[k]] != LOSS_SCALAR:
                for i in range(self.kind_of[self.wrt[k]]):
                    n_grad[k] *= dims[self.wrt[k]][i]
            grads.append(cnp.PyArray_ZEROS(1, <cnp.npy_intp*>&n_grad[k], cnp.NPY_DOUBLE, 0))
            gptr[k] = <double*>cnp.PyArray_DATA(<cnp.ndarray>grads[k])
        cdef double value = self.constant
        cdef LossTerm term
        for term in self.terms:
            if run_loss_term(term, is_double, data, sval, dims, self.kind_of, vdata,
                             len(grads), n_grad, gptr, &value) != 0:
                return None
        if not grads:
            return self.scalar(value)
        results = []
        for k in range(len(grads)):
            grad = <cnp.ndarray>grads[k]
            if self.kind_of[self.wrt[k]] == LOSS_SCALAR:
                results.append(self.scalar((<double*>cnp.PyArray_DATA(grad))[0]))
            else:
                result = grad if is_double else as_single(grad)
                if self.kind_of[self.wrt[k]] != 1:
                    result = result.reshape(variables[self.names[self.wrt[k]]].shape)
                results.append(result)
        result = results if self.stacked else results[0]
        if self.is_hvp or not self.want_value:
            return result
        return self.scalar(value), result

    cdef object scalar(self, double value):
        """value as a NumPy scalar of the call's dtype (float32: rounded once,
        as np.float32(value) rounds)."""
        cdef float single
        if self.type_num == cnp.NPY_DOUBLE:
            return PyArray_Scalar(&value, self.descr, None)
        single = <float>value
        return PyArray_Scalar(&single, self.descr, None)


cpdef object resolved_key(bint want_value, object wrt, object layout, object format,
                          object out):
    """The key under which a CompiledLoss keeps the LossCall of a gradient
    call (``self._calls``): a compact result without out=, a valid layout,
    wrt None, a name or a list of up to 4 names. None: never resolved."""
    if out is not None or format != "compact" or not (layout == "numerator"
                                                      or layout == "denominator"):
        return None
    if wrt is None or type(wrt) is str:
        return (want_value, wrt)
    if not isinstance(wrt, (list, tuple)) or not 0 < len(wrt) <= 4:
        return None
    for name in wrt:
        if type(name) is not str:
            return None
    return (want_value, tuple(wrt))


cpdef object resolved_result(object loss, object key, dict variables):
    """What the LossCall kept under ``key`` returns for these variables:
    None when there is none, or when the call differs from its signature."""
    if key is None:
        return None
    call = (<dict>loss._calls).get(key)
    if call is None:
        return None
    return call(variables)


cdef cnp.ndarray as_single(cnp.ndarray values):
    """A new float32 copy of a 1-D float64 array, each element rounded once
    (astype's rounding, without its Python call)."""
    cdef Py_ssize_t i, n = cnp.PyArray_SIZE(values)
    cdef cnp.ndarray single = cnp.PyArray_EMPTY(1, cnp.PyArray_DIMS(values), cnp.NPY_FLOAT, 0)
    cdef const double* source = <const double*>cnp.PyArray_DATA(values)
    cdef float* target = <float*>cnp.PyArray_DATA(single)
    for i in range(n):
        target[i] = <float>source[i]
    return single


@cython.binding(True)       # a method of CompiledLoss
def loss_value_and_jacobian(self, wrt=None, *, layout="numerator", format="compact",
                            out=None, **variables):
    """(L, dL/d(wrt)) from one pass; arguments as :meth:`jacobian`.

    Returns
    -------
    (value, gradient)
        The loss, a NumPy scalar of the computation dtype, and the
        gradient by ``wrt`` (of wrt's shape for ``format="compact"``; a
        list of gradients when ``wrt`` is a list).
    """
    # CompiledLoss.value_and_jacobian (_batch.py), in C: for a signature
    # already resolved the LossCall is the whole call, and a Python method
    # around it cost half as much again (docs/losses.md, the per-call cost).
    key = resolved_key(True, wrt, layout, format, out)
    result = resolved_result(self, key, variables)
    if result is not None:
        return result
    return self._full_gradient(wrt, layout, format, out, variables, True, key)


@cython.binding(True)
def loss_jacobian(self, wrt=None, *, layout="numerator", format="compact", out=None,
                  **variables):
    """The gradient dL/d(wrt), of wrt's shape (compact).

    Parameters
    ----------
    wrt : str or list of str
        The variable (default: the only one compiled for differentiation);
        a list gives a list of gradients.
    layout : {"numerator", "denominator"}
        A row (1 x n) or a column (n x 1), for a vector wrt and a
        non-compact format.
    format : {"compact", "dense", "csr", "csc", "coo", "dia", "sparse", "operator"}
        As :func:`fastjac.sum_gradient`; "compact" is an array of wrt's shape.
    out : ndarray, optional
        Where to write the result ("compact" or "dense").
    **variables
        The values of the variables.
    """
    # CompiledLoss.jacobian (_batch.py), in C for the same reason.
    key = resolved_key(False, wrt, layout, format, out)
    result = resolved_result(self, key, variables)
    if result is not None:
        return result
    return self._full_gradient(wrt, layout, format, out, variables, False, key)[1]


cdef int run_loss_term(LossTerm term, bint is_double, void** data, const double* sval,
                       cnp.npy_intp** dims, const signed char* kind_of, void* vdata,
                       Py_ssize_t n_wrt, const Py_ssize_t* n_grad, double** grad,
                       double* value) except -2:
    """One term of a LossCall into value and grad; 1 when the full path must
    take over (shapes that differ, an empty mean), 0 when done."""
    cdef Program p = term.program
    cdef void* aptr[64]
    cdef void* optr[64]
    cdef double svals[256]
    cdef double sums[256]
    cdef Py_ssize_t j, d, N = 0, n = 0, size = 1, k, q
    cdef int var, status
    cdef double c = term.factor
    cdef cnp.ndarray result
    cdef list fulls = [None] * n_wrt
    cdef double* g
    cdef double* res = NULL
    if term.x_var >= 0:                 # X (N, n), w (n,), per-row arrays (N,)
        N, n = dims[term.x_var][0], dims[term.x_var][1]
        if dims[term.w_var][0] != n:
            return 1
        size = N
        for j in range(p.n_arrays):
            var = term.array_var[j]
            if var >= 0 and dims[var][0] != N:
                return 1
    elif term.shape_var >= 0:           # arrays of one shape
        for d in range(kind_of[term.shape_var]):
            size *= dims[term.shape_var][d]
        for j in range(p.n_arrays):
            var = term.array_var[j]
            if var < 0:
                continue
            if kind_of[var] != kind_of[term.shape_var]:
                return 1
            for d in range(kind_of[var]):
                if dims[var][d] != dims[term.shape_var][d]:
                    return 1
    for q in range(n_wrt):
        if term.grad_full[q] >= 0 and size != n_grad[q]:
            return 1
    # the coefficient, as _batch.CompiledLoss._scale
    for j in range(term.n_coef):
        c = c * sval[term.coef_var[j]] if term.coef_pow[j] == 1 else \
            c * (1.0 / sval[term.coef_var[j]])
    if term.mean:
        if size == 0:
            return 1
        c /= size
    for j in range(p.n_scalars):
        svals[j] = sval[term.scalar_var[j]] if term.scalar_var[j] >= 0 else term.scalar_const[j]
    for j in range(p.n_arrays):
        var = term.array_var[j]
        aptr[j] = data[var] if var >= 0 else (vdata if var == ARRAY_T and term.x_var < 0 else NULL)
    for j in range(p.n_outs):
        optr[j] = NULL
    for q in range(n_wrt):
        if term.grad_full[q] >= 0:
            fulls[q] = np.empty(size, dtype=np.float64 if is_double else np.float32)
            optr[term.grad_full[q]] = cnp.PyArray_DATA(<cnp.ndarray>fulls[q])
    cdef Py_ssize_t compiled = row_program_code(p, is_double, N) if term.x_var >= 0 else 0
    cdef ProgramView view = p.view
    cdef double small[512]          # the pass's results, when they fit (no allocation)
    cdef Py_ssize_t stride = p.n_acc + (term.n_xw + term.n_xx) * n
    cdef PyThreadState* state = NULL
    if term.x_var >= 0:
        if stride <= 512:
            res = small
        else:
            result = np.empty(stride, dtype=np.float64)
            res = <double*>cnp.PyArray_DATA(result)
        if N * (n + 1) >= NOGIL_MIN_SIZE:
            state = PyEval_SaveThread()
        if is_double:
            status = CURRENT.batch_f64(<const double*>data[term.x_var],
                                       <const double*>data[term.w_var], <const double*>vdata,
                                       N, n, view.code, view.n_instr, view.n_regs, view.kind,
                                       view.index, view.slot, view.n_slots, <double**>aptr,
                                       find_array(term, ARRAY_Z, p.n_arrays),
                                       find_array(term, ARRAY_T, p.n_arrays), svals,
                                       p.n_outs, term.n_xw, term.n_xx, <double**>optr,
                                       view.n_acc, compiled, res)
        else:
            status = CURRENT.batch_f32(<const float*>data[term.x_var],
                                       <const float*>data[term.w_var], <const float*>vdata,
                                       N, n, view.code, view.n_instr, view.n_regs, view.kind,
                                       view.index, view.slot, view.n_slots, <float**>aptr,
                                       find_array(term, ARRAY_Z, p.n_arrays),
                                       find_array(term, ARRAY_T, p.n_arrays), svals,
                                       p.n_outs, term.n_xw, term.n_xx, <float**>optr,
                                       view.n_acc, compiled, res)
        if state != NULL:
            PyEval_RestoreThread(state)
        if status != 0:
            raise MemoryError("fastjac: could not allocate the scratch of a batch pass")
        for j in range(p.n_acc):
            sums[j] = res[j]
    else:
        execute(p, is_double, aptr, svals, optr, sums, size)
        res = NULL
    if term.value_acc >= 0:
        value[0] += c * sums[term.value_acc]
    for q in range(n_wrt):
        g = grad[q]
        if term.grad_acc[q] >= 0:
            g[0] += c * sums[term.grad_acc[q]]
        if term.grad_vec[q] >= 0:
            for k in range(n_grad[q]):
                g[k] += c * res[p.n_acc + term.grad_vec[q] * n + k]
        if term.grad_full[q] >= 0:
            if is_double:
                for k in range(n_grad[q]):
                    g[k] += c * (<double*>cnp.PyArray_DATA(<cnp.ndarray>fulls[q]))[k]
            else:
                for k in range(n_grad[q]):
                    g[k] += c * <double>(<float*>cnp.PyArray_DATA(<cnp.ndarray>fulls[q]))[k]
    return 0


cdef inline int find_array(LossTerm term, int what, Py_ssize_t n_arrays) noexcept nogil:
    cdef int j
    for j in range(n_arrays):
        if term.array_var[j] == what:
            return j
    return -1


# -- scalar arithmetic after a sum ------------------------------------------------

cdef enum:
    MAX_STEP_REGS = 256           # registers of a step program (_compiled.py folds no larger step)

STEP_MAX_REGS = MAX_STEP_REGS


cdef inline double in_dtype(double v, bint is_double) noexcept nogil:
    """v rounded to the run's dtype (as the interpreter would hold it)."""
    return v if is_double else <double><float>v


cdef class ScalarStep:
    """Scalar arithmetic on a pass's sum, such as the mean ``sum(e) / N``.

    Built by _compiled.py (``_plan_scalar_step``) when an expression's last
    stage reads only the sum s of one pass, scalars and constants: instead of a second pass,
    that stage's program runs on one element after the pass (the
    interpreter's instructions on registers of one number, in this module's
    build), giving the value y(s), the slope dy/ds and the direct derivatives dy/dz
    of the scalar variables the stage reads. The chain rule then acts on
    scalars: dy/dz = dy/dz (direct) + dy/ds * ds/dz, and an array derivative
    ds/dw, written by the pass, is multiplied by dy/ds -- by the pass itself
    (its ``scale_scalar`` input) when y is affine in s, so the slope is
    known before the sum, else in place afterwards.
    """
    cdef readonly Program program       # the stage: no arrays, outputs of one element
    cdef readonly cnp.ndarray input_from    # step scalar j <- main scalar input_from[j] (-1: s)
    cdef readonly int sum_acc           # the main program's accumulator of s (-1: y unused)
    cdef readonly int value_out, slope_out  # step outputs of y and dy/ds (-1: dy/ds is zero)
    cdef readonly int scale_scalar      # main scalar set to dy/ds before the pass, or -1
    # per direction: step output of the direct dy/dz, main accumulator of
    # ds/dz, main output of ds/dw (each -1 when absent)
    cdef readonly cnp.ndarray direct_out, tan_acc, tan_out

    def __init__(self, Program program, input_from, int sum_acc, int value_out, int slope_out,
                 int scale_scalar, direct_out, tan_acc, tan_out):
        if program.n_regs > MAX_STEP_REGS or program.n_arrays != 0 or program.n_acc != 0:
            raise ValueError("internal error: not a scalar step program")
        self.program = program
        self.input_from = np.ascontiguousarray(input_from, dtype=np.intc)
        if self.input_from.shape[0] != program.n_scalars:
            raise ValueError("internal error: step inputs do not match the program")
        self.sum_acc, self.value_out, self.slope_out = sum_acc, value_out, slope_out
        self.scale_scalar = scale_scalar
        self.direct_out = np.ascontiguousarray(direct_out, dtype=np.intc)
        self.tan_acc = np.ascontiguousarray(tan_acc, dtype=np.intc)
        self.tan_out = np.ascontiguousarray(tan_out, dtype=np.intc)

    def slope(self, scalars, bint is_double):
        """dy/ds before the pass (y affine in s: any s gives it), from the main
        program's scalar inputs; for CompiledExpression._run."""
        cdef double svals[256]
        fill_doubles(scalars, svals, 256)
        return step_slope(self, is_double, svals)

    def finish(self, scalars, sums, tuple outs, Py_ssize_t n, bint is_double):
        """After the pass (Program.run's scalars, sums and outs): (y, [dy/dz or
        dy/dw's slot per direction]); array derivatives in outs are scaled in
        place. For CompiledExpression._run."""
        cdef double svals[256]
        cdef double acc[256]
        cdef double tangents[256]
        cdef void* optr[64]
        cdef double value
        cdef Py_ssize_t i, nd = self.direct_out.shape[0]
        fill_doubles(scalars, svals, 256)
        fill_doubles(sums, acc, 256)
        if len(outs) > 64 or nd > 256:
            raise ValueError("expression too large for one fused pass")
        for i in range(len(outs)):
            optr[i] = cnp.PyArray_DATA(<cnp.ndarray>outs[i])
        step_finish(self, is_double, svals, acc, optr, n, &value, tangents)
        return value, [tangents[i] for i in range(nd)]


cdef int fill_doubles(values, double* dst, Py_ssize_t cap) except -1:
    cdef Py_ssize_t i, k = len(values)
    if k > cap:
        raise ValueError("expression too large for one fused pass")
    for i in range(k):
        dst[i] = values[i]
    return 0


cdef void step_values(ScalarStep st, bint is_double, const double* svals, double s,
                      double* res) noexcept:
    """Run the step program on one element, its sum input set to s:
    res[j] = output j. Registers of one number each: a block of the
    interpreter, without the scratch blocks and threads of a pass."""
    cdef Program p = st.program
    cdef const int* src = <const int*>cnp.PyArray_DATA(st.input_from)
    cdef const int* kind = <const int*>cnp.PyArray_DATA(p.kind)
    cdef const int* index = <const int*>cnp.PyArray_DATA(p.index)
    cdef const int* slot = <const int*>cnp.PyArray_DATA(p.slot)
    cdef double d_reg[2 * MAX_STEP_REGS]    # slots, then one number per output
    cdef float f_reg[2 * MAX_STEP_REGS]
    cdef double* d_ptr[MAX_STEP_REGS]
    cdef float* f_ptr[MAX_STEP_REGS]
    cdef double no_sums[1]
    cdef double v
    cdef Py_ssize_t r, j
    for r in range(p.n_regs):
        j = p.n_slots + index[r] if kind[r] == K_OUT else slot[r]
        d_ptr[r], f_ptr[r] = &d_reg[j], &f_reg[j]
        if kind[r] == K_SCALAR:
            v = s if src[index[r]] < 0 else svals[src[index[r]]]
            d_reg[j], f_reg[j] = v, <float>v
    if is_double:
        exec_block(<const int*>cnp.PyArray_DATA(p.prog), p.n_instr, d_ptr, no_sums, 1)
    else:
        exec_block(<const int*>cnp.PyArray_DATA(p.prog), p.n_instr, f_ptr, no_sums, 1)
    for j in range(p.n_outs):
        res[j] = d_reg[p.n_slots + j] if is_double else f_reg[p.n_slots + j]


cdef double step_slope(ScalarStep st, bint is_double, const double* svals) noexcept:
    cdef double res[MAX_STEP_REGS]
    step_values(st, is_double, svals, 0.0, res)
    return res[st.slope_out]


cdef int step_finish(ScalarStep st, bint is_double, const double* svals, const double* sums,
                     void** optr, Py_ssize_t n, double* value, double* tangents) except -1:
    """y, and the chain rule on the scalar for every direction (see ScalarStep)."""
    cdef double res[MAX_STEP_REGS]
    cdef double slope, direct
    cdef Py_ssize_t k, nd = st.direct_out.shape[0]
    cdef const int* direct_out = <const int*>cnp.PyArray_DATA(st.direct_out)
    cdef const int* tan_acc = <const int*>cnp.PyArray_DATA(st.tan_acc)
    cdef const int* tan_out = <const int*>cnp.PyArray_DATA(st.tan_out)
    if st.sum_acc < 0 and st.scale_scalar >= 0:
        # nothing reads s: the slope was computed before the pass (y is unused)
        value[0] = NAN
        slope = svals[st.scale_scalar]
    else:
        step_values(st, is_double, svals,
                    in_dtype(sums[st.sum_acc], is_double) if st.sum_acc >= 0 else 0.0, res)
        value[0] = res[st.value_out]
        slope = res[st.slope_out] if st.slope_out >= 0 else 0.0
    for k in range(nd):
        direct = res[direct_out[k]] if direct_out[k] >= 0 else 0.0
        tangents[k] = direct
        if tan_acc[k] >= 0:
            tangents[k] = in_dtype(
                direct + in_dtype(slope * in_dtype(sums[tan_acc[k]], is_double), is_double),
                is_double)
        elif tan_out[k] >= 0:
            if st.slope_out < 0:                # y does not move with s: exactly zero
                scale_in_place(optr[tan_out[k]], n, 0.0, True, is_double)
            elif st.scale_scalar < 0:           # the pass could not know dy/ds
                scale_in_place(optr[tan_out[k]], n, slope, False, is_double)
    return 0


cdef void scale_in_place(void* data, Py_ssize_t n, double factor, bint fill,
                         bint is_double) noexcept:
    """data[0:n] *= factor in the dtype, or = factor when fill."""
    cdef double* d = <double*>data
    cdef float* f = <float*>data
    cdef float ff = <float>factor
    cdef Py_ssize_t i
    cdef PyThreadState* state = PyEval_SaveThread() if n >= NOGIL_MIN_SIZE else NULL
    if is_double:
        for i in range(n):
            d[i] = factor if fill else d[i] * factor
    else:
        for i in range(n):
            f[i] = ff if fill else f[i] * ff
    if state != NULL:
        PyEval_RestoreThread(state)


# -- hot loops: a resolved derivative, called with arrays only --------------------

cdef object _MISSING = object()    # a keyword argument not given


cdef class FastPlan:
    """One signature of an ExprKernel: the program and where each result lands
    (built once by CompiledExpression._fast_plan, then only read)."""
    cdef readonly Program program
    cdef readonly cnp.ndarray array_pos    # program array j <- argument array_pos[j]
    cdef readonly cnp.ndarray scalar_pos   # program scalar j <- argument (or -1: constant)
    cdef readonly cnp.ndarray scalar_const # constant values where scalar_pos == -1
    cdef readonly int value_out, value_acc # out / accumulator index of the value, or -1
    cdef readonly int tan_out, tan_acc     # same for the tangent (both -1: zero)
    cdef readonly bint is_sum
    cdef readonly bint tan_scalar          # the derivative is one number (a sum by a scalar)
    cdef readonly ScalarStep step          # scalar arithmetic after the sum, or None

    def __init__(self, Program program, array_pos, scalar_pos, scalar_const, bint is_sum,
                 int value_out, int value_acc, int tan_out, int tan_acc,
                 bint tan_scalar=False, ScalarStep step=None):
        self.program = program
        self.array_pos = np.ascontiguousarray(array_pos, dtype=np.intc)
        self.scalar_pos = np.ascontiguousarray(scalar_pos, dtype=np.intc)
        self.scalar_const = np.ascontiguousarray(scalar_const, dtype=np.float64)
        self.is_sum = is_sum
        self.value_out, self.value_acc = value_out, value_acc
        self.tan_out, self.tan_acc = tan_out, tan_acc
        self.tan_scalar = tan_scalar
        self.step = step


cdef int run_fast_plan(FastPlan plan, int t, void** aptr, double* svals, void** optr,
                       Py_ssize_t n, cnp.ndarray out, cnp.ndarray vout) except -1:
    """One pass of plan.program and its results stored in out / vout
    (ExprKernel, after the arguments are checked)."""
    cdef double sums[256]
    cdef double value, tangent = 0.0
    cdef bint is_double = t == cnp.NPY_DOUBLE
    cdef ScalarStep step = plan.step
    if step is not None and step.scale_scalar >= 0:
        svals[step.scale_scalar] = step_slope(step, is_double, svals)
    execute(plan.program, is_double, aptr, svals, optr, sums, n)
    if step is not None:
        step_finish(step, is_double, svals, sums, optr, n, &value, &tangent)
        if vout is not None:
            _store0(vout, value, t)
        if plan.tan_scalar:
            _store0(out, tangent, t)
        elif plan.tan_out < 0:
            out[...] = 0                    # structurally zero
        return 0
    if plan.tan_acc >= 0:
        _store0(out, sums[plan.tan_acc], t)
    elif plan.tan_scalar:
        _store0(out, 0.0, t)                # structurally zero
    elif plan.tan_out < 0:
        out[...] = 0                        # structurally zero
    if plan.value_acc >= 0:
        _store0(vout, sums[plan.value_acc], t)
    return 0


cdef class ExprKernel:
    """A compiled derivative resolved once, for calls inside a hot loop.

    Obtain one with :meth:`CompiledExpression.kernel`. Its arguments are
    one ndarray per variable, in the order of ``compiled.variables`` (the
    order in which the variables first appear in the expression, unless
    ``fastjac.compile(..., variables=...)`` fixed another), then
    ``value_out`` when created with ``value=True``, then ``out`` for the
    compact Jacobian. ``k.arguments``, ``repr(k)`` and ``k.__doc__`` spell
    out that order. Pass them by keyword to be independent of it:
    ``k(w=w0, x=x0, out=out)``, at the cost of a positional call; or
    positionally, ``k(w0, x0, out)``, or ``k(w0, x0, value_out, out)``. It
    returns ``out``.

    Like :class:`fastjac.Kernel` it skips the conveniences of
    ``jacobian``: every argument must be a C-contiguous, aligned, native
    ndarray of one dtype, float32 or float64 (a 0-d array for a scalar
    variable), and the outputs must have the exact shape of the results;
    the checks that remain keep a wrong call from crashing or computing
    garbage.
    """
    cdef readonly object compiled
    cdef readonly str wrt
    cdef readonly bint with_value
    cdef readonly int n_vars
    cdef readonly tuple arguments     # names of the arguments, in positional order
    cdef dict plans
    cdef dict __dict__                # holds the instance's own __doc__
    cdef vectorcallfunc vectorcall    # see _enable_vectorcall

    def __cinit__(self):
        self.vectorcall = <vectorcallfunc>_kernel_vectorcall

    def __init__(self, compiled, wrt, with_value):
        self.compiled = compiled
        self.wrt = wrt
        self.with_value = with_value
        self.n_vars = len(compiled.variables)
        self.arguments = tuple(compiled.variables) + (
            ("value_out", "out") if with_value else ("out",))
        self.plans = {}
        self.__doc__ = (f"d/d{wrt} of {', '.join(str(o) for o in compiled._outputs)}: "
                        f"{self._call_forms()}\n\n{ExprKernel.__doc__}")

    def __reduce__(self):
        # __cinit__ (the vectorcall slot) rules out Cython's default pickling.
        # Restoring must not read compiled's attributes: inside a pickled
        # CompiledExpression (its cached kernels), compiled is not restored
        # yet. The plans are rebuilt at the first call.
        return _restore_kernel, (self.compiled, self.wrt, self.with_value, self.arguments,
                                 self.__doc__)

    def _call_forms(self):
        return (f"call as k({', '.join(self.arguments)}) or "
                f"k({', '.join(name + '=...' for name in self.arguments)})")

    def __repr__(self):
        return f"<fastjac expression kernel d/d{self.wrt}: k({', '.join(self.arguments)})>"

    @property
    def __signature__(self):
        import inspect
        return inspect.Signature([
            inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD)
            for name in self.arguments])

    def __call__(self, *args, **kwargs):
        # Python calls go through _kernel_vectorcall; this is tp_call, for
        # C code that calls the slot directly, with the same behaviour.
        if kwargs:
            args = self._bind(args, kwargs)
        return self._run(PySequence_Fast_ITEMS(args), len(args))

    cdef object _run_keywords(self, PyObject** args, Py_ssize_t n_pos, tuple kwnames):
        """A vectorcall with keywords: args holds n_pos positional values,
        then one value per name of kwnames. The usual call (each remaining
        argument once, by name) is bound here without a dict; anything else
        goes through _bind for Python's errors."""
        cdef tuple names = self.arguments
        cdef Py_ssize_t n = len(names), n_kw = len(kwnames), i, j, found
        cdef PyObject* bound[MAX_KERNEL_ARGS]
        if n_pos + n_kw == n and n <= MAX_KERNEL_ARGS:
            for i in range(n):
                bound[i] = args[i] if i < n_pos else NULL
            for j in range(n_kw):
                key = kwnames[j]
                found = -1
                for i in range(n_pos, n):
                    if names[i] is key or names[i] == key:
                        found = i
                        break
                if found < 0 or bound[found] != NULL:
                    break
                bound[found] = args[n_pos + j]
            else:
                return self._run(bound, n)
        positional = tuple([<object>args[i] for i in range(n_pos)])
        keywords = {kwnames[j]: <object>args[n_pos + j] for j in range(n_kw)}
        bound_args = self._bind(positional, keywords)
        return self._run(PySequence_Fast_ITEMS(bound_args), n)

    cdef tuple _bind(self, tuple args, dict kwargs):
        """Python's binding of positional and keyword arguments to
        ``self.arguments``, with Python's TypeErrors."""
        cdef tuple names = self.arguments
        cdef Py_ssize_t n = len(names), n_pos = len(args), i
        cdef list bound
        if n_pos + len(kwargs) == n:
            # the usual call: as many keywords as names left, so if every
            # one of those names is there, there is nothing else
            bound = list(args)
            for i in range(n_pos, n):
                x = kwargs.get(names[i], _MISSING)
                if x is _MISSING:
                    break
                bound.append(x)
            else:
                return tuple(bound)
        if n_pos > n:
            raise TypeError(f"this kernel takes {n} arrays ({', '.join(names)}), "
                            f"got {n_pos} positional and {len(kwargs)} keyword")
        for key in kwargs:
            if key not in names:
                raise TypeError(f"this kernel got an unexpected keyword argument {key!r}; "
                                f"its arguments are {', '.join(names)}")
            if names.index(key) < n_pos:
                raise TypeError(f"this kernel got multiple values for argument {key!r}")
        for i in range(n_pos, n):
            if names[i] not in kwargs:
                raise TypeError(f"this kernel is missing the argument {names[i]!r}; "
                                f"{self._call_forms()}")
        raise AssertionError("unreachable: every argument was bound")

    cdef object _run(self, PyObject** args, Py_ssize_t nargs):
        """The call, on nargs borrowed references in positional order."""
        cdef Py_ssize_t i, n = 1
        cdef Py_ssize_t n_out_args = 2 if self.with_value else 1
        cdef cnp.ndarray arr, shaped = None, out, vout = None
        cdef int t, mask = 0
        cdef FastPlan plan
        cdef Program prog
        cdef void* aptr[64]
        cdef void* optr[64]
        cdef double svals[256]
        cdef const int* pos
        if nargs != self.n_vars + n_out_args:
            raise TypeError(
                f"this kernel takes {self.n_vars + n_out_args} arrays "
                f"({', '.join(self.arguments)}), got {nargs}")
        for i in range(nargs):
            if not cnp.PyArray_CheckExact(<object>args[i]):
                raise TypeError("kernel arguments must all be numpy.ndarray (use "
                                "CompiledExpression.jacobian for lists and Python numbers)")
        out = <cnp.ndarray><object>args[nargs - 1]
        t = cnp.PyArray_TYPE(out)
        if t != cnp.NPY_DOUBLE and t != cnp.NPY_FLOAT:
            raise TypeError(f"kernel arrays must share one dtype, float32 or float64; "
                            f"out has {(<object>out).dtype}")
        for i in range(nargs):
            arr = <cnp.ndarray><object>args[i]
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
                from . import _checks           # which words the error: out is read-only
                _checks.check_out(arr, (<object>arr).shape, (<object>arr).dtype)
        if self.with_value:
            vout = <cnp.ndarray><object>args[self.n_vars]
        plan = self.plans.get(mask)
        if plan is None:
            plan = self.compiled._fast_plan(self.wrt, mask, self.with_value)
            self.plans[mask] = plan
        if shaped is not None:
            n = cnp.PyArray_SIZE(shaped)
        # output shapes: the data's shape, or () after a sum / for a sum of a scalar
        self._check_out(out, shaped, plan.tan_scalar, "out")
        if vout is not None:
            self._check_out(vout, shaped, plan.is_sum, "value_out")
        for i in range(self.n_vars):
            arr = <cnp.ndarray><object>args[i]
            if _overlaps(arr, out) or (vout is not None and _overlaps(arr, vout)):
                raise ValueError("out overlaps an input; use a separate array")
        if vout is not None and _overlaps(out, vout):
            raise ValueError("out and value_out overlap; use separate arrays")
        prog = plan.program
        pos = <const int*>cnp.PyArray_DATA(plan.array_pos)
        for i in range(prog.n_arrays):
            aptr[i] = cnp.PyArray_DATA(<cnp.ndarray><object>args[pos[i]])
        pos = <const int*>cnp.PyArray_DATA(plan.scalar_pos)
        cdef const double* consts = <const double*>cnp.PyArray_DATA(plan.scalar_const)
        for i in range(prog.n_scalars):
            if pos[i] < 0:
                svals[i] = consts[i]
            else:
                arr = <cnp.ndarray><object>args[pos[i]]
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
        run_fast_plan(plan, t, aptr, svals, optr, n, out, vout)
        return out

    def _call_kw(self, dict variables, object out, object value_out):
        """The keyword API's fast path (CompiledExpression.value_and_jacobian):
        (value, jacobian) when every variable is already a C-contiguous
        native ndarray of one float dtype and out/value_out (if given) fit
        exactly; None otherwise, and the caller takes the general path, which
        coerces, allocates and raises the documented errors."""
        cdef tuple names = self.compiled.variables
        cdef Py_ssize_t i, nv = len(names)
        cdef list args = []
        cdef cnp.ndarray arr, shaped = None
        cdef int t = -1, mask = 0
        cdef FastPlan plan
        if len(variables) != nv:
            return None
        for i in range(nv):
            x = variables.get(names[i])
            if x is None or not cnp.PyArray_CheckExact(x):
                return None
            arr = <cnp.ndarray>x
            if t < 0:
                t = cnp.PyArray_TYPE(arr)
                if t != cnp.NPY_DOUBLE and t != cnp.NPY_FLOAT:
                    return None
            elif cnp.PyArray_TYPE(arr) != t:
                return None
            if not (cnp.PyArray_ISCARRAY_RO(arr) and cnp.PyArray_ISNOTSWAPPED(arr)):
                return None
            if cnp.PyArray_NDIM(arr) == 0:
                mask |= 1 << i
            elif shaped is None:
                shaped = arr
            elif not cnp.PyArray_SAMESHAPE(arr, shaped):
                return None
            args.append(arr)
        plan = self.plans.get(mask)
        if plan is None:
            plan = self.compiled._fast_plan(self.wrt, mask, self.with_value)
            self.plans[mask] = plan
        cdef bint scalar_d = plan.tan_scalar or shaped is None
        cdef bint scalar_v = plan.is_sum or shaped is None
        if out is None:
            out = _empty_like_result(shaped, scalar_d, t)
        elif not self._fits(out, shaped, scalar_d, t):
            return None
        if self.with_value:
            if value_out is None:
                value_out = _empty_like_result(shaped, scalar_v, t)
            elif not self._fits(value_out, shaped, scalar_v, t):
                return None
            args.append(value_out)
        elif value_out is not None:
            return None
        args.append(out)
        for i in range(nv):
            if _overlaps(<cnp.ndarray>args[i], <cnp.ndarray>out) or (
                    value_out is not None and _overlaps(<cnp.ndarray>args[i],
                                                        <cnp.ndarray>value_out)):
                return None
        if value_out is not None and _overlaps(<cnp.ndarray>out, <cnp.ndarray>value_out):
            return None
        self._run(PySequence_Fast_ITEMS(args), len(args))
        return value_out, out

    cdef bint _fits(self, object o, cnp.ndarray shaped, bint scalar, int t):
        if not cnp.PyArray_CheckExact(o):
            return False
        cdef cnp.ndarray a = <cnp.ndarray>o
        if cnp.PyArray_TYPE(a) != t or not cnp.PyArray_ISCARRAY(a) or \
                not cnp.PyArray_ISNOTSWAPPED(a):
            return False
        if scalar:
            return cnp.PyArray_NDIM(a) == 0
        return cnp.PyArray_SAMESHAPE(a, shaped)

    cdef int _check_out(self, cnp.ndarray o, cnp.ndarray shaped, bint scalar,
                        str name) except -1:
        """The shape check of _checks.check_out, in C for calls at n = 16 (the
        rest is checked in __call__); a refused ``o`` goes there for the wording."""
        cdef bint ok
        if scalar or shaped is None:
            ok = cnp.PyArray_NDIM(o) == 0
        else:
            ok = cnp.PyArray_SAMESHAPE(o, shaped)
        if not ok:
            from . import _checks
            _checks.check_out(o, () if (scalar or shaped is None) else (<object>shaped).shape,
                              (<object>o).dtype, name=name)
            raise AssertionError("_checks.check_out accepted a shape ExprKernel refused")
        return 0


def _restore_kernel(compiled, wrt, with_value, arguments, doc):
    """Unpickle an ExprKernel (see ExprKernel.__reduce__)."""
    cdef ExprKernel kernel = ExprKernel.__new__(ExprKernel)
    kernel.compiled, kernel.wrt, kernel.with_value = compiled, wrt, with_value
    kernel.arguments = tuple(arguments)
    kernel.n_vars = len(kernel.arguments) - (2 if with_value else 1)
    kernel.plans = {}
    kernel.__doc__ = doc
    return kernel


cdef PyObject* _kernel_vectorcall(PyObject* callable, PyObject* const* args, size_t nargsf,
                                  PyObject* kwnames) except NULL:
    """ExprKernel's calls, positional or keyword, without the tuple and dict
    of tp_call: a keyword call costs what a positional one does."""
    cdef ExprKernel kernel = <ExprKernel><object>callable
    cdef Py_ssize_t nargs = PyVectorcall_NARGS(nargsf)
    if kwnames == NULL:
        result = kernel._run(<PyObject**>args, nargs)
    else:
        result = kernel._run_keywords(<PyObject**>args, nargs, <tuple><object>kwnames)
    Py_INCREF(result)
    return <PyObject*>result


cdef _enable_vectorcall():
    """Point ExprKernel's type at the per-instance vectorcall slot (Cython
    gives extension types only tp_call, which builds a dict per keyword call)."""
    cdef ExprKernel probe = ExprKernel.__new__(ExprKernel)
    cdef TypeSlots* slots = <TypeSlots*><PyObject*>ExprKernel
    slots.tp_vectorcall_offset = <char*>&probe.vectorcall - <char*><PyObject*>probe
    slots.tp_flags |= Py_TPFLAGS_HAVE_VECTORCALL
    PyType_Modified(slots)


_enable_vectorcall()


cdef cnp.ndarray _empty_like_result(cnp.ndarray shaped, bint scalar, int t):
    if scalar or shaped is None:
        return cnp.PyArray_EMPTY(0, NULL, t, 0)
    return cnp.PyArray_EMPTY(cnp.PyArray_NDIM(shaped), cnp.PyArray_DIMS(shaped), t, 0)


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


_set_jit()
