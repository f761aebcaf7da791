"""fastjac.sum_hessian: second derivatives of sum(op(a, b)).

Oracles, written here: closed forms of every second derivative (evaluated in
float64, or with mpmath for the accuracy checks), and central finite
differences of the gradient (``sum_gradient``) -- never sum_hessian itself.
"""
import math

import numpy as np
import pytest

import fastjac
from helpers import REAL_ABOVE
from oracle import BINARY_OPS, SECOND_DERIVATIVE, UNARY_OPS

mpmath = pytest.importorskip("mpmath")


# op: (d2/da2, d2/db2, d2/da db) for binary operators, d2/da2 for unary ones:
# the closed forms of tests/oracle.py
BINARY = {op: f for op, f in SECOND_DERIVATIVE.items() if op in BINARY_OPS}
UNARY = {op: f[0] for op, f in SECOND_DERIVATIVE.items() if op in UNARY_OPS}
SMOOTH_POSITIVE = set(REAL_ABOVE) | {"power"}      # operands drawn from (0.5, 2)
PIECEWISE = {"maximum", "minimum", "greater", "less", "relu", "abs"}


def test_every_operator_has_an_oracle():
    # a new operator without an entry here must fail, not go untested
    assert set(BINARY) == set(fastjac.BINARY_OPS)
    assert set(UNARY) == set(fastjac.UNARY_OPS)


def _operands(name, shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    if name in SMOOTH_POSITIVE or name == "divide":
        a, b = rng.uniform(0.5, 2.0, shape), rng.uniform(0.5, 2.0, shape)
    else:
        a, b = rng.uniform(-2, 2, shape), rng.uniform(-2, 2, shape)
    return a.astype(dtype), b.astype(dtype)


def _tol(dtype):
    return dict(rtol=2e-14, atol=1e-14) if dtype == np.float64 else dict(rtol=3e-6, atol=3e-6)


# -- closed forms -------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_blocks_equal_shapes(name, dtype):
    a, b = _operands(name, 37, dtype)
    f_aa, f_bb, f_ab = BINARY[name]
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    for wrt, oracle in ((0, f_aa), (1, f_bb), ((0, 1), f_ab), ((1, 0), f_ab)):
        got = fastjac.sum_hessian(name, a, b, wrt=wrt)
        assert got.dtype == dtype and got.shape == a.shape
        np.testing.assert_allclose(got, oracle(a64, b64), **_tol(dtype), err_msg=f"{wrt}")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_diagonal(name, dtype):
    a, _ = _operands(name, (3, 11), dtype)
    got = fastjac.sum_hessian(name, a)
    assert got.dtype == dtype and got.shape == a.shape
    np.testing.assert_allclose(got, UNARY[name](a.astype(np.float64)), **_tol(dtype))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_logaddexp_accuracy_against_mpmath(dtype):
    """sigmoid'(a - b) within 4 ulp, also where a - b is not a float (its
    rounding would cost |a - b| / 2 ulps) and far in the tails."""
    rng = np.random.default_rng(3)
    lim = 80 if dtype == np.float32 else 700
    a = np.concatenate([rng.uniform(-30, 30, 150), rng.uniform(-lim, lim, 50),
                        10.0 ** rng.uniform(-8, 2, 50), [0.0, 1.0, -2.0]])
    b = np.concatenate([rng.uniform(-30, 30, 150), rng.uniform(-lim, lim, 50),
                        -(10.0 ** rng.uniform(-3, 2, 50)) - 0.1, [0.0, 1.0, -2.0]])
    a, b = a.astype(dtype), b.astype(dtype)
    with mpmath.workdps(40):
        def slope(u, v):
            e = mpmath.exp(-abs(mpmath.mpf(float(u)) - mpmath.mpf(float(v))))
            return e / (1 + e) ** 2
        want = np.array([float(slope(u, v)) for u, v in zip(a, b)]).astype(dtype)
    for wrt, sign in ((0, 1), (1, 1), ((0, 1), -1)):
        got = fastjac.sum_hessian("logaddexp", a, b, wrt=wrt)
        err = np.abs(got.astype(np.float64) - sign * want.astype(np.float64))
        err /= np.spacing(np.abs(want).astype(dtype)).astype(np.float64)
        assert err.max() <= 4, (wrt, a[np.argmax(err)], b[np.argmax(err)], err.max())
    # ties, infinities included: sigmoid'(0) = 1/4; NaN propagates
    t = np.array([2.0, np.inf, -np.inf, np.nan, np.inf], dtype)
    u = np.array([2.0, np.inf, -np.inf, 1.0, 1.0], dtype)
    np.testing.assert_array_equal(fastjac.sum_hessian("logaddexp", t, u), [0.25, 0.25, 0.25,
                                                                           np.nan, 0.0])


def test_power_accuracy_against_mpmath():
    rng = np.random.default_rng(2)
    a, b = 10.0 ** rng.uniform(-2, 2, 200), rng.uniform(-4, 4, 200)
    with mpmath.workdps(40):
        for which, exact in ((0, lambda x, y: y * (y - 1) * x ** (y - 2)),
                             (1, lambda x, y: x ** y * mpmath.log(x) ** 2)):
            got = fastjac.sum_hessian("power", a, b, wrt=which)
            want = np.array([float(exact(mpmath.mpf(x), mpmath.mpf(y))) for x, y in zip(a, b)])
            err = np.abs(got - want) / np.spacing(np.abs(want))
            assert err.max() <= 8, (which, err.max())


# -- finite differences of the gradient ----------------------------------------------

SMOOTH = sorted(set(BINARY) - PIECEWISE) + sorted(set(UNARY) - PIECEWISE)


@pytest.mark.parametrize("name", SMOOTH)
def test_finite_differences_of_the_gradient(name):
    """H's diagonal is d(gradient)/dx element by element: the gradient's
    element i depends on x_i only, so one perturbation of every element
    gives the whole diagonal."""
    a, b = _operands(name, 50, np.float64, seed=4)
    unary = name in UNARY
    h = 1e-5

    def grad(a_, b_, wrt):
        return fastjac.sum_gradient(name, a_, None if unary else b_, wrt=wrt)

    blocks = [(0, 0)] if unary else [(0, 0), (1, 1), (0, 1)]
    for i, j in blocks:
        # d/d(operand j) of the gradient with respect to operand i
        da = h if j == 0 else 0.0
        db = h if j == 1 else 0.0
        fd = (grad(a + da, b + db, i) - grad(a - da, b - db, i)) / (2 * h)
        got = fastjac.sum_hessian(name, a, None if unary else b,
                                  wrt=i if i == j else (i, j))
        np.testing.assert_allclose(got, fd, rtol=1e-6, atol=1e-7, err_msg=f"{(i, j)}")


# -- scalar operands, broadcasting -------------------------------------------------

@pytest.mark.parametrize("name", ["multiply", "divide", "power", "subtract"])
def test_scalar_operands(name):
    a, b = _operands(name, 40, np.float64, seed=5)
    z = 1.3
    f_aa, f_bb, f_ab = BINARY[name]
    # with respect to the scalar: the sum of the second partials
    got = fastjac.sum_hessian(name, a, z, wrt=1)
    assert np.ndim(got) == 0 and isinstance(got, np.float64)
    want = np.broadcast_to(f_bb(a, z), a.shape).sum()
    assert math.isclose(got, want, rel_tol=1e-13, abs_tol=1e-13)
    # with respect to the array, the other a scalar: still a diagonal
    np.testing.assert_allclose(fastjac.sum_hessian(name, a, z, wrt=0),
                               np.broadcast_to(f_aa(a, z), a.shape), rtol=1e-13, atol=1e-14)
    # mixed, scalar z: a column |a| x 1 (numerator); row in denominator layout
    col = np.broadcast_to(f_ab(a, z), a.shape)
    block = fastjac.sum_hessian(name, a, z, wrt=(0, 1), format="dense")
    np.testing.assert_allclose(block, col[:, None], rtol=1e-13, atol=1e-14)
    den = fastjac.sum_hessian(name, a, z, wrt=(0, 1), format="dense", layout="denominator")
    np.testing.assert_allclose(den, col[None, :], rtol=1e-13, atol=1e-14)
    # (1, 0): d2/dz da, the transpose
    np.testing.assert_allclose(fastjac.sum_hessian(name, a, z, wrt=(1, 0), format="dense"),
                               col[None, :], rtol=1e-13, atol=1e-14)
    # scalar a, array b
    row = np.broadcast_to(f_ab(z, b), b.shape)
    block = fastjac.sum_hessian(name, z, b, wrt=(0, 1), format="dense")
    np.testing.assert_allclose(block, row[None, :], rtol=1e-13, atol=1e-14)
    # both scalars
    got = fastjac.sum_hessian(name, 1.5, z, wrt=(0, 1))
    assert math.isclose(got, f_ab(np.float64(1.5), z), rel_tol=1e-14)


def _dense_mixed(f_ab, a, b):
    """The |a| x |b| block built entry by entry: element s of S at (a's index, b's index)."""
    shape = np.broadcast_shapes(a.shape, b.shape)
    H = np.zeros((a.size, b.size))
    ai = np.broadcast_to(np.arange(a.size).reshape(a.shape), shape)
    bi = np.broadcast_to(np.arange(b.size).reshape(b.shape), shape)
    av, bv = np.broadcast_to(a, shape), np.broadcast_to(b, shape)
    for s in np.ndindex(shape):
        H[ai[s], bi[s]] += f_ab(av[s], bv[s])
    return H


@pytest.mark.parametrize("shapes", [((7,), (5, 7)), ((5, 1), (5, 7)), ((5, 1), (1, 7)),
                                    ((2, 1, 3), (4, 3)), ((1,), (6,))])
@pytest.mark.parametrize("name", ["multiply", "divide", "power"])
def test_broadcast(name, shapes):
    rng = np.random.default_rng(6)
    a, b = rng.uniform(0.5, 2, shapes[0]), rng.uniform(0.5, 2, shapes[1])
    f_aa, f_bb, f_ab = BINARY[name]
    shape = np.broadcast_shapes(a.shape, b.shape)
    # diagonal blocks: second partials summed over the broadcast axes
    for k, f, x in ((0, f_aa, a), (1, f_bb, b)):
        full = f(np.broadcast_to(a, shape), np.broadcast_to(b, shape))
        axes = tuple(range(len(shape) - x.ndim)) + tuple(
            len(shape) - x.ndim + i for i, n in enumerate(x.shape) if n == 1 and shape[len(shape) - x.ndim + i] != 1)
        want = full.sum(axis=axes, keepdims=False).reshape(x.shape)
        np.testing.assert_allclose(fastjac.sum_hessian(name, a, b, wrt=k), want,
                                   rtol=1e-12, atol=1e-13)
        dense = fastjac.sum_hessian(name, a, b, wrt=k, format="dense")
        np.testing.assert_allclose(dense, np.diag(want.ravel()), rtol=1e-12, atol=1e-13)
    # the mixed block, entry by entry
    H = _dense_mixed(f_ab, a, b)
    compact = fastjac.sum_hessian(name, a, b, wrt=(0, 1))
    assert compact.shape == shape
    for layout, want in (("numerator", H), ("denominator", H.T)):
        got = fastjac.sum_hessian(name, a, b, wrt=(0, 1), format="dense", layout=layout)
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-14)
        for fmt in ("csr", "csc", "coo", "dia"):
            sp = fastjac.sum_hessian(name, a, b, wrt=(0, 1), format=fmt, layout=layout)
            assert sp.format == fmt and sp.shape == want.shape
            np.testing.assert_allclose(sp.toarray(), want, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(fastjac.sum_hessian(name, a, b, wrt=(1, 0), format="dense"),
                               H.T, rtol=1e-13, atol=1e-14)


# -- formats, layouts, out= ---------------------------------------------------------

@pytest.mark.parametrize("fmt", ["dense", "csr", "csc", "coo", "dia", "sparse"])
@pytest.mark.parametrize("layout", ["numerator", "denominator"])
def test_formats_of_the_diagonal(fmt, layout):
    x = np.linspace(0.1, 2, 9).reshape(3, 3)
    want = np.diag(np.exp(x).ravel())
    got = fastjac.sum_hessian("exp", x, format=fmt, layout=layout)
    got = got if fmt == "dense" else got.toarray()
    np.testing.assert_allclose(got, want, rtol=1e-15)
    # a scalar operand's Hessian is 1 x 1
    one = fastjac.sum_hessian("multiply", x, 2.0, wrt=1, format=fmt, layout=layout)
    assert (one if fmt == "dense" else one.toarray()).shape == (1, 1)


def test_structural_zero_stores_nothing():
    x = np.arange(5.0)
    sp = fastjac.sum_hessian("multiply", x, x, wrt=0, format="csr")
    assert sp.nnz == 0 and sp.shape == (5, 5)
    assert fastjac.sum_hessian("relu", x, format="coo").nnz == 0
    mixed = fastjac.sum_hessian("multiply", x, x, wrt=(0, 1), format="csr")
    assert mixed.nnz == 5


def test_out():
    x = np.linspace(0.5, 1.5, 6)
    out = np.empty(6)
    assert fastjac.sum_hessian("log", x, out=out) is out
    np.testing.assert_allclose(out, -1 / x ** 2, rtol=1e-15)
    dense = np.full((6, 6), 7.0)
    assert fastjac.sum_hessian("log", x, format="dense", out=dense) is dense
    np.testing.assert_allclose(dense, np.diag(-1 / x ** 2), rtol=1e-15)
    zero_d = np.empty(())
    fastjac.sum_hessian("multiply", x, 2.0, wrt=(1, 1), out=zero_d)
    assert zero_d == 0
    mixed = np.empty((2, 6))
    X = np.ones((2, 6))
    assert fastjac.sum_hessian("multiply", x, X, wrt=(0, 1), out=mixed) is mixed
    np.testing.assert_array_equal(mixed, 1.0)


def test_out_errors_change_nothing():
    x = np.linspace(0.5, 1.5, 6)
    for bad in (np.zeros(5), np.zeros(6, np.float32), np.zeros((6, 6))):
        before = bad.copy()
        with pytest.raises(ValueError, match="out has"):
            fastjac.sum_hessian("log", x, out=bad)
        np.testing.assert_array_equal(bad, before)
    with pytest.raises(TypeError, match="out must be a numpy.ndarray"):
        fastjac.sum_hessian("log", x, out=[0.0] * 6)
    with pytest.raises(ValueError, match="only supported with format"):
        fastjac.sum_hessian("log", x, format="csr", out=np.zeros((6, 6)))
    bad = np.zeros((3, 3))
    with pytest.raises(ValueError, match="dense result has shape"):
        fastjac.sum_hessian("multiply", x, np.ones((2, 6)), wrt=(0, 1), format="dense", out=bad)
    assert not bad.any()


def test_bad_arguments():
    x = np.ones(3)
    with pytest.raises(ValueError, match="pair of them"):
        fastjac.sum_hessian("multiply", x, x, wrt=(0, 2))
    with pytest.raises(ValueError, match="pair of them"):
        fastjac.sum_hessian("multiply", x, x, wrt=(0, 1, 1))
    with pytest.raises(ValueError, match="unary function has one operand"):
        fastjac.sum_hessian("exp", x, wrt=(0, 1))
    with pytest.raises(ValueError, match="wrt must be"):
        fastjac.sum_hessian("multiply", x, x, wrt="a")
    with pytest.raises(ValueError, match="wrt must be"):
        fastjac.sum_hessian("multiply", x, x, wrt=True)
    with pytest.raises(ValueError, match="pass a second operand"):
        fastjac.sum_hessian("multiply", x)
    with pytest.raises(ValueError, match="b must be None"):
        fastjac.sum_hessian("exp", x, x)
    with pytest.raises(ValueError, match="unknown op"):
        fastjac.sum_hessian("logaddexp2", x)
    with pytest.raises(ValueError, match="layout must be"):
        fastjac.sum_hessian("exp", x, layout="row")
    with pytest.raises(ValueError, match="format must be"):
        fastjac.sum_hessian("exp", x, format="operatorx")
    with pytest.raises(ValueError, match="must broadcast together"):
        fastjac.sum_hessian("multiply", np.ones(3), np.ones(4))
    with pytest.raises(TypeError):
        fastjac.sum_hessian("exp", np.ones(3, complex))


# -- conventions, special values, threads ------------------------------------------------

def test_conventions_at_kinks_and_power_limits():
    z = np.array([0.0, -1.0, 2.0, np.nan])
    for name in ("relu", "abs"):
        np.testing.assert_array_equal(fastjac.sum_hessian(name, z), 0.0)
    for name in ("maximum", "minimum"):
        for wrt in (0, 1, (0, 1)):
            np.testing.assert_array_equal(fastjac.sum_hessian(name, z, z, wrt=wrt), 0.0)
    a = np.array([0.0, 0.0, 0.0, 2.0, 2.0])
    b = np.array([2.0, 0.0, 1.0, 0.0, 1.0])
    np.testing.assert_array_equal(fastjac.sum_hessian("power", a, b, wrt=0), [2.0, 0, 0, 0, 0])
    assert fastjac.sum_hessian("power", a, b, wrt=1)[:3].tolist() == [0, 0, 0]
    assert fastjac.sum_hessian("power", a, b, wrt=(0, 1))[0] == 0


def test_special_values_propagate():
    x = np.array([np.nan, np.inf, -np.inf, 0.0])
    got = fastjac.sum_hessian("exp", x)
    assert np.isnan(got[0]) and got[1] == np.inf and got[2] == 0 and got[3] == 1
    assert np.isnan(fastjac.sum_hessian("tanh", x)[0])
    assert fastjac.sum_hessian("tanh", x)[1] == 0
    assert fastjac.sum_hessian("log", np.array([0.0]))[0] == -np.inf
    assert fastjac.sum_hessian("divide", 1.0, np.array([1e-200]), wrt=1)[0] == np.inf


@pytest.mark.parametrize("name", ["tanh", "sigmoid", "square", "cos", "softplus",
                                  "log_sigmoid"])
def test_large_arrays_on_threads(name):
    """Sizes that run in chunks on the pool's threads give the oracle's numbers."""
    x = np.random.default_rng(7).uniform(-3, 3, 300_001)
    np.testing.assert_allclose(fastjac.sum_hessian(name, x), UNARY[name](x), rtol=1e-13,
                               atol=1e-15)
    total = fastjac.sum_hessian("multiply", x, 0.5, wrt=(1, 1))
    assert total == 0
    got = fastjac.sum_hessian("divide", x, 1.5, wrt=1)
    assert math.isclose(got, (2 * x / 1.5 ** 3).sum(), rel_tol=1e-12, abs_tol=1e-9)


def test_ufunc_alias_and_none():
    x = np.linspace(0.1, 1, 4)
    np.testing.assert_array_equal(fastjac.sum_hessian(np.exp, x), fastjac.sum_hessian("exp", x))
    np.testing.assert_array_equal(fastjac.sum_hessian(None, x), 0.0)
