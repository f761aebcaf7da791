"""format="operator": structured LinearOperators against dense matrices built
entry by entry in this file, inside SciPy's solvers, composed, and misused."""
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("scipy")
import scipy.sparse
from scipy.optimize import least_squares
from scipy.sparse.linalg import LinearOperator, aslinearoperator, cg, lsqr

import fastjac
from oracle import finite_difference

LAYOUTS = ("numerator", "denominator")
DTYPES = (np.float64, np.float32)
TOL = {np.float64: dict(rtol=1e-12, atol=1e-12), np.float32: dict(rtol=2e-5, atol=2e-5)}

# the element-wise partials of the two operators used here, written out
PARTIALS = {
    ("multiply", 0): lambda a, b: b,
    ("multiply", 1): lambda a, b: a,
    ("divide", 0): lambda a, b: 1.0 / b,
    ("divide", 1): lambda a, b: -a / (b * b),
}


def dense_oracle(op, a, b, wrt, summing=False, axis=None):
    """The numerator Jacobian of y = [sum over axis of] op(a, b) by operand
    wrt, flattened in C order, one entry at a time."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    shape = np.broadcast_shapes(a.shape, b.shape)
    A, B = np.broadcast_to(a, shape), np.broadcast_to(b, shape)
    k = a if wrt == 0 else b
    k_aligned = (1,) * (len(shape) - k.ndim) + k.shape
    if not summing:
        reduced = ()
    elif axis is None:
        reduced = tuple(range(len(shape)))
    else:
        reduced = tuple(ax % len(shape) for ax in np.atleast_1d(axis))
    kept = [i for i in range(len(shape)) if i not in reduced]
    y_shape = tuple(shape[i] for i in kept)
    J = np.zeros((int(np.prod(y_shape)), k.size))
    partial = PARTIALS[(op, wrt)]
    for s in np.ndindex(*shape):
        row = np.ravel_multi_index([s[i] for i in kept], y_shape) if y_shape else 0
        col = np.ravel_multi_index([s[i] if k_aligned[i] != 1 else 0
                                    for i in range(len(shape))], k_aligned) if k.ndim else 0
        J[row, col] += partial(A[s], B[s])
    return J


RNG = np.random.default_rng(17)


def positive(*shape):
    return RNG.uniform(0.5, 2.0, shape)


# (name, call, expected class, oracle): each a structure of the table in _operator.py
CASES = [
    ("diagonal", ("multiply", positive(3, 4), positive(3, 4), 0, False, None), "DiagonalOperator"),
    ("column", ("divide", positive(5), 1.7, 1, False, None), "ColumnOperator"),
    ("diagonal by scalar", ("divide", positive(5), 1.7, 0, False, None), "DiagonalOperator"),
    ("row", ("multiply", positive(2, 3), positive(2, 3), 1, True, None), "RowOperator"),
    ("scalar", ("multiply", positive(4), 1.3, 1, True, None), "DiagonalOperator"),
    ("broadcast", ("multiply", positive(4), positive(3, 4), 0, False, None), "BroadcastOperator"),
    ("broadcast outer", ("divide", positive(3, 1), positive(1, 4), 1, False, None),
     "BroadcastOperator"),
    ("broadcast other side", ("multiply", positive(4), positive(3, 4), 1, False, None),
     "DiagonalOperator"),
    ("row of broadcast", ("multiply", positive(4), positive(3, 4), 0, True, None), "RowOperator"),
    ("sum rows", ("multiply", positive(4), positive(3, 4), 0, True, 1), "BroadcastOperator"),
    ("sum rows by X", ("divide", positive(4), positive(3, 4), 1, True, 0), "BroadcastOperator"),
    # more entries than _operator.SMALL_SUMS: the sums by np.einsum
    ("sum rows, many", ("multiply", positive(40), positive(30, 40), 0, True, 1),
     "BroadcastOperator"),
    ("sum rows by X, many", ("divide", positive(40), positive(30, 40), 1, True, 0),
     "BroadcastOperator"),
    ("sum columns diag", ("multiply", positive(4), positive(3, 4), 0, True, 0),
     "DiagonalOperator"),
    ("3-d middle", ("divide", positive(2, 1, 4), positive(3, 1), 0, True, (0, 2)),
     "BroadcastOperator"),
    ("3-d summed away", ("divide", positive(2, 1, 4), positive(3, 1), 1, True, (0, 2)),
     "DiagonalOperator"),
]


def operator_of(call, dtype, layout):
    op, a, b, wrt, summing, axis = call
    a = np.asarray(a, dtype) if np.ndim(a) else a
    b = np.asarray(b, dtype) if np.ndim(b) else b
    if summing:
        return fastjac.sum_gradient(op, a, b, wrt=wrt, axis=axis, layout=layout,
                                    format="operator")
    return fastjac.jacobian(op, a, b, wrt=wrt, layout=layout, format="operator")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name, call, cls", CASES, ids=[c[0] for c in CASES])
def test_products_match_the_dense_matrix(name, call, cls, layout, dtype):
    op, a, b, wrt, summing, axis = call
    J = operator_of(call, dtype, layout)
    D = dense_oracle(op, np.asarray(a, dtype), np.asarray(b, dtype), wrt, summing, axis)
    if layout == "denominator":
        D = D.T
    if layout == "denominator":     # the transpose: a row becomes a column
        cls = {"RowOperator": "ColumnOperator", "ColumnOperator": "RowOperator"}.get(cls, cls)
    assert type(J).__name__ == cls
    assert isinstance(J, LinearOperator) and isinstance(J, fastjac.JacobianOperator)
    assert J.shape == D.shape and J.dtype == dtype
    m, n = D.shape
    tol = TOL[dtype]
    v, u = RNG.standard_normal(n).astype(dtype), RNG.standard_normal(m).astype(dtype)
    V, U = RNG.standard_normal((n, 3)).astype(dtype), RNG.standard_normal((m, 2)).astype(dtype)
    for got, want in [(J @ v, D @ v), (J.matvec(v), D @ v), (J.dot(v), D @ v), (J * v, D @ v),
                      (J.rmatvec(u), D.T @ u), (J.T @ u, D.T @ u), (J.H @ u, D.T @ u),
                      (u @ J, u @ D), (J.matmat(V), D @ V), (J @ V, D @ V),
                      (J.rmatmat(U), D.T @ U), (U.T @ J, U.T @ D),
                      (J.matvec(v[:, None]), (D @ v)[:, None]),
                      (J.rmatvec(u[:, None]), (D.T @ u)[:, None])]:
        assert got.dtype == dtype and got.shape == want.shape
        np.testing.assert_allclose(got, want, **tol)
    # a float64 vector promotes, as NumPy does
    assert (J @ v.astype(np.float64)).dtype == np.result_type(dtype, np.float64)
    np.testing.assert_allclose(J.toarray(), D, **tol)
    assert J.toarray().dtype == dtype
    np.testing.assert_allclose(J.T.toarray(), D.T, **tol)
    np.testing.assert_allclose(J.diagonal(), np.diagonal(D), **tol)
    for fmt in ("csr", "csc", "coo", "dia"):
        S = J.tosparse(fmt)
        assert S.format == fmt
        np.testing.assert_allclose(S.toarray(), D, **tol)
    # the same matrix as format="dense" where that is the flattened map
    # (section 1 keeps a matrix operand's two axes for gradients and by-scalar)
    if not (name in ("row",) or name == "column" and np.ndim(a) == 2):
        c_op, c_a, c_b, c_wrt, c_sum, c_axis = call
        cast = [np.asarray(x, dtype) if np.ndim(x) else x for x in (c_a, c_b)]
        f = fastjac.sum_gradient if c_sum else fastjac.jacobian
        kw = dict(axis=c_axis) if c_sum else {}
        dense = f(c_op, *cast, wrt=c_wrt, layout=layout, format="dense", **kw)
        np.testing.assert_allclose(J.toarray(), dense.reshape(D.shape), **tol)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_storage_is_the_compact_result(layout):
    w, X = positive(50), positive(40, 50)
    d = fastjac.jacobian("multiply", w, X[0], format="operator", layout=layout)
    assert d.nbytes == 50 * 8
    np.testing.assert_array_equal(d.diag, X[0])
    g = fastjac.sum_gradient("multiply", w, X[0], format="operator", layout=layout)
    assert type(g).__name__ == ("RowOperator" if layout == "numerator" else "ColumnOperator")
    assert g.nbytes == 50 * 8
    B = fastjac.jacobian("multiply", w, X, format="operator", layout=layout)
    assert B.nbytes == 40 * 50 * 8 and B.shape == ((2000, 50) if layout == "numerator"
                                                   else (50, 2000))
    np.testing.assert_array_equal(B.values, X)


# -- expressions ---------------------------------------------------------------------

@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_expression_operators(layout, dtype):
    t, s = fastjac.var("t"), fastjac.var("s")
    t0 = np.array([0.3, -0.2, 0.5, 0.1], dtype)
    cases = [
        (fastjac.tanh(t * fastjac.sum(t)), "LowRankOperator",
         lambda v: np.tanh(v * v.sum())),
        (fastjac.tanh(t) * s, "DiagonalOperator", lambda v: np.tanh(v) * 1.5),
        (fastjac.sum(fastjac.exp(t)), "RowOperator", lambda v: np.exp(v).sum()),
    ]
    for expr, cls, numpy_f in cases:
        f = fastjac.compile(expr, wrt="t")
        J = f.jacobian("t", t=t0, s=dtype(1.5), layout=layout, format="operator") \
            if "s" in f.variables else f.jacobian("t", t=t0, layout=layout, format="operator")
        D = np.atleast_2d(finite_difference(numpy_f, t0.astype(np.float64)))
        D = D.T if layout == "denominator" else D
        if layout == "denominator":
            cls = {"RowOperator": "ColumnOperator"}.get(cls, cls)
        assert type(J).__name__ == cls, (expr, type(J))
        tol = dict(rtol=1e-6, atol=1e-8) if dtype == np.float64 else dict(rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(J.toarray(), D, **tol)
        v = RNG.standard_normal(J.shape[1])
        np.testing.assert_allclose(J @ v, D @ v, **tol)
        np.testing.assert_allclose(J.T @ (D @ v), D.T @ (D @ v), **tol)
    # the stacked Jacobian of two scalar functions: rank 2, no n x n storage
    fg = fastjac.compile([fastjac.sum(t * t), fastjac.sum(fastjac.sin(t))])
    J = fg.jacobian(["t"], t=t0.astype(np.float64), format="operator", layout=layout)
    D = np.array([2 * t0, np.cos(t0)], dtype=np.float64)
    D = D.T if layout == "denominator" else D
    assert type(J).__name__ == "LowRankOperator" and J.rank == 2
    np.testing.assert_allclose(J.toarray(), D, rtol=1e-6)


def test_expression_operator_refuses_out():
    t = fastjac.var("t")
    f = fastjac.compile(fastjac.tanh(t * fastjac.sum(t)))
    with pytest.raises(ValueError, match="out= is only supported"):
        f.jacobian("t", t=np.ones(3), format="operator", out=np.empty(3))


# -- inside SciPy's solvers ---------------------------------------------------------

def test_lsqr_and_cg_converge_to_the_dense_answer():
    w, X = positive(6), positive(30, 6)
    y = RNG.standard_normal(180)
    J = fastjac.jacobian("multiply", w, X, format="operator")          # 180 x 6
    D = dense_oracle("multiply", w, X, 0)
    want = np.linalg.lstsq(D, y, rcond=None)[0]
    got = lsqr(J, y, atol=1e-14, btol=1e-14)[0]
    np.testing.assert_allclose(got, want, rtol=1e-8)
    # normal equations (J^T J + I) x = J^T y, through cg
    A = J.T @ J + fastjac.jacobian("multiply", np.ones(6), np.ones(6), format="operator")
    got, info = cg(A, J.T @ y, rtol=1e-13)
    assert info == 0
    np.testing.assert_allclose(got, np.linalg.solve(D.T @ D + np.eye(6), D.T @ y), rtol=1e-9)
    # a diagonal system
    Dg = fastjac.jacobian("multiply", np.ones(50), positive(50), format="operator")
    b = RNG.standard_normal(50)
    np.testing.assert_allclose(cg(Dg, b, rtol=1e-14)[0], b / Dg.diag, rtol=1e-10)


def test_least_squares_with_operator_jacobian():
    X = positive(20, 3)
    w_true = np.array([0.4, -0.3, 0.2])
    Y = np.tanh(w_true * X) + 0.01 * RNG.standard_normal((20, 3))

    def residual(w):
        return (np.tanh(w * X) - Y).ravel()

    def jac_operator(w):
        z = w * X
        # d tanh(z)/dz (diagonal) composed with dz/dw (broadcast): a broadcast
        J = (fastjac.jacobian("tanh", z, format="operator")
             @ fastjac.jacobian("multiply", w, X, format="operator"))
        assert type(J).__name__ == "BroadcastOperator"
        return J

    def jac_dense(w):
        return (1 - np.tanh(w * X) ** 2).reshape(-1, 1) * dense_oracle("multiply", w, X, 0)

    x0 = np.zeros(3)
    dense = least_squares(residual, x0, jac=jac_dense, xtol=1e-14, ftol=1e-14, gtol=1e-14)
    op = least_squares(residual, x0, jac=jac_operator, tr_solver="lsmr",
                       xtol=1e-14, ftol=1e-14, gtol=1e-14)
    np.testing.assert_allclose(op.x, dense.x, rtol=1e-7, atol=1e-10)


# -- composition keeps the structure -------------------------------------------------

def test_composition_keeps_the_structure():
    n = 5
    d1 = fastjac.jacobian("multiply", np.ones(n), positive(n), format="operator")
    d2 = fastjac.jacobian("multiply", np.ones(n), positive(n), format="operator")
    row = fastjac.sum_gradient("multiply", np.ones(n), positive(n), format="operator")
    col = fastjac.jacobian("multiply", positive(n), 2.0, wrt=1, format="operator")
    w, X = positive(n), positive(3, n)
    B = fastjac.jacobian("multiply", w, X, format="operator")              # 3n x n
    Bd = fastjac.jacobian("multiply", positive(3 * n), np.ones(3 * n), format="operator")
    dense = {id(o): o.toarray() for o in (d1, d2, row, col, B, Bd)}

    def check(result, cls, want, nbytes=None):
        assert type(result).__name__ == cls, type(result)
        np.testing.assert_allclose(result.toarray(), want, rtol=1e-13)
        if nbytes is not None:
            assert result.nbytes == nbytes
        return result

    D1, D2, R, C, BB, BD = (dense[id(o)] for o in (d1, d2, row, col, B, Bd))
    check(d1 @ d2, "DiagonalOperator", D1 @ D2, n * 8)
    check(d1 + d2, "DiagonalOperator", D1 + D2, n * 8)
    check(d1 - d2, "DiagonalOperator", D1 - D2, n * 8)
    check(2.5 * d1, "DiagonalOperator", 2.5 * D1, n * 8)
    check(d1 * 2.5, "DiagonalOperator", 2.5 * D1, n * 8)
    check(d1 / 4, "DiagonalOperator", D1 / 4, n * 8)
    check(-row, "RowOperator", -R, n * 8)
    check(row @ d1, "RowOperator", R @ D1, n * 8)
    check(row + row, "RowOperator", 2 * R, n * 8)
    check(d1 @ col, "ColumnOperator", D1 @ C, n * 8)
    check(col + col, "ColumnOperator", 2 * C, n * 8)
    outer = check(col @ row, "LowRankOperator", C @ R)
    assert outer.rank == 1 and outer.diag is None and outer.nbytes == 2 * n * 8
    check(row @ col, "DiagonalOperator", R @ C, 8)
    check(outer @ d1, "LowRankOperator", C @ R @ D1)
    mixed = check(outer + d1, "LowRankOperator", C @ R + D1)
    assert mixed.rank == 1 and mixed.diag is not None
    check(row @ outer, "RowOperator", R @ C @ R, n * 8)
    check(Bd @ B, "BroadcastOperator", BD @ BB, 3 * n * 8)
    check(B @ d1, "BroadcastOperator", BB @ D1, 3 * n * 8)
    check(B + B, "BroadcastOperator", 2 * BB, 3 * n * 8)
    check(3 * B, "BroadcastOperator", 3 * BB, 3 * n * 8)
    check(B @ col, "ColumnOperator", BB @ C, 3 * n * 8)
    rowB = fastjac.sum_gradient("multiply", np.ones(3 * n), positive(3 * n), format="operator")
    check(rowB @ B, "RowOperator", rowB.toarray() @ BB, n * 8)
    check(B.T @ Bd, "BroadcastOperator", BB.T @ BD, 3 * n * 8)
    # no compact form: SciPy's lazy composition, never a dense matrix
    lazy = B.T @ B
    assert not isinstance(lazy, fastjac.JacobianOperator) and isinstance(lazy, LinearOperator)
    v = RNG.standard_normal(n)
    np.testing.assert_allclose(lazy @ v, BB.T @ BB @ v, rtol=1e-13)
    foreign = aslinearoperator(np.eye(n))
    for result, want in [(d1 @ foreign, D1), (foreign @ d1, D1), (d1 + foreign, D1 + np.eye(n)),
                         (foreign + d1, D1 + np.eye(n)), ((1 + 2j) * d1, (1 + 2j) * D1)]:
        assert not isinstance(result, fastjac.JacobianOperator)
        np.testing.assert_allclose(result @ v, want @ v, rtol=1e-13)


def test_structurally_zero_stays_empty_in_sparse():
    J = fastjac.jacobian("greater", positive(4), positive(4), format="operator")
    assert J.tosparse("csr").nnz == 0
    np.testing.assert_array_equal(J @ np.ones(4), 0.0)
    assert (2 * J).tosparse("coo").nnz == 0


# -- errors ----------------------------------------------------------------------------

def test_errors():
    J = fastjac.jacobian("multiply", positive(4), positive(3, 4), format="operator")   # 12 x 4
    with pytest.raises(ValueError, match=r"shape \(12, 4\) and x has shape \(5,\)"):
        J @ np.ones(5)
    with pytest.raises(ValueError, match="x must have shape"):
        J.matvec(np.ones(12))
    with pytest.raises(ValueError, match=r"\(12,\) or \(12, 1\)"):
        J.rmatvec(np.ones(4))
    with pytest.raises(ValueError, match="4 x k matrix"):
        J.matmat(np.ones(4))
    with pytest.raises(ValueError, match="12 x k matrix"):
        J.rmatmat(np.ones((4, 2)))
    with pytest.raises(ValueError, match="1-d or 2-d"):
        J @ np.ones((4, 1, 1))
    with pytest.raises(TypeError, match="dtype object"):
        J @ np.array([1, 2, 3, 4], dtype=object)
    with pytest.raises(TypeError, match="dtype <U1"):
        J.matvec(np.array(list("abcd")))
    with pytest.raises(TypeError, match="sparse"):
        J.matvec(scipy.sparse.csr_array(np.ones((4, 1))))
    with pytest.raises(ValueError, match="use '\\*'"):
        J @ 2.0
    out_bad_dtype = np.empty(12, np.float32)
    with pytest.raises(ValueError, match="dtype float32 but the result has dtype float64"):
        J.matvec(np.ones(4), out=out_bad_dtype)
    with pytest.raises(ValueError, match="shape"):
        J.matvec(np.ones(4), out=np.empty(11))
    with pytest.raises(ValueError, match="C-contiguous"):
        J.matvec(np.ones(4), out=np.empty(24)[::2])
    x = np.ones(16)
    D = fastjac.jacobian("exp", np.ones(8), format="operator")
    with pytest.raises(ValueError, match="shares memory"):
        D.matvec(x[:8], out=x[4:12])
    with pytest.raises(ValueError, match="shares memory"):          # x strided, overlapping
        D.matvec(x[::2], out=x[8:16])
    # views of one buffer that do not overlap: the product, no error
    x[:8] = np.arange(8.0)
    np.testing.assert_allclose(D.matvec(x[:8], out=x[8:16]), np.e * np.arange(8.0),
                               rtol=1e-15)
    np.testing.assert_allclose(x[8:16], np.e * np.arange(8.0), rtol=1e-15)
    with pytest.raises(ValueError, match="do not chain"):
        J @ J
    with pytest.raises(ValueError, match="do not match"):
        J + J.T
    with pytest.raises(ValueError, match="format must be one of"):
        J.tosparse("lil")
    with pytest.raises(ValueError, match="out= is only supported"):
        fastjac.jacobian("exp", np.ones(3), format="operator", out=np.empty(3))
    with pytest.raises(ValueError, match="out= is only supported"):
        fastjac.jacobian("multiply", positive(4), positive(3, 4), format="operator",
                         out=np.empty(12))
    with pytest.raises(ValueError, match="'operator'"):
        fastjac.jacobian("exp", np.ones(3), format="operators")
    # nothing was written on a refused out=
    out = np.full(12, 7.0)
    with pytest.raises(ValueError):
        J.matvec(np.ones(5), out=out)
    np.testing.assert_array_equal(out, 7.0)


def test_out_is_written_and_returned():
    J = fastjac.jacobian("multiply", positive(4), positive(3, 4), format="operator")
    D = J.toarray()
    v, out = positive(4), np.empty(12)
    assert J.matvec(v, out=out) is out
    np.testing.assert_allclose(out, D @ v)
    out2 = np.empty((4, 2))
    assert J.rmatmat(np.ones((12, 2)), out=out2) is out2
    np.testing.assert_allclose(out2, D.T @ np.ones((12, 2)))


def test_dense_too_big_is_refused_with_the_byte_count():
    J = fastjac.jacobian("exp", np.ones(1_000_000), format="operator")
    with pytest.raises(MemoryError, match="8000000000000 bytes"):
        J.toarray()
    row = fastjac.sum_gradient(None, np.ones(1_000_000), format="operator")
    with pytest.raises(MemoryError, match="DIA storage"):
        row.tosparse("dia")
    assert row.tosparse("csr").nnz == 1_000_000


def test_import_does_not_load_scipy_or_the_operators():
    code = ("import sys, fastjac; fastjac.jacobian('exp', [1.0]); "
            "print('scipy' in sys.modules, 'fastjac._operator' in sys.modules); "
            "fastjac.jacobian('exp', [1.0], format='operator'); "
            "print('fastjac._operator' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == ["False", "False", "True"]


def test_operator_without_scipy_says_how_to_install_it():
    code = ("import sys; sys.modules['scipy'] = None\n"
            "import fastjac\n"
            "try:\n    fastjac.jacobian('exp', [1.0], format='operator')\n"
            "except ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert "pip install 'fastjac[sparse]'" in out.stdout and "operator" in out.stdout


def test_large_products_take_the_threaded_and_einsum_paths():
    from fastjac import _operator
    n = _operator.LARGE + 3
    d, v = positive(n), RNG.standard_normal(n)
    J = fastjac.jacobian("multiply", np.ones(n), d, format="operator")
    np.testing.assert_array_equal(J @ v, d * v)              # one rounding: the same bits
    out = np.empty(n)
    assert J.matvec(v, out=out) is out
    np.testing.assert_array_equal(out, d * v)
    np.testing.assert_array_equal(J @ v.astype(np.float32), d * v.astype(np.float32))
    col = fastjac.jacobian("multiply", d, 2.0, wrt=1, format="operator")      # n x 1
    np.testing.assert_array_equal(col @ np.array([3.0]), d * 3.0)
    np.testing.assert_allclose(col.T @ v, [np.sum(d * v)], rtol=1e-12)
    row = col.T
    np.testing.assert_array_equal(row.T @ np.array([0.5]), d * 0.5)
    np.testing.assert_allclose(row @ np.stack([v, 2 * v], 1), [[np.sum(d * v),
                                                              2 * np.sum(d * v)]], rtol=1e-12)


def test_neuron_gradient_and_empty_operands():
    X, y, w = positive(6, 3), positive(6), positive(3)
    gw, gb = fastjac.neuron_gradient(X, y, w, 0.1)
    op, gb2 = fastjac.neuron_gradient(X, y, w, 0.1, format="operator")
    assert type(op).__name__ == "RowOperator" and gb2 == gb
    np.testing.assert_array_equal(op.row, gw)
    for J, shape in [(fastjac.jacobian("exp", np.empty(0), format="operator"), (0, 0)),
                     (fastjac.sum_gradient("exp", np.empty(0), format="operator"), (1, 0)),
                     (fastjac.jacobian("multiply", np.ones(3), np.ones((0, 3)),
                                       format="operator"), (0, 3))]:
        assert J.shape == shape
        np.testing.assert_array_equal(J @ np.ones(shape[1]), np.zeros(shape[0]))
        np.testing.assert_array_equal(J.T @ np.ones(shape[0]), np.zeros(shape[1]))
        assert J.toarray().shape == shape and J.tosparse("csr").nnz == 0


def test_foreign_operator_on_the_left():
    J = fastjac.jacobian("multiply", np.ones(4), positive(4), format="operator")
    foreign = aslinearoperator(2 * np.eye(4))
    v = positive(4)
    for composed in (foreign @ J, J.__rmatmul__(foreign)):
        assert not isinstance(composed, fastjac.JacobianOperator)
        np.testing.assert_allclose(composed @ v, 2 * J.diag * v, rtol=1e-15)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_sum_hessian_operators(layout):
    """The diagonal Hessian and the mixed block of broadcast operands as
    operators, against the matrices format="dense" gives."""
    if not hasattr(fastjac, "sum_hessian"):
        pytest.skip("no sum_hessian in this build")
    a, b = positive(3, 1), positive(1, 4)
    for wrt, cls in [(0, "DiagonalOperator"), (1, "DiagonalOperator"),
                     ((0, 1), "BroadcastOperator"), ((1, 0), "BroadcastOperator")]:
        H = fastjac.sum_hessian("divide", a, b, wrt=wrt, layout=layout, format="operator")
        D = fastjac.sum_hessian("divide", a, b, wrt=wrt, layout=layout, format="dense")
        assert type(H).__name__ == cls and H.shape == D.shape
        np.testing.assert_allclose(H.toarray(), D, rtol=1e-13)
        v, u = RNG.standard_normal(D.shape[1]), RNG.standard_normal(D.shape[0])
        np.testing.assert_allclose(H @ v, D @ v, rtol=1e-12)
        np.testing.assert_allclose(H.T @ u, D.T @ u, rtol=1e-12)
        np.testing.assert_allclose(H.tosparse("coo").toarray(), D, rtol=1e-13)
    x = positive(5)
    H = fastjac.sum_hessian("exp", x, format="operator", layout=layout)
    np.testing.assert_allclose(H.diag, np.exp(x), rtol=1e-13)
