"""Property-based tests of the public API against the independent oracle.

Hypothesis draws an operator (by name or as a NumPy ufunc), ``wrt``, shapes
(0-d, empty, one element, vectors, matrices, 3-d), dtypes (float16/32/64,
signed and unsigned integers, bool), memory layouts (strided, reversed,
Fortran-ordered, transposed, unaligned, byte-swapped, read-only views) and
operand forms (arrays, lists, Python and NumPy scalars, 0-d arrays), and
checks every result against ``oracle.py`` (closed forms in float64, which
are themselves checked against finite differences here):

* the compact result equals the oracle within a principled tolerance, has
  the README's dtype and shape, and the inputs are left unmodified;
* dense equals the matrix built from the compact result entry by entry,
  every sparse format's ``toarray()`` equals dense exactly and stores the
  documented structure, and ``layout="denominator"`` is exactly the
  transpose of ``"numerator"``;
* ``out=`` (contiguous or strided) gives the same numbers, in place;
* dense results of float64 operands equal a finite-difference Jacobian of
  the forward function.
"""
import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import assume, given, note, strategies as st   # noqa: E402
from hypothesis.extra import numpy as hnp                        # noqa: E402

import fastjac                                                   # noqa: E402
import oracle                                                    # noqa: E402
from helpers import REAL_ABOVE                                   # noqa: E402

scipy_sparse = pytest.importorskip("scipy.sparse")

# SciPy's DIA toarray() of an empty (0 x 0) matrix divides by zero internally.
pytestmark = pytest.mark.filterwarnings(
    "ignore:divide by zero encountered in remainder:RuntimeWarning")

FLOAT_DTYPES = (np.float16, np.float32, np.float64)
INT_DTYPES = (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32)
ALL_DTYPES = FLOAT_DTYPES + INT_DTYPES + (np.bool_,)
SPARSE = ("csr", "csc", "coo", "dia", "sparse")
FORMATS = ("dense",) + SPARSE
MEMORY_LAYOUTS = ("c", "fortran", "step", "negative", "transposed", "readonly",
                  "unaligned", "byteswapped", "list")


# -- strategies ---------------------------------------------------------------------

def elements(dtype, op):
    """Moderate values: no subnormal or overflowing intermediates in the formulas.

    Extreme values (NaN, inf, huge, subnormal) are the hostile suite's job;
    here every value has an oracle that float32 can match to a few ulps.
    """
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return st.booleans()
    if dtype.kind in "iu":
        lo = 0 if dtype.kind == "u" else -100
        if op == "power":
            lo, hi = (0 if dtype.kind == "u" else -6), 6
        else:
            hi = 100
        return st.integers(lo, hi)
    hi = 8.0 if op == "power" else (60.0 if dtype == np.float16 else 1e3)
    width = {np.float16: 16, np.float32: 32, np.float64: 64}[dtype.type]
    special = st.sampled_from([0.0, 1.0, -1.0, 0.5, 2.0, -0.0, 3.0])
    lo = 2.0 ** -10 if dtype == np.float16 else 2.0 ** -20
    mag = st.floats(lo, hi, width=width)
    return st.one_of(special, mag, mag.map(lambda v: -v))


@st.composite
def arrays(draw, dtype, shape, op):
    return draw(hnp.arrays(dtype, shape, elements=elements(dtype, op)))


def in_memory_layout(arr, how):
    """The same values as ``arr``, laid out in memory as ``how`` says."""
    if how == "c" or arr.ndim == 0 and how not in ("readonly", "byteswapped", "list"):
        return arr
    if how == "fortran":
        return np.asfortranarray(arr)
    if how == "step":
        buf = np.zeros(arr.shape[:-1] + (2 * arr.shape[-1] + 1,), arr.dtype)
        view = buf[..., 1::2]
        view[...] = arr
        return view
    if how == "negative":
        buf = np.ascontiguousarray(arr[..., ::-1])
        return buf[..., ::-1]
    if how == "transposed":
        return np.ascontiguousarray(arr.T).T
    if how == "readonly":
        out = arr.copy()
        out.flags.writeable = False
        return out
    if how == "unaligned":
        if arr.dtype.itemsize == 1 or arr.size == 0:
            return arr
        raw = np.zeros(arr.nbytes + 1, np.uint8)
        view = raw[1:].view(arr.dtype).reshape(arr.shape)
        view[...] = arr
        return view
    if how == "byteswapped":
        return arr.astype(arr.dtype.newbyteorder())
    if how == "list":
        # (a 0-d "list" would be a Python number; an empty n-d list loses its shape)
        return arr.tolist() if arr.ndim and np.array(arr.tolist()).shape == arr.shape else arr
    raise AssertionError(how)


@st.composite
def scalar_operand(draw, op):
    """A scalar operand in any of the forms the README accepts."""
    form = draw(st.sampled_from(["py_float", "py_int", "np_scalar", "zero_d"]))
    if form == "py_int":
        return draw(st.integers(-6, 6) if op == "power" else st.integers(-100, 100))
    dtype = draw(st.sampled_from(ALL_DTYPES)) if form != "py_float" else np.float64
    value = draw(arrays(dtype, (), op))
    if form == "py_float":
        return float(value)
    if form == "np_scalar":
        return value[()]
    return value


@st.composite
def case(draw, op):
    """(op, op spelling, a, b, wrt): operands in every shape, dtype and layout."""
    unary = op is None or op in oracle.UNARY_OPS
    spelled = op
    if op in oracle.UFUNC_ALIASES and draw(st.booleans()):
        spelled = oracle.UFUNC_ALIASES[op]
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5))
    dtype = draw(st.sampled_from(ALL_DTYPES))
    a = draw(arrays(dtype, shape, op))
    how_a = draw(st.sampled_from(MEMORY_LAYOUTS))
    if unary or op is None:
        return op, spelled, in_memory_layout(a, how_a), None, 0
    wrt = draw(st.integers(0, 1))
    scalar = draw(st.sampled_from(["none", "a", "b"]))
    if scalar == "b":
        b = draw(scalar_operand(op))
    else:
        pairing = draw(st.sampled_from(["independent", "equal", "mixed"]))
        dtype_b = draw(st.sampled_from((dtype,) + ALL_DTYPES)) if pairing == "independent" \
            else dtype
        b = draw(arrays(dtype_b, shape, op))
        if pairing != "independent":      # ties, for maximum and minimum
            mask = np.ones(shape, bool) if pairing == "equal" else draw(
                hnp.arrays(np.bool_, shape))
            b = np.where(mask, a, b).astype(dtype_b)
        b = in_memory_layout(b, draw(st.sampled_from(MEMORY_LAYOUTS)))
        if scalar == "a":
            a = draw(scalar_operand(op))
            return op, spelled, a, b, wrt
    return op, spelled, in_memory_layout(a, how_a), b, wrt


# -- helpers ------------------------------------------------------------------------

def snapshot(x):
    """What must not change: values (bit for bit), dtype, strides, flags."""
    if isinstance(x, np.ndarray):
        return (x.copy(), x.dtype, x.strides, x.flags.writeable,
                x.__array_interface__["data"][0])
    return (repr(x), type(x))


def assert_unchanged(x, snap):
    if isinstance(x, np.ndarray):
        values, dtype, strides, writeable, ptr = snap
        assert x.dtype == dtype and x.strides == strides
        assert x.flags.writeable == writeable
        assert x.__array_interface__["data"][0] == ptr
        assert np.array_equal(x, values, equal_nan=x.dtype.kind == "f")
    else:
        assert (repr(x), type(x)) == snap


def working_values(x, dtype):
    """The operand as fastjac computes with it: cast to the result dtype, in float64."""
    if x is None:
        return None
    return np.asarray(x).astype(dtype).astype(np.float64)


def is_scalar(x):
    return x is not None and np.ndim(x) == 0


def result_shape(a, b):
    return np.shape(a) if np.ndim(a) or b is None else np.shape(b)


def check_compact(result, expected, op, wa, wb, wrt, dtype, shape):
    assert np.ndim(result) == len(shape) and np.shape(result) == shape
    if len(shape) == 0 and not isinstance(result, np.ndarray):
        assert isinstance(result, np.generic)
    assert result.dtype == dtype, f"dtype {result.dtype}, README says {dtype}"
    rtol, atol = oracle.tolerance(op or "identity", wa, wb, wrt, dtype)
    oracle.assert_close(result, expected, rtol, atol, dtype=dtype)


def check_every_format(fn, op, a, b, wrt, compact, kind, structurally_zero):
    """Dense (from compact, entry by entry) == every sparse format; denominator == numerator.T."""
    dtype = np.asarray(compact).dtype
    dense = {}
    for layout in ("numerator", "denominator"):
        d = fn(op, a, b, wrt=wrt, layout=layout, format="dense")
        assert isinstance(d, np.ndarray) and d.ndim == 2 and d.dtype == dtype
        expected = oracle.dense_from_compact(compact, kind, layout)
        assert d.shape == expected.shape
        assert np.array_equal(d, expected, equal_nan=True), layout
        # out= for dense: the same numbers, written in place.
        o = np.full(d.shape, 7, dtype)
        assert fn(op, a, b, wrt=wrt, layout=layout, format="dense", out=o) is o
        assert np.array_equal(o, d, equal_nan=True)
        dense[layout] = d
    assert np.array_equal(dense["denominator"], dense["numerator"].T, equal_nan=True)
    n_entries = np.asarray(compact).size
    for fmt in SPARSE:
        mats = {}
        for layout in ("numerator", "denominator"):
            s = fn(op, a, b, wrt=wrt, layout=layout, format=fmt)
            assert scipy_sparse.issparse(s)
            assert s.format == ("csr" if fmt == "sparse" else fmt)
            assert s.dtype == dtype and s.shape == dense[layout].shape
            assert np.array_equal(s.toarray(), dense[layout], equal_nan=True), (fmt, layout)
            if fmt != "dia":
                assert s.nnz == (0 if structurally_zero else n_entries), (fmt, s.nnz)
            mats[layout] = s
        assert np.array_equal(mats["denominator"].toarray(), mats["numerator"].T.toarray(),
                              equal_nan=True)


def check_out_compact(fn, op, a, b, wrt, compact):
    compact = np.asarray(compact)
    o = np.full(compact.shape, 7, compact.dtype)
    assert fn(op, a, b, wrt=wrt, out=o) is o
    assert np.array_equal(o, compact, equal_nan=True)
    if compact.ndim:
        big = np.full(compact.shape[:-1] + (2 * compact.shape[-1],), 7, compact.dtype)
        strided = big[..., ::2]
        assert fn(op, a, b, wrt=wrt, out=strided) is strided
        assert np.array_equal(strided, compact, equal_nan=True)
        assert np.all(big[..., 1::2] == 7)           # nothing written between


# -- properties ---------------------------------------------------------------------

ALL_OPS = oracle.BINARY_OPS + oracle.UNARY_OPS


def test_oracle_covers_every_operator():
    # an operator missing from the oracle's lists would go untested here
    assert set(oracle.BINARY_OPS) == set(fastjac.BINARY_OPS)
    assert set(oracle.UNARY_OPS) == set(fastjac.UNARY_OPS)


@pytest.mark.parametrize("op", ALL_OPS)
@given(data=st.data())
def test_jacobian_matches_oracle_in_every_format(reliability_count, op, data):
    op, spelled, a, b, wrt = data.draw(case(op))
    reliability_count("property")
    snaps = (snapshot(a), snapshot(b))
    dtype = oracle.expected_dtype(a, b)
    wa, wb = working_values(a, dtype), working_values(b, dtype)
    note(f"op={op} wrt={wrt} dtype={dtype} a={a!r} b={b!r}")
    compact = fastjac.jacobian(spelled, a, b, wrt=wrt)
    expected = oracle.compact_jacobian(op, wa, wb, wrt)
    shape = result_shape(a, b)
    check_compact(compact, expected, op, wa, wb, wrt, dtype, shape)
    wrt_operand = a if wrt == 0 else b
    if len(shape) == 0:
        kind = "scalar"
    elif is_scalar(wrt_operand):
        kind = "by_scalar"
    else:
        kind = "diagonal"
    check_every_format(fastjac.jacobian, spelled, a, b, wrt, compact, kind,
                       op in ("greater", "less"))
    check_out_compact(fastjac.jacobian, spelled, a, b, wrt, compact)
    assert_unchanged(a, snaps[0])
    assert_unchanged(b, snaps[1])


@pytest.mark.parametrize("op", ALL_OPS + (None,))
@given(data=st.data())
def test_sum_gradient_matches_oracle_in_every_format(reliability_count, op, data):
    op, spelled, a, b, wrt = data.draw(case(op))
    reliability_count("property")
    snaps = (snapshot(a), snapshot(b))
    dtype = oracle.expected_dtype(a, b)
    wa, wb = working_values(a, dtype), working_values(b, dtype)
    note(f"op={op} wrt={wrt} dtype={dtype} a={a!r} b={b!r}")
    grad = fastjac.sum_gradient(spelled, a, b, wrt=wrt)
    expected = oracle.compact_sum_gradient(op, wa, wb, wrt)
    wrt_operand = a if wrt == 0 else b
    if is_scalar(wrt_operand):
        assert np.ndim(grad) == 0 and isinstance(grad, np.generic) and grad.dtype == dtype
        # A sum: each term within the formula's tolerance, plus the rounding
        # of n additions in double and one final rounding to dtype.
        terms = oracle.compact_jacobian(op or "identity", wa, wb, wrt)
        rtol, atol = oracle.tolerance(op or "identity", wa, wb, wrt, dtype)
        scale = float(np.sum(np.abs(terms) * rtol)) if terms.size else 0.0
        n = terms.size
        bound = scale + n * np.finfo(np.float64).eps * float(np.sum(np.abs(terms)))
        oracle.assert_close(grad, expected, 0.0, bound + atol, dtype=dtype)
        kind = "scalar"
    else:
        check_compact(grad, expected, op, wa, wb, wrt, dtype, np.shape(wrt_operand))
        kind = "gradient"
    check_every_format(fastjac.sum_gradient, spelled, a, b, wrt, grad, kind,
                       op in ("greater", "less"))
    check_out_compact(fastjac.sum_gradient, spelled, a, b, wrt, grad)
    assert_unchanged(a, snaps[0])
    assert_unchanged(b, snaps[1])


@pytest.mark.parametrize("op", ALL_OPS)
@given(data=st.data())
def test_kernel_matches_jacobian(reliability_count, op, data):
    """fastjac.kernel(op, wrt) on prepared arrays gives jacobian's numbers exactly."""
    op, spelled, a, b, wrt = data.draw(case(op))
    reliability_count("property")
    dtype = oracle.expected_dtype(a, b)
    expected = np.asarray(fastjac.jacobian(spelled, a, b, wrt=wrt))
    prepared = [np.asarray(x).astype(dtype, order="C") for x in (a, b)
                if x is not None]
    out = np.empty(expected.shape, dtype)
    k = fastjac.kernel(spelled, wrt)
    assert k(*prepared, out) is out
    assert np.array_equal(out, expected, equal_nan=True)


# -- the oracle and fastjac against finite differences -------------------------------

# Values for finite differences: |v| in [0.3, 4], so that no point is within
# the stencil's reach of a kink (0 for relu/abs) or a pole (1/x); for the
# piecewise binary operators the second operand is the first plus such an
# offset, so that no tie is near either. Nothing is filtered out.
SAFE = st.builds(lambda m, neg: -m if neg else m, st.floats(0.3, 4.0), st.booleans())
KINKED = ("maximum", "minimum", "greater", "less")


def fd_operands(data, op, shape_a, shape_b):
    """Operands of the given shapes (() for a scalar) where op is smooth."""
    arr = lambda shape: data.draw(hnp.arrays(np.float64, shape, elements=SAFE))  # noqa: E731
    if op in oracle.UNARY_OPS:
        a = arr(shape_a)
        return (np.abs(a) + 0.5 if op in REAL_ABOVE else a), None
    if op in KINKED:
        if shape_a == ():
            a = arr(())
            return a, a + arr(shape_b)
        if shape_b == ():
            b = arr(())
            return b + arr(shape_a), b
        a = arr(shape_a)
        return a, a + arr(shape_b)
    a, b = arr(shape_a), arr(shape_b)
    return (np.abs(a) + 0.5 if op == "power" else a), b


@pytest.mark.parametrize("op", ALL_OPS)
@given(data=st.data())
def test_dense_jacobian_equals_finite_differences(reliability_count, op, data):
    """The whole dense matrix (off-diagonal zeros, layout, scalar columns) vs FD."""
    reliability_count("property")
    shape = data.draw(hnp.array_shapes(min_dims=0, max_dims=3, max_side=3))
    if op in oracle.UNARY_OPS:
        a, _ = fd_operands(data, op, shape, None)
        assert oracle.fd_safe(op, a).all()
        f = oracle.FORWARD[op]
        got = fastjac.jacobian(op, a, format="dense")
        fd = oracle.dense_jacobian_fd(f, a)
        s_got = fastjac.sum_gradient(op, a, format="dense")
        s_fd = oracle.dense_jacobian_fd(lambda v: np.sum(f(v)), a)
        wrt_shape = a.shape
    else:
        wrt = data.draw(st.integers(0, 1))
        scalar = data.draw(st.sampled_from(["none", "a", "b"]))
        a, b = fd_operands(data, op, () if scalar == "a" else shape,
                           () if scalar == "b" else shape)
        a = np.float64(a) if np.ndim(a) == 0 else a
        b = np.float64(b) if np.ndim(b) == 0 else b
        assert oracle.fd_safe(op, a, b).all()
        f = oracle.FORWARD[op]
        fun = (lambda v: f(v, b)) if wrt == 0 else (lambda v: f(a, v))
        wrt_operand = a if wrt == 0 else b
        got = fastjac.jacobian(op, a, b, wrt=wrt, format="dense")
        fd = oracle.dense_jacobian_fd(fun, wrt_operand)
        s_got = fastjac.sum_gradient(op, a, b, wrt=wrt, format="dense")
        s_fd = oracle.dense_jacobian_fd(lambda v: np.sum(fun(v)), wrt_operand)
        wrt_shape = np.shape(wrt_operand)
        if np.ndim(a) == 0 and np.ndim(b) == 0:
            wrt_shape = ()
        if np.ndim(wrt_operand) == 0 and np.ndim(a if wrt else b) == 2:
            # y is a p x q matrix Y and the derivative by a scalar is p x q
            fd = fd.reshape(np.shape(a if wrt else b))
    if len(wrt_shape) == 2:
        # the gradient of a scalar by a p x q matrix is q x p in numerator layout
        s_fd = s_fd.reshape(wrt_shape).T
    scale = max(1.0, float(np.max(np.abs(fd), initial=0)))
    np.testing.assert_allclose(got, fd, rtol=1e-7, atol=1e-7 * scale)
    s_scale = max(1.0, float(np.max(np.abs(s_fd), initial=0)))
    np.testing.assert_allclose(s_got, s_fd, rtol=1e-7, atol=1e-7 * s_scale)


@pytest.mark.parametrize("op", ALL_OPS)
@given(n=st.integers(1, 8), wrt=st.integers(0, 1), data=st.data())
def test_oracle_closed_forms_equal_finite_differences(reliability_count, op, n, wrt, data):
    """The oracle's own closed forms agree with finite differences at smooth points."""
    reliability_count("property")
    w, x = fd_operands(data, op, (n,), (n,))
    if op in oracle.UNARY_OPS:
        wrt = 0
        fun = oracle.FORWARD[op]
    else:
        f = oracle.FORWARD[op]
        fun = (lambda v: f(v, x)) if wrt == 0 else (lambda v: f(w, v))
    assert oracle.fd_safe(op, w, x).all()
    fd = oracle.dense_jacobian_fd(fun, w if wrt == 0 else x)
    closed = oracle.derivative(op, w, x, wrt)
    np.testing.assert_allclose(np.diag(fd), closed, rtol=1e-7,
                               atol=1e-7 * max(1.0, np.max(np.abs(closed))))
    off = fd - np.diag(np.diag(fd))
    assert np.max(np.abs(off), initial=0) <= 1e-7 * max(1.0, np.max(np.abs(closed)))


# -- documented conventions, as properties ------------------------------------------

@given(hnp.arrays(st.sampled_from([np.float32, np.float64]), st.integers(0, 20),
                  elements=st.floats(-10, 10, width=32)),
       st.sampled_from(["maximum", "minimum"]))
def test_tie_split_sums_to_one(reliability_count, w, op):
    """At a tie, 0.5 to each operand: the two diagonals always sum to exactly 1."""
    reliability_count("property")
    x = w.copy()
    x[::2] = -x[::2]
    da = fastjac.jacobian(op, w, x, wrt=0)
    db = fastjac.jacobian(op, w, x, wrt=1)
    assert np.array_equal(da + db, np.ones_like(w))
    assert np.all(da[w == x] == 0.5)


@pytest.mark.parametrize("op", ALL_OPS)
@given(dtype=st.sampled_from([np.float32, np.float64]), wrt=st.integers(0, 1))
def test_nan_in_gives_nan_or_documented_constant(reliability_count, op, dtype, wrt):
    """A NaN operand gives NaN, except where the derivative is a constant of the op."""
    reliability_count("property")
    a = np.array([np.nan, 1.0, np.nan], dtype)
    b = None if op in oracle.UNARY_OPS else np.array([2.0, np.nan, np.nan], dtype)
    wrt = 0 if b is None else wrt
    got = fastjac.jacobian(op, a, b, wrt=wrt)
    expected = oracle.compact_jacobian(op, a, b, wrt)
    assert np.array_equal(np.isnan(got), np.isnan(expected)), (got, expected)


# -- the expression layer --------------------------------------------------------------

def _fuzz_module():
    import importlib.util
    import os
    path = os.path.join(os.path.dirname(__file__), "..", "fuzz", "fuzz_api.py")
    spec = importlib.util.spec_from_file_location("fuzz_api_for_properties", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not hasattr(fastjac, "compile"), reason="no expression layer")
@given(data=st.data())
def test_random_expressions_match_finite_differences(reliability_count, data):
    """fastjac.compile of a random expression tree: the compact Jacobian equals a
    central difference of the NumPy forward function wherever the function is
    smooth; dense and CSR equal the compact result; float32 in, float32 out."""
    reliability_count("property")
    fuzz = _FUZZ[0] if _FUZZ else _FUZZ.append(_fuzz_module()) or _FUZZ[0]

    class Chooser(fuzz.Chooser):
        def choose(self, n):
            return data.draw(st.integers(0, n - 1)) if n > 1 else 0

    ch = Chooser()
    expr, forward, interior = fuzz.random_expr(ch)
    if not isinstance(expr, fastjac.Expr) or not fastjac.compile(expr).variables:
        # a constant c (no variable): differentiate w + c instead
        expr, const = fastjac.var("w") + expr, forward
        forward = lambda w, x: w + np.asarray(const(w, x), float)        # noqa: E731
    f = fastjac.compile(expr)
    wrt = data.draw(st.sampled_from(f.variables))
    shape = data.draw(st.sampled_from([(), (1,), (4,), (2, 3), (0,), (2, 1, 2)]))
    moderate = st.sampled_from([0.25, 1.0, -1.0, 0.5, 2.0, 3.0, -2.5, 1.5, 0.75])
    values = {v: data.draw(hnp.arrays(np.float64, shape, elements=moderate))
              for v in f.variables}
    if data.draw(st.booleans()):                      # one variable a scalar
        other = data.draw(st.sampled_from(f.variables))
        values[other] = float(data.draw(moderate))
    note(f"{expr} d/d{wrt} at {values}")
    result = f.jacobian(wrt, **values)
    wrt_shape = np.shape(values[wrt])
    full = dict(w=values.get("w", 0.0), x=values.get("x", 0.0))
    y_shape = np.broadcast(*[np.asarray(v) for v in values.values()]).shape
    if "sum" not in str(expr) and "dot" not in str(expr) and wrt_shape == y_shape:
        desc = ("expr", str(expr), {"wrt_name": wrt}, True, forward, full, interior)
        fuzz.check_expr_result(desc, np.asarray(result), full)
    if isinstance(result, np.ndarray) and result.ndim:
        dense = f.jacobian(wrt, format="dense", **values)
        csr = f.jacobian(wrt, format="csr", **values)
        assert np.array_equal(csr.toarray(), dense, equal_nan=True)
        den = f.jacobian(wrt, format="dense", layout="denominator", **values)
        assert np.array_equal(den, dense.T, equal_nan=True)
    v32 = {k: (np.asarray(v, np.float32) if np.ndim(v) else v) for k, v in values.items()}
    if any(np.ndim(v) for v in v32.values()):
        assert np.asarray(f.jacobian(wrt, **v32)).dtype == np.float32


_FUZZ = []
