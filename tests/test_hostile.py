"""Hostile input: every case gets a correct result or a clear, documented exception.

Each case names a call of the public API and what must happen: the oracle's
answer, or an exception of a documented type whose message says what is
wrong. Whatever happens, no input array is modified (other than an ``out``
that the caller passed on purpose), and nothing crashes or hangs: a crash
would kill this process and fail the whole run.

The number of cases run is printed at the end of the session
("fastjac reliability: N hostile input cases ... run").
"""
import array
import datetime
import decimal
import fractions
import re

import numpy as np
import pytest

import fastjac
import oracle

J, S, K = fastjac.jacobian, fastjac.sum_gradient, fastjac.kernel

pytestmark = [pytest.mark.hostile,
              pytest.mark.filterwarnings("ignore::PendingDeprecationWarning"),  # np.matrix
              pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")]


# -- what a case expects ----------------------------------------------------------------

class Raises:
    def __init__(self, exc, match):
        self.exc, self.match = exc, match

    def __repr__(self):
        return f"Raises({self.exc.__name__}, {self.match!r})"


class Gives:
    """The call returns ``expected()`` (a thunk, evaluated lazily)."""

    def __init__(self, expected, dtype=None, exact=False):
        self.expected, self.dtype, self.exact = expected, dtype, exact


class Checks:
    """The call returns something ``check(result)`` accepts."""

    def __init__(self, check):
        self.check = check


def arrays_in(*objs):
    found = []
    for o in objs:
        if isinstance(o, np.ndarray):
            found.append(o)
        elif isinstance(o, dict):
            found.extend(arrays_in(*o.values()))
        elif isinstance(o, (list, tuple)):
            found.extend(arrays_in(*o))
    return found


def run_case(fn, args, kwargs, expect):
    """Call fn(*args, **kwargs) and hold it to ``expect``; inputs must not change."""
    out = kwargs.get("out")
    watched = [a for a in arrays_in(args, kwargs) if a is not out]
    if out is not None and not isinstance(expect, Raises):
        # an out that overlaps an input is allowed to change that input
        watched = [a for a in watched if not np.shares_memory(a, out)]
    # (a read-only view too large to copy is checked for its flag only)
    before = [(a, a.copy() if a.size < 10 ** 8 else None, a.flags.writeable) for a in watched]
    out_before = out.copy() if isinstance(out, np.ndarray) else None
    if isinstance(expect, Raises):
        with pytest.raises(expect.exc) as info:
            fn(*args, **kwargs)
        assert re.search(expect.match, str(info.value)), (
            f"message {str(info.value)!r} does not match {expect.match!r}")
        if out_before is not None:           # bad input raises before writing
            assert np.array_equal(out, out_before, equal_nan=True), "out was written"
    else:
        result = fn(*args, **kwargs)
        if isinstance(expect, Gives):
            expected = expect.expected()
            if expect.dtype is not None:
                assert np.asarray(result).dtype == expect.dtype
            if hasattr(result, "toarray"):
                result = result.toarray()
            if expect.exact:
                assert np.array_equal(np.asarray(result), np.asarray(expected),
                                      equal_nan=True), (result, expected)
            else:
                dtype = np.asarray(result).dtype
                oracle.assert_close(result, expected, 16 * np.finfo(dtype).eps,
                                    16 * np.finfo(dtype).tiny, dtype=dtype)
        else:
            expect.check(result)
    for a, copy, writeable in before:
        assert a.flags.writeable == writeable
        if copy is not None:
            assert np.array_equal(a, copy, equal_nan=a.dtype.kind in "fc"), "input modified"


CASES = []


def case(id, fn, args, expect, **kwargs):
    CASES.append(pytest.param(fn, args, kwargs, expect, id=id))


def d(op, a, b=None, wrt=0):
    """The oracle's compact Jacobian (thunk)."""
    return lambda: oracle.compact_jacobian(op, oracle.as_float64(a),
                                           None if b is None else oracle.as_float64(b), wrt)


def g(op, a, b=None, wrt=0):
    """The oracle's compact gradient of a sum (thunk)."""
    return lambda: oracle.compact_sum_gradient(op, oracle.as_float64(a),
                                               None if b is None else oracle.as_float64(b),
                                               wrt)


# -- 1. array_likes that NumPy accepts are accepted ---------------------------------------

class ArrayProtocol:
    def __init__(self, values):
        self.values = np.asarray(values, dtype=np.float64)

    def __array__(self, dtype=None, copy=None):
        return self.values if dtype is None else self.values.astype(dtype)


class InterfaceOnly:
    def __init__(self, values):
        self._keep = np.ascontiguousarray(values, dtype=np.float64)
        self.__array_interface__ = self._keep.__array_interface__


ACCEPTED = {
    "list": [1.0, 2.0, 3.0],
    "tuple": (1.0, 2.0, 3.0),
    "int_list": [1, 2, 3],
    "bool_list": [True, False, True],
    "mixed_list": [1, 2.5, True],
    "nested_list": [[1.0, 2.0], [3.0, 4.0]],
    "tuple_of_tuples": ((1.0, 2.0), (3.0, 4.0)),
    "3d_list": [[[1.0, 2.0]], [[3.0, 4.0]]],
    "numpy_scalar_list": [np.float64(1.0), np.float32(2.0), np.int8(3)],
    "range": range(1, 4),
    "array.array": array.array("d", [1.0, 2.0, 3.0]),
    "memoryview": memoryview(np.array([1.0, 2.0, 3.0])),
    "__array__": ArrayProtocol([1.0, 2.0, 3.0]),
    "__array_interface__": InterfaceOnly([1.0, 2.0, 3.0]),
    "matrix": np.asmatrix(np.array([[1.0, 2.0, 3.0]])),
    "empty_list": [],
    "one_element_list": [2.0],
    "broadcast_view_readonly": np.broadcast_to(2.0, (4,)),
    "zero_stride_2d": np.broadcast_to(np.arange(1.0, 4.0), (2, 3)),
}

for name, value in ACCEPTED.items():
    base = np.asarray(value, dtype=np.float64)
    for op in ("square", "tanh", "abs"):
        case(f"accept-{name}-{op}", J, (op, value), Gives(d(op, base), np.float64))
    case(f"accept-{name}-sum", S, ("sin", value), Gives(g("sin", base), np.float64))
    for wrt in (0, 1):
        case(f"accept-{name}-multiply-array-wrt{wrt}", J, ("multiply", value, base + 1),
             Gives(d("multiply", base, base + 1, wrt)), wrt=wrt)
        case(f"accept-{name}-divide-scalar-wrt{wrt}", J, ("divide", value, 2.0),
             Gives(d("divide", base, 2.0, wrt)), wrt=wrt)
        case(f"accept-{name}-sum-scalar-wrt{wrt}", S, ("multiply", 3, value),
             Gives(g("multiply", 3.0, base, wrt)), wrt=wrt)

# Python and NumPy scalars, of every real kind
for name, value in {"int": 3, "float": 2.5, "bool": True, "np_float32": np.float32(2.5),
                    "np_int64": np.int64(3), "np_bool": np.bool_(True),
                    "np_float16": np.float16(0.5), "zero_d_array": np.array(2.5)}.items():
    case(f"scalar-{name}-unary", J, ("exp", value), Gives(d("exp", float(value))))
    case(f"scalar-{name}-expand", J, ("multiply", np.arange(3.0), value),
         Gives(d("multiply", np.arange(3.0), float(value), 1)), wrt=1)

# -- 2. non-real or non-array input: TypeError naming the problem -------------------------

REJECTED = {
    "None": (None, r"got None"),
    "str": ("abc", r"string"),
    "bytes": (b"abc", r"string"),
    "object_array": (np.array([1.0, 2.0], dtype=object), r"dtype object"),
    "list_with_None": ([1.0, None], r"dtype object"),
    "list_of_str": (["1", "2"], r"dtype <U1"),
    "complex_array": (np.array([1 + 1j, 2]), r"dtype complex128"),
    "complex64_array": (np.array([1 + 1j], np.complex64), r"dtype complex64"),
    "complex_python": (1 + 2j, r"complex"),
    "complex_numpy_scalar": (np.complex128(1j), r"dtype complex128"),
    "complex_list": ([1j, 2.0], r"dtype complex128"),
    "datetime64": (np.array(["2020-01-01"], dtype="datetime64[D]"), r"dtype datetime64"),
    "timedelta64": (np.array([1, 2], dtype="timedelta64[s]"), r"dtype timedelta64"),
    "datetime_object": (datetime.datetime(2020, 1, 1), r"dtype object"),
    "structured": (np.zeros(2, dtype=[("x", "f8")]), r"dtype \["),
    "void": (np.zeros(2, dtype="V8"), r"dtype \|V8"),
    "longdouble": (np.ones(2, dtype=np.longdouble), r"convert it to float64"),
    "fraction": (fractions.Fraction(1, 3), r"dtype object"),
    "decimal": (decimal.Decimal("1.5"), r"dtype object"),
    "dict": ({"a": 1.0}, r"dtype object"),
    "set": ({1.0, 2.0}, r"dtype object"),
    "generator": ((i for i in range(3)), r"dtype object"),
    "object": (object(), r"dtype object"),
    "function": (len, r"dtype object"),
}
if np.dtype(np.longdouble).itemsize == 8:           # long double is double here
    del REJECTED["longdouble"]

for name, (value, match) in REJECTED.items():
    case(f"reject-{name}-unary", J, ("square", value), Raises(TypeError, match))
    case(f"reject-{name}-as-a", J, ("multiply", value, np.ones(2)), Raises(TypeError, match))
    if value is None:       # b=None means "no second operand"
        exc_b, match_b = ValueError, r"binary operator: pass a second operand b"
    else:
        exc_b, match_b = TypeError, match
    case(f"reject-{name}-as-b", J, ("multiply", np.ones(2), value), Raises(exc_b, match_b),
         wrt=1)
    case(f"reject-{name}-sum", S, (None, value), Raises(TypeError, match))
    case(f"reject-{name}-sum-as-b", S, ("add", 1.0, value), Raises(exc_b, match_b))

# masked arrays: computing on the data under the mask would be a silent wrong
# answer (NumPy ufuncs keep masks; fastjac returns plain arrays)
case("reject-masked-array", J, ("square", np.ma.array([1.0, 2.0], mask=[False, True])),
     Raises(TypeError, r"MaskedArray"))
case("reject-masked-array-b", S, ("multiply", 2.0, np.ma.array([1.0, 2.0], mask=[0, 1])),
     Raises(TypeError, r"MaskedArray"))

# an __array__ that fails: its own exception comes through, unchanged


class Exploding:
    def __array__(self, dtype=None, copy=None):
        raise RuntimeError("exploding __array__")


case("array-protocol-raises", J, ("square", Exploding()),
     Raises(RuntimeError, r"exploding __array__"))

# integers too large for any float: OverflowError, as NumPy raises
case("python-int-too-large", J, ("multiply", np.ones(2), 10 ** 400),
     Raises(OverflowError, r"too large"))
case("python-int-too-large-list", J, ("square", [10 ** 400]), Raises(TypeError, r"object"))
# values beyond float32: inf, as NumPy gives
case("python-float-beyond-float32", J, ("multiply", np.ones(2, np.float32), 1e300),
     Gives(lambda: np.full(2, np.inf), np.float32, exact=True))

# -- 3. shapes: any pair that broadcasts, else ValueError naming both ----------------------

SHAPE_PAIRS = [((3,), (4,)), ((2, 3), (3, 2)), ((2, 3), (6,)), ((0, 3), (3, 0)),
               ((2, 2, 2), (3, 2)), ((0,), (2,)), ((2, 4), (3,))]
for sa, sb in SHAPE_PAIRS:
    for fn in (J, S):
        case(f"shape-{sa}-{sb}-{fn.__name__}", fn, ("add", np.ones(sa), np.ones(sb)),
             Raises(ValueError, re.escape(f"a has shape {sa} and b has shape {sb}")))
case("ragged-list", J, ("square", [[1.0, 2.0], [3.0]]), Raises(ValueError, r"inhomogeneous"))

for shape in [(0,), (0, 0), (3, 0), (0, 2, 2)]:
    case(f"empty-{shape}-unary", J, ("log", np.ones(shape)),
         Gives(lambda shape=shape: np.ones(shape), np.float64, exact=True))
    case(f"empty-{shape}-expand", J, ("multiply", np.ones(shape), 2.0),
         Gives(lambda shape=shape: np.ones(shape), exact=True), wrt=1)
    case(f"empty-{shape}-sum-by-scalar", S, ("multiply", np.ones(shape), 2.0),
         Gives(lambda: np.float64(0.0), np.float64, exact=True), wrt=1)
    for fmt in ("dense", "csr", "csc", "coo", "dia"):
        case(f"empty-{shape}-{fmt}", J, ("exp", np.ones(shape)),
             Checks(lambda r: (r.shape[0] == r.shape[1] == 0) or pytest.fail(r.shape)),
             format=fmt)
        case(f"empty-{shape}-sum-{fmt}", S, ("exp", np.ones(shape)),
             Checks(lambda r: (0 in r.shape) or pytest.fail(str(r.shape))), format=fmt)

# -- 4. op, wrt, layout, format, arity: ValueError with the valid choices ------------------

for bad_op in ["ADD", "", "arctan", " add", "add ", np.arctan, np.add.reduce, 3, 1.5, b"add",
               ["add"], {"op": "add"}, np.array(["add"]), object()]:
    case(f"op-{bad_op!r}"[:40], J, (bad_op, np.ones(2), np.ones(2)),
         Raises(ValueError, r"unknown op .*binary operators: add, subtract"))
    case(f"op-{bad_op!r}-sum"[:40], S, (bad_op, np.ones(2), np.ones(2)),
         Raises(ValueError, r"unknown op"))
    case(f"op-{bad_op!r}-kernel"[:40], K, (bad_op,), Raises(ValueError, r"unknown op"))
case("op-None-jacobian", J, (None, np.ones(2)), Raises(ValueError, r"unknown op None"))
case("op-None-sum-with-b", S, (None, np.ones(2), np.ones(2)),
     Raises(ValueError, r"unary function: b must be None"))
case("binary-without-b", J, ("multiply", np.ones(2)), Raises(ValueError, r"second operand"))
case("binary-without-b-sum", S, ("power", np.ones(2)), Raises(ValueError, r"second operand"))
case("unary-with-b", J, ("exp", np.ones(2), np.ones(2)), Raises(ValueError, r"b must be None"))

for bad_wrt in [-1, 2, 10 ** 30, True, False, 1.0, 0.0, "0", "a", None, np.int64(2), [0]]:
    case(f"wrt-{bad_wrt!r}", J, ("multiply", np.ones(2), np.ones(2)),
         Raises(ValueError, r"wrt must be 0 or 1"), wrt=bad_wrt)
    case(f"wrt-{bad_wrt!r}-sum", S, ("multiply", np.ones(2), np.ones(2)),
         Raises(ValueError, r"wrt must be"), wrt=bad_wrt)
    case(f"wrt-{bad_wrt!r}-kernel", K, ("multiply", bad_wrt), Raises(ValueError, r"wrt must be"))
case("wrt-1-unary", J, ("exp", np.ones(2)), Raises(ValueError, r"unary function has one"),
     wrt=1)
case("wrt-np-int-ok", J, ("multiply", np.ones(2), np.arange(2.0)),
     Gives(d("multiply", np.ones(2), np.arange(2.0), 1)), wrt=np.int32(1))

for bad in ["Numerator", "num", "", None, 0, np.array(["numerator", "denominator"]),
            ["numerator"]]:
    case(f"layout-{bad!r}"[:40], J, ("exp", np.ones(2)),
         Raises(ValueError, r"layout must be 'numerator' or 'denominator'"), layout=bad)
for bad in ["CSR", "bsr", "lil", "dok", "full", "", None, 0, np.array(["csr", "csc"]),
            ["dense"]]:
    case(f"format-{bad!r}"[:40], S, ("exp", np.ones(2)),
         Raises(ValueError, r"format must be one of"), format=bad)

case("positional-wrt", J, ("add", np.ones(2), np.ones(2), 1), Raises(TypeError, r"positional"))
case("unknown-keyword", J, ("add", np.ones(2), np.ones(2)),
     Raises(TypeError, r"unexpected keyword"), wrt_=1)

# -- 5. out -------------------------------------------------------------------------------

x3 = np.array([1.0, 2.0, 3.0])
for name, bad_out, exc, match in [
        ("float32-for-float64", np.empty(3, np.float32), ValueError, r"dtype float32 .* float64"),
        ("int", np.empty(3, np.int64), ValueError, r"dtype int64"),
        ("byteswapped", np.empty(3, ">f8"), ValueError, r"dtype >f8"),
        ("complex", np.empty(3, complex), ValueError, r"dtype complex128"),
        ("shape-4", np.empty(4), ValueError, r"shape \(4,\) but the result has shape \(3,\)"),
        ("shape-3x1", np.empty((3, 1)), ValueError, r"shape \(3, 1\)"),
        ("shape-0d", np.empty(()), ValueError, r"shape \(\)"),
        ("list", [0.0, 0.0, 0.0], TypeError, r"out must be a numpy.ndarray, got list"),
        ("tuple", (0.0,), TypeError, r"got tuple"),
        ("memoryview", memoryview(np.empty(3)), TypeError, r"got memoryview"),
        ("scalar", 0.0, TypeError, r"got float")]:
    case(f"out-{name}", J, ("square", x3), Raises(exc, match), out=bad_out)
    case(f"out-{name}-sum", S, ("square", x3), Raises(exc, match), out=bad_out)

ro = np.zeros(3)
ro.flags.writeable = False
case("out-readonly", J, ("square", x3), Raises(ValueError, r"read-only"), out=ro)
case("out-readonly-sum", S, ("square", x3), Raises(ValueError, r"read-only"), out=ro)
ro_scalar = np.zeros(())
ro_scalar.flags.writeable = False
case("out-readonly-0d", S, ("multiply", x3, 2.0), Raises(ValueError, r"read-only"),
     wrt=1, out=ro_scalar)
ro_dense = np.zeros((3, 3))
ro_dense.flags.writeable = False
case("out-readonly-dense", J, ("square", x3), Raises(ValueError, r"read-only"),
     format="dense", out=ro_dense)
case("out-dense-shape", J, ("square", x3), Raises(ValueError, r"shape \(3,\).*\(3, 3\)"),
     format="dense", out=np.zeros(3))
case("out-dense-dtype", J, ("square", x3), Raises(ValueError, r"dtype float32"),
     format="dense", out=np.zeros((3, 3), np.float32))
case("out-dense-list", J, ("square", x3), Raises(TypeError, r"numpy.ndarray"),
     format="dense", out=[[0.0] * 3] * 3)
for fmt in ("csr", "csc", "coo", "dia", "sparse"):
    case(f"out-with-{fmt}", J, ("square", x3), Raises(ValueError, r"only supported with"),
         format=fmt, out=np.zeros(3))

# read-only inputs must work
ro_in = np.array([0.5, 1.5, -2.0])
ro_in.flags.writeable = False
case("readonly-input", J, ("tanh", ro_in), Gives(d("tanh", ro_in)))
case("readonly-inputs-binary", J, ("divide", ro_in, ro_in), Gives(d("divide", ro_in, ro_in, 1)),
     wrt=1)
case("readonly-input-kernel", lambda a: K("sin")(a, np.empty(3)), (ro_in,),
     Gives(d("sin", ro_in)))

# out that aliases an input: the result is as if they were separate


def aliasing(op, wrt, shift):
    """jacobian(op, x[...], y[...], out=<view of x>) for overlapping views."""
    def call():
        buf = np.array([0.5, 1.0, 2.0, -3.0, 4.0, 0.25])
        n = buf.size - abs(shift)
        a = buf[:n] if shift >= 0 else buf[-n:]
        out = buf[shift:shift + n] if shift >= 0 else buf[:n]
        b = np.linspace(1.0, 2.0, n)
        expected = oracle.compact_jacobian(op, a.copy(), b, wrt)
        result = J(op, a, b, wrt=wrt, out=out)
        assert result is out
        oracle.assert_close(result, expected, 1e-15, 0, dtype=np.float64)
        return True
    return call


for op in ("multiply", "divide", "power", "maximum"):
    for wrt in (0, 1):
        for shift in (0, 1, 2, -1):
            case(f"out-aliases-a-{op}-wrt{wrt}-shift{shift}", lambda f: f(), (aliasing(op, wrt, shift),),
                 Checks(lambda r: r is True or pytest.fail()))


def out_is_input(fn, op):
    def call():
        x = np.array([0.5, 1.0, 2.0])
        expected = oracle.compact_jacobian(op, x.copy())
        assert fn(op, x, out=x) is x
        oracle.assert_close(x, expected, 1e-15, 0, dtype=np.float64)
        return True
    return call


for op in ("square", "sqrt", "exp", "log", "tanh", "relu"):
    for fn in (J, S):
        case(f"out-is-input-{op}-{fn.__name__}", lambda f: f(), (out_is_input(fn, op),),
             Checks(lambda r: r is True or pytest.fail()))

ALIAS_VALUES = [0.5, 1.0, 2.0, -3.0, 4.0, 0.25, 0.0, -0.5, 3.5, 1e-3, 7.0, -1.25, 1.5, 0.75,
                2.5, -2.0, 0.125, 6.0]


def out_is_operand(op, dtype, wrt, which):
    """jacobian(op, a, b, wrt=wrt, out=a or b): the oracle's answer, as without aliasing."""
    def call():
        a = np.array(ALIAS_VALUES, dtype)
        b = None if op in oracle.UNARY_OPS else np.array(ALIAS_VALUES[::-1], dtype)
        expected = oracle.compact_jacobian(op, a.copy(), None if b is None else b.copy(), wrt)
        if op == "power" and wrt == 0:
            expected = np.where(oracle.power_ambiguous(a, b), np.nan, expected)
        out = a if which == "a" else b
        assert J(op, a, b, wrt=wrt, out=out) is out
        rtol, atol = oracle.tolerance(op, a.astype(float), None if b is None else
                                      b.astype(float), wrt, dtype)
        oracle.assert_close(out, expected, rtol, atol, dtype=dtype)
        return True
    return call


for op in oracle.BINARY_OPS + oracle.UNARY_OPS:
    for dtype in (np.float64, np.float32):
        for wrt in ((0, 1) if op in oracle.BINARY_OPS else (0,)):
            for which in (("a", "b") if op in oracle.BINARY_OPS else ("a",)):
                case(f"out-is-{which}-{op}-wrt{wrt}-{np.dtype(dtype).name}", lambda f: f(),
                     (out_is_operand(op, dtype, wrt, which),),
                     Checks(lambda r: r is True or pytest.fail()))

# strided, reversed and Fortran-ordered out: written element for element
for name, make in {"strided": lambda: np.zeros(6)[::2],
                   "reversed": lambda: np.zeros(3)[::-1]}.items():
    case(f"out-{name}", J, ("square", x3), Checks(
        lambda r: np.array_equal(r, 2 * x3) or pytest.fail(str(r))), out=make())
case("out-fortran-2d", J, ("square", np.arange(6.0).reshape(2, 3)), Checks(
    lambda r: np.array_equal(r, 2 * np.arange(6.0).reshape(2, 3)) or pytest.fail()),
     out=np.zeros((3, 2)).T)
case("out-dense-fortran", J, ("square", x3), Checks(
    lambda r: np.array_equal(r, np.diag(2 * x3)) or pytest.fail()),
     format="dense", out=np.asfortranarray(np.full((3, 3), 9.0)))
case("out-0d-for-scalar-jacobian", J, ("multiply", 2.0, 3.0), Checks(
    lambda r: (r.shape == () and r[()] == 3.0) or pytest.fail()), out=np.zeros(()))
case("out-0d-for-sum-by-scalar", S, ("multiply", x3, 2.0), Checks(
    lambda r: (r.shape == () and r[()] == 6.0) or pytest.fail()), wrt=1, out=np.zeros(()))

# -- 6. NaN, inf, huge, subnormal, signed zero --------------------------------------------

SPECIALS = {
    np.float64: [np.nan, np.inf, -np.inf, 0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308,
                 1.7976931348623157e308, -1.7976931348623157e308, 1.0, -1.0, 0.5, 2.0, 1e200,
                 -1e-200],
    np.float32: [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, -1e-45, 1.1754944e-38,
                 3.4028235e38, -3.4028235e38, 1.0, -1.0, 0.5, 2.0, 1e30, -1e-30],
}

def special_check(fn, op, dtype, wrt):
    vals = np.array(SPECIALS[dtype], dtype=dtype)
    if op == "power" and dtype == np.float32:
        # x * w**(x-1) at a subnormal w needs 1/w ~ 1e45, beyond float32: the
        # float32 kernel overflows where the float64 oracle does not. That is
        # computing in float32 (README: "each is computed in its own precision").
        vals = vals[~((vals != 0) & (np.abs(vals) < np.finfo(np.float32).tiny))]
    if op in oracle.UNARY_OPS:
        a, b = vals, None
    else:
        a, b = np.repeat(vals, vals.size), np.tile(vals, vals.size)

    def check():
        result = fn(op, a, b, wrt=wrt)
        assert result.dtype == dtype and result.shape == a.shape
        expected = oracle.compact_jacobian(op, a, b, wrt)
        if op == "power" and wrt == 0:       # no single IEEE answer there
            expected = np.where(oracle.power_ambiguous(a, b), result, expected)
        rtol, atol = oracle.tolerance(op, a.astype(float), None if b is None else
                                      b.astype(float), wrt, dtype)
        oracle.assert_close(result, expected, rtol, atol, dtype=dtype,
                            err_msg=f"{op} wrt={wrt} {np.dtype(dtype)}")
        return True
    return check


for op in oracle.BINARY_OPS + oracle.UNARY_OPS:
    for dtype in (np.float64, np.float32):
        for wrt in ((0, 1) if op in oracle.BINARY_OPS else (0,)):
            CASES.append(pytest.param(
                lambda f: f(), (special_check(J, op, dtype, wrt),), {},
                Checks(lambda r: r is True or pytest.fail()),
                id=f"specials-{op}-wrt{wrt}-{np.dtype(dtype).name}"))


def special_sum_check(op, dtype, wrt):
    """The sum over every special value pairing: NaN and inf as IEEE says."""
    vals = np.array(SPECIALS[dtype], dtype=dtype)
    scalar = dtype(3.0)

    def check():
        if op in oracle.UNARY_OPS:
            a, b, terms_args = vals, None, (vals, None, 0)
        else:
            a, b = (vals, scalar) if wrt == 1 else (scalar, vals)
            terms_args = (a, b, wrt)
        got = S(op, a, b, wrt=wrt)
        terms = oracle.compact_jacobian(op, *terms_args)
        if np.ndim(got) == 0:
            assert got.dtype == dtype
            has_nan = np.isnan(terms).any() or (np.isposinf(terms).any()
                                                and np.isneginf(terms).any())
            if has_nan:
                assert np.isnan(got), (op, got)
            elif np.isinf(terms).any():
                assert got == terms[np.isinf(terms)][0], (op, got)
            else:
                assert not np.isnan(got)
        else:
            rtol, atol = oracle.tolerance(op, vals.astype(float), None, 0, dtype)
            oracle.assert_close(got, terms, rtol, atol, dtype=dtype)
        return True
    return check


for op in oracle.BINARY_OPS + oracle.UNARY_OPS:
    for dtype in (np.float64, np.float32):
        for wrt in ((0, 1) if op in oracle.BINARY_OPS else (0,)):
            CASES.append(pytest.param(
                lambda f: f(), (special_sum_check(op, dtype, wrt),), {},
                Checks(lambda r: r is True or pytest.fail()),
                id=f"specials-sum-{op}-wrt{wrt}-{np.dtype(dtype).name}"))

# -- 7. requests too large to allocate: MemoryError with the bytes, before trying ----------

big = np.broadcast_to(1.0, (10 ** 6,))              # 8 MB of input, read-only, stride 0
case("dense-1e6-jacobian", J, ("square", big),
     Raises(MemoryError, r"shape \(1000000, 1000000\).*needs 8000000000000 bytes"),
     format="dense")
case("dense-1e6-jacobian-float32", J, ("square", np.ones(10 ** 6, np.float32)),
     Raises(MemoryError, r"needs 4000000000000 bytes"), format="dense")
case("dense-1e6-denominator", J, ("multiply", big, big),
     Raises(MemoryError, r"8000000000000 bytes"), format="dense", layout="denominator")
case("dense-1000x1000-matrix-diagonal", J, ("exp", np.zeros((1000, 1000))),
     Raises(MemoryError, r"8000000000000 bytes"), format="dense")
case("dia-1e6-gradient-row", S, ("square", big), Raises(MemoryError, r"DIA"), format="dia")
case("dense-1e6-by-scalar-is-fine", J, ("multiply", big, 2.0),
     Checks(lambda r: (r.shape == (10 ** 6, 1) and np.all(r == 1.0)) or pytest.fail()),
     wrt=1, format="dense")
case("csr-1e6-diagonal-is-fine", J, ("square", big),
     Checks(lambda r: (r.shape == (10 ** 6,) * 2 and r.nnz == 10 ** 6) or pytest.fail()),
     format="csr")

# Inputs whose compact result cannot be allocated (a zero-stride view of 10^12
# elements): NumPy's MemoryError, at once. Only where the kernel refuses
# impossible allocations (vm.overcommit_memory = 0 or 2); with 1 (always
# overcommit) the allocation would "succeed" and the OOM killer decide.


def _overcommit_refuses():
    try:
        with open("/proc/sys/vm/overcommit_memory") as f:
            return f.read().strip() in ("0", "2")
    except OSError:
        return False


HUGE_VIEW = np.broadcast_to(1.0, (10 ** 12,))
for name, fn, args, kw in [("compact-1e12", J, ("square", HUGE_VIEW), {}),
                           ("sum-by-scalar-1e12", S, ("multiply", HUGE_VIEW, 2.0), {"wrt": 1})]:
    CASES.append(pytest.param(fn, args, kw, Raises(MemoryError, r"allocate|bytes"),
                              id=f"unallocatable-{name}", marks=pytest.mark.skipif(
                                  not _overcommit_refuses(),
                                  reason="the kernel overcommits memory")))

# -- 8. kernel(): only checks that keep a wrong call from crashing ------------------------

a64, b64, o64 = np.arange(1.0, 4.0), np.arange(2.0, 5.0), np.empty(3)
for name, args, exc, match in [
        ("no-args", (), TypeError, r"takes 3 arrays"),
        ("two-args", (a64, o64), TypeError, r"takes 3 arrays"),
        ("four-args", (a64, b64, o64, o64), TypeError, r"takes 3 arrays"),
        ("lists", ([1.0], [1.0], [0.0]), TypeError, r"numpy.ndarray"),
        ("python-scalar", (2.0, b64, o64), TypeError, r"numpy.ndarray"),
        ("matrix-subclass", (np.asmatrix(a64), np.asmatrix(b64), np.asmatrix(o64)), TypeError,
         r"numpy.ndarray"),
        ("mixed-dtypes", (a64.astype(np.float32), b64, o64), TypeError, r"one dtype"),
        ("int-arrays", (a64.astype(int), b64.astype(int), o64.astype(int)), TypeError,
         r"float32 or float64"),
        ("float16", (a64.astype(np.float16),) * 2 + (o64.astype(np.float16),), TypeError,
         r"float32 or float64"),
        ("strided", (np.arange(6.0)[::2], b64, o64), ValueError, r"C-contiguous"),
        ("reversed", (a64[::-1], b64, o64), ValueError, r"C-contiguous"),
        ("byteswapped", (a64.astype(">f8"), b64, o64), ValueError, r"native byte order"),
        ("readonly-out", (a64, b64, ro), ValueError, r"writeable"),
        ("size-mismatch", (a64, np.ones(4), o64), ValueError, r"shapes do not match"),
        ("out-too-short", (a64, b64, np.empty(2)), ValueError, r"shapes do not match"),
        ("scalars-into-empty", (np.ones(()), np.ones(()), np.empty(0)), ValueError,
         r"shapes do not match"),
        ("scalars-into-two", (np.ones(()), np.ones(()), np.empty(2)), ValueError,
         r"shapes do not match")]:
    case(f"kernel-{name}", lambda *args: K("multiply", 1)(*args), args, Raises(exc, match))

case("kernel-keyword", lambda: K("exp")(a=a64, out=o64), (), Raises(TypeError, r"keyword"))
case("kernel-unary-three-args", lambda: K("exp")(a64, b64, o64), (),
     Raises(TypeError, r"takes 2 arrays"))


def kernel_partial_overlap():
    buf = np.arange(1.0, 6.0)
    K("multiply")(buf[1:], buf[1:], buf[:-1])


case("kernel-partial-overlap", kernel_partial_overlap, (),
     Raises(ValueError, r"partially overlaps"))
case("kernel-readonly-inputs", lambda: K("divide", 1)(ro_in, ro_in, np.empty(3)), (),
     Gives(d("divide", ro_in, ro_in, 1)))
case("kernel-empty", lambda: K("exp")(np.empty(0), np.empty(0)), (),
     Gives(lambda: np.empty(0), exact=True))
case("kernel-scalar-expansion", lambda: K("divide", 1)(np.array(2.0), b64, np.empty(3)), (),
     Gives(d("divide", 2.0, b64, 1)))
case("kernel-scalars", lambda: K("power", 0)(np.array(2.0), np.array(3.0), np.empty(())), (),
     Gives(lambda: np.array(12.0)))


def kernel_out_is_input():
    x = np.array([0.5, 1.0, 2.0])
    expected = oracle.compact_jacobian("exp", x.copy())
    assert K("exp")(x, x) is x
    oracle.assert_close(x, expected, 1e-15, 0, dtype=np.float64)
    return True


case("kernel-out-is-input", kernel_out_is_input, (),
     Checks(lambda r: r is True or pytest.fail()))


# -- the suite ---------------------------------------------------------------------------

@pytest.mark.parametrize("fn, args, kwargs, expect", CASES)
def test_hostile(fn, args, kwargs, expect):
    run_case(fn, args, kwargs, expect)


def test_hostile_suite_is_large():
    """The suite is a catalogue, not a sample: it must keep its breadth."""
    assert len(CASES) >= 400, len(CASES)


def test_fuzz_harness_short_pass(reliability_count):
    """A short, reproducible pass of fuzz/fuzz_api.py (hypothesis engine)."""
    pytest.importorskip("hypothesis")
    import importlib.util
    import os
    path = os.path.join(os.path.dirname(__file__), "..", "fuzz", "fuzz_api.py")
    spec = importlib.util.spec_from_file_location("fuzz_api", path)
    fuzz_api = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fuzz_api)
    n = fuzz_api.run_hypothesis(examples=400, seconds=None, seed=0)
    reliability_count("fuzz", n)
    assert n >= 400


# -- 9. the expression layer (fastjac.var / compile / neuron_gradient) ---------------------
# Guarded: skipped where the expression layer is absent.

HAS_EXPR = hasattr(fastjac, "compile") and hasattr(fastjac, "var")
expr_only = pytest.mark.skipif(not HAS_EXPR, reason="no expression layer in this fastjac")
EXPR_CASES = []


def ecase(id, make, expect, marks=()):
    """make() -> (fn, args, kwargs), built lazily (the expression layer may be absent)."""
    EXPR_CASES.append(pytest.param(make, expect, id=id, marks=list(marks)))


def f_expr():
    w, x = fastjac.var("w"), fastjac.var("x")
    return fastjac.compile(fastjac.sin(w) * fastjac.exp(x) - w / x, wrt=["w", "x"])


def f_oracle(w, x, wrt):
    w, x = oracle.as_float64(w), oracle.as_float64(x)
    if wrt == "w":
        return np.cos(w) * np.exp(x) - 1 / x + 0 * (w * x)
    return np.sin(w) * np.exp(x) + w / (x * x) + 0 * (w * x)


EW = np.array([0.5, 1.0, -1.5, 2.0])
EX = np.array([1.0, 1.5, 2.0, -0.5])
for name, value in {"list": EW.tolist(), "tuple": tuple(EW), "int_list": [1, 2, -3, 4],
                    "readonly": np.broadcast_to(0.5, (4,)),
                    "fortran_strided": np.asfortranarray(np.zeros((4, 2)))[:, 0] + EW,
                    "reversed": EW[::-1], "python_float": 0.75, "numpy_scalar": np.float64(0.75),
                    "zero_d": np.array(0.75), "bool_list": [True, False, True, True]}.items():
    for wrt in ("w", "x"):
        ecase(f"expr-accept-{name}-d{wrt}",
              lambda value=value, wrt=wrt: (f_expr().jacobian, (wrt,), {"w": value, "x": EX}),
              Gives(lambda value=value, wrt=wrt: f_oracle(value, EX, wrt)))
for name, (value, match) in REJECTED.items():
    if name in ("generator",):
        continue
    ecase(f"expr-reject-{name}", lambda value=value: (f_expr().jacobian, ("w",),
                                                      {"w": value, "x": EX}),
          Raises(TypeError, "") if value is not None else Raises(TypeError, r"None"))
ecase("expr-reject-masked", lambda: (f_expr().jacobian, ("w",),
                                     {"w": np.ma.array(EW, mask=[0, 1, 0, 0]), "x": EX}),
      Raises(TypeError, r"MaskedArray|mask"))
ecase("expr-missing-variable", lambda: (f_expr().jacobian, ("w",), {"w": EW}),
      Raises(ValueError, r"missing value for variable 'x'"))
ecase("expr-unknown-variable", lambda: (f_expr().jacobian, ("w",), {"w": EW, "x": EX, "z": EW}),
      Raises(ValueError, r"unknown variable 'z'"))
ecase("expr-unknown-wrt", lambda: (f_expr().jacobian, ("q",), {"w": EW, "x": EX}),
      Raises(ValueError, r"unknown variable 'q'"))
ecase("expr-wrt-int", lambda: (f_expr().jacobian, (3,), {"w": EW, "x": EX}),
      Raises((ValueError, TypeError), r"variable|wrt"))
ecase("expr-shapes", lambda: (f_expr().jacobian, ("w",), {"w": EW, "x": EX[:3]}),
      Raises(ValueError, r"w has shape \(4,\) and x has shape \(3,\)"))
ecase("expr-stacked-elementwise", lambda: (f_expr().jacobian, (), {"w": EW, "x": EX}),
      Raises(ValueError, r"stacked"))
ecase("expr-layout-bad", lambda: (f_expr().jacobian, ("w",), {"w": EW, "x": EX,
                                                              "layout": "num"}),
      Raises(ValueError, r"layout"))
ecase("expr-layout-array", lambda: (f_expr().jacobian, ("w",), {
    "w": EW, "x": EX, "layout": np.array(["numerator", "denominator"])}),
      Raises(ValueError, r"layout must be"))
ecase("expr-format-bad", lambda: (f_expr().jacobian, ("w",), {"w": EW, "x": EX,
                                                              "format": "lil"}),
      Raises(ValueError, r"format must be one of"))
ecase("expr-out-readonly", lambda: (f_expr().jacobian, ("w",), {"w": EW, "x": EX, "out": _ro(4)}),
      Raises(ValueError, r"read-only"))
ecase("expr-out-dtype", lambda: (f_expr().jacobian, ("w",), {"w": EW, "x": EX,
                                                             "out": np.zeros(4, np.float32)}),
      Raises(ValueError, r"dtype float32"))
ecase("expr-out-shape", lambda: (f_expr().jacobian, ("w",), {"w": EW, "x": EX,
                                                             "out": np.zeros(5)}),
      Raises(ValueError, r"shape \(5,\)"))
ecase("expr-out-list", lambda: (f_expr().jacobian, ("w",), {"w": EW, "x": EX, "out": [0] * 4}),
      Raises(TypeError, r"numpy.ndarray"))
ecase("expr-out-is-input", lambda: (f_expr().jacobian, ("w",), {"w": _copy(EW), "x": EX,
                                                                "out": _last_copy()}),
      Raises(ValueError, r"overlaps"))
ecase("expr-dense-1e6", lambda: (f_expr().jacobian, ("w",), {"w": np.ones(10 ** 6), "x": 2.0,
                                                             "format": "dense"}),
      Raises(MemoryError, r"8000000000000 bytes"))
for fmt in ("dense", "csr", "dia"):
    ecase(f"expr-empty-{fmt}", lambda fmt=fmt: (f_expr().jacobian, ("w",), {
        "w": np.empty(0), "x": np.empty(0), "format": fmt}),
          Checks(lambda r: r.shape == (0, 0) or pytest.fail(str(r.shape))))
ecase("expr-empty-compact", lambda: (f_expr().jacobian, ("w",), {"w": np.empty(0),
                                                                 "x": np.empty(0)}),
      Gives(lambda: np.empty(0), exact=True))
ecase("expr-empty-compact-comparison", lambda: (fastjac.compile(fastjac.greater(
    fastjac.var("w"), fastjac.var("w"))).jacobian, ("w",), {"w": np.empty(0)}),
      Checks(lambda r: np.shape(r) == (0,) or pytest.fail(str(np.shape(r)))))
ecase("expr-float32", lambda: (f_expr().jacobian, ("w",), {"w": EW.astype(np.float32),
                                                           "x": 2.0}),
      Checks(lambda r: r.dtype == np.float32 or pytest.fail(str(r.dtype))))
ecase("expr-specials", lambda: (f_expr().jacobian, ("w",), {
    "w": np.array([np.nan, np.inf, 0.0, -0.0, 1e300]),
    "x": np.array([1.0, 1.0, np.inf, 5e-324, -1e-300])}),
      Checks(lambda r: (r.shape == (5,) and np.isnan(r[0]) and np.isnan(r[1])) or pytest.fail(r)))
for bad in (None, [], 3.0, "w", [fastjac.var("w"), None] if HAS_EXPR else None):
    ecase(f"compile-{bad!r}"[:30], lambda bad=bad: (fastjac.compile, (bad,), {}),
          Raises((TypeError, ValueError), r""))
for bad in (None, "", "1x", "a b", 3, "out", "wrt"):
    ecase(f"var-{bad!r}", lambda bad=bad: (fastjac.var, (bad,), {}),
          Raises((ValueError, TypeError), r"name|reserved|identifier"))
ecase("expr-array-constant", lambda: (lambda: fastjac.var("w") * np.ones(3), (), {}),
      Raises(TypeError, r"array constants"))
ecase("expr-truth-value", lambda: (lambda: bool(fastjac.var("w") > 1), (), {}),
      Raises(TypeError, r"truth value"))

_COPIES = []


def _copy(a):
    _COPIES.append(a.copy())
    return _COPIES[-1]


def _last_copy():
    return _COPIES[-1]


def _ro(n):
    r = np.zeros(n)
    r.flags.writeable = False
    return r


# neuron_gradient
NX = np.array([[1.0, 2.0, -1.0], [3.0, -4.0, 0.5], [0.5, 0.5, 0.5], [-2.0, 1.0, 1.0]])
NY = np.array([1.0, 0.0, 2.0, -1.0])
NW = np.array([1.0, 1.0, -0.5])


def neuron_expect(X, y, w, b):
    def expected():
        gw, gb, loss = oracle.neuron_gradient(X, y, w, b)
        return gw
    return expected


for name, (X, y, w, b) in {
        "arrays": (NX, NY, NW, 0.25), "lists": (NX.tolist(), NY.tolist(), NW.tolist(), 0.25),
        "fortran": (np.asfortranarray(NX), NY, NW, 0.25), "strided": (
            np.repeat(NX, 2, axis=1)[:, ::2], NY[::-1][::-1], NW, np.float64(0.25)),
        "ints": (NX.astype(int), NY.astype(int), NW.astype(int), 1),
        "zero_d_b": (NX, NY, NW, np.array(0.25)), "n=0": (np.empty((4, 0)), NY, np.empty(0), 0.5),
        "all_inactive": (NX, NY, NW * 0, -1.0)}.items():
    ecase(f"neuron-accept-{name}", lambda X=X, y=y, w=w, b=b: (
        lambda *a: fastjac.neuron_gradient(*a)[0], (X, y, w, b), {}),
          Gives(neuron_expect(X, y, w, b)))
for name, args, exc, match in [
        ("N=0", (np.empty((0, 3)), np.empty(0), NW, 0.1), ValueError, r"no rows"),
        ("y-length", (NX, NY[:3], NW, 0.1), ValueError, r"y has shape \(3,\)"),
        ("w-length", (NX, NY, NW[:2], 0.1), ValueError, r"w has shape \(2,\)"),
        ("X-1d", (NX.ravel(), NY, NW, 0.1), ValueError, r"2-D"),
        ("b-array", (NX, NY, NW, np.ones(2)), ValueError, r"b must be a scalar"),
        ("X-None", (None, NY, NW, 0.1), TypeError, r"None"),
        ("X-complex", (NX + 0j, NY, NW, 0.1), TypeError, r"complex"),
        ("y-str", (NX, "abcd", NW, 0.1), TypeError, r"string"),
        ("b-None", (NX, NY, NW, None), (TypeError, ValueError), r"b")]:
    ecase(f"neuron-reject-{name}", lambda args=args: (fastjac.neuron_gradient, args, {}),
          Raises(exc, match))
ecase("neuron-reject-masked", lambda: (fastjac.neuron_gradient, (
    np.ma.array(NX, mask=NX < 0), NY, NW, 0.1), {}), Raises(TypeError, r"MaskedArray|mask"))
ecase("neuron-out-readonly", lambda: (fastjac.neuron_gradient, (NX, NY, NW, 0.1),
                                      {"out": _ro(3)}), Raises(ValueError, r"read-only"))
ecase("neuron-dia-1e6", lambda: (fastjac.neuron_gradient, (
    np.ones((1, 10 ** 6)), np.ones(1), np.ones(10 ** 6), 0.1), {"format": "dia"}),
      Raises(MemoryError, r"bytes"))
ecase("neuron-nan", lambda: (lambda *a: fastjac.neuron_gradient(*a)[0], (
    NX * np.nan, NY, NW, 0.1), {}), Checks(lambda r: np.all(np.isnan(r)) or pytest.fail(r)))


# ExprKernel misuse
def ekernel():
    return fastjac.compile(fastjac.tanh(fastjac.var("x")) * 2).kernel("x")


for name, args, exc, match in [
        ("list", ([1.0], np.empty(1)), TypeError, r"numpy.ndarray"),
        ("size", (EW, np.empty(3)), ValueError, r"shape"),
        ("readonly-out", (EW, "ro"), ValueError, r"read-only"),
        ("strided", (np.arange(8.0)[::2], np.empty(4)), ValueError, r"C-contiguous"),
        ("dtype", (EW.astype(np.float32), np.empty(4)), TypeError, r"one dtype"),
        ("nargs", (EW,), TypeError, r"takes 2 arrays")]:
    ecase(f"expr-kernel-{name}", lambda args=args: (
        lambda *a: ekernel()(*[_ro(4) if isinstance(x, str) else x for x in a]), args, {}),
          Raises(exc, match))
ecase("expr-kernel-ok", lambda: (lambda: ekernel()(EW, np.empty(4)), (), {}),
      Gives(lambda: 2 * oracle.compact_jacobian("tanh", EW)))


@expr_only
@pytest.mark.parametrize("make, expect", EXPR_CASES)
def test_hostile_expressions(make, expect):
    fn, args, kwargs = make()
    run_case(fn, args, kwargs, expect)
