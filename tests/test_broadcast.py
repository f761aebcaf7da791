"""Broadcast operands and axis reductions (issue 15).

The oracle here knows nothing of fastjac's structure: for y = op(a, b)
(summed over ``axis`` when given) it builds the true dense Jacobian entry by
entry, J[row of s, element of k read by s] += p(s), with p from the closed
forms of oracle.py; every compact, dense and sparse result is checked
against it. Finite differences check the closed forms through broadcasting.
"""
import math
import re
import tracemalloc
import zlib

import numpy as np
import pytest

import fastjac
from fastjac import _broadcast
from oracle import FORWARD, derivative, dense_jacobian_fd

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402
from hypothesis.extra.numpy import mutually_broadcastable_shapes  # noqa: E402

BINARY = fastjac.BINARY_OPS
UNARY = fastjac.UNARY_OPS
SPARSE = ("csr", "csc", "coo", "dia")
DTYPES = (np.float64, np.float32)
TOL = {np.float64: dict(rtol=1e-9, atol=1e-12), np.float32: dict(rtol=3e-5, atol=1e-5)}


# -- the oracle -----------------------------------------------------------------------

def rng_for(*key):
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def operands(op, shape_a, shape_b, rng, dtype):
    """Values in [0.5, 2] (inside every domain, away from the poles); the
    oracle computes on these values as float64."""
    a = rng.uniform(0.5, 2.0, shape_a).astype(dtype)
    b = None if shape_b is None else rng.uniform(0.5, 2.0, shape_b).astype(dtype)
    if op in ("maximum", "minimum"):          # no ties: keep the step away from 0.5
        b = b + np.asarray(0.01, dtype)
    return a, b


def partials(op, a, b, wrt):
    """p(s) over the broadcast shape, float64, from the closed forms."""
    if b is None:
        return np.broadcast_to(derivative(op, a.astype(np.float64)), a.shape) * 1.0
    shape = np.broadcast_shapes(a.shape, b.shape)
    return np.broadcast_to(derivative(op, a.astype(np.float64), b.astype(np.float64), wrt),
                           shape) * 1.0


def reduced_axes(ndim, axis, summing):
    if not summing:
        return ()
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else axis
    return tuple(sorted(ax % ndim for ax in axes))


def true_jacobian(p, k_shape, reduced):
    """dy/dk, |y| x |k|, by scattering each p(s) to its (row, column)."""
    shape = p.shape
    y_grid = tuple(1 if i in reduced else n for i, n in enumerate(shape))
    rows = np.broadcast_to(np.arange(math.prod(y_grid)).reshape(y_grid), shape)
    cols = np.broadcast_to(np.arange(math.prod(k_shape)).reshape(k_shape), shape)
    J = np.zeros((math.prod(y_grid), math.prod(k_shape)))
    np.add.at(J, (rows.ravel(), cols.ravel()), p.ravel())
    return J


def expected_compact(p, k_shape, reduced, axis_none):
    """The documented compact form: p summed over the reduced axes along which
    k has length 1 (or which k lacks), those axes removed; with axis=None,
    shaped like k."""
    aligned = (1,) * (p.ndim - len(k_shape)) + tuple(k_shape)
    summed = tuple(i for i in reduced if aligned[i] == 1)
    c = p.sum(axis=summed) if summed else p
    return c.reshape(k_shape) if axis_none else c


def gradient_matrix(J, k_shape):
    """The numerator-layout matrix of a gradient (axis=None): today's shapes."""
    g = J.reshape(k_shape)
    if len(k_shape) == 2:
        return g.T
    return g.reshape(1, -1)


def special_case(shape_a, shape_b):
    """Today's cases, which keep their own path: equal shapes or a scalar."""
    return shape_b is None or shape_a == shape_b or len(shape_a) == 0 or len(shape_b) == 0


def check_all(op, a, b, wrt, axis, summing, dtype, formats=("dense",) + SPARSE):
    """Compact, dense and sparse results in both layouts against the oracle."""
    k = a if wrt == 0 else b
    p = partials(op, a, b, wrt)
    reduced = reduced_axes(p.ndim, axis, summing)
    axis_none = summing and axis is None
    J = true_jacobian(p, k.shape, reduced)
    kwargs = dict(wrt=wrt)
    if summing:
        kwargs["axis"] = axis
    call = fastjac.sum_gradient if summing else fastjac.jacobian
    args = (op, a) if b is None else (op, a, b)

    compact = call(*args, **kwargs)
    expected = expected_compact(p, k.shape, reduced, axis_none)
    assert np.asarray(compact).dtype == dtype
    assert np.shape(compact) == expected.shape
    np.testing.assert_allclose(np.asarray(compact, np.float64), expected, **TOL[dtype])

    if not summing and special_case(a.shape, None if b is None else b.shape):
        return          # today's layouts, tested in test_layout.py
    numerator = gradient_matrix(J, k.shape) if axis_none else J
    for layout in ("numerator", "denominator"):
        want = numerator if layout == "numerator" else numerator.T
        for fmt in formats:
            got = call(*args, layout=layout, format=fmt, **kwargs)
            assert got.shape == want.shape, (fmt, layout)
            assert got.dtype == dtype
            dense = got if fmt == "dense" else got.toarray()
            np.testing.assert_allclose(dense, want, **TOL[dtype], err_msg=f"{fmt} {layout}")
            if fmt in ("csr", "csc", "coo") and not axis_none:
                structural = 0 if op in ("greater", "less") else expected.size
                assert got.nnz == structural, (fmt, layout)
            if fmt in ("csr", "csc") and not axis_none:
                got.check_format(full_check=True)
                assert got.has_sorted_indices


def axis_strategy(ndim):
    if ndim == 0:
        return st.sampled_from([None, ()])
    single = st.integers(-ndim, ndim - 1)
    several = st.lists(st.integers(0, ndim - 1), unique=True, max_size=ndim).map(tuple)
    return st.one_of(st.none(), single, several)


# -- properties over random broadcastable shapes ---------------------------------------

@settings(max_examples=150)
@given(shapes=mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4,
                                            min_side=0, max_side=3),
       op=st.sampled_from(BINARY), wrt=st.sampled_from([0, 1]),
       dtype=st.sampled_from(DTYPES), data=st.data())
def test_sum_gradient_against_true_jacobian(shapes, op, wrt, dtype, data):
    shape_a, shape_b = shapes.input_shapes
    result_ndim = len(np.broadcast_shapes(shape_a, shape_b))
    axis = data.draw(axis_strategy(result_ndim))
    if axis is None and special_case(shape_a, shape_b):
        axis = ()           # today's path without an axis: tested elsewhere
    rng = rng_for(shape_a, shape_b, op, wrt)
    a, b = operands(op, shape_a, shape_b, rng, dtype)
    check_all(op, a, b, wrt, axis, True, dtype)


@settings(max_examples=120)
@given(shapes=mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4,
                                            min_side=0, max_side=3),
       op=st.sampled_from(BINARY), wrt=st.sampled_from([0, 1]),
       dtype=st.sampled_from(DTYPES))
def test_jacobian_against_true_jacobian(shapes, op, wrt, dtype):
    shape_a, shape_b = shapes.input_shapes
    rng = rng_for(shape_a, shape_b, op, wrt)
    a, b = operands(op, shape_a, shape_b, rng, dtype)
    check_all(op, a, b, wrt, None, False, dtype)


@settings(max_examples=80)
@given(shape=st.lists(st.integers(0, 3), max_size=4).map(tuple),
       op=st.sampled_from(UNARY), dtype=st.sampled_from(DTYPES), data=st.data())
def test_unary_sum_over_axis(shape, op, dtype, data):
    axis = data.draw(axis_strategy(len(shape)).filter(lambda ax: ax is not None))
    rng = rng_for(shape, op)
    a, _ = operands(op, shape, None, rng, dtype)
    check_all(op, a, None, 0, axis, True, dtype)


# -- finite differences through broadcasting -------------------------------------------

FD_CASES = [((3,), (4, 3)), ((4, 1), (1, 3)), ((2, 1, 3), (4, 1)), ((1,), (2, 3)),
            ((2, 3), (2, 1))]


@pytest.mark.parametrize("op", ["multiply", "divide", "power", "subtract"])
@pytest.mark.parametrize("wrt", [0, 1])
@pytest.mark.parametrize("shapes", FD_CASES)
@pytest.mark.parametrize("axis", [None, 0, -1, "all"])
def test_finite_differences(op, wrt, shapes, axis):
    rng = np.random.default_rng(7)
    a, b = operands(op, shapes[0], shapes[1], rng, np.float64)
    ndim = len(np.broadcast_shapes(*shapes))
    axis = tuple(range(ndim)) if axis == "all" else axis
    k = (a, b)[wrt]

    def y_of(flat_k):
        args = [a, b]
        args[wrt] = flat_k.reshape(k.shape)
        return np.atleast_1d(np.sum(FORWARD[op](*args), axis=axis)).ravel()

    J = dense_jacobian_fd(y_of, k.ravel().copy())
    got = fastjac.sum_gradient(op, a, b, wrt=wrt, axis=axis, format="dense")
    want = gradient_matrix(J, k.shape) if axis is None else J
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8)
    jac = fastjac.jacobian(op, a, b, wrt=wrt, format="dense")
    np.testing.assert_allclose(jac, dense_jacobian_fd(
        lambda f: FORWARD[op](*[f.reshape(k.shape) if i == wrt else v
                                for i, v in enumerate((a, b))]).ravel(), k.ravel().copy()),
        rtol=1e-6, atol=1e-8)


# -- the main case: a shared parameter against a batch ---------------------------------

MAIN_OPS = [("multiply", 0), ("multiply", 1), ("maximum", 0), ("divide", 0),
            ("divide", 1), ("power", 0), ("power", 1), ("add", 0)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("size", [(0, 3), (3, 0), (1, 1), (5, 1), (7, 3), (300, 10),
                                  (20, 2500), (6, 9000), (40_000, 3)])
@pytest.mark.parametrize("op,wrt_w", MAIN_OPS)
def test_batch_against_shared_parameter(op, wrt_w, size, order, dtype):
    """sum_gradient(op, w, X) and (X, w): w (n,), X (N, n), both orders, with
    the sums over the rows (axis None and 0) and along them (axis -1)."""
    N, n = size
    rng = np.random.default_rng(N * 1000 + n)
    w, X = operands(op, (n,), (N, n), rng, dtype)
    X = np.asarray(X, order=order)
    a, b = (w, X) if wrt_w == 0 else (X, w)
    wrt = wrt_w
    p = partials(op, a, b, wrt)
    tol = dict(rtol=1e-9, atol=1e-9) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fastjac.sum_gradient(op, a, b, wrt=wrt), p.sum(0), **tol)
    np.testing.assert_allclose(fastjac.sum_gradient(op, a, b, wrt=wrt, axis=0), p.sum(0), **tol)
    np.testing.assert_allclose(fastjac.sum_gradient(op, a, b, wrt=wrt, axis=-1),
                               expected_compact(p, (n,), (1,), False), **tol)   # p if n > 1
    # with respect to the batch itself: nothing is summed
    np.testing.assert_allclose(fastjac.sum_gradient(op, a, b, wrt=1 - wrt),
                               partials(op, a, b, 1 - wrt), **tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("size", [(0, 3), (4, 0), (1, 1), (6, 1), (9, 4), (3000, 7),
                                  (5, 20_000)])
@pytest.mark.parametrize("op,wrt_s", MAIN_OPS)
def test_batch_against_per_row_scale(op, wrt_s, size, order, dtype):
    """A per-row s of shape (N, 1) against X (N, n): sums along the rows."""
    N, n = size
    rng = np.random.default_rng(N * 1000 + n + 1)
    s, X = operands(op, (N, 1), (N, n), rng, dtype)
    X = np.asarray(X, order=order)
    a, b = (s, X) if wrt_s == 0 else (X, s)
    p = partials(op, a, b, wrt_s)
    tol = dict(rtol=1e-9, atol=1e-9) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fastjac.sum_gradient(op, a, b, wrt=wrt_s),
                               p.sum(1, keepdims=True), **tol)
    np.testing.assert_allclose(fastjac.sum_gradient(op, a, b, wrt=wrt_s, axis=-1),
                               p.sum(1), **tol)
    np.testing.assert_allclose(fastjac.sum_gradient(op, a, b, wrt=wrt_s, axis=(0, 1)),
                               expected_compact(p, (N, 1), (0, 1), False), **tol)


def test_main_case_reads_x_once_without_a_temporary():
    """No array of the size of X is allocated (tracemalloc sees NumPy's
    buffers), in C and in Fortran order."""
    rng = np.random.default_rng(0)
    w = rng.random(100)
    for X in (rng.random((20_000, 100)), np.asfortranarray(rng.random((20_000, 100)))):
        tracemalloc.start()
        try:
            fastjac.sum_gradient("multiply", w, X)
            fastjac.sum_gradient("power", w, X, wrt=0)
            fastjac.sum_gradient("multiply", X[:, :1].copy(order="K"), X, axis=-1)
            fastjac.sum_gradient("divide", X, w, wrt=1, axis=0)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < X.nbytes / 20, peak


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op,wrt", [("multiply", 0), ("power", 0), ("divide", 1),
                                    ("maximum", 1)])
@pytest.mark.parametrize("shape,order", [((200_000, 7), "C"), ((300, 5000), "C"),
                                         ((40, 30_000), "C"), ((100_000, 9), "F"),
                                         ((30, 40_000), "F")])
def test_same_bits_on_one_and_two_threads(dtype, op, wrt, shape, order):
    rng = np.random.default_rng(1)
    w, X = operands(op, shape[1:], shape, rng, dtype)
    X = np.asarray(X, order=order)
    a, b = (w, X) if wrt == 0 else (X, w)
    previous = fastjac.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            fastjac.set_num_threads(threads)
            results.append([fastjac.sum_gradient(op, a, b, wrt=wrt, axis=axis)
                            for axis in (None, 0)])
    finally:
        fastjac.set_num_threads(previous)
    for one, two in zip(*results):
        assert one.tobytes() == two.tobytes()
    expected = partials(op, a, b, wrt).sum(0)     # k = w, whichever operand it is
    np.testing.assert_allclose(results[0][0], expected,
                               rtol=1e-9 if dtype == np.float64 else 1e-5)


# -- today's cases keep their path -----------------------------------------------------

def test_equal_shapes_and_scalars_do_not_come_here(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("equal shapes and scalars keep today's path")
    monkeypatch.setattr(_broadcast, "differentiate", refuse)
    x, y = np.ones((3, 4)), np.full((3, 4), 2.0)
    for fn in (fastjac.jacobian, fastjac.sum_gradient):
        for a, b in ((x, y), (x, 2.0), (2.0, y), (np.float64(2.0), y), (x, np.array(3.0))):
            fn("multiply", a, b)
            fn("multiply", a, b, wrt=1, format="dense")
    fastjac.sum_gradient("exp", x)


def test_python_numbers_with_axis():
    x = np.arange(6.0).reshape(2, 3)
    got = fastjac.sum_gradient("multiply", x, 2.0, wrt=1, axis=1)
    np.testing.assert_array_equal(got, x.sum(1))
    got = fastjac.sum_gradient("multiply", 2.0, x, wrt=0, axis=0, format="dense")
    np.testing.assert_array_equal(got, x.sum(0)[:, None])
    got = fastjac.sum_gradient("multiply", np.float32(2.0), x.astype(np.float32), axis=())
    assert got.dtype == np.float32 and got.shape == (2, 3)
    assert fastjac.sum_gradient("multiply", 2.0, 3.0, axis=()) == 3.0


# -- out= --------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["numerator", "denominator"])
def test_out_compact_and_dense(dtype, layout):
    rng = np.random.default_rng(3)
    w, X = operands("multiply", (3,), (4, 3), rng, dtype)
    for call, kwargs in ((fastjac.jacobian, {}), (fastjac.sum_gradient, {}),
                         (fastjac.sum_gradient, {"axis": 0}),
                         (fastjac.sum_gradient, {"axis": 1})):
        for fmt in ("compact", "dense"):
            want = call("multiply", w, X, layout=layout, format=fmt, **kwargs)
            out = np.full(want.shape, np.nan, dtype)
            got = call("multiply", w, X, layout=layout, format=fmt, out=out, **kwargs)
            assert got is out
            np.testing.assert_array_equal(out, want)
            strided = np.full((want.shape[0] * 2,) + want.shape[1:], np.nan, dtype)[::2]
            call("multiply", w, X, layout=layout, format=fmt, out=strided, **kwargs)
            np.testing.assert_array_equal(strided, want)


def test_out_errors_write_nothing():
    w, X = np.ones(3), np.ones((4, 3))
    cases = [dict(out=np.zeros(4)), dict(out=np.zeros(3, np.float32)),
             dict(out=np.zeros((3, 4)), format="dense"),
             dict(out=np.zeros(3), axis=5), dict(out=np.zeros(3), axis=(0, 0))]
    for kwargs in cases:
        out = kwargs["out"]
        out[...] = 7
        with pytest.raises(ValueError):
            fastjac.sum_gradient("multiply", w, X, **kwargs)
        assert np.all(out == 7), kwargs
    readonly = np.zeros(3)
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        fastjac.sum_gradient("multiply", w, X, out=readonly)
    with pytest.raises(ValueError, match="out= is only supported"):
        fastjac.jacobian("multiply", w, X, format="csr", out=np.zeros((12, 3)))
    with pytest.raises(TypeError, match="out must be a numpy.ndarray"):
        fastjac.jacobian("multiply", w, X, out=[0.0] * 12)


def test_out_may_alias_an_operand():
    X = np.arange(1.0, 13.0).reshape(4, 3)
    w = np.array([2.0, 3.0, 4.0])
    expected = X * 1.0
    got = fastjac.jacobian("multiply", w, X, out=X)
    np.testing.assert_array_equal(got, expected)


# -- errors ------------------------------------------------------------------------------

@pytest.mark.parametrize("sa,sb", [((3,), (4,)), ((2, 3), (3, 2)), ((2, 3), (6,)),
                                   ((0, 3), (3, 0)), ((2, 1, 4), (3, 2))])
def test_shapes_that_do_not_broadcast(sa, sb):
    for fn in (fastjac.jacobian, fastjac.sum_gradient):
        with pytest.raises(ValueError, match=re.escape(f"a has shape {sa} and b has shape {sb}")):
            fn("add", np.ones(sa), np.ones(sb))
        with pytest.raises(ValueError, match="broadcast"):
            fn("add", np.ones(sa), np.ones(sb))


def test_bad_axis():
    w, X = np.ones(3), np.ones((4, 3))
    for axis in (2, -3, (0, 2)):
        with pytest.raises(np.exceptions.AxisError):
            fastjac.sum_gradient("multiply", w, X, axis=axis)
    with pytest.raises(np.exceptions.AxisError):
        fastjac.sum_gradient("exp", np.float64(1.0), axis=0)
    with pytest.raises(ValueError, match="repeated axis"):
        fastjac.sum_gradient("multiply", w, X, axis=(1, -1))
    with pytest.raises(TypeError):
        fastjac.sum_gradient("multiply", w, X, axis=1.0)
    with pytest.raises(TypeError):
        fastjac.jacobian("multiply", w, X, axis=0)


def test_dense_too_large_is_refused_before_allocating():
    a = np.broadcast_to(1.0, (10 ** 6, 1))
    b = np.broadcast_to(1.0, (1, 10 ** 6))
    with pytest.raises(MemoryError, match=r"needs \d+ bytes"):
        fastjac.jacobian("multiply", a, b, format="dense")
    with pytest.raises(MemoryError, match=r"needs \d+ bytes"):
        fastjac.sum_gradient("multiply", np.ones((1, 10 ** 5)), np.ones((10 ** 5, 1)),
                             axis=0, format="dense")


def test_kernel_keeps_requiring_exact_shapes():
    k = fastjac.kernel("multiply")
    with pytest.raises(ValueError, match="kernel shapes do not match"):
        k(np.ones(3), np.ones((4, 3)), np.empty((4, 3)))


# -- python -m fastjac ----------------------------------------------------------------------

def test_cli_batch_section(capsys):
    from fastjac.__main__ import main
    with np.printoptions():         # main() sets print options for its own output
        assert main(["-s", "7"]) == 0
    text = capsys.readouterr().out
    X = np.array([[1.0, 2.0, 0.5], [3.0, -1.0, 2.0], [0.0, 1.0, 1.0], [2.0, 2.0, -1.0]])
    Y = np.array([[2.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.5, 2.0, 1.0], [3.0, 1.0, 0.0]])
    w = np.array([1.0, 2.0, -1.0])
    grad = (2.0 / X.size * (X * w - Y) * X).sum(0)      # d mean((X w - Y)^2)/dw
    printed = text.split("compact (3,):")[1].split("\n")[0]
    np.testing.assert_allclose(np.array(printed.strip(" []").split(), float), grad,
                               atol=1e-4)
    assert "numerator layout (1 x 3)" in text and "denominator layout (3 x 1)" in text


# -- the fused sums: every SIMD level, exceptional elements ---------------------------------

@pytest.mark.parametrize("level", fastjac._simd.LEVELS)
def test_sums_on_every_simd_level(level):
    if fastjac._simd.why_unavailable(level):
        pytest.skip(fastjac._simd.why_unavailable(level))
    rng = np.random.default_rng(5)
    w, X = operands("divide", (7,), (3000, 7), rng, np.float64)
    before = fastjac._simd.current()
    try:
        fastjac._simd.select(level)
        got = [fastjac.sum_gradient(op, w, X, wrt=wrt)
               for op in ("divide", "maximum", "power") for wrt in (0, 1)]
    finally:
        fastjac._simd.select(before)
    want = [partials(op, w, X, 0).sum(0) if wrt == 0 else partials(op, w, X, 1)
            for op in ("divide", "maximum", "power") for wrt in (0, 1)]
    for g, e in zip(got, want):
        np.testing.assert_allclose(g, e, rtol=1e-9)


@pytest.mark.parametrize("order", ["C", "F"])
def test_sums_take_exceptional_elements_on_their_own_path(order):
    """d(x / w)/dw = -(x / w) / w where w * w is not a normal number, and
    d(w ** x)/dw for negative w and integer x (outside the vector pow)."""
    X = np.asarray(np.full((6, 2), 1e-300), order=order)
    w = np.array([1e-170, 2.0])
    expected = (-(X / w) / w).sum(0)
    np.testing.assert_allclose(fastjac.sum_gradient("divide", X, w, wrt=1), expected,
                               rtol=1e-12)
    assert np.all(np.isfinite(expected))
    base = np.array([-2.0, -0.5, 3.0])
    E = np.asarray(np.tile([2.0, 3.0, 1.0], (4, 1)) + np.arange(4.0)[:, None], order=order)
    expected = (E * base ** (E - 1)).sum(0)
    np.testing.assert_allclose(fastjac.sum_gradient("power", base, E), expected, rtol=1e-12)


@settings(max_examples=300)
@given(sa=st.lists(st.integers(0, 3), max_size=4).map(tuple),
       sb=st.lists(st.integers(0, 3), max_size=4).map(tuple))
def test_accepts_exactly_the_shapes_numpy_broadcasts(sa, sb):
    try:
        shape = np.broadcast_shapes(sa, sb)
    except ValueError:
        with pytest.raises(ValueError, match=re.escape(f"a has shape {sa} and b has shape {sb}")):
            fastjac.jacobian("add", np.ones(sa), np.ones(sb))
        return
    assert np.shape(fastjac.jacobian("add", np.ones(sa), np.ones(sb))) == shape


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", ["multiply", "divide", "power"])
def test_short_row_sums_same_bits_on_one_and_two_threads(dtype, op):
    """Per-row sums of rows shorter than a kernel call is worth (blocks of
    rows through the fused loop)."""
    rng = np.random.default_rng(2)
    s, X = operands(op, (300_000, 1), (300_000, 5), rng, dtype)
    previous = fastjac.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            fastjac.set_num_threads(threads)
            results.append(fastjac.sum_gradient(op, s, X, axis=-1))
    finally:
        fastjac.set_num_threads(previous)
    assert results[0].tobytes() == results[1].tobytes()
    np.testing.assert_allclose(results[0], partials(op, s, X, 0).sum(1),
                               rtol=1e-9 if dtype == np.float64 else 1e-5)


# -- the derivative checker on broadcast Jacobians (fastjac.testing) -------------------

@pytest.mark.parametrize("op", ["multiply", "divide", "power"])
@pytest.mark.parametrize("wrt", [0, 1])
@pytest.mark.parametrize("shapes", FD_CASES)
@pytest.mark.parametrize("axis", [None, 0, -1])
def test_checker_accepts_every_format_of_the_sums(op, wrt, shapes, axis):
    pytest.importorskip("scipy")
    from fastjac.testing import check_jacobian
    rng = np.random.default_rng(11)
    a, b = operands(op, shapes[0], shapes[1], rng, np.float64)
    k = (a, b)[wrt]

    def y_of(kk):
        args = [a, b]
        args[wrt] = kk
        return np.sum(FORWARD[op](*args), axis=axis)
    for fmt in ("operator", "csr"):
        for layout in ("numerator", "denominator"):
            def jac(kk, fmt=fmt, layout=layout):
                args = [a, b]
                args[wrt] = kk
                return fastjac.sum_gradient(op, *args, wrt=wrt, axis=axis, format=fmt,
                                            layout=layout)
            if fmt == "csr" and axis is None and k.ndim == 2:
                continue        # section 1's q x p form of a gradient by a matrix
            check_jacobian(y_of, jac, k, layout=layout)
            check_jacobian(y_of, jac, k, layout=layout, mode="full")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op,wrt", [("multiply", 0), ("divide", 1), ("power", 0),
                                    ("maximum", 1)])
def test_shared_parameter_gradient_runs_in_c(monkeypatch, op, wrt, dtype):
    """w of shape (n,) or (3, n) against a C-ordered X of shape (..., n):
    _api.pyx sums the rows itself (no Python call; per-call cost in
    docs/performance.md), for axis=None and for the leading axes k lacks.
    Checked against the closed forms, with out=
    (also aliasing w: all is read before out is written) and without."""
    def refuse(*args, **kwargs):
        raise AssertionError("the shared-parameter gradient takes the C path")
    rng = np.random.default_rng(5)
    for k_shape, x_shape in (((4,), (4, 4)), ((7,), (3000, 7)), ((3, 5), (2, 3, 5)),
                             ((5,), (2, 3, 5)), ((70,), (40, 70))):
        k = rng.uniform(0.5, 2.0, k_shape).astype(dtype)
        X = rng.uniform(0.5, 2.0, x_shape).astype(dtype)
        a, b = (k, X) if wrt == 0 else (X, k)
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        partial = derivative(op, a64, b64, wrt)
        expected = partial.reshape((-1,) + k_shape).sum(axis=0)
        lead = len(x_shape) - len(k_shape)
        monkeypatch.setattr(_broadcast, "differentiate", refuse)
        got = fastjac.sum_gradient(op, a, b, wrt=wrt)
        out = np.full(k_shape, 7, dtype)
        assert fastjac.sum_gradient(op, a, b, wrt=wrt, out=out) is out
        # summed over the leading axes that k lacks: the same compact sums
        for axis in (tuple(range(lead)), tuple(range(lead))[::-1],
                     tuple(i - len(x_shape) for i in range(lead))):
            np.testing.assert_array_equal(
                fastjac.sum_gradient(op, a, b, wrt=wrt, axis=axis[0] if lead == 1 else axis),
                got)
        monkeypatch.undo()
        if lead == 2:                           # one leading axis of two: _broadcast.py
            np.testing.assert_allclose(fastjac.sum_gradient(op, a, b, wrt=wrt, axis=1),
                                       partial.sum(axis=1), rtol=1e-12 if
                                       dtype == np.float64 else 2e-6)
        tol = 1e-12 if dtype == np.float64 else 2e-6
        assert got.dtype == dtype and got.shape == k_shape
        np.testing.assert_allclose(got, expected, rtol=tol)
        np.testing.assert_array_equal(out, got)
        # the general path (Fortran order) agrees to rounding
        F = np.asfortranarray(X)
        got_f = fastjac.sum_gradient(op, *((k, F) if wrt == 0 else (F, k)), wrt=wrt)
        np.testing.assert_allclose(got_f, expected, rtol=tol)
    k = np.array([2.0, 3.0, 4.0], dtype)
    X = np.arange(1.0, 13.0, dtype=dtype).reshape(4, 3)
    if op == "multiply":
        assert fastjac.sum_gradient(op, k, X, out=k) is k       # out is the operand
        np.testing.assert_array_equal(k, X.sum(axis=0))


# (k's shape, X's shape, X's order, the axes summed when not None)
ONE_PASS_CALLS = [
    ((5, 1), (5, 4), "C", (-1,)), ((5, 1), (5, 4), "F", (1,)),           # a per-row scale
    ((300, 1), (300, 7), "C", None), ((4, 1), (4, 600), "F", None),
    ((3, 1, 1), (3, 4, 5), "C", (1, 2)), ((3, 4, 1), (3, 4, 5), "C", None),
    ((4,), (4, 4), "F", None), ((7,), (3000, 7), "F", (0,)),             # w against X in F order
    ((5,), (2, 3, 5), "F", (0, 1)), ((3, 1), (3, 9000), "C", (-1,)),
    ((1, 1), (6, 5), "F", None),                                          # k is one number
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op,wrt", [("multiply", 0), ("divide", 1), ("power", 0),
                                    ("maximum", 1)])
@pytest.mark.parametrize("k_shape,x_shape,order,axis", ONE_PASS_CALLS)
def test_one_pass_sums_run_in_c(monkeypatch, k_shape, x_shape, order, axis, op, wrt, dtype):
    """The sums over the leading or the trailing axes of an X in C or
    Fortran order run in _api.pyx without a Python call: a per-row scale
    (N, 1) with axis=None and axis=-1, w (n,) against a Fortran-ordered X,
    k of one element. Closed forms; out=, also out = k; the same bits as the
    general path, which a strided out forces."""
    def refuse(*args, **kwargs):
        raise AssertionError("a one-pass sum takes the C path")
    rng = np.random.default_rng(7)
    k = rng.uniform(0.5, 2.0, k_shape).astype(dtype)
    X = np.asarray(rng.uniform(0.5, 2.0, x_shape).astype(dtype), order=order)
    a, b = (k, X) if wrt == 0 else (X, k)
    partial = derivative(op, a.astype(np.float64), b.astype(np.float64), wrt)
    k_aligned = (1,) * (len(x_shape) - len(k_shape)) + k_shape
    summed = tuple(i for i in range(len(x_shape)) if k_aligned[i] == 1)
    if axis is None:
        expected = partial.sum(axis=summed).reshape(k_shape)
    else:
        expected = partial.sum(axis=summed)
    monkeypatch.setattr(_broadcast, "differentiate", refuse)
    got = fastjac.sum_gradient(op, a, b, wrt=wrt, axis=axis)
    out = np.full(expected.shape, 7, dtype)
    assert fastjac.sum_gradient(op, a, b, wrt=wrt, axis=axis, out=out) is out
    k_in = k.copy()
    if axis is None:        # out is the operand itself: all is read before it is written
        args = [X, X]
        args[wrt] = k_in
        assert fastjac.sum_gradient(op, *args, wrt=wrt, out=k_in) is k_in
    monkeypatch.undo()
    tol = 1e-12 if dtype == np.float64 else 2e-6
    assert got.dtype == dtype and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=tol)
    np.testing.assert_array_equal(out, got)
    if axis is None:
        np.testing.assert_array_equal(k_in, got)
    strided = np.empty(expected.shape + (2,), dtype)[..., 0]
    np.testing.assert_array_equal(
        fastjac.sum_gradient(op, a, b, wrt=wrt, axis=axis, out=strided), got)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op,wrt", [("multiply", 0), ("divide", 1), ("power", 0),
                                    ("maximum", 1)])
def test_shared_parameter_partials_run_in_c(monkeypatch, op, wrt, dtype):
    """jacobian's compact result for k of X's trailing shape, below 2048
    elements: the kernel row by row in _api.pyx. Closed forms, out= (also
    X itself, element for element), and an out overlapping k, which goes
    to the general path and still gives the right numbers."""
    def refuse(*args, **kwargs):
        raise AssertionError("small shared-parameter partials take the C path")
    rng = np.random.default_rng(6)
    for k_shape, x_shape in (((4,), (4, 4)), ((3, 5), (2, 3, 5)), ((60,), (30, 60))):
        k = rng.uniform(0.5, 2.0, k_shape).astype(dtype)
        X = rng.uniform(0.5, 2.0, x_shape).astype(dtype)
        a, b = (k, X) if wrt == 0 else (X, k)
        expected = derivative(op, a.astype(np.float64), b.astype(np.float64), wrt)
        monkeypatch.setattr(_broadcast, "differentiate", refuse)
        got = fastjac.jacobian(op, a, b, wrt=wrt)
        out = np.full(x_shape, 7, dtype)
        assert fastjac.jacobian(op, a, b, wrt=wrt, out=out) is out
        X_copy = X.copy()
        in_place = fastjac.jacobian(op, *((k, X_copy) if wrt == 0 else (X_copy, k)), wrt=wrt,
                                    out=X_copy)
        monkeypatch.undo()
        tol = 1e-15 if dtype == np.float64 else 1e-6
        assert got.dtype == dtype and got.shape == x_shape and in_place is X_copy
        np.testing.assert_allclose(got, expected, rtol=tol)
        np.testing.assert_array_equal(out, got)
        np.testing.assert_array_equal(X_copy, got)
    # out's first row is k: the general path, which reads k before writing
    buf = rng.uniform(0.5, 2.0, (5, 4)).astype(dtype)
    k, X = buf[0], rng.uniform(0.5, 2.0, (5, 4)).astype(dtype)
    expected = derivative("multiply", k.astype(np.float64), X.astype(np.float64), 1)
    np.testing.assert_allclose(fastjac.jacobian("multiply", k, X, wrt=1, out=buf), expected,
                               rtol=1e-6)
