"""Composed expressions (fastjac.var / compile): spec section 6.

Oracles, all independent of the code under test: central finite differences
in float64 of NumPy formulas written here, closed forms, and the core
primitives fastjac.jacobian / sum_gradient (tested on their own elsewhere).
"""
import numpy as np
import pytest

import fastjac as fj
from fastjac import Factor
from helpers import REAL_ABOVE

scipy_sparse = pytest.importorskip("scipy.sparse")

RNG = np.random.default_rng(12345)


# -- oracles ---------------------------------------------------------------------

def fd_jacobian(fun, values, name, h=1e-6):
    """Numerator-layout Jacobian of fun(**values) by values[name], central differences
    in float64; fun returns an array or a scalar."""
    values = {k: np.array(v, dtype=np.float64) for k, v in values.items()}
    x = values[name]
    y0 = np.asarray(fun(**values), dtype=np.float64)
    J = np.empty((y0.size, x.size))
    for j in range(x.size):
        xp, xm = x.copy(), x.copy()
        step = h * max(1.0, abs(x.flat[j]))
        xp.flat[j] += step
        xm.flat[j] -= step
        yp = np.asarray(fun(**{**values, name: xp}), dtype=np.float64)
        ym = np.asarray(fun(**{**values, name: xm}), dtype=np.float64)
        J[:, j] = (yp - ym).ravel() / (2 * step)
    return J


def dense_of(result, layout="numerator"):
    """Any fastjac result as a dense numerator-layout matrix (for comparing)."""
    if isinstance(result, Factor):
        M = result.toarray()
    elif scipy_sparse.issparse(result):
        M = result.toarray()
        M = M.T if layout == "denominator" else M
    else:
        M = np.asarray(result)
        M = M.T if layout == "denominator" else M
    return M


w_, x_, z_ = fj.var("w"), fj.var("x"), fj.var("z")

# name, expression, NumPy formula, value generator
CASES = [
    ("sin_exp_div", fj.sin(w_) * fj.exp(x_) - w_ / x_,
     lambda w, x: np.sin(w) * np.exp(x) - w / x, "wx"),
    ("sum_tanh", fj.sum(fj.tanh(w_ * x_) + 3),
     lambda w, x: np.sum(np.tanh(w * x) + 3), "wx"),
    ("dot", fj.dot(w_, x_), lambda w, x: np.dot(w, x), "wx"),
    ("max_min", fj.maximum(w_, x_) * fj.minimum(w_, 2.0) + fj.relu(x_ - 1),
     lambda w, x: np.maximum(w, x) * np.minimum(w, 2.0) + np.maximum(x - 1, 0), "wx"),
    ("powers", (w_ ** 3 + fj.sqrt(x_)) / (1 + x_ ** 2) + w_ ** x_ + 2 ** x_,
     lambda w, x: (w ** 3 + np.sqrt(x)) / (1 + x ** 2) + w ** x + 2 ** x, "wx"),
    ("unary_zoo", fj.sigmoid(w_) - fj.log(x_) + fj.abs(w_ - 1) + fj.cos(w_) + fj.square(x_)
     + fj.identity(x_) - (-w_) + fj.negative(x_) * 0.5,
     lambda w, x: 1 / (1 + np.exp(-w)) - np.log(x) + np.abs(w - 1) + np.cos(w) + x ** 2
     + x + w - 0.5 * x, "wx"),
    ("comparison", (w_ > x_) * w_ + (w_ < 1.2) * x_ - fj.greater(x_, 1) + fj.less(w_, x_),
     lambda w, x: (w > x) * w + (w < 1.2) * x - (x > 1) + (w < x), "wx"),
    ("dot_feeds_elementwise", fj.tanh(fj.dot(w_, x_) / 4) * x_,
     lambda w, x: np.tanh(np.dot(w, x) / 4) * x, "wx"),
    ("nested_sums", fj.sum(fj.exp(w_ * fj.sum(x_) / 10)) * fj.sum(x_ * x_),
     lambda w, x: np.sum(np.exp(w * np.sum(x) / 10)) * np.sum(x * x), "wx"),
    ("scalar_var", z_ * x_ + z_ / x_ - fj.exp(z_),
     lambda z, x: z * x + z / x - np.exp(z), "zx"),
    ("scalar_var_sum", fj.sum(x_ * z_ + fj.sin(z_ * x_)),
     lambda z, x: np.sum(x * z + np.sin(z * x)), "zx"),
    ("different_shapes", x_ * fj.sum(w_ * w_),
     lambda w, x: x * np.sum(w * w), "wX"),
    # arithmetic on one sum's value: one pass and a scalar step
    ("mean_after_sum", fj.sum(fj.square(w_ * x_ - 1)) / 7,
     lambda w, x: np.sum((w * x - 1) ** 2) / 7, "wx"),
    ("log_of_sum", 2 - fj.log(fj.sum(w_ * x_)),
     lambda w, x: 2 - np.log(np.sum(w * x)), "wx"),
    ("scalar_var_after_sum", fj.sum(w_ * z_) * z_ + fj.square(z_),
     lambda w, z: np.sum(w * z) * z + z ** 2, "zw"),
]


def make_values(spec, shape=(5,), dtype=np.float64):
    vals = {}
    for ch in spec:
        if ch == "z":
            vals["z"] = dtype(RNG.uniform(0.6, 1.4))
        elif ch == "X":
            vals["x"] = RNG.uniform(0.5, 2.0, size=(3,)).astype(dtype)
        else:
            vals["w" if ch == "w" else "x"] = RNG.uniform(0.5, 2.0, size=shape).astype(dtype)
    return vals


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("layout", ["numerator", "denominator"])
def test_against_finite_differences(case, layout):
    _, expr, fun, spec = case
    values = make_values(spec)
    f = fj.compile(expr)
    assert np.allclose(f.value(**values), fun(**values), rtol=1e-12, atol=1e-12)
    for name in f.variables:
        expected = fd_jacobian(fun, values, name)
        for fmt in ("compact", "dense", "csr", "csc", "coo", "dia", "sparse"):
            got = f.jacobian(name, layout=layout, format=fmt, **values)
            if fmt == "compact":
                got_dense = _compact_to_dense(got, expected.shape)
            else:
                got_dense = dense_of(got, layout)
                assert got_dense.shape == expected.shape
            np.testing.assert_allclose(got_dense, expected, rtol=1e-6, atol=1e-7,
                                       err_msg=f"d/d{name} {fmt} {layout}")


@pytest.mark.parametrize("case", [c for c in CASES if c[0] in (
    "sin_exp_div", "sum_tanh", "dot_feeds_elementwise", "scalar_var_sum", "max_min")],
    ids=lambda c: c[0])
def test_float32_against_finite_differences(case):
    _, expr, fun, spec = case
    values = make_values(spec, dtype=np.float32)
    f = fj.compile(expr)
    for name in f.variables:
        expected = fd_jacobian(fun, values, name)          # float64 oracle
        got = f.jacobian(name, **values)
        dense = _compact_to_dense(got, expected.shape)
        assert dense.dtype == np.float32
        np.testing.assert_allclose(dense, expected, rtol=2e-5, atol=2e-5)
        d = f.jacobian(name, format="dense", layout="denominator", **values)
        assert d.dtype == np.float32
        np.testing.assert_allclose(d.T if d.ndim == 2 else d, expected.reshape(d.T.shape)
                                   if d.ndim == 2 else expected, rtol=2e-5, atol=2e-5)


def _compact_to_dense(got, shape):
    if isinstance(got, Factor):
        return got.toarray()
    got = np.asarray(got)
    m, n = shape
    if m == n and got.size == m and m > 1:      # a diagonal
        return np.diag(got.ravel())
    return got.reshape(shape)


def test_value_and_jacobian_match_separate_calls():
    values = make_values("wx", shape=(4, 3))
    f = fj.compile(fj.sin(w_) * fj.exp(x_) - w_ / x_)
    v, j = f.value_and_jacobian("x", **values)
    assert v.shape == (4, 3) and j.shape == (4, 3)
    np.testing.assert_array_equal(v, f.value(**values))
    np.testing.assert_array_equal(j, f.jacobian("x", **values))


# -- the spec's worked example ------------------------------------------------------

def test_worked_example_f_g():
    x, y = fj.var("x"), fj.var("y")
    h = fj.compile([3 * x ** 2 * y, 2 * x + y ** 8], wrt=["x", "y"])
    xv, yv = 1.5, -0.75
    num = np.array([[6 * xv * yv, 3 * xv ** 2], [2, 8 * yv ** 7]])
    np.testing.assert_allclose(h.jacobian(x=xv, y=yv), num, rtol=1e-14)
    np.testing.assert_allclose(h.jacobian(x=xv, y=yv, format="dense"), num, rtol=1e-14)
    np.testing.assert_allclose(h.jacobian(x=xv, y=yv, format="dense", layout="denominator"),
                               num.T, rtol=1e-14)
    sp = h.jacobian(x=xv, y=yv, format="csr", layout="denominator")
    np.testing.assert_allclose(sp.toarray(), num.T, rtol=1e-14)
    fv, gv = h.value(x=xv, y=yv)
    assert fv == pytest.approx(3 * xv ** 2 * yv) and gv == pytest.approx(2 * xv + yv ** 8)


def test_stacked_gradients_of_vector_variables():
    w, x = fj.var("w"), fj.var("x")
    h = fj.compile([fj.dot(w, x), fj.sum(w * w) + fj.sum(fj.exp(x))])
    wv, xv = RNG.random(3), RNG.random(3)
    J = h.jacobian(["w", "x"], w=wv, x=xv)
    expected = np.array([np.r_[xv, wv], np.r_[2 * wv, np.exp(xv)]])
    np.testing.assert_allclose(J, expected, rtol=1e-14)
    out = np.empty((2, 6))
    assert h.jacobian(["w", "x"], w=wv, x=xv, out=out) is out
    np.testing.assert_allclose(out, expected, rtol=1e-14)


def test_identity_jacobian_is_identity():
    x = fj.var("x")
    J = fj.compile(fj.identity(x)).jacobian(x=np.arange(4.0), format="dense")
    np.testing.assert_array_equal(J, np.eye(4))


# -- structure ------------------------------------------------------------------------

def test_structures_are_kept():
    w, x, z = fj.var("w"), fj.var("x"), fj.var("z")
    wv, xv = RNG.random(6) + 0.5, RNG.random(6) + 0.5
    f = fj.compile(fj.tanh(w * x) * fj.exp(x))                # diagonal x diagonal
    d = f.jacobian("w", w=wv, x=xv)
    assert isinstance(d, np.ndarray) and d.shape == (6,)
    s = f.jacobian("w", w=wv, x=xv, format="csr")
    assert s.nnz == 6                                         # O(n), not n*n
    g = fj.compile(fj.sum(fj.tanh(w * x)))                    # row x diagonal = row
    r = g.jacobian("w", w=wv, x=xv)
    assert r.shape == (6,)
    assert g.jacobian("w", w=wv, x=xv, format="dense").shape == (1, 6)
    assert g.jacobian("w", w=wv, x=xv, format="dense", layout="denominator").shape == (6, 1)
    c = fj.compile(fj.exp(x * z)).jacobian("z", x=xv, z=0.5)  # scalar expansion: a column
    np.testing.assert_allclose(c, xv * np.exp(0.5 * xv))
    assert fj.compile(fj.exp(x * z)).jacobian("z", x=xv, z=0.5, format="dense").shape == (6, 1)
    sc = fj.compile(fj.sum(x * z)).jacobian("z", x=xv, z=2.0)  # scalar
    assert np.ndim(sc) == 0 and sc == pytest.approx(xv.sum())


def test_non_diagonal_jacobian_is_never_a_diagonal():
    w, x = fj.var("w"), fj.var("x")
    wv, xv = RNG.random(4), RNG.random(4)
    f = fj.compile(fj.tanh(fj.dot(w, x)) * x)
    J = f.jacobian("w", w=wv, x=xv)
    assert isinstance(J, Factor) and J.kind == "general" and J.d is None and J.rank == 1
    s = wv @ xv
    expected = np.outer(xv, (1 - np.tanh(s) ** 2) * xv)
    np.testing.assert_allclose(J.toarray(), expected, rtol=1e-13)
    np.testing.assert_allclose(f.jacobian("w", w=wv, x=xv, format="dense"), expected,
                               rtol=1e-13)
    Jx = f.jacobian("x", w=wv, x=xv)                    # diagonal + rank 1
    assert Jx.d is not None and Jx.rank == 1
    np.testing.assert_allclose(Jx.toarray("denominator"),
                               (np.tanh(s) * np.eye(4) + np.outer(xv, (1 - np.tanh(s) ** 2) * wv)).T,
                               rtol=1e-13)
    with pytest.raises(ValueError, match="not diagonal"):
        f.jacobian("w", w=wv, x=xv, out=np.empty(4))
    out = np.empty((4, 4))
    assert f.jacobian("w", w=wv, x=xv, format="dense", out=out) is out


def test_structurally_zero_sparse_has_no_entries():
    w, x = fj.var("w"), fj.var("x")
    f = fj.compile((w > x) + x)
    s = f.jacobian("w", w=RNG.random(5), x=RNG.random(5), format="csr")
    assert s.nnz == 0 and s.shape == (5, 5)


# -- the chain-rule product table: every pair of factor kinds ------------------------

def _kinds(rng, m):
    """One factor of each kind, all with an m-element (or scalar) side."""
    d = rng.standard_normal(m)
    return {
        "scalar": (Factor.scalar(2.5), np.array([[2.5]])),
        "diagonal": (Factor.diagonal(d), np.diag(d)),
        "gradient": (Factor.row(d), d[None, :]),
        "by_scalar": (Factor.column(d), d[:, None]),
        "general": (Factor((m,), (m,), d=d, U=rng.standard_normal((m, 1)),
                           V=rng.standard_normal((m, 1))), None),
        "dense": (None, rng.standard_normal((m, m))),
    }


def _all_factors(rng, m):
    out = {}
    for k, (f, M) in _kinds(rng, m).items():
        if k == "general":
            M = f.toarray()
        if k == "dense":
            f = Factor.from_dense(M, (m,), (m,))
        out[k] = (f, M)
    return out


@pytest.mark.parametrize("a", ["scalar", "diagonal", "gradient", "by_scalar", "general", "dense"])
@pytest.mark.parametrize("b", ["scalar", "diagonal", "gradient", "by_scalar", "general", "dense"])
def test_product_table(a, b):
    rng = np.random.default_rng(7)
    m = 4
    fa, Ma = _all_factors(rng, m)[a]
    fb, Mb = _all_factors(rng, m)[b]
    if Ma.shape[1] != Mb.shape[0]:
        with pytest.raises(ValueError, match="chain rule shape mismatch"):
            fa @ fb
        return
    prod = fa @ fb
    np.testing.assert_allclose(prod.toarray(), Ma @ Mb, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(prod.toarray("denominator"), (Ma @ Mb).T, rtol=1e-12, atol=1e-12)
    expected_kind = {
        ("diagonal", "diagonal"): "diagonal",
        ("gradient", "diagonal"): "gradient",
        ("diagonal", "by_scalar"): "by_scalar",
        ("by_scalar", "gradient"): "general",
        ("gradient", "by_scalar"): "scalar",
        ("scalar", "scalar"): "scalar",
        ("scalar", "gradient"): "gradient",
        ("by_scalar", "scalar"): "by_scalar",
    }.get((a, b))
    if expected_kind:
        assert prod.kind == expected_kind
    if (a, b) == ("by_scalar", "gradient"):
        assert prod.rank == 1 and prod.d is None        # an outer product, stored as such


def test_factor_addition_and_shapes():
    d = np.arange(1.0, 4.0)
    s = Factor.diagonal(d) + Factor((3,), (3,), U=np.ones((3, 1)), V=d[:, None])
    np.testing.assert_allclose(s.toarray(), np.diag(d) + np.outer(np.ones(3), d))
    with pytest.raises(ValueError, match="cannot add"):
        Factor.diagonal(d) + Factor.row(d)
    with pytest.raises(ValueError, match="square"):
        Factor((2,), (3,), d=np.ones(2))


# -- against the core primitives ------------------------------------------------------

@pytest.mark.parametrize("op", fj.BINARY_OPS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_binary_ops_match_core(op, dtype):
    a = RNG.uniform(0.5, 2.0, 7).astype(dtype)
    b = RNG.uniform(0.5, 2.0, 7).astype(dtype)
    a[2] = b[2]                                    # a tie, for maximum/minimum/greater
    expr = getattr(fj, op)(w_, x_)
    f = fj.compile(expr)
    for k, name in enumerate(("w", "x")):
        got = f.jacobian(name, w=a, x=b)
        assert got.dtype == dtype
        np.testing.assert_allclose(got, fj.jacobian(op, a, b, wrt=k), rtol=2e-6 if
                                   dtype == np.float32 else 1e-14)
        g = fj.compile(fj.sum(expr)).jacobian(name, w=a, x=b)
        np.testing.assert_allclose(g, fj.sum_gradient(op, a, b, wrt=k), rtol=2e-6 if
                                   dtype == np.float32 else 1e-14)


@pytest.mark.parametrize("op", fj.UNARY_OPS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unary_ops_match_core(op, dtype):
    x = np.array([-1.5, -0.3, 0.0, 0.4, 2.0], dtype=dtype)
    if op in REAL_ABOVE:
        x = np.abs(x) + dtype(0.25 + max(REAL_ABOVE[op], 0.0))
    f = fj.compile(getattr(fj, op)(x_))
    got = f.jacobian(x=x)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, fj.jacobian(op, x), rtol=2e-6 if dtype == np.float32
                               else 1e-14)


def test_conventions_at_kinks():
    x, w = fj.var("x"), fj.var("w")
    zero = np.zeros(3)
    np.testing.assert_array_equal(fj.compile(fj.relu(x)).jacobian(x=zero), 0)
    np.testing.assert_array_equal(fj.compile(fj.abs(x)).jacobian(x=zero), 0)
    f = fj.compile(fj.maximum(w, x))
    np.testing.assert_array_equal(f.jacobian("w", w=zero, x=zero), 0.5)
    np.testing.assert_array_equal(f.jacobian("x", w=zero, x=zero), 0.5)
    assert np.isnan(fj.compile(fj.relu(x)).jacobian(x=np.array([np.nan]))[0])
    np.testing.assert_array_equal(fj.compile(fj.maximum(w, x)).value(
        w=np.array([np.nan, 1.0]), x=np.array([1.0, np.nan])), [np.nan, np.nan])


# -- dtypes, scalars, sizes, threads ---------------------------------------------------

def test_dtypes():
    x, z = fj.var("x"), fj.var("z")
    f = fj.compile(fj.tanh(x * z))
    x32 = np.linspace(-1, 1, 5, dtype=np.float32)
    assert f.jacobian("x", x=x32, z=2.0).dtype == np.float32      # Python number is weak
    assert f.jacobian("x", x=x32, z=np.float64(2.0)).dtype == np.float64
    assert f.jacobian("x", x=np.arange(5), z=2).dtype == np.float64
    assert f.jacobian("x", x=x32.astype(np.float16), z=2.0).dtype == np.float32
    np.testing.assert_allclose(f.jacobian("x", x=x32, z=2.0),
                               2 * (1 - np.tanh(2 * x32.astype(np.float64)) ** 2), rtol=1e-5)
    for bad in (np.ones(3, complex), np.array(["a"]), np.ones(3, object)):
        with pytest.raises(TypeError):
            f.jacobian("x", x=bad, z=1.0)
    with pytest.raises(TypeError, match="complex"):
        f.jacobian("x", x=np.ones(3), z=1j)


def test_all_scalar_expression_and_nd_arrays():
    x, y = fj.var("x"), fj.var("y")
    f = fj.compile(fj.sin(x) * y)
    j = f.jacobian("x", x=0.5, y=2.0)
    assert np.ndim(j) == 0 and j == pytest.approx(2 * np.cos(0.5))
    X = RNG.random((2, 3, 4))
    np.testing.assert_allclose(f.jacobian("x", x=X, y=X), np.cos(X) * X)
    assert f.jacobian("x", x=X, y=X, format="dense").shape == (24, 24)
    g = fj.compile(fj.sum(fj.square(x)))
    M = RNG.random((2, 3))
    np.testing.assert_allclose(g.jacobian(x=M), 2 * M)
    np.testing.assert_allclose(g.jacobian(x=M, format="dense"), (2 * M).T)  # q x p
    np.testing.assert_allclose(g.jacobian(x=M, format="dense", layout="denominator"), 2 * M)


def test_large_threaded_pass_and_determinism():
    n = 200_003                   # several blocks, above the threading threshold
    w, x = fj.var("w"), fj.var("x")
    wv, xv = RNG.random(n), RNG.random(n) + 0.5
    f = fj.compile(fj.sum(fj.tanh(w * x) + 3))
    v, g = f.value_and_jacobian("w", w=wv, x=xv)
    assert v == pytest.approx(np.sum(np.tanh(wv * xv) + 3), rel=1e-12)
    np.testing.assert_allclose(g, (1 - np.tanh(wv * xv) ** 2) * xv, rtol=1e-12, atol=1e-15)
    v2, _ = f.value_and_jacobian("w", w=wv, x=xv)
    assert v == v2
    h = fj.compile(fj.sum(x * fj.var("z")))
    assert h.jacobian("z", x=xv, z=3.0) == pytest.approx(xv.sum(), rel=1e-12)


def test_compiled_plan_is_reused():
    w, x = fj.var("w"), fj.var("x")
    f = fj.compile(fj.exp(w) * x)
    f.jacobian("w", w=np.ones(3), x=np.ones(3))
    n_plans = len(f._plans)
    f.jacobian("w", w=np.zeros(1000), x=np.ones(1000))
    f.jacobian("w", w=np.zeros(3, np.float32), x=np.ones(3, np.float32))
    assert len(f._plans) == n_plans


# -- out= -----------------------------------------------------------------------------------

def test_out_compact_written_in_place():
    w, x = fj.var("w"), fj.var("x")
    f = fj.compile(fj.sin(w) * x)
    wv, xv = RNG.random(5), RNG.random(5)
    out, vout = np.empty(5), np.empty(5)
    v, j = f.value_and_jacobian("w", w=wv, x=xv, out=out, value_out=vout)
    assert j is out and v is vout
    np.testing.assert_allclose(out, np.cos(wv) * xv)
    np.testing.assert_allclose(vout, np.sin(wv) * xv)
    strided = np.empty(10)[::2]
    assert f.jacobian("w", w=wv, x=xv, out=strided) is strided
    np.testing.assert_allclose(strided, np.cos(wv) * xv)
    dense = np.empty((5, 5))
    assert f.jacobian("w", w=wv, x=xv, format="dense", out=dense) is dense
    np.testing.assert_allclose(dense, np.diag(np.cos(wv) * xv))
    o = np.empty(5)
    assert f.value(w=wv, x=xv, out=o) is o


@pytest.mark.parametrize("bad, exc, msg", [
    (np.empty(4), ValueError, r"out has shape \(4,\) but the result has shape \(5,\)"),
    (np.empty(5, np.float32), ValueError, "out has dtype float32 but the result has dtype float64"),
    ([0.0] * 5, TypeError, "out must be a numpy.ndarray, got list"),
])
def test_out_errors(bad, exc, msg):
    f = fj.compile(fj.sin(w_) * x_)
    with pytest.raises(exc, match=msg):
        f.jacobian("w", w=np.ones(5), x=np.ones(5), out=bad)


def test_out_read_only_and_overlap():
    f = fj.compile(fj.sin(w_) * x_)
    ro = np.empty(5)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        f.jacobian("w", w=np.ones(5), x=np.ones(5), out=ro)
    wv = np.ones(5)
    with pytest.raises(ValueError, match="overlaps"):
        f.jacobian("w", w=wv, x=np.ones(5), out=wv)
    with pytest.raises(ValueError, match="out= is only supported"):
        f.jacobian("w", w=wv, x=np.ones(5), format="csr", out=np.empty((5, 5)))


# -- errors ---------------------------------------------------------------------------------

def test_errors_unknown_and_missing_variables():
    w, x = fj.var("w"), fj.var("x")
    with pytest.raises(ValueError, match="unknown variable 'q'.*w, x"):
        fj.compile(w * x, wrt=["q"])
    f = fj.compile(w * x, wrt="w")
    with pytest.raises(ValueError, match="unknown variable 'q'"):
        f.jacobian("w", w=1.0, x=2.0, q=3.0)
    with pytest.raises(ValueError, match="missing value for variable 'x'"):
        f.jacobian("w", w=1.0)
    with pytest.raises(ValueError, match="unknown variable 'q'"):
        f.jacobian("q", w=1.0, x=2.0)
    with pytest.raises(ValueError, match="not compiled for differentiation"):
        f.jacobian("x", w=1.0, x=2.0)
    with pytest.raises(ValueError, match="twice"):
        fj.compile(w * x, wrt=["w", "w"])


def test_errors_shapes_and_values():
    f = fj.compile(w_ * x_)
    with pytest.raises(ValueError, match=r"w has shape \(3,\) and x has shape \(4,\)"):
        f.jacobian("w", w=np.ones(3), x=np.ones(4))
    with pytest.raises(ValueError, match="layout must be"):
        f.jacobian("w", w=1.0, x=1.0, layout="row")
    with pytest.raises(ValueError, match="format must be one of"):
        f.jacobian("w", w=1.0, x=1.0, format="full")
    with pytest.raises(TypeError, match="got None"):
        f.jacobian("w", w=None, x=1.0)
    g = fj.compile([w_ * x_, fj.sum(w_)])
    with pytest.raises(ValueError, match="scalar-valued"):
        g.jacobian(["w"], w=np.ones(3), x=np.ones(3))
    with pytest.raises(ValueError, match="stacked"):
        g.jacobian("w", w=np.ones(3), x=np.ones(3))


def test_errors_building_expressions():
    with pytest.raises(TypeError, match="array constants"):
        w_ * np.ones(3)
    with pytest.raises(TypeError, match="array constants"):
        np.ones(3) + w_
    with pytest.raises(TypeError, match="complex"):
        w_ * 1j
    with pytest.raises(TypeError, match="real number"):
        w_ + "a"
    with pytest.raises(TypeError, match="truth value"):
        max(w_, 0)
    with pytest.raises(TypeError, match=">= and <="):
        w_ >= x_
    with pytest.raises(ValueError, match="identifier"):
        fj.var("not a name")
    with pytest.raises(ValueError, match="reserved"):
        fj.var("out")
    from fastjac.expr import Unary
    with pytest.raises(ValueError, match="unsupported operation 'erf'"):
        fj.compile(Unary("erf", w_))
    with pytest.raises(TypeError, match="compile takes"):
        fj.compile(3)


# -- hot-loop kernel --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernel_matches_jacobian(dtype):
    w, x, z = fj.var("w"), fj.var("x"), fj.var("z")
    f = fj.compile(fj.maximum(w * x + z, 0) - w / x)
    wv = RNG.uniform(0.5, 2, 9).astype(dtype)
    xv = RNG.uniform(0.5, 2, 9).astype(dtype)
    zv = np.array(-1.5, dtype)
    for name in ("w", "x"):
        k = f.kernel(name)
        out = np.empty(9, dtype)
        assert k(wv, xv, zv, out) is out
        np.testing.assert_array_equal(out, f.jacobian(name, w=wv, x=xv, z=zv))
    kz = f.kernel("z", value=True)
    vout, out = np.empty(9, dtype), np.empty(9, dtype)
    kz(wv, xv, zv, vout, out)
    np.testing.assert_array_equal(out, f.jacobian("z", w=wv, x=xv, z=zv))
    np.testing.assert_array_equal(vout, f.value(w=wv, x=xv, z=zv))
    g = fj.compile(fj.sum(w * z))
    o0 = np.empty((), dtype)
    g.kernel("z")(wv, zv, o0)
    assert o0 == pytest.approx(float(wv.astype(np.float64).sum()), rel=1e-6)


def test_kernel_errors():
    f = fj.compile(fj.exp(w_) * x_)
    k = f.kernel("w")
    a = np.ones(4)
    with pytest.raises(TypeError, match="takes 3 arrays"):
        k(a, a)
    with pytest.raises(TypeError, match="numpy.ndarray"):
        k(a, [1.0] * 4, np.empty(4))
    with pytest.raises(TypeError, match="one dtype"):
        k(a, a.astype(np.float32), np.empty(4))
    with pytest.raises(ValueError, match="C-contiguous"):
        k(np.ones(8)[::2], a, np.empty(4))
    with pytest.raises(ValueError, match="shape"):
        k(a, np.ones(5), np.empty(4))
    with pytest.raises(ValueError, match="shape"):
        k(a, a, np.empty(3))
    with pytest.raises(ValueError, match="overlaps"):
        k(a, a, a)
    ro = np.empty(4)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        k(a, a, ro)
    with pytest.raises(ValueError, match="inner reduction"):
        fj.compile(fj.sum(fj.exp(fj.sum(w_)) * x_)).kernel("w")
    with pytest.raises(ValueError, match="inner reduction"):
        fj.compile(fj.sum(w_) / fj.sum(x_)).kernel("w")
    # arithmetic on one sum's value runs on that value: what it reads after
    # the sum must be a scalar (with an array x the Jacobian is not diagonal)
    k_step = fj.compile(fj.exp(fj.sum(w_)) * x_).kernel("w")
    with pytest.raises(ValueError, match="x is used after the sum"):
        k_step(a, a, np.empty(4))
    with pytest.raises(ValueError, match="one variable"):
        f.kernel(["w", "x"])


# -- every SIMD build of the loops gives the same answers -------------------------------

@pytest.mark.parametrize("level", ["baseline", "avx2", "avx512"])
def test_simd_levels_agree(level):
    from fastjac import _simd
    reason = _simd.why_unavailable(level)
    if reason:
        pytest.skip(reason)
    before = _simd.current()
    assert _simd.select(level) == level
    try:
        w, x = fj.var("w"), fj.var("x")
        n = 70_001                                   # threads, blocks, a ragged tail
        wv = RNG.uniform(0.5, 2.0, n)
        xv = RNG.uniform(0.5, 2.0, n)
        f = fj.compile(fj.sin(w) * fj.exp(x) - w / x + fj.maximum(w * x, 1.5))
        v, j = f.value_and_jacobian("w", w=wv, x=xv)
        np.testing.assert_allclose(v, np.sin(wv) * np.exp(xv) - wv / xv
                                   + np.maximum(wv * xv, 1.5), rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(j, np.cos(wv) * np.exp(xv) - 1 / xv
                                   + np.where(wv * xv > 1.5, xv, 0.0), rtol=1e-12, atol=1e-15)
        X = RNG.standard_normal((9_003, 7)).astype(np.float32)
        yv = RNG.standard_normal(9_003).astype(np.float32)
        wn = RNG.standard_normal(7).astype(np.float32)
        gw, gb = fj.neuron_gradient(X, yv, wn, 0.1)
        X64, y64, w64 = X.astype(float), yv.astype(float), wn.astype(float)
        z = X64 @ w64 + np.float32(0.1)
        r = np.where(z > 0, z - y64, 0.0)
        np.testing.assert_allclose(gw, (2 / len(yv)) * r @ X64, rtol=1e-4, atol=1e-5)
    finally:
        _simd.select(before)


def test_errors_hostile_arguments():
    f = fj.compile(fj.sin(w_) * x_)
    with pytest.raises(TypeError, match="MaskedArray"):
        f.jacobian("w", w=np.ma.array([1.0, 2.0], mask=[0, 1]), x=np.ones(2))
    with pytest.raises(ValueError, match="layout must be"):
        f.jacobian("w", w=np.ones(2), x=np.ones(2), layout=np.array(["numerator"]))
    with pytest.raises(ValueError, match="wrt must be a variable name"):
        f.jacobian(3, w=np.ones(2), x=np.ones(2))
    with pytest.raises(ValueError, match="wrt must be a variable name"):
        fj.compile(w_ * x_, wrt=3)
    with pytest.raises(TypeError, match="MaskedArray"):
        fj.neuron_gradient(np.ma.ones((3, 2)), np.ones(3), np.ones(2), 0.0)


def test_tanh_and_sigmoid_values_accurate():
    # the fused pass has its own vectorised tanh (Taylor below 0.55, exp
    # above) and sigmoid; closed forms in float64 as the oracle
    x = fj.var("x")
    v = np.concatenate([np.linspace(-30, 30, 20001), np.logspace(-300, 1, 500),
                        [0.55, np.nextafter(0.55, 0), 5e-324]])
    got = fj.compile(fj.tanh(x)).value(x=v)
    ref = np.tanh(v)
    np.testing.assert_array_less(np.abs(got - ref), 2.5 * np.spacing(np.abs(ref)) + 1e-320)
    special = fj.compile(fj.tanh(x)).value(x=np.array([0.0, -0.0, np.inf, -np.inf, np.nan]))
    np.testing.assert_array_equal(special, [0.0, -0.0, 1.0, -1.0, np.nan])
    assert np.signbit(special[1])
    s = fj.compile(fj.sigmoid(x)).value(x=v)
    np.testing.assert_allclose(s, np.where(v >= 0, 1 / (1 + np.exp(-np.abs(v))),
                                           np.exp(-np.abs(v)) / (1 + np.exp(-np.abs(v)))),
                               rtol=1e-15, atol=0)
    f32 = fj.compile(fj.tanh(x)).value(x=np.linspace(-5, 5, 1001, dtype=np.float32))
    assert f32.dtype == np.float32
    np.testing.assert_allclose(f32, np.tanh(np.linspace(-5, 5, 1001, dtype=np.float32)
                                            .astype(np.float64)), rtol=1.2e-7, atol=1e-30)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_streamed_outputs_of_large_results(dtype):
    # outputs of 16 MiB and more are written with non-temporal stores, block
    # by block, from unaligned array starts; check every element
    n = (1 << 24) // np.dtype(dtype).itemsize + 1001
    w, x = fj.var("w"), fj.var("x")
    wv = np.linspace(0.5, 1.5, n, dtype=dtype)
    xv = wv[::-1].copy()
    vout = np.empty(n + 3, dtype)[3:]           # misaligned to the cache line
    jout = np.empty(n + 1, dtype)[1:]
    k = fj.compile(w * x + w / x).kernel("w", value=True)
    k(wv, xv, vout, jout)
    w64, x64 = wv.astype(np.float64), xv.astype(np.float64)
    tol = 1e-15 if dtype == np.float64 else 1e-6
    np.testing.assert_allclose(vout, w64 * x64 + w64 / x64, rtol=tol)
    np.testing.assert_allclose(jout, x64 + 1 / x64, rtol=tol)


def test_tanh_derivative_fused_with_its_value():
    # tanh and tanh' come from one exponential in the fused pass; closed
    # form 4 e / (1 + e)^2 with e = exp(-2|x|) (cancellation-free) as oracle
    x = fj.var("x")
    v = np.concatenate([np.linspace(-40, 40, 8001), [0.0, -0.0, 0.55, -0.55, 1e-300]])
    f = fj.compile(fj.tanh(x) * 1.0)
    val, d = f.value_and_jacobian("x", x=v)
    e = np.exp(-2 * np.abs(v))
    np.testing.assert_allclose(d, 4 * e / (1 + e) ** 2, rtol=3e-15, atol=0)
    np.testing.assert_array_less(np.abs(val - np.tanh(v)), 2.5 * np.spacing(np.abs(np.tanh(v)))
                                 + 1e-320)
    sp = f.value_and_jacobian("x", x=np.array([np.inf, -np.inf, np.nan]))
    np.testing.assert_array_equal(sp[0], [1.0, -1.0, np.nan])
    np.testing.assert_array_equal(sp[1], [0.0, 0.0, np.nan])
    g = fj.compile(fj.sum(fj.tanh(x)))                 # derivative only (value unused)
    np.testing.assert_allclose(g.jacobian(x=v), 4 * e / (1 + e) ** 2, rtol=3e-15, atol=0)


def test_empty_arrays():
    f = fj.compile(fj.sin(w_) * fj.exp(x_) - w_ / x_)
    e = np.empty(0)
    assert f.jacobian("w", w=e, x=e).shape == (0,)
    for fmt in ("dense", "csr", "csc", "coo", "dia"):
        assert f.jacobian("w", w=e, x=e, format=fmt).shape == (0, 0)
    assert np.shape(fj.compile(fj.greater(w_, w_)).jacobian("w", w=e)) == (0,)
    g = fj.compile(fj.sum(w_ * x_))
    assert g.value(w=e, x=e) == 0.0
    assert g.jacobian("w", w=e, x=e, format="dense").shape == (1, 0)
    assert fj.compile(fj.tanh(fj.dot(w_, x_)) * x_).jacobian(
        "w", w=e, x=e, format="dense").shape == (0, 0)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_fast_and_general_paths_agree(case):
    # ndarrays of one dtype take the compiled fast path; lists and Python
    # numbers the general one (coercion); both must give the same numbers
    _, expr, fun, spec = case
    values = make_values(spec)
    as_lists = {k: (v.tolist() if np.ndim(v) else float(v)) for k, v in values.items()}
    as_arrays = {k: np.asarray(v) for k, v in values.items()}
    f = fj.compile(expr)
    for name in f.variables:
        a = f.value_and_jacobian(name, **as_arrays)
        b = f.value_and_jacobian(name, **as_lists)
        for x, y in zip(a, b):
            x = x.toarray() if isinstance(x, Factor) else np.asarray(x)
            y = y.toarray() if isinstance(y, Factor) else np.asarray(y)
            assert x.shape == y.shape and x.dtype == y.dtype
            np.testing.assert_array_equal(x, y)


# -- scalar arithmetic on a sum's value (one pass, then a scalar step) --------------

N_STEP = 569
# name, the step on an expression, the same on a float64 s, its derivative
STEPS = [
    ("mean", lambda s: s / N_STEP, lambda s: s / N_STEP, lambda s: 1 / N_STEP),
    ("times_2", lambda s: s * 2, lambda s: s * 2, lambda s: 2.0),
    ("two_minus", lambda s: 2 - s, lambda s: 2 - s, lambda s: -1.0),
    ("square", lambda s: s ** 2, lambda s: s * s, lambda s: 2 * s),
    ("log", fj.log, np.log, lambda s: 1 / s),
]


def one_pass(f):
    """Every plan of f runs one pass (no second stage over the data)."""
    return all(len(plan.stages[0]) == 1 for plan in f._plans.values())


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("w_kind", ["array", "scalar"])
@pytest.mark.parametrize("step", STEPS, ids=[s[0] for s in STEPS])
def test_scalar_step_after_a_sum(step, w_kind, dtype):
    _, on_expr, on_float, slope = step
    x = RNG.uniform(0.5, 2.0, N_STEP).astype(dtype)
    w = (RNG.uniform(0.5, 2.0, N_STEP) if w_kind == "array" else
         np.array(RNG.uniform(0.5, 2.0))).astype(dtype)
    # closed form in float64: s = sum((w x - 1)^2), ds/dw = 2 (w x - 1) x
    w64, x64 = w.astype(np.float64), x.astype(np.float64)
    s = np.sum((w64 * x64 - 1) ** 2)
    ds_dw = 2 * (w64 * x64 - 1) * x64
    if w_kind == "scalar":
        ds_dw = ds_dw.sum()
    value, grad = on_float(s), slope(s) * ds_dw
    # float32: w x - 1 cancels near w x = 1, an error of the inputs' rounding
    # times the largest derivative
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else \
        dict(rtol=3e-5, atol=1e-6 * np.abs(grad).max())

    f = fj.compile(on_expr(fj.sum(fj.square(w_ * x_ - 1))))
    for args in ({"w": w, "x": x}, {"w": w.tolist(), "x": x.tolist()}):   # fast, general
        v, g = f.value_and_jacobian("w", **args)
        assert np.shape(g) == np.shape(w)
        np.testing.assert_allclose(v, value, **tol)
        np.testing.assert_allclose(g, grad, **tol)
    assert f.value(w=w, x=x) == pytest.approx(value, rel=tol["rtol"])
    k = f.kernel("w", value=True)
    v_out, g_out = np.empty((), dtype), np.empty_like(w)
    assert k(w, x, v_out, g_out) is g_out
    np.testing.assert_allclose(v_out, value, **tol)
    np.testing.assert_allclose(g_out, grad, **tol)
    g_only = np.empty_like(w)
    f.kernel("w")(w, x, g_only)
    np.testing.assert_array_equal(g_only, g_out)
    # d/dx by finite differences of the float64 formula
    if dtype == np.float64 and w_kind == "array":
        def fun(w, x):
            return on_float(np.sum((w * x - 1) ** 2))
        x_small, w_small = x[:6], w[:6]
        expected = fd_jacobian(fun, {"w": w_small, "x": x_small}, "x").ravel()
        got = fj.compile(on_expr(fj.sum(fj.square(w_ * x_ - 1)))).jacobian(
            "x", w=w_small, x=x_small)
        np.testing.assert_allclose(got, expected, rtol=1e-7, atol=1e-9)
    assert one_pass(f)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_scalar_step_reading_a_scalar_variable(dtype):
    # y = sum(w z) z + z^2 with z scalar: dy/dz = sum(w) z + s + 2 z (the
    # chain through the sum and the direct term), dy/dw = z * z
    w = RNG.uniform(0.5, 2.0, N_STEP).astype(dtype)
    z = np.array(1.25, dtype)
    w64, z64 = w.astype(np.float64), 1.25
    s = np.sum(w64 * z64)
    f = fj.compile(fj.sum(w_ * z_) * z_ + fj.square(z_))
    tol = dict(rtol=1e-12) if dtype == np.float64 else dict(rtol=3e-5)
    expected = {"z": np.sum(w64) * z64 + s + 2 * z64, "w": np.full(N_STEP, z64 * z64)}
    value = s * z64 + z64 ** 2
    for name, d in expected.items():
        v, g = f.value_and_jacobian(name, w=w, z=z)
        np.testing.assert_allclose(v, value, **tol)
        np.testing.assert_allclose(g, d, **tol)
        out = np.empty(np.shape(d), dtype)
        f.kernel(name)(w, z, out)
        np.testing.assert_allclose(out, d, **tol)
    np.testing.assert_allclose(f.jacobian(["w", "z"], w=w, z=z)[0],
                               np.append(expected["w"], expected["z"]), **tol)
    assert one_pass(f)
    # with an array z the Jacobian by w is not diagonal: two stages, a Factor
    zs = np.full(N_STEP, 1.25, dtype)
    J = f.jacobian("w", w=w, z=zs, format="dense")
    np.testing.assert_allclose(J, np.outer(zs, zs) + 0, **tol)


def test_structurally_zero_derivatives_after_a_sum():
    w = RNG.uniform(0.5, 2.0, 9)
    # the step is piecewise constant in s: exactly zero, never 0 * inf
    f = fj.compile(fj.greater(fj.sum(w_ * x_), 3.0) * 2)
    x = np.full(9, np.inf)
    out = np.full(9, np.nan)
    f.kernel("w")(w, x, out)
    assert (out == 0).all()
    # the derivative of a sum by a scalar it does not move is one number, 0
    g = fj.compile(fj.sum(w_ > z_))
    z = np.array(1.0)
    assert np.shape(g.jacobian("z", w=w, z=z)) == ()
    assert g.jacobian("z", w=w, z=z) == 0
    out0 = np.full((), np.nan)
    g.kernel("z")(w, z, out0)
    assert out0 == 0


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("step", [STEPS[0], STEPS[4]], ids=["affine", "nonlinear"])
def test_scalar_step_compiled_matches_interpreter(step, dtype):
    # large arrays run the pass as compiled C (_jit.py): the slope applied in
    # the pass (affine step) or after it (log) gives the interpreter's bits
    from fastjac import _expr
    _, on_expr, on_float, slope = step
    n = 70_001
    w, x = (RNG.uniform(0.5, 2.0, n).astype(dtype) for _ in range(2))
    results = {}
    try:
        for mode in ("never", "always"):
            _expr._set_jit(mode)
            k = fj.compile(on_expr(fj.sum(fj.square(w_ * x_ - 1)))).kernel("w", value=True)
            v, g = np.empty((), dtype), np.empty(n, dtype)
            k(w, x, v, g)
            results[mode] = v, g
    finally:
        _expr._set_jit(None)
    np.testing.assert_array_equal(results["always"][0], results["never"][0])
    np.testing.assert_array_equal(results["always"][1], results["never"][1])
    w64, x64 = w.astype(np.float64), x.astype(np.float64)
    s = np.sum((w64 * x64 - 1) ** 2)
    expected = slope(s) * 2 * (w64 * x64 - 1) * x64
    tol = 1e-11 if dtype == np.float64 else 1e-4        # float32: w x - 1 cancels
    np.testing.assert_allclose(results["never"][1], expected, rtol=tol,
                               atol=tol * np.abs(expected).max())


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_checker_on_every_case(case):
    """fastjac.testing.check_jacobian: the operator (and compact) Jacobian of
    every case against finite differences, in random directions."""
    pytest.importorskip("scipy")
    from fastjac.testing import check_jacobian
    _, expr, fun, spec = case
    values = make_values(spec)
    f = fj.compile(expr)
    for name in f.variables:
        def at(v, name=name):
            return {**values, name: v if np.ndim(values[name]) else v.reshape(())}
        for layout in ("numerator", "denominator"):
            check_jacobian(lambda v: fun(**at(v)),
                           lambda v: f.jacobian(name, layout=layout, format="operator",
                                                **at(v)),
                           values[name], layout=layout)
        compact = f.jacobian(name, **values)
        if not isinstance(compact, fj.Factor):
            check_jacobian(lambda v: fun(**at(v)), lambda v: f.jacobian(name, **at(v)),
                           values[name])
