# Design note
# -----------
# The public entry points ``jacobian`` and ``sum_gradient``, and the
# low-level ``kernel`` handles for hot loops. Every call goes, in this order:
#
# 1. resolve the operator (``Op``) and check ``wrt``, ``layout``, ``format``;
# 2. coerce the operands: float32 stays float32, float64 stays float64,
#    integers and bool become float64, float16 becomes float32, anything
#    else is a TypeError; Python numbers are "weak" scalars that take the
#    array's dtype, as in NumPy 2; non-contiguous, misaligned or byte-swapped
#    arrays are copied into a contiguous native array;
# 3. resolve ``out`` (``None`` allocates);
# 4. run one kernel of _kernels.pyx over the data, with the GIL released
#    for arrays large enough that releasing it pays;
# 5. for ``format`` other than "compact", hand the compact result to
#    _layout.py, the only module that knows layouts, dense and sparse.
#
# This layer is Cython rather than Python because it runs on every call of
# an optimisation loop: at n = 16 the checks, not the arithmetic, are the
# cost, and compiled checks keep a whole call well under a microsecond.

cimport numpy as cnp
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy
from cpython.pystate cimport PyThreadState

cdef extern from "Python.h":
    PyThreadState* PyEval_SaveThread() noexcept
    void PyEval_RestoreThread(PyThreadState*) noexcept

import sys

import numpy as np

from ._broadcast_loops cimport sum_inner_into, sum_rows_into
from ._kernels cimport derivative_into, derivative_sum
from ._limits cimport NOGIL_MIN_SIZE
from . import _broadcast, _hessian, _kernels, _layout, _ops

cdef extern from "numpy/arrayobject.h":
    object PyArray_Scalar(void* data, cnp.dtype descr, object base)

cnp.import_array()

# The derivative code that is 0 everywhere (greater, less).
cdef int ZERO = _kernels.DERIVATIVE_CODES["zero"]

FORMATS = ("compact", "dense", "csr", "csc", "coo", "dia", "sparse", "operator")
LAYOUTS = ("numerator", "denominator")
_FORMAT_LIST = ", ".join([repr(f) for f in FORMATS])


cdef class Op:
    """A resolved operator: its name, arity and derivative codes."""
    cdef readonly str name
    cdef readonly int arity
    cdef readonly int code_a, code_b
    cdef readonly bint structurally_zero
    # second derivatives (sum_hessian): d2/da2, d2/db2, d2/da db
    cdef readonly int code_aa, code_bb, code_ab

    def __repr__(self):
        return f"<fastjac op {self.name!r}>"


cdef dict OPS = {}


def _register_ops():
    codes = _kernels.DERIVATIVE_CODES
    cdef Op op
    for name, (da, db) in _ops.BINARY.items():
        op = Op()
        op.name, op.arity = name, 2
        op.code_a, op.code_b = codes[da], codes[db]
        op.structurally_zero = name in _ops.STRUCTURALLY_ZERO
        op.code_aa, op.code_bb, op.code_ab = (codes[d] for d in _ops.BINARY_SECOND[name])
        OPS[name] = op
    for name, d in _ops.UNARY.items():
        op = Op()
        op.name, op.arity = name, 1
        op.code_a = op.code_b = codes[d]
        op.structurally_zero = False
        op.code_aa = op.code_bb = op.code_ab = codes[_ops.UNARY_SECOND[name]]
        OPS[name] = op
    for alias, name in _ops.ALIASES.items():
        OPS[alias] = OPS[name]


_register_ops()


cdef Op resolve_op(object op, bint allow_none):
    if op is None and allow_none:
        return <Op>OPS["identity"]
    try:
        found = OPS.get(op)
    except TypeError:           # unhashable op
        found = None
    if found is None:
        raise ValueError(
            f"unknown op {op!r}; binary operators: {', '.join(_ops.BINARY_OPS)}; "
            f"unary functions: {', '.join(_ops.UNARY_OPS)}"
            + ("; or None for y = sum(a)" if allow_none else ""))
    return <Op>found


cdef int check_wrt(object wrt, Op op) except -1:
    if (type(wrt) is int or isinstance(wrt, (int, np.integer))) and not isinstance(wrt, bool):
        if wrt == 0 or (wrt == 1 and op.arity == 2):
            return <int>wrt
    allowed = "0 or 1" if op.arity == 2 else "0 (a unary function has one operand)"
    raise ValueError(f"wrt must be {allowed}, got {wrt!r}")


cpdef bint check_layout(object layout) except -1:
    """True for denominator layout, else ValueError: the one check of every
    entry point (the Python layer's through _checks.check_layout)."""
    if isinstance(layout, str):     # not ==: an array would compare element-wise
        if layout == "numerator":
            return False
        if layout == "denominator":
            return True
    raise ValueError(f"layout must be 'numerator' or 'denominator', got {layout!r}")


cpdef object check_format(object format):
    """The format, with "sparse" meaning "csr", else ValueError listing
    FORMATS: the one check of every entry point (the Python layer's
    through _checks.check_format)."""
    if isinstance(format, str):     # not ==: an array would compare element-wise
        if format == "compact":
            return "compact"
        if format in FORMATS:
            return "csr" if format == "sparse" else format
    raise ValueError(f"format must be one of {_FORMAT_LIST}, got {format!r}")


# -- operands -----------------------------------------------------------------

cdef inline bint is_python_number(object x):
    # Exact types: NumPy scalars (np.float64 subclasses float) are "strong",
    # as in NumPy 2's promotion rules.
    return type(x) is float or type(x) is int or type(x) is bool


cpdef int dtype_vote(cnp.ndarray arr, str name) except -1:
    """The float type an array asks for: NPY_FLOAT or NPY_DOUBLE (the larger
    of two votes wins). The Python layer's, through _checks.py."""
    cdef int t = cnp.PyArray_TYPE(arr)
    if t == cnp.NPY_DOUBLE:
        return cnp.NPY_DOUBLE
    if t == cnp.NPY_FLOAT or t == cnp.NPY_FLOAT16:
        return cnp.NPY_FLOAT
    if cnp.PyTypeNum_ISINTEGER(t) or cnp.PyTypeNum_ISBOOL(t):
        return cnp.NPY_DOUBLE
    if t == cnp.NPY_LONGDOUBLE:
        raise TypeError(
            f"{name} has dtype {arr.dtype}, which fastjac does not compute in; "
            f"convert it to float64 (the kernels run in float32 or float64)")
    raise TypeError(
        f"{name} has dtype {arr.dtype}; fastjac takes real numbers: float32, "
        f"float64, integer or bool arrays (integers and bool become float64)")


cpdef cnp.ndarray as_array(object x, str name):
    """x as an ndarray, or TypeError naming ``name`` (None, strings, complex
    numbers, masked arrays). The Python layer's, through _checks.py."""
    if cnp.PyArray_Check(x):
        if not cnp.PyArray_CheckExact(x) and isinstance(x, np.ma.MaskedArray):
            # Computing on the data under the mask would be a silent wrong answer.
            raise TypeError(
                f"{name} is a numpy.ma.MaskedArray; fastjac does not apply masks: pass "
                f"{name}.filled(value) or {name}.data to differentiate at every element")
        return <cnp.ndarray>x
    if x is None:
        raise TypeError(f"{name} must be an array_like of real numbers, got None")
    if isinstance(x, (str, bytes)):
        raise TypeError(f"{name} must be an array_like of real numbers, got a string {x!r}")
    if type(x) is complex:
        raise TypeError(f"{name} must be real, got the complex number {x!r}")
    return np.asarray(x)


cdef cnp.ndarray native(cnp.ndarray arr, int typenum):
    """arr itself when it is already a C-contiguous native array of typenum."""
    if (cnp.PyArray_TYPE(arr) == typenum and cnp.PyArray_IS_C_CONTIGUOUS(arr)
            and cnp.PyArray_ISALIGNED(arr) and cnp.PyArray_ISNOTSWAPPED(arr)):
        return arr
    return cnp.PyArray_FROMANY(arr, typenum, 0, 0,
                               cnp.NPY_ARRAY_C_CONTIGUOUS | cnp.NPY_ARRAY_ALIGNED
                               | cnp.NPY_ARRAY_FORCECAST)


cdef cnp.ndarray number_as_array(object x, int typenum):
    cdef cnp.ndarray arr = cnp.PyArray_EMPTY(0, NULL, typenum, 0)
    if typenum == cnp.NPY_DOUBLE:
        (<double*>cnp.PyArray_DATA(arr))[0] = <double>x
    else:
        (<float*>cnp.PyArray_DATA(arr))[0] = <float>x
    return arr


cdef class Operands:
    """Both operands in one float dtype: C-contiguous native arrays, except
    that a Python number next to an array stays a C value (making a 0-d
    array of it cost a fifth of a call at n = 1 000; measured:
    docs/performance.md, 'Measurements behind the code')."""
    cdef cnp.ndarray a, b          # None for a number kept as a value; b is a when unary
    cdef void* a_data
    cdef void* b_data
    cdef int a_ndim, b_ndim
    cdef double values[2]          # a's, b's number (float64 results)
    cdef float singles[2]          # a's, b's number (float32 results)
    cdef int typenum
    cdef cnp.ndarray shaped        # the array operand that fixes the shape
    cdef bint broadcast            # shapes differ, neither a scalar: see _broadcast.py

    cdef void* keep_number(self, int which, object x):
        """Store the Python number x for operand ``which``; its address."""
        if self.typenum == cnp.NPY_DOUBLE:
            self.values[which] = <double>x
            return &self.values[which]
        self.singles[which] = <float>x
        return &self.singles[which]


cdef bint broadcastable(cnp.ndarray a, cnp.ndarray b):
    """NumPy's rule, as _broadcast.check_shapes (which words the error):
    aligned from the last axis, each pair of lengths equal or one of them 1.
    Here for the call that passes, without a Python call."""
    cdef int na = cnp.PyArray_NDIM(a), nb = cnp.PyArray_NDIM(b), i
    cdef Py_ssize_t m, n
    for i in range(1, min(na, nb) + 1):
        m, n = cnp.PyArray_DIM(a, na - i), cnp.PyArray_DIM(b, nb - i)
        if m != n and m != 1 and n != 1:
            return False
    return True


cdef cnp.ndarray in_dtype(cnp.ndarray x, int typenum):
    """x in the native dtype ``typenum``, in whatever memory order it has
    (_broadcast.as_operand, without its Python call when x already is)."""
    if cnp.PyArray_TYPE(x) == typenum and cnp.PyArray_ISNOTSWAPPED(x):
        return x
    return _broadcast.as_operand(x, cnp.PyArray_DescrFromType(typenum))


cdef Operands coerce(object a, object b, bint unary):
    cdef Operands ops = Operands()
    cdef cnp.ndarray arr_a, arr_b
    cdef int vote = 0
    cdef bint weak_a = is_python_number(a)
    cdef bint weak_b = (not unary) and is_python_number(b)
    if not weak_a:
        arr_a = as_array(a, "a")
        vote = dtype_vote(arr_a, "a")
    if not unary and not weak_b:
        arr_b = as_array(b, "b")
        vote = max(vote, dtype_vote(arr_b, "b"))    # NPY_DOUBLE > NPY_FLOAT
    ops.typenum = cnp.NPY_DOUBLE if vote == 0 else vote
    if unary or (weak_a and weak_b):
        # no array operand: numbers become 0-d arrays, which give the shape
        ops.a = number_as_array(a, ops.typenum) if weak_a else native(arr_a, ops.typenum)
        ops.b = ops.a if unary else number_as_array(b, ops.typenum)
    elif weak_a:
        ops.a_data = ops.keep_number(0, a)
        ops.b = native(arr_b, ops.typenum)
    elif weak_b:
        ops.a = native(arr_a, ops.typenum)
        ops.b_data = ops.keep_number(1, b)
    elif cnp.PyArray_NDIM(arr_a) and cnp.PyArray_NDIM(arr_b) and not \
            cnp.PyArray_SAMESHAPE(arr_a, arr_b):
        # NumPy broadcasting: checked here, computed by _broadcast (which
        # reads a Fortran-order operand as it is, so it is not copied here)
        if not broadcastable(arr_a, arr_b):
            _broadcast.check_shapes((<object>arr_a).shape, (<object>arr_b).shape)  # raises
        ops.broadcast = True
        ops.a, ops.b = in_dtype(arr_a, ops.typenum), in_dtype(arr_b, ops.typenum)
        return ops
    else:
        ops.a = native(arr_a, ops.typenum)
        ops.b = native(arr_b, ops.typenum)
    if ops.a is not None:
        ops.a_data, ops.a_ndim = cnp.PyArray_DATA(ops.a), cnp.PyArray_NDIM(ops.a)
    if ops.b is not None:
        ops.b_data, ops.b_ndim = cnp.PyArray_DATA(ops.b), cnp.PyArray_NDIM(ops.b)
    ops.shaped = ops.b if ops.a_ndim == 0 else ops.a
    return ops


# -- out ----------------------------------------------------------------------

cdef bint overlaps(cnp.ndarray x, cnp.ndarray y):
    """True when the (contiguous) buffers of x and y share any byte."""
    cdef char* x0 = <char*>cnp.PyArray_DATA(x)
    cdef char* y0 = <char*>cnp.PyArray_DATA(y)
    return x0 < y0 + cnp.PyArray_NBYTES(y) and y0 < x0 + cnp.PyArray_NBYTES(x)


cdef cnp.ndarray check_out(object out, int ndim, cnp.npy_intp* dims, int typenum):
    """``out`` when it is a writeable ndarray of the expected shape and dtype.

    The C twin of _checks.check_out (a Python call would cost more than an
    n = 16 kernel): it tests here and hands a refused ``out`` to that one,
    which words the error."""
    cdef cnp.ndarray o
    if cnp.PyArray_Check(out):
        o = <cnp.ndarray>out
        if (cnp.PyArray_TYPE(o) == typenum and cnp.PyArray_ISNOTSWAPPED(o)
                and cnp.PyArray_NDIM(o) == ndim
                and (ndim == 0 or cnp.PyArray_CompareLists(cnp.PyArray_DIMS(o), dims, ndim))
                and cnp.PyArray_ISWRITEABLE(o)):
            return o
    from . import _checks
    _checks.check_out(out, tuple([dims[i] for i in range(ndim)]),
                      cnp.PyArray_DescrFromType(typenum))
    raise AssertionError("_checks.check_out accepted an out that _api.check_out refused")


cdef cnp.ndarray unalias(cnp.ndarray operand, cnp.ndarray out):
    """A copy of operand if out overlaps it other than element for element."""
    if operand is out:
        return operand
    if overlaps(operand, out) and not (
            cnp.PyArray_DATA(operand) == cnp.PyArray_DATA(out)
            and cnp.PyArray_SIZE(operand) == cnp.PyArray_SIZE(out)):
        return operand.copy()
    return operand


cdef object as_scalar(double value, int typenum):
    """A NumPy scalar of typenum (a float32 total is rounded once, here)."""
    cdef float single = <float>value
    cdef void* data = <void*>&value if typenum == cnp.NPY_DOUBLE else <void*>&single
    return PyArray_Scalar(data, cnp.PyArray_DescrFromType(typenum), None)


cdef void call_into(int code, int typenum, void* a, Py_ssize_t a_step,
                    void* b, Py_ssize_t b_step, void* out, Py_ssize_t n) noexcept:
    """derivative_into for either dtype, with the GIL released when it pays."""
    cdef PyThreadState* state = NULL
    if n >= NOGIL_MIN_SIZE:
        state = PyEval_SaveThread()
    if typenum == cnp.NPY_DOUBLE:
        derivative_into(code, <double*>a, a_step, <double*>b, b_step, <double*>out, n)
    else:
        derivative_into(code, <float*>a, a_step, <float*>b, b_step, <float*>out, n)
    if state != NULL:
        PyEval_RestoreThread(state)


cdef double call_sum(int code, int typenum, void* a, Py_ssize_t a_step,
                     void* b, Py_ssize_t b_step, Py_ssize_t n) noexcept:
    """derivative_sum for either dtype, with the GIL released when it pays."""
    cdef PyThreadState* state = NULL
    cdef double total
    if n >= NOGIL_MIN_SIZE:
        state = PyEval_SaveThread()
    if typenum == cnp.NPY_DOUBLE:
        total = derivative_sum(code, <double*>a, a_step, <double*>b, b_step, n)
    else:
        total = derivative_sum(code, <float*>a, a_step, <float*>b, b_step, n)
    if state != NULL:
        PyEval_RestoreThread(state)
    return total


# -- computing the compact result ----------------------------------------------

cdef inline Py_ssize_t step_of(int ndim, int other_ndim) noexcept:
    """An operand's step in the loops: 0 for a scalar expanded over the
    other operand, 1 for an array. Two scalars are one element each, read
    with step 1 like an array's: the element then takes the array loop and
    its formulas (the loops' separate both-scalars case took the exceptional
    formula, thousands of ulp off for d(a/b)/db with a/b subnormal)."""
    return ndim != 0 or other_ndim == 0


cdef object run_kernel(int code, bint summing, Operands ops, int wrt, object out):
    """The compact result: an array shaped like the array operand, or a scalar."""
    cdef cnp.ndarray a = ops.a, b = ops.b, target, result
    cdef void* a_data = ops.a_data
    cdef void* b_data = ops.b_data
    cdef Py_ssize_t a_step = step_of(ops.a_ndim, ops.b_ndim)
    cdef Py_ssize_t b_step = step_of(ops.b_ndim, ops.a_ndim)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(ops.shaped)
    cdef double total
    cdef bint zeros_ready = False
    cdef bint to_scalar = summing and (ops.a_ndim if wrt == 0 else ops.b_ndim) == 0

    if to_scalar:
        # The gradient of a sum with respect to a scalar operand: one number.
        total = call_sum(code, ops.typenum, a_data, a_step, b_data, b_step, n)
        if out is None:
            return as_scalar(total, ops.typenum)
        result = check_out(out, 0, NULL, ops.typenum)
        # check_out has matched the dtype: a C store, not a Python __setitem__
        # (which costs more than the whole sum at n = 16)
        if ops.typenum == cnp.NPY_DOUBLE:
            (<double*>cnp.PyArray_DATA(result))[0] = total
        else:
            (<float*>cnp.PyArray_DATA(result))[0] = <float>total
        return result

    if out is None:
        # A derivative that is 0 everywhere needs no kernel: zeroed memory
        # (calloc) is mapped by the OS lazily, as it is first touched, where
        # the kernel would write every page.
        zeros_ready = code == ZERO
        if zeros_ready:
            result = cnp.PyArray_ZEROS(cnp.PyArray_NDIM(ops.shaped), cnp.PyArray_DIMS(ops.shaped),
                                       ops.typenum, 0)
        else:
            result = cnp.PyArray_EMPTY(cnp.PyArray_NDIM(ops.shaped), cnp.PyArray_DIMS(ops.shaped),
                                       ops.typenum, 0)
        target = result
    else:
        result = check_out(out, cnp.PyArray_NDIM(ops.shaped), cnp.PyArray_DIMS(ops.shaped),
                           ops.typenum)
        if cnp.PyArray_IS_C_CONTIGUOUS(result) and cnp.PyArray_ISALIGNED(result):
            target = result
            if a is not None:
                a = unalias(a, target)
                a_data = cnp.PyArray_DATA(a)
            if b is not None:
                b = unalias(b, target)
                b_data = cnp.PyArray_DATA(b)
        else:
            # A strided out: compute contiguously, then copy in (NumPy-style
            # out= semantics, at the price of one extra pass).
            target = cnp.PyArray_EMPTY(cnp.PyArray_NDIM(result), cnp.PyArray_DIMS(result),
                                       ops.typenum, 0)
    if not zeros_ready:
        call_into(code, ops.typenum, a_data, a_step, b_data, b_step, cnp.PyArray_DATA(target), n)
    if target is not result:
        result[...] = target
    if out is None and cnp.PyArray_NDIM(result) == 0:
        return result[()]          # a NumPy scalar, as NumPy ufuncs return
    return result


# -- public API -----------------------------------------------------------------

cdef cnp.ndarray operand_array(Operands ops, int which):
    """Operand ``which`` as an array (a Python number kept as a C value
    becomes a 0-d array of the result dtype)."""
    cdef cnp.ndarray arr = ops.a if which == 0 else ops.b
    if arr is not None:
        return arr
    if ops.typenum == cnp.NPY_DOUBLE:
        return number_as_array(ops.values[which], ops.typenum)
    return number_as_array(ops.singles[which], ops.typenum)


cdef int check_arity(Op spec, object b) except -1:
    if spec.arity == 2 and b is None:
        raise ValueError(f"op {spec.name!r} is a binary operator: pass a second operand b")
    if spec.arity == 1 and b is not None:
        raise ValueError(f"op {spec.name!r} is a unary function: b must be None")
    return 0


cdef inline bint maybe_foreign(object x):
    """False for what the NumPy path takes without a second look (ndarrays,
    Python numbers, None): two pointer compares on every call."""
    return not (cnp.PyArray_Check(x) or x is None or is_python_number(x))


cpdef bint is_dask_array(object x):
    """x is a dask.array.Array. Never imports Dask: a Dask array exists
    only once its module is loaded."""
    module = sys.modules.get("dask.array")
    return module is not None and isinstance(x, module.Array)


cdef inline bint any_dask(object a, object b):
    """The test that picks another engine: a Dask operand gets a lazy Dask
    array back (_dask.py, imported only then)."""
    return (maybe_foreign(a) and is_dask_array(a)) or (maybe_foreign(b) and is_dask_array(b))


cdef object differentiate(bint summing, Op spec, object a, object b, object wrt,
                          object layout, object format, object out, object axis=None):
    """The body of ``jacobian`` (summing=False) and ``sum_gradient`` (True)."""
    cdef int w = check_wrt(wrt, spec)
    cdef bint denominator = check_layout(layout)
    fmt = check_format(format)
    check_arity(spec, b)
    cdef int code = spec.code_a if w == 0 else spec.code_b
    if any_dask(a, b):
        from . import _dask
        return _dask.differentiate(summing, spec, code, a, b, w, axis, denominator, fmt, out)
    cdef Operands ops = coerce(a, b, spec.arity == 1)
    if ops.broadcast and fmt == "compact":
        result = (one_pass_gradient(code, ops, w, out, axis) if summing else
                  shared_parameter_partials(code, ops, w, out))
        if result is not None:
            return result
    if ops.broadcast or axis is not None:
        return _broadcast.differentiate(
            summing, spec, code, operand_array(ops, 0),
            operand_array(ops, 1) if spec.arity == 2 else None, w, axis, denominator, fmt, out)
    if fmt == "compact":
        return run_kernel(code, summing, ops, w, out)
    compact = run_kernel(code, summing, ops, w, None)
    return _layout.as_matrix(compact, matrix_kind(summing, ops, w), denominator, fmt,
                             spec.structurally_zero, out)


cdef bint shares_trailing_shape(cnp.ndarray k, cnp.ndarray x):
    """k's shape is the trailing part of x's (w of shape (n,) against X of
    shape (N, n)), both C-contiguous and aligned: the shared parameter."""
    cdef int k_ndim = cnp.PyArray_NDIM(k), x_ndim = cnp.PyArray_NDIM(x), i
    if (k_ndim >= x_ndim or cnp.PyArray_SIZE(k) <= 1
            or not cnp.PyArray_ISCARRAY_RO(k) or not cnp.PyArray_ISCARRAY_RO(x)):
        return False
    for i in range(k_ndim):
        if cnp.PyArray_DIM(k, i) != cnp.PyArray_DIM(x, x_ndim - k_ndim + i):
            return False
    return True


cdef bint is_c_out(object out):
    """out is None or a C-contiguous, aligned, writeable ndarray (the fast
    paths write it directly; anything else goes to _broadcast.py)."""
    return out is None or (cnp.PyArray_Check(out) and cnp.PyArray_ISCARRAY(<cnp.ndarray>out))


cdef object shared_parameter_partials(int code, Operands ops, int w, object out):
    """jacobian's compact result (the partials, of X's shape) for a shared
    parameter k against X with fewer than NOGIL_MIN_SIZE elements: the
    kernel row by row, here in C (the same element formulas as
    _broadcast.py's single pass over the broadcast operands, so the same
    bits). None when the call is not of that kind, or out overlaps k, or
    overlaps X other than element for element."""
    cdef cnp.ndarray k = ops.a if w == 0 else ops.b
    cdef cnp.ndarray x = ops.b if w == 0 else ops.a
    cdef cnp.ndarray result
    cdef Py_ssize_t width = cnp.PyArray_SIZE(k), r, step, itemsize
    if (cnp.PyArray_SIZE(x) >= NOGIL_MIN_SIZE or not shares_trailing_shape(k, x)
            or not is_c_out(out)):
        return None
    if out is None:
        result = cnp.PyArray_EMPTY(cnp.PyArray_NDIM(x), cnp.PyArray_DIMS(x), ops.typenum, 0)
    else:
        result = check_out(out, cnp.PyArray_NDIM(x), cnp.PyArray_DIMS(x), ops.typenum)
        if overlaps(result, k) or (overlaps(result, x)
                                   and cnp.PyArray_DATA(result) != cnp.PyArray_DATA(x)):
            return None
    itemsize = cnp.PyArray_ITEMSIZE(x)
    for r in range(cnp.PyArray_SIZE(x) // width):
        step = r * width * itemsize
        if w == 0:
            call_into(code, ops.typenum, cnp.PyArray_DATA(k), 1,
                      <char*>cnp.PyArray_DATA(x) + step, 1,
                      <char*>cnp.PyArray_DATA(result) + step, width)
        else:
            call_into(code, ops.typenum, <char*>cnp.PyArray_DATA(x) + step, 1,
                      cnp.PyArray_DATA(k), 1, <char*>cnp.PyArray_DATA(result) + step, width)
    return result


cdef bint axis_mask(object axis, int ndim, unsigned long long* mask):
    """mask: the axes that ``axis`` names (None, an int or a tuple of ints,
    the negative ones counted from the end of ndim axes; None names none
    here). False for anything else -- including what NumPy would refuse --
    and the call goes to _broadcast.py, which says what is wrong."""
    cdef long a
    mask[0] = 0
    if ndim > 64:
        return False
    if axis is None:
        return True
    if type(axis) is int:
        axis = (axis,)
    if type(axis) is not tuple:
        return False
    for item in <tuple>axis:
        if type(item) is not int or item < -ndim or item >= ndim:
            return False
        a = item
        if a < 0:
            a += ndim
        if mask[0] & (1ULL << a):
            return False
        mask[0] |= 1ULL << a
    return True


cdef object one_pass_gradient(int code, Operands ops, int w, object out, object axis):
    """sum_gradient's compact result when the sums run in one pass over the
    other operand X, here in C with no Python call: X in C or Fortran order
    has the broadcast shape, and the axes it sums -- those along which the
    differentiated operand k has length 1, every one of them named by
    ``axis`` -- come before all of k's axes or after them. So a shared
    parameter w (n,) against X (N, n) is a sum over rows, and a per-row
    scale s (N, 1) a sum along rows; a Fortran-ordered X, read in its own
    memory order, swaps the two. These are _broadcast.py's loops for the
    same calls (_sum_in_one_pass), so the bits are the same. None when the
    call is not of that kind; _broadcast.py takes it."""
    cdef cnp.ndarray k = ops.a if w == 0 else ops.b
    cdef cnp.ndarray x = ops.b if w == 0 else ops.a
    cdef int k_ndim = cnp.PyArray_NDIM(k), ndim = cnp.PyArray_NDIM(x), lead, i, changes = 0
    cdef int result_ndim = 0, k_long_axes = 0
    cdef Py_ssize_t k_size = cnp.PyArray_SIZE(k), n, k_n
    cdef unsigned long long named
    cdef bint summed, any_summed = False, last_summed = False, first_summed = False
    cdef bint seen = False, in_rows
    cdef cnp.npy_intp dims[64]
    cdef double small[64]
    cdef double* total = small
    cdef cnp.ndarray result
    if (k_ndim > ndim or k_size == 0 or not cnp.PyArray_ISCARRAY_RO(k) or not is_c_out(out)
            or not (cnp.PyArray_ISCARRAY_RO(x) or cnp.PyArray_ISFARRAY_RO(x))
            or not axis_mask(axis, ndim, &named)):
        return None
    lead = ndim - k_ndim
    for i in range(ndim):
        n = cnp.PyArray_DIM(x, i)
        k_n = 1 if i < lead else cnp.PyArray_DIM(k, i - lead)
        if k_n != 1 and k_n != n:
            return None                 # X is broadcast too
        if axis is None:                # the gradient: every axis along which k is broadcast
            summed = k_n == 1
        elif (named >> i) & 1:
            if k_n != 1:
                return None             # an axis of k reduced: its partials are not summed
            summed = True
        else:
            summed = False
        any_summed |= summed
        if not summed:
            dims[result_ndim] = n
            result_ndim += 1
        if n == 1:
            continue
        if summed != (k_n == 1):
            return None                 # an axis along which k is broadcast, kept
        if not summed:
            k_long_axes += 1
        if not seen:
            first_summed, seen = summed, True
        elif summed != last_summed:
            changes += 1
        last_summed = summed
    if changes > 1 or not any_summed:
        return None
    # Which loop, in X's memory order: a sum over rows of k's length when the
    # summed axes come first, else a sum along rows, one per element of k (k
    # is one number: along the one row that is all of X).
    in_rows = k_size > 1 and (first_summed or changes == 0)
    if not cnp.PyArray_ISCARRAY_RO(x):
        if k_long_axes > 1:
            return None                 # k's elements would be read in Fortran order
        in_rows = not in_rows and k_size > 1
    if axis is None:
        result_ndim = k_ndim
        for i in range(k_ndim):
            dims[i] = cnp.PyArray_DIM(k, i)
    if out is None:
        result = cnp.PyArray_EMPTY(result_ndim, dims, ops.typenum, 0)
    else:
        result = check_out(out, result_ndim, dims, ops.typenum)
    if k_size > 64:
        total = <double*>malloc(k_size * sizeof(double))
        if total == NULL:
            raise MemoryError("fastjac: no memory for the sums of sum_gradient")
    try:
        # all of k and X is read before out is written: out may be either
        if in_rows:
            sum_rows_into(code, w == 0, ops.typenum, cnp.PyArray_DATA(k), cnp.PyArray_DATA(x),
                          cnp.PyArray_SIZE(x) // k_size, k_size, total)
        else:
            sum_inner_into(code, w == 0, ops.typenum, cnp.PyArray_DATA(k), cnp.PyArray_DATA(x),
                           k_size, cnp.PyArray_SIZE(x) // k_size, total)
        write_totals(total, result, k_size)
    finally:
        if total != small:
            free(total)
    return result


cdef void write_totals(const double* total, cnp.ndarray result, Py_ssize_t n) noexcept:
    """result[i] = total[i], rounded to result's dtype (a C-contiguous
    float64 or float32 array)."""
    cdef Py_ssize_t i
    if cnp.PyArray_TYPE(result) == cnp.NPY_DOUBLE:
        memcpy(cnp.PyArray_DATA(result), total, n * sizeof(double))
    else:
        for i in range(n):
            (<float*>cnp.PyArray_DATA(result))[i] = <float>total[i]


cdef str matrix_kind(bint summing, Operands ops, int w):
    """Which of _layout's kinds the compact result is (see its table)."""
    cdef bint wrt_is_scalar = (ops.a_ndim if w == 0 else ops.b_ndim) == 0
    if summing:
        return "scalar" if wrt_is_scalar else "gradient"
    if cnp.PyArray_NDIM(ops.shaped) == 0:
        return "scalar"
    return "by_scalar" if wrt_is_scalar else "diagonal"


def jacobian(op, a, b=None, *, wrt=0, layout="numerator", format="compact", out=None):
    """Jacobian of the element-wise ``y = op(a, b)`` with respect to one operand.

    Parameters
    ----------
    op : str or numpy.ufunc
        A binary operator, one of ``fastjac.BINARY_OPS`` ("multiply",
        "divide", "maximum", "power", "logaddexp"...), or a unary function,
        one of ``fastjac.UNARY_OPS`` ("exp", "tanh", "sigmoid", "log1p"...;
        then ``b`` is None): both lists are made from the operator records
        (docs/expressions.md has the table). The matching NumPy ufunc
        (``np.multiply``, ``np.tanh``...) is accepted too.
    a : array_like of shape (...) or scalar
        First operand (w in the specification).
    b : array_like or scalar, optional
        Second operand (x) of a binary operator. ``a`` and ``b`` may have
        any two shapes that NumPy broadcasts together; y = op(a, b) has the
        broadcast shape S. A scalar operand (a Python number or a 0-d
        array) is expanded to the other's shape (scalar expansion).
    wrt : {0, 1}, default 0
        Differentiate with respect to ``a`` (0) or ``b`` (1).
    layout : {"numerator", "denominator"}, default "numerator"
        Numerator layout puts dy_i/dx_j at [i, j]; denominator layout is its
        exact transpose. It applies to "dense" and the sparse formats only:
        a compact result is the same in both layouts (layout has no effect
        on it, though its value is still checked).
    format : {"compact", "dense", "csr", "csc", "coo", "dia", "sparse", "operator"}
        "compact" (default) returns the smallest exact answer, shaped like
        the result y: the diagonal when ``wrt`` names an array, the vector
        dy/dz when it names a scalar z, a NumPy scalar when both are scalars.
        With broadcast operands each element of y reads one element of the
        operand k = ``wrt``, so each row of J has one entry: the compact
        result holds those entries, an array of shape S.
        "dense" returns the 2-D Jacobian with the shapes of section 1 of the
        specification; n-d operands are flattened in C order (with broadcast
        operands it is |S| x |k| in numerator layout). The sparse
        formats return ``scipy.sparse`` arrays of the same shape ("sparse" is
        "csr"), built in O(n) without a dense matrix; needs SciPy.
        "operator" returns a ``scipy.sparse.linalg.LinearOperator`` that
        keeps the structure (``fastjac.DiagonalOperator``, ``RowOperator``,
        ``ColumnOperator`` or ``BroadcastOperator``): the map of the
        flattened operands, |y| x |k| in numerator layout, its transpose in
        denominator layout; products in O(n); needs SciPy.
    out : ndarray, optional
        With format "compact" or "dense": the array to write into; its shape
        and dtype must be exactly those of the result.

    Returns
    -------
    ndarray, NumPy scalar, scipy.sparse array or fastjac.JacobianOperator
        float32 when the operands are float32 (and Python numbers), float64
        otherwise.

    Raises
    ------
    ValueError
        Unknown op, bad ``wrt``/``layout``/``format``, operands whose shapes
        do not broadcast (both are named), or ``out`` of the wrong shape or
        dtype or read-only.
    TypeError
        Complex, object, string or other non-real operands.
    MemoryError
        A dense or DIA result that would not fit in this machine's memory
        (the message says how many bytes it would need).

    Examples
    --------
    >>> import numpy as np, fastjac
    >>> w, x = np.array([1.0, 2.0, 3.0]), np.array([4.0, 5.0, 6.0])
    >>> fastjac.jacobian("multiply", w, x)            # diag(x)
    array([4., 5., 6.])
    >>> fastjac.jacobian("divide", w, 2.0, wrt=1)     # d(w / z)/dz = -w / z**2
    array([-0.25, -0.5 , -0.75])
    >>> fastjac.jacobian("tanh", np.zeros(2), format="dense")
    array([[1., 0.],
           [0., 1.]])
    >>> fastjac.jacobian("multiply", w, np.ones((2, 3)), format="dense").shape  # w broadcast
    (6, 3)
    """
    return differentiate(False, resolve_op(op, False), a, b, wrt, layout, format, out)


def sum_gradient(op, a, b=None, *, wrt=0, axis=None, layout="numerator", format="compact",
                 out=None):
    """Derivative of ``y = sum(op(a, b), axis=axis)`` with respect to one operand.

    Parameters
    ----------
    op : str, numpy.ufunc or None
        As for :func:`jacobian`; ``None`` (or "identity") means y = sum(a).
    a, b : array_like or scalar
        The operands, as for :func:`jacobian`: any two shapes that NumPy
        broadcasts together (broadcast shape S).
    wrt : {0, 1}, default 0
        Differentiate with respect to ``a`` (0) or ``b`` (1); call that
        operand k.
    axis : None, int or tuple of ints, default None
        The axes of S that are summed, as in ``numpy.sum`` (negative values
        count from the end). None sums everything: y is a scalar and the
        compact result is its gradient, shaped like k (the per-element
        partials summed over the axes along which k was broadcast; a NumPy
        scalar for a scalar k). With an axis, y is an array and the result
        is the Jacobian dy/dk: compact, it is the partials summed over the
        summed axes along which k has length 1 (or which k lacks), those
        axes removed, the others in order -- each element is one entry of
        J, and every entry of J is one element (w of shape (n,) against X
        of shape (N, n): ``axis=0`` gives the diagonal, shape (n,);
        ``axis=-1`` gives X itself, the (N, n) matrix J). Dense, J is
        |y| x |k| in numerator layout; the sparse formats store exactly the
        compact result's entries.
    layout : {"numerator", "denominator"}, default "numerator"
        The gradient of a scalar by a vector of n is a 1 x n row in numerator
        layout and an n x 1 column in denominator layout; by a p x q matrix
        it is q x p in numerator and p x q in denominator layout. These are
        the shapes of "dense" and the sparse formats: layout has no effect
        on the compact gradient, shaped like the operand in both layouts
        (its value is still checked).
    format : {"compact", "dense", "csr", "csc", "coo", "dia", "sparse", "operator"}
        "compact" (default) returns the gradient shaped like the operand
        (whatever the layout), or a NumPy scalar for a scalar operand, e.g.
        d sum(x * z)/dz = sum(x). Other formats as for :func:`jacobian`;
        the "operator" of a gradient is a 1 x |k| ``RowOperator`` in
        numerator layout (an |k| x 1 ``ColumnOperator`` in denominator
        layout), whatever k's number of dimensions.
    out : ndarray, optional
        With format "compact" or "dense": the array to write into (a 0-d
        array for a scalar result).

    Returns
    -------
    ndarray, NumPy scalar, scipy.sparse array or fastjac.JacobianOperator

    Raises
    ------
    numpy.exceptions.AxisError
        An ``axis`` out of range for S (a repeated axis is a ValueError, as
        in NumPy). The other errors are those of :func:`jacobian`.

    Examples
    --------
    >>> import numpy as np, fastjac
    >>> w, x = np.array([1.0, 2.0]), np.array([3.0, 4.0])
    >>> fastjac.sum_gradient("multiply", w, x)         # d(w . x)/dw = x
    array([3., 4.])
    >>> fastjac.sum_gradient("multiply", x, 2.0, wrt=1)  # d sum(x z)/dz = sum(x)
    np.float64(7.0)
    >>> fastjac.sum_gradient(None, np.ones((2, 3)), format="dense").shape
    (3, 2)
    >>> fastjac.sum_gradient("multiply", w, np.ones((4, 2)))   # w shared by 4 rows
    array([4., 4.])
    >>> fastjac.sum_gradient("multiply", w, np.ones((4, 2)), axis=0)  # diagonal of dy/dw
    array([4., 4.])
    """
    return differentiate(True, resolve_op(op, True), a, b, wrt, layout, format, out, axis)


cdef tuple check_hessian_wrt(object wrt, Op op):
    """(i, j): the block d2 y / d(operand i) d(operand j) that ``wrt`` names."""
    if isinstance(wrt, tuple):
        if len(wrt) == 2:
            try:
                return check_wrt(wrt[0], op), check_wrt(wrt[1], op)
            except ValueError:
                pass
        allowed = ("0, 1, or a pair of them such as (0, 1) for the mixed block"
                   if op.arity == 2 else "0 (a unary function has one operand)")
        raise ValueError(f"wrt must be {allowed}, got {wrt!r}")
    cdef int w = check_wrt(wrt, op)
    return w, w


def sum_hessian(op, a, b=None, *, wrt=0, layout="numerator", format="compact", out=None):
    """Hessian of ``y = sum(op(a, b))`` with respect to one operand, or the mixed block.

    Each element of ``op(a, b)`` depends on one element of each operand, so
    the Hessian with respect to an array operand is diagonal and fastjac
    returns its diagonal: one pass, with the kernels of :func:`jacobian`.

    Parameters
    ----------
    op : str, numpy.ufunc or None
        As for :func:`jacobian`; ``None`` (or "identity") means y = sum(a),
        whose Hessian is zero.
    a, b : array_like or scalar
        The operands, any two shapes that broadcast together (shape S).
    wrt : {0, 1, (0, 1), (1, 0)}, default 0
        0 or 1: the Hessian with respect to operand k = ``a`` or ``b``, a
        |k| x |k| diagonal matrix; compact, its diagonal shaped like k (the
        second partials summed over the axes along which k is broadcast),
        or a NumPy scalar when k is a scalar. ``(0, 1)``: the mixed block
        H[i, j] = d2 y / da_i db_j, |a| x |b| (n-d operands flattened in C
        order); each element s of S is exactly one entry (the element of a
        and the element of b it reads), so the compact block is the array
        of mixed partials over S (shaped like the array operand for a scalar
        one; the diagonal for equal shapes). ``(1, 0)`` is its transpose.
        ``(0, 0)`` and ``(1, 1)`` are the same as 0 and 1.
    layout : {"numerator", "denominator"}, default "numerator"
        A Hessian block is d/dj of (d y/di): in numerator layout rows follow
        the first operand of ``wrt``; denominator layout is the transpose.
        The diagonal blocks are symmetric; a compact result is the same in
        both layouts.
    format : {"compact", "dense", "csr", "csc", "coo", "dia", "sparse", "operator"}
        As for :func:`jacobian`: dense and sparse matrices are built from
        the compact result; the sparse ones store exactly its entries (none
        for a Hessian that is zero by structure: linear and piecewise
        operators). "operator" is a ``DiagonalOperator`` for a diagonal
        block, a ``BroadcastOperator`` for the mixed block of broadcast
        operands.
    out : ndarray, optional
        With format "compact" or "dense": the array to write into.

    Returns
    -------
    ndarray, NumPy scalar or scipy.sparse array

    Raises
    ------
    ValueError, TypeError, MemoryError
        As :func:`jacobian`; a ``wrt`` pair for a unary function is a
        ValueError.

    Notes
    -----
    Second derivatives at kinks: relu, abs, maximum, minimum (and the
    comparisons greater, less) are piecewise linear, so their second
    derivatives are 0 wherever they exist; fastjac returns 0 everywhere,
    kinks and NaN arguments included, and stores it as a structural zero.
    For ``power``: d2/da2 is 0 where b is 0 or 1, d2/da db is 0 at a = 0
    for b > 1, d2/db2 is 0 at a = 0 for b >= 0 (the limits, matching the
    first derivatives' conventions); elsewhere plain IEEE arithmetic.

    Examples
    --------
    >>> import numpy as np, fastjac
    >>> x = np.array([0.0, 1.0])
    >>> fastjac.sum_hessian("exp", x)                     # diagonal of diag(exp(x))
    array([1.        , 2.71828183])
    >>> fastjac.sum_hessian("multiply", x, 3.0, wrt=(0, 1))   # d2 sum(x z)/dx dz
    array([1., 1.])
    >>> fastjac.sum_hessian("divide", 1.0, x + 1.0, wrt=1, format="dense")
    array([[2.  , 0.  ],
           [0.  , 0.25]])
    """
    cdef Op spec = resolve_op(op, True)
    cdef tuple block = check_hessian_wrt(wrt, spec)
    cdef int first = block[0], second = block[1]
    cdef bint denominator = check_layout(layout)
    fmt = check_format(format)
    check_arity(spec, b)
    cdef int code
    if any_dask(a, b):
        # the diagonal is summed like sum_gradient's compact result, the
        # mixed block is element-wise like jacobian's (see _hessian.py)
        from . import _dask
        if first == second:
            code = spec.code_aa if first == 0 else spec.code_bb
            return _dask.differentiate(True, spec, code, a, b, first, None, denominator, fmt,
                                       out, second=True)
        return _dask.differentiate(False, spec, spec.code_ab, a, b, (0, 1), None, denominator,
                                   fmt, out, second=True)
    cdef Operands ops = coerce(a, b, spec.arity == 1)
    compact_out = out if fmt == "compact" else None
    if first == second:
        code = spec.code_aa if first == 0 else spec.code_bb
        if ops.broadcast:
            compact = _broadcast.differentiate(
                True, spec, code, operand_array(ops, 0), operand_array(ops, 1), first,
                None, denominator, "compact", compact_out)
        else:
            compact = run_kernel(code, True, ops, first, compact_out)
        if fmt == "compact":
            return compact
        return _layout.as_matrix(compact, "scalar" if np.ndim(compact) == 0 else "diagonal",
                                 denominator, fmt, code == ZERO, out)
    code = spec.code_ab
    # d2/db da is the transpose of d2/da db: the other layout of the same block
    transposed = denominator != (first == 1)
    if ops.broadcast:
        return _hessian.mixed_block(spec, code, operand_array(ops, 0), operand_array(ops, 1),
                                    transposed, fmt, out)
    compact = run_kernel(code, False, ops, 0, compact_out)
    if fmt == "compact":
        return compact
    if ops.a_ndim == 0 and ops.b_ndim == 0:
        kind = "scalar"
    elif ops.a_ndim != 0 and ops.b_ndim != 0:
        kind = "diagonal"
    else:                       # one row (a scalar) or one column (b scalar)
        kind = "gradient" if ops.a_ndim == 0 else "by_scalar"
        compact = compact.reshape(-1)
    return _layout.as_matrix(compact, kind, transposed, fmt, code == ZERO, out)


# -- low-level kernels for hot loops --------------------------------------------

cdef class Kernel:
    """A derivative kernel resolved once, for calls inside a hot loop.

    Obtain one with :func:`fastjac.kernel`. Call it as ``k(a, out)`` for a
    unary function or ``k(a, b, out)`` for a binary operator: it writes the
    compact Jacobian (the same numbers as ``jacobian(op, a, b, wrt=wrt)``)
    into ``out`` and returns ``out``.

    It skips the conveniences of :func:`jacobian` to stay below half a
    microsecond per call: every argument must already be a C-contiguous
    ndarray of one dtype, float32 or float64 (no lists, no Python numbers:
    pass a 0-d array for a scalar operand), and ``out`` must have the shape
    of the array operand: equal shapes or a 0-d operand only, no
    broadcasting (use :func:`jacobian` for broadcast operands). Anything else raises TypeError or ValueError; the
    checks that remain are the ones that keep a wrong call from crashing.
    """
    cdef readonly Op op
    cdef readonly int wrt
    cdef int code

    def __call__(self, *args):
        cdef Py_ssize_t nargs = len(args)
        if nargs != self.op.arity + 1:
            raise TypeError(
                f"kernel for {self.op.name!r} takes {self.op.arity + 1} arrays "
                f"({'a, b, out' if self.op.arity == 2 else 'a, out'}), got {nargs}")
        a = args[0]
        b = args[1] if self.op.arity == 2 else a
        out = args[nargs - 1]
        if not (cnp.PyArray_CheckExact(a) and cnp.PyArray_CheckExact(b)
                and cnp.PyArray_CheckExact(out)):
            raise TypeError("kernel arguments must all be numpy.ndarray "
                            "(use fastjac.jacobian for lists and Python numbers)")
        cdef cnp.ndarray A = <cnp.ndarray>a, B = <cnp.ndarray>b, O = <cnp.ndarray>out
        cdef int t = cnp.PyArray_TYPE(O)
        if (t != cnp.NPY_DOUBLE and t != cnp.NPY_FLOAT) or cnp.PyArray_TYPE(A) != t \
                or cnp.PyArray_TYPE(B) != t:
            raise TypeError(f"kernel arrays must share one dtype, float32 or float64; "
                            f"got {A.dtype}, {B.dtype}, out {O.dtype}")
        if not (cnp.PyArray_ISCARRAY_RO(A) and cnp.PyArray_ISCARRAY_RO(B)
                and cnp.PyArray_ISCARRAY(O) and cnp.PyArray_ISNOTSWAPPED(A)
                and cnp.PyArray_ISNOTSWAPPED(B) and cnp.PyArray_ISNOTSWAPPED(O)):
            raise ValueError("kernel arrays must be C-contiguous, aligned and in native "
                             "byte order, and out writeable")
        cdef Py_ssize_t n = cnp.PyArray_SIZE(O)
        cdef Py_ssize_t a_step = step_of(cnp.PyArray_NDIM(A), cnp.PyArray_NDIM(B))
        cdef Py_ssize_t b_step = step_of(cnp.PyArray_NDIM(B), cnp.PyArray_NDIM(A))
        if (a_step and cnp.PyArray_SIZE(A) != n) or (b_step and cnp.PyArray_SIZE(B) != n):
            raise ValueError(f"kernel shapes do not match: a {(<object>A).shape}, b {(<object>B).shape}, "
                             f"out {(<object>O).shape}")
        if (overlaps(A, O) and cnp.PyArray_DATA(A) != cnp.PyArray_DATA(O)) or \
                (overlaps(B, O) and cnp.PyArray_DATA(B) != cnp.PyArray_DATA(O)):
            raise ValueError("out partially overlaps an input; use a separate array")
        call_into(self.code, t, cnp.PyArray_DATA(A), a_step, cnp.PyArray_DATA(B), b_step,
                  cnp.PyArray_DATA(O), n)
        return out

    def __repr__(self):
        return f"<fastjac kernel d {self.op.name} / d {'ab'[self.wrt]}>"


def kernel(op, wrt=0):
    """Resolve ``op`` and ``wrt`` once; return a :class:`Kernel` for hot loops.

    Examples
    --------
    >>> import numpy as np, fastjac
    >>> d_tanh = fastjac.kernel("tanh")
    >>> x, out = np.zeros(3), np.empty(3)
    >>> d_tanh(x, out)
    array([1., 1., 1.])
    """
    cdef Op spec = resolve_op(op, False)
    cdef Kernel k = Kernel()
    k.op = spec
    k.wrt = check_wrt(wrt, spec)
    k.code = spec.code_a if k.wrt == 0 else spec.code_b
    return k
