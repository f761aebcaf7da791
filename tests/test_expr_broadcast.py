"""Compiled expressions over variables of broadcastable shapes (a parameter
w of shape (n,) shared by the rows of X (N, n), a per-row scale (N, 1)):
values, Jacobians in every format, jvp/vjp and second derivatives, against
finite differences and closed forms written here in NumPy."""
import numpy as np
import pytest

import fastjac as fj
from oracle import finite_difference

RNG = np.random.default_rng(41)


@pytest.fixture(autouse=True, params=[None, 7], ids=["one slab", "slabs of 7"])
def slab(request, monkeypatch):
    """Every test once as it runs, and once with passes over broadcast
    variables cut into slabs of 7 elements (several slabs along the first
    axis, the last one shorter)."""
    if request.param is not None:
        monkeypatch.setattr(fj._compiled, "SLAB", request.param)
w_, X_, s_, b_ = fj.var("w"), fj.var("X"), fj.var("s"), fj.var("b")

# (shape of w, shape of X): w is broadcast to X's shape, or both to a third
SHAPES = [((3,), (4, 3)), ((4, 1), (4, 3)), ((1, 3), (4, 1)), ((2, 1, 3), (4, 1)), ((), (5,)),
          ((5, 1, 3), (5, 2, 1)), ((1, 1), (9, 2))]
SPARSE = ("csr", "csc", "coo")


def tolerance(dtype):
    return dict(rtol=1e-6, atol=1e-9) if dtype == np.float64 else dict(rtol=2e-3, atol=1e-4)


def values(w_shape, x_shape, dtype):
    return {"w": np.asarray(RNG.uniform(0.5, 1.5, w_shape), dtype),
            "X": np.asarray(RNG.uniform(-1.0, 1.0, x_shape), dtype),
            "b": dtype(0.25)}


def elementwise(w, X, b):
    return np.tanh(w * X + b) + w / (2.0 + X)


ELEMENTWISE = fj.tanh(w_ * X_ + b_) + w_ / (2.0 + X_)


def fd(fun, vals, name):
    """The dense numerator Jacobian of fun by ``name``, by central differences
    in float64."""
    point = {k: np.asarray(v, np.float64) for k, v in vals.items()}

    def f(v):
        return fun(**dict(point, **{name: v}))
    return finite_difference(f, point[name])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("w_shape, x_shape", SHAPES)
def test_sum_gradient_by_every_variable(w_shape, x_shape, dtype):
    vals = values(w_shape, x_shape, dtype)
    f = fj.compile(fj.sum(ELEMENTWISE))

    def loss(w, X, b):
        return np.sum(elementwise(w, X, b))
    np.testing.assert_allclose(f.value(**vals), loss(**vals), **tolerance(dtype))
    for name in ("w", "X", "b"):
        g = f.jacobian(name, **vals)
        assert np.shape(g) == np.shape(vals[name]) and np.asarray(g).dtype == dtype
        np.testing.assert_allclose(np.reshape(g, -1), fd(loss, vals, name)[0],
                                   **tolerance(dtype))
    # the mean divides by the number of elements of the broadcast result
    m = fj.compile(fj.mean(ELEMENTWISE))
    size = np.broadcast_shapes(w_shape, x_shape)
    np.testing.assert_allclose(m.jacobian("w", **vals),
                               np.reshape(fd(loss, vals, "w")[0], w_shape) / np.prod(size),
                               **tolerance(dtype))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("w_shape, x_shape", SHAPES)
def test_elementwise_jacobian_in_every_format(w_shape, x_shape, dtype):
    vals = values(w_shape, x_shape, dtype)
    f = fj.compile(ELEMENTWISE)
    shape = np.broadcast_shapes(w_shape, x_shape)
    np.testing.assert_allclose(f.value(**vals), elementwise(**vals), **tolerance(dtype))
    J = fd(elementwise, vals, "w")                       # |S| x |w|
    # compact: one entry per element of y, the partial by the element of w it reads
    w64, X64 = (np.asarray(vals[k], np.float64) for k in ("w", "X"))
    partial = (1 - np.tanh(w64 * X64 + 0.25) ** 2) * X64 + 1 / (2.0 + X64)
    compact = f.jacobian("w", **vals)
    assert compact.shape == shape and compact.dtype == dtype
    np.testing.assert_allclose(compact, np.broadcast_to(partial, shape), **tolerance(dtype))
    for layout, want in (("numerator", J), ("denominator", J.T)):
        dense = f.jacobian("w", layout=layout, format="dense", **vals)
        assert dense.shape == want.shape and dense.dtype == dtype
        np.testing.assert_allclose(dense, want, **tolerance(dtype))
        for fmt in SPARSE:
            sp = f.jacobian("w", layout=layout, format=fmt, **vals)
            assert sp.format == fmt and sp.nnz == np.prod(shape)     # |S| entries stored
            np.testing.assert_allclose(sp.toarray(), want, **tolerance(dtype))
        op = f.jacobian("w", layout=layout, format="operator", **vals)
        v = RNG.standard_normal(want.shape[1]).astype(dtype)
        u = RNG.standard_normal(want.shape[0]).astype(dtype)
        np.testing.assert_allclose(op.matvec(v), want @ v, **tolerance(dtype))
        np.testing.assert_allclose(op.rmatvec(u), want.T @ u, **tolerance(dtype))
    # by the variable of the full shape: a diagonal, as before
    if x_shape == shape:
        np.testing.assert_allclose(f.jacobian("X", format="dense", **vals),
                                   fd(elementwise, vals, "X"), **tolerance(dtype))


def test_out_is_written_and_checked():
    vals = values((3,), (4, 3), np.float64)
    f, g = fj.compile(ELEMENTWISE), fj.compile(fj.sum(ELEMENTWISE))
    out = np.empty((4, 3))
    assert f.jacobian("w", out=out, **vals) is out
    np.testing.assert_array_equal(out, f.jacobian("w", **vals))
    dense = np.empty((3, 12))
    assert f.jacobian("w", layout="denominator", format="dense", out=dense, **vals) is dense
    np.testing.assert_array_equal(dense, f.jacobian("w", format="dense", **vals).T)
    grad = np.empty(3)
    assert g.jacobian("w", out=grad, **vals) is grad
    np.testing.assert_allclose(grad, f.jacobian("w", **vals).sum(axis=0), rtol=1e-14)
    for bad, fmt in ((np.empty(3), "compact"), (np.empty((12, 3)), "compact"),
                     (np.empty((3, 12)), "dense"), (np.empty((4, 3), np.float32), "compact")):
        before = bad.copy()
        with pytest.raises(ValueError, match="out"):
            f.jacobian("w", format=fmt, out=bad, **vals)
        np.testing.assert_array_equal(bad, before)
    with pytest.raises(ValueError, match="out"):
        g.jacobian("w", out=np.empty((4, 3)), **vals)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("w_shape, x_shape", SHAPES[:4])
def test_jvp_and_vjp(w_shape, x_shape, dtype):
    vals = values(w_shape, x_shape, dtype)
    tol = tolerance(dtype)
    shape = np.broadcast_shapes(w_shape, x_shape)
    for expr, fun in ((ELEMENTWISE, elementwise),
                      (fj.sum(ELEMENTWISE), lambda **v: np.sum(elementwise(**v)))):
        f = fj.compile(expr)
        y_shape = np.shape(fun(**vals))
        t = {n: RNG.standard_normal(np.shape(vals[n])) for n in ("w", "X")}
        u = RNG.standard_normal(y_shape)
        Jw, JX = fd(fun, vals, "w"), fd(fun, vals, "X")
        _, jv = f.jvp("w", t["w"], **vals)
        assert np.shape(jv) == y_shape and np.asarray(jv).dtype == dtype
        np.testing.assert_allclose(np.reshape(jv, -1), Jw @ t["w"].reshape(-1), **tol)
        _, jv = f.jvp(["w", "X"], [t["w"], t["X"]], **vals)
        np.testing.assert_allclose(np.reshape(jv, -1),
                                   Jw @ t["w"].reshape(-1) + JX @ t["X"].reshape(-1), **tol)
        # the VJP by a broadcast variable sums over the axes it was broadcast along
        _, (gw, gX) = f.vjp(["w", "X"], u, **vals)
        assert np.shape(gw) == w_shape and np.shape(gX) == x_shape
        assert np.asarray(gw).dtype == dtype
        np.testing.assert_allclose(np.reshape(gw, -1), np.reshape(u, -1) @ Jw, **tol)
        np.testing.assert_allclose(np.reshape(gX, -1), np.reshape(u, -1) @ JX, **tol)
        assert shape == (y_shape or shape)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_second_derivatives_of_a_broadcast_loss(dtype):
    # L = sum(s * softplus(w * X) - log(w)) / N: per-row s (N, 1), shared w (n,)
    N, n = 6, 4
    vals = {"w": np.asarray(RNG.uniform(0.5, 1.5, n), dtype),
            "X": np.asarray(RNG.uniform(-1, 1, (N, n)), dtype),
            "s": np.asarray(RNG.uniform(0.5, 2, (N, 1)), dtype), "b": dtype(0.3)}
    loss = fj.compile(fj.mean(s_ * fj.softplus(w_ * X_ + b_)))
    w, X, s, b = (np.asarray(vals[k], np.float64) for k in ("w", "X", "s", "b"))
    z = w * X + b
    sig = 1 / (1 + np.exp(-z))
    e2 = s * sig * (1 - sig) / (N * n)                  # d2/dz2 of each term
    tol = tolerance(dtype)
    np.testing.assert_allclose(loss.jacobian("w", **vals), (s * sig * X).sum(0) / (N * n),
                               **tol)
    np.testing.assert_allclose(loss.jacobian("s", **vals),
                               np.logaddexp(0, z).sum(1, keepdims=True) / (N * n), **tol)
    hd = (e2 * X * X).sum(0)
    np.testing.assert_allclose(loss.hessian_diagonal("w", **vals), hd, **tol)
    np.testing.assert_allclose(loss.hessian("w", **vals), hd, **tol)
    np.testing.assert_allclose(loss.hessian("w", format="dense", **vals), np.diag(hd), **tol)
    v = RNG.standard_normal(n)
    np.testing.assert_allclose(loss.hvp("w", v, **vals), hd * v, **tol)
    np.testing.assert_allclose(loss.hessian(("w", "b"), **vals), (e2 * X).sum(0), **tol)
    # the Hessian against finite differences of the gradient (float64)
    if dtype == np.float64:
        def grad(wv):
            return loss.jacobian("w", **dict(vals, w=wv))
        np.testing.assert_allclose(loss.hessian("w", format="dense", **vals),
                                   finite_difference(grad, vals["w"]), rtol=1e-6, atol=1e-9)


def test_errors_name_the_shapes():
    f = fj.compile(ELEMENTWISE)
    with pytest.raises(ValueError, match=r"w has shape \(2,\) and X has shape \(4, 3\).*"
                                         r"broadcast together"):
        f.jacobian("w", w=np.ones(2), X=np.ones((4, 3)), b=0.0)
    with pytest.raises(ValueError, match=r"'w' has shape \(2,\) and 'X' has shape \(4, 3\)"):
        fj.compile(fj.mean(ELEMENTWISE)).jacobian("w", w=np.ones(2), X=np.ones((4, 3)), b=0.0)
    with pytest.raises(ValueError, match="must match"):
        f.jvp("w", np.ones((4, 3)), w=np.ones(3), X=np.ones((4, 3)), b=0.0)
    with pytest.raises(ValueError, match="must match"):
        f.vjp("w", np.ones(3), w=np.ones(3), X=np.ones((4, 3)), b=0.0)
    # an element-wise result that reads a reduction, by a broadcast variable
    g = fj.compile(fj.exp(w_ * X_ - fj.sum(X_)))
    with pytest.raises(NotImplementedError, match=r"'w' of shape \(3,\) is broadcast to"):
        g.jacobian("w", w=np.ones(3), X=np.ones((4, 3)))
    # but its gradient after a further sum is given
    h = fj.compile(fj.sum(fj.exp(w_ * X_ - fj.sum(X_))))
    w, X = RNG.uniform(size=3), RNG.uniform(size=(4, 3))
    np.testing.assert_allclose(h.jacobian("w", w=w, X=X),
                               (np.exp(w * X - X.sum()) * X).sum(0), rtol=1e-13)
    # kernels keep requiring one shape (documented)
    with pytest.raises(ValueError, match="must match"):
        fj.compile(fj.sum(ELEMENTWISE)).kernel("w")(w=np.ones(3), X=np.ones((4, 3)),
                                                    b=np.array(0.0), out=np.empty(3))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_dask_variables_broadcast_as_numpy_ones(dtype):
    da = pytest.importorskip("dask.array")
    vals = values((3,), (10, 3), dtype)
    lazy = dict(vals, X=da.from_array(vals["X"], chunks=(3, 2)))      # ragged chunks
    tol = tolerance(dtype)
    u = RNG.standard_normal((10, 3)).astype(dtype)
    t = RNG.standard_normal(3).astype(dtype)
    for expr in (ELEMENTWISE, fj.sum(ELEMENTWISE), fj.log(fj.sum(fj.exp(w_ * X_ + b_))),
                 fj.sum(w_ * X_) * fj.sum(fj.tanh(X_ + b_))):      # a number from two sums
        f = fj.compile(expr)
        for name in ("w", "X"):
            value, jac = f.value_and_jacobian(name, **lazy)
            assert isinstance(jac, da.Array) and jac.dtype == dtype
            want_value, want = f.value_and_jacobian(name, **vals)
            np.testing.assert_allclose(value.compute(), want_value, **tol)
            np.testing.assert_allclose(jac.compute(), want, **tol)
        cot = u if np.ndim(f.value(**vals)) else 1.0
        _, (gw, gX) = f.vjp(["w", "X"], cot, **lazy)
        _, (ww, wX) = f.vjp(["w", "X"], cot, **vals)
        assert gw.shape == (3,) and isinstance(gw, da.Array)
        np.testing.assert_allclose(gw.compute(), ww, **tol)
        np.testing.assert_allclose(gX.compute(), wX, **tol)
        _, jv = f.jvp("w", t, **lazy)
        np.testing.assert_allclose(np.asarray(jv.compute()), f.jvp("w", t, **vals)[1], **tol)
    f = fj.compile(fj.sum(ELEMENTWISE))
    with pytest.raises(ValueError, match="broadcast together"):
        f.jacobian("w", **dict(lazy, w=np.ones(2, dtype)))
    with pytest.raises(ValueError, match=r"the tangent of 'w' has shape \(10, 3\)"):
        f.jvp("w", np.ones((10, 3)), **lazy)
    with pytest.raises(NotImplementedError, match="one variable of wrt at a time"):
        f.jacobian(["w", "X"], **lazy)


def test_threads_share_a_compiled_expression():
    # each thread has its own slab buffers: concurrent calls stay exact
    from concurrent.futures import ThreadPoolExecutor
    f = fj.compile(fj.sum(fj.tanh(w_ * X_ + b_)))
    rng = np.random.default_rng(5)
    jobs = [(rng.uniform(0.5, 1.5, 16), rng.uniform(-1, 1, (3000, 16))) for _ in range(16)]

    def run(job):
        w, X = job
        return [f.jacobian("w", w=w, X=X, b=0.1) for _ in range(5)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run, jobs))
    for (w, X), got in zip(jobs, results):
        want = ((1 - np.tanh(w * X + 0.1) ** 2) * X).sum(axis=0)
        for g in got:
            np.testing.assert_allclose(g, want, rtol=1e-12)


def test_empty_broadcast_shapes():
    f, g = fj.compile(ELEMENTWISE), fj.compile(fj.sum(ELEMENTWISE))
    vals = dict(w=np.ones(3), X=np.ones((0, 3)), b=0.5)
    np.testing.assert_array_equal(g.jacobian("w", **vals), np.zeros(3))
    assert g.value(**vals) == 0.0
    assert f.jacobian("w", **vals).shape == (0, 3)
    assert f.jacobian("w", format="dense", **vals).shape == (0, 3)
    assert f.jacobian("w", format="csr", **vals).shape == (0, 3)
    np.testing.assert_array_equal(f.vjp("w", np.ones((0, 3)), **vals)[1], np.zeros(3))
    np.testing.assert_array_equal(g.jacobian("w", w=np.ones(0), X=np.ones((5, 0)), b=0.5),
                                  np.zeros(0))
