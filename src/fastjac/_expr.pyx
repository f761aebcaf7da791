# Design note
# -----------
# The fused pass behind compiled expressions (fastjac.compile, expr.py): the
# Python-facing ``Program`` (one stage's straight-line block program) and
# ``ExprKernel`` (a resolved derivative for hot loops). The loops themselves
# are in _expr_loops.pxd (see its design note), compiled once per
# instruction set in the _level_* modules; fastjac._simd.select installs the
# table (``ExprTable``) of the level it chose, the level of the core kernels.
#
# Nothing here validates a program: expr.py has built a consistent one. The
# arrays are checked by the callers (expr.py, or ExprKernel.__call__).

import numpy as np
cimport numpy as cnp
from cpython.object cimport PyObject
from cpython.pycapsule cimport PyCapsule_GetPointer, PyCapsule_New
from cpython.pystate cimport PyThreadState
from cpython.ref cimport Py_INCREF
from cpython.sequence cimport PySequence_Fast_ITEMS

from libc.stdlib cimport free, malloc

from ._expr_loops cimport *
from ._kernels cimport in_chunks
from ._pool cimport parallel_for, pool_threads

cdef extern from "Python.h":
    PyThreadState* PyEval_SaveThread() noexcept
    void PyEval_RestoreThread(PyThreadState*) noexcept
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

# Below this many elements the GIL is kept (as in _api.pyx).
cdef Py_ssize_t NOGIL_MIN_SIZE = 2048

OPCODES = {
    "copy": OP_COPY, "add": OP_ADD, "subtract": OP_SUB, "multiply": OP_MUL,
    "divide": OP_DIV, "maximum": OP_MAX, "minimum": OP_MIN, "greater": OP_GT,
    "less": OP_LT, "power": OP_POW, "negative": OP_NEG, "square": OP_SQUARE,
    "sqrt": OP_SQRT, "exp": OP_EXP, "log": OP_LOG, "sin": OP_SIN, "cos": OP_COS,
    "tanh": OP_TANH, "sigmoid": OP_SIGMOID, "relu": OP_RELU, "abs": OP_ABS,
    "muladd": OP_MULADD, "deriv": OP_DERIV, "sum": OP_SUM, "tanh_vd": OP_TANH_VD,
}
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


from . import _level_baseline                    # runs anywhere, until _simd.select()
_use_table(_level_baseline.tables()[1])


cdef class Program:
    """A compiled straight-line program; see the design note.

    Built by expr.py (``_build_stage``); ``run`` executes it over n elements.
    """
    cdef readonly cnp.ndarray prog, kind, index, slot
    cdef readonly Py_ssize_t n_instr, n_regs, n_slots, n_acc, n_arrays, n_scalars, n_outs
    cdef readonly object listing          # human-readable instructions (debugging)
    # fused C code of _jit.py: the address of its chunk function per dtype,
    # 0 before the first large call, -1 where the interpreter runs
    cdef readonly Py_ssize_t jit_f64, jit_f32

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


cdef int execute(Program prog, bint is_double, void** aptr, double* svals, void** optr,
                 double* sums, Py_ssize_t n) except -1:
    """Run prog over n elements: compiled code where _jit.py made some (it
    is asked at the first call of JIT_MIN_SIZE elements or more), else the
    interpreter; with the GIL released from NOGIL_MIN_SIZE elements."""
    cdef Py_ssize_t fn = prog.jit_f64 if is_double else prog.jit_f32
    cdef int status
    cdef PyThreadState* state = NULL
    if fn == 0 and 0 <= JIT_MIN_SIZE <= n:
        _jit_module.attach(prog, is_double)
        fn = prog.jit_f64 if is_double else prog.jit_f32
    if n >= NOGIL_MIN_SIZE:
        state = PyEval_SaveThread()
    if fn > 0:
        status = run_jit(<jit_chunk_t>fn, aptr, svals, optr, sums, prog.n_acc, n,
                         sizeof(double) if is_double else sizeof(float))
    elif is_double:
        status = CURRENT.program_f64(
            <const int*>cnp.PyArray_DATA(prog.prog), prog.n_instr, prog.n_regs,
            <const int*>cnp.PyArray_DATA(prog.kind), <const int*>cnp.PyArray_DATA(prog.index),
            <const int*>cnp.PyArray_DATA(prog.slot), prog.n_slots,
            <double**>aptr, svals, <double**>optr, sums, prog.n_acc, n)
    else:
        status = CURRENT.program_f32(
            <const int*>cnp.PyArray_DATA(prog.prog), prog.n_instr, prog.n_regs,
            <const int*>cnp.PyArray_DATA(prog.kind), <const int*>cnp.PyArray_DATA(prog.index),
            <const int*>cnp.PyArray_DATA(prog.slot), prog.n_slots,
            <float**>aptr, svals, <float**>optr, sums, prog.n_acc, n)
    if state != NULL:
        PyEval_RestoreThread(state)
    if status != 0:
        raise MemoryError("fastjac: could not allocate scratch registers")
    return 0


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

    def __init__(self, Program program, array_pos, scalar_pos, scalar_const, bint is_sum,
                 int value_out, int value_acc, int tan_out, int tan_acc):
        self.program = program
        self.array_pos = np.ascontiguousarray(array_pos, dtype=np.intc)
        self.scalar_pos = np.ascontiguousarray(scalar_pos, dtype=np.intc)
        self.scalar_const = np.ascontiguousarray(scalar_const, dtype=np.float64)
        self.is_sum = is_sum
        self.value_out, self.value_acc = value_out, value_acc
        self.tan_out, self.tan_acc = tan_out, tan_acc


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
        cdef double sums[256]
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
                raise ValueError("out is read-only; pass a writeable array")
        if self.with_value:
            vout = <cnp.ndarray><object>args[self.n_vars]
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
        execute(prog, t == cnp.NPY_DOUBLE, aptr, svals, optr, sums, n)
        if plan.tan_acc >= 0:
            _store0(out, sums[plan.tan_acc], t)
        elif plan.tan_out < 0:
            out[...] = 0                    # structurally zero
        if plan.value_acc >= 0:
            _store0(vout, sums[plan.value_acc], t)
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
        cdef bint scalar_d = plan.tan_acc >= 0 or shaped is None
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
