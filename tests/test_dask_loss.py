"""Losses over Dask arrays (issue 18 with issue 16; src/fastjac/_dask_loss.py).

Oracles: the closed forms of each loss's derivatives written here with
NumPy (for L = mean(s * (softplus(z) - y z)) + alpha/2 |w|^2, z = X w + b:
dL/dw = X^T (s (sigmoid(z) - y)) / N + alpha w, d2L/dw2 = X^T diag(s p (1-p)) X / N
+ alpha I, ...), and beside them fastjac's NumPy path on the computed
arrays. Per-block sums are added by Dask in a tree, so results match to
rounding: float64 within 1e-12 of the largest entry, float32 within 2e-5.
"""
import os
import time

import numpy as np
import pytest

da = pytest.importorskip("dask.array")

import fastjac  # noqa: E402

X_, w_, y_, s_, b_ = (fastjac.var(n) for n in ("X", "w", "y", "s", "b"))
alpha_ = fastjac.var("alpha")
Z_ = X_ @ w_ + b_

rng = np.random.default_rng(1618)


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def problem(N, n, dtype=np.float64):
    X = rng.normal(size=(N, n)).astype(dtype)
    w = (rng.normal(size=n) / np.sqrt(n)).astype(dtype)
    y = (rng.uniform(size=N) < 0.5).astype(dtype)
    s = rng.uniform(0.5, 1.5, N).astype(dtype)
    return X, w, y, s


LOGISTIC = fastjac.compile(fastjac.mean(s_ * (fastjac.softplus(Z_) - y_ * Z_))
                           + 0.5 * alpha_ * fastjac.sum(w_ * w_), wrt=["w", "b", "y", "X"])
SQUARED = fastjac.compile(fastjac.sum((X_ @ w_ - y_) ** 2) + fastjac.mean((y_ - b_) ** 2),
                          wrt=["w", "b", "y"])


def logistic_oracle(X, w, y, s, b, alpha):
    """(L, dL/dw, dL/db, dL/dy, dL/dX, d2L/dw2, d2L/(dw db)) in float64."""
    X, w, y, s = (np.asarray(a, np.float64) for a in (X, w, y, s))
    N = X.shape[0]
    z = X @ w + b
    p = sigmoid(z)
    L = np.mean(s * (np.logaddexp(0, z) - y * z)) + 0.5 * alpha * w @ w
    r = s * (p - y) / N
    h = s * p * (1 - p) / N
    return (L, X.T @ r + alpha * w, r.sum(), -s * z / N, np.outer(r, w),
            X.T @ (X * h[:, None]) + alpha * np.eye(len(w)), X.T @ h)


def tol(dtype):
    return 2e-5 if np.dtype(dtype) == np.float32 else 1e-12


def close(got, want, dtype):
    got = got.compute() if isinstance(got, da.Array) else got
    scale = np.abs(want).max(initial=0) + 1
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=tol(dtype),
                               atol=tol(dtype) * scale)


# name -> (N, n, row chunks of X, column chunks of X, chunks of y, s)
CHUNKINGS = {
    "ragged": (1003, 7, (400, 400, 203), 7, 300),
    "columns-split": (600, 9, 250, (4, 5), 600),
    "one-chunk": (300, 5, 300, 5, 300),
    "rows-of-one": (5, 3, 1, 3, 2),
}


@pytest.mark.parametrize("chunking", sorted(CHUNKINGS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_logistic_loss_matches_closed_forms_and_numpy(chunking, dtype):
    N, n, rows, cols, per_row = CHUNKINGS[chunking]
    X, w, y, s = problem(N, n, dtype)
    b, alpha = 0.3, 0.25
    dX = da.from_array(X, chunks=(rows, cols))
    dy, ds = da.from_array(y, chunks=per_row), da.from_array(s, chunks=per_row)
    dv = dict(X=dX, w=w, y=dy, s=ds, b=b, alpha=alpha)
    nv = dict(X=X, w=w, y=y, s=s, b=b, alpha=alpha)
    L, gw, gb, gy, gX, H, Hwb = logistic_oracle(X, w, y, s, b, alpha)

    value, grads = LOGISTIC.value_and_jacobian(["w", "b", "y", "X"], **dv)
    for lazy in [value] + list(grads):
        assert isinstance(lazy, da.Array)
        assert lazy.dtype == dtype
    assert value.shape == () and grads[1].shape == ()
    assert grads[2].shape == (N,) and grads[3].shape == (N, n)     # per row: blocks
    assert grads[2].npartitions > 1 or dX.numblocks[0] == 1
    for got, want in zip([value] + list(grads), [L, gw, gb, gy, gX]):
        close(got, want, dtype)
    np_value, np_grads = LOGISTIC.value_and_jacobian(["w", "b", "y", "X"], **nv)
    close(value, np.float64(np_value), dtype)
    for got, want in zip(grads, np_grads):
        close(got, np.asarray(want, np.float64), dtype)

    close(LOGISTIC.value(**dv), L, dtype)
    close(LOGISTIC.jacobian("w", **dv), gw, dtype)
    close(LOGISTIC.hessian("w", **dv), H, dtype)
    close(LOGISTIC.hessian("w", format="dense", **dv), H, dtype)
    close(LOGISTIC.hessian_diagonal("w", **dv), np.diag(H), dtype)
    v3 = LOGISTIC.value_gradient_hessian_diagonal("w", **dv)
    for got, want in zip(v3, (L, gw, np.diag(H))):
        close(got, want, dtype)
    v = rng.normal(size=n)
    close(LOGISTIC.hvp("w", v, **dv), H @ v, dtype)
    close(LOGISTIC.hvp("w", da.from_array(v, chunks=3), **dv), H @ v, dtype)
    close(LOGISTIC.hessian(("w", "b"), **dv), Hwb, dtype)
    close(LOGISTIC.hessian(("w", "b"), format="dense", **dv), Hwb.reshape(n, 1), dtype)
    z = X.astype(np.float64) @ w + b
    close(LOGISTIC.hessian("b", **dv), np.sum(s * sigmoid(z) * (1 - sigmoid(z))) / N, dtype)


def test_second_loss_shape_terms_over_rows_and_over_elements():
    """sum((Xw - y)^2) + mean((y - b)^2): a group over the rows of X and a
    group over the elements of y, whose gradients by y add up."""
    X, w, y, _ = problem(501, 6)
    b = -0.2
    dv = dict(X=da.from_array(X, chunks=(100, 6)), w=w, y=da.from_array(y, chunks=77), b=b)
    r = X @ w - y
    q = y - b
    N = len(y)
    value, (gw, gb, gy) = SQUARED.value_and_jacobian(["w", "b", "y"], **dv)
    close(value, r @ r + q @ q / N, np.float64)
    close(gw, 2 * X.T @ r, np.float64)
    close(gb, -2 * q.sum() / N, np.float64)
    close(gy, -2 * r + 2 * q / N, np.float64)
    close(SQUARED.hessian("y", **dv), np.full(N, 2 + 2 / N), np.float64)
    close(SQUARED.hessian("w", **dv), 2 * X.T @ X, np.float64)
    t = rng.normal(size=N)
    close(SQUARED.hvp("y", da.from_array(t, chunks=200), **dv), (2 + 2 / N) * t, np.float64)
    close(SQUARED.hessian(("b", "y"), **dv), np.full(N, -2 / N), np.float64)


def test_weights_as_dask_arrays_and_zero_dimensional_scalars():
    X, w, y, s = problem(400, 5)
    dv = dict(X=da.from_array(X, chunks=(128, 5)), w=da.from_array(w, chunks=2),
              y=y, s=s, b=da.from_array(np.array(0.1)), alpha=np.float64(0.5))
    L, gw, gb = logistic_oracle(X, w, y, s, 0.1, 0.5)[:3]
    value, (g_w, g_b) = LOGISTIC.value_and_jacobian(["w", "b"], **dv)
    close(value, L, np.float64)
    close(g_w, gw, np.float64)
    close(g_b, gb, np.float64)


def test_numpy_data_with_a_dask_hvp_vector_or_tangent_is_lazy():
    X, w, y, s = problem(300, 4)
    nv = dict(X=X, w=w, y=y, s=s, b=0.0, alpha=0.0)
    H = logistic_oracle(X, w, y, s, 0.0, 0.0)[5]
    v = rng.normal(size=4)
    hv = LOGISTIC.hvp("w", da.from_array(v, chunks=2), **nv)
    assert isinstance(hv, da.Array)
    close(hv, H @ v, np.float64)
    value, jv = LOGISTIC.jvp("w", da.from_array(v, chunks=2), **nv)
    assert isinstance(jv, da.Array)
    close(jv, logistic_oracle(X, w, y, s, 0.0, 0.0)[1] @ v, np.float64)


def test_jvp_and_vjp_with_dask_data():
    X, w, y, s = problem(700, 6)
    dv = dict(X=da.from_array(X, chunks=(200, 6)), w=w, y=y, s=s, b=0.2, alpha=0.1)
    L, gw, gb = logistic_oracle(X, w, y, s, 0.2, 0.1)[:3]
    t = rng.normal(size=6)
    value, jv = LOGISTIC.jvp(["w", "b"], [t, 2.0], **dv)
    close(value, L, np.float64)
    close(jv, gw @ t + 2 * gb, np.float64)
    value, (vw, vb) = LOGISTIC.vjp(["w", "b"], 3.0, **dv)
    close(vw, 3 * gw, np.float64)
    close(vb, 3 * gb, np.float64)
    _, vw = LOGISTIC.vjp("w", da.from_array(np.array(-1.0)), **dv)
    close(vw, -gw, np.float64)
    with pytest.raises(ValueError, match=r"tangent has shape \(5,\) but 'w' has shape \(6,\)"):
        LOGISTIC.jvp("w", da.zeros(5), **dv)


def test_empty_batches_and_the_mean_of_nothing():
    X, w, y, s = problem(0, 3)
    loss = fastjac.compile(fastjac.sum(s_ * (fastjac.softplus(X_ @ w_) - y_ * (X_ @ w_))),
                           wrt="w")
    dv = dict(X=da.from_array(X, chunks=(1, 3)), w=w, y=y, s=s)
    value, g = loss.value_and_jacobian("w", **dv)
    assert value.compute() == 0.0
    np.testing.assert_array_equal(g.compute(), np.zeros(3))
    with pytest.raises(ValueError, match="mean of no elements"):
        LOGISTIC.value(X=da.from_array(X), w=w, y=y, s=s, b=0.0, alpha=1.0)


def test_nothing_is_computed_before_compute():
    X, w, y, s = problem(300, 4)
    calls = []

    def spy(block):
        calls.append(block.shape)
        return block
    dX = da.from_array(X, chunks=(100, 4)).map_blocks(spy, dtype=X.dtype, meta=np.empty((0, 0)))
    dv = dict(X=dX, w=w, y=y, s=s, b=0.0, alpha=1.0)
    lazy = [LOGISTIC.value(**dv), LOGISTIC.jacobian("w", **dv), LOGISTIC.hessian("w", **dv),
            LOGISTIC.hvp("w", np.ones(4), **dv), LOGISTIC.hessian_diagonal("w", **dv)]
    assert calls == []
    for x in lazy:
        x.compute()
    assert calls


def test_errors_are_raised_when_the_graph_is_built():
    X, w, y, s = problem(50, 4)
    dX = da.from_array(X, chunks=(20, 4))
    dv = dict(X=dX, w=w, y=y, s=s, b=0.0, alpha=1.0)
    with pytest.raises(ValueError, match=r"'w' has shape \(3,\) but 'X' has shape \(50, 4\)"):
        LOGISTIC.value(**{**dv, "w": da.ones(3)})
    with pytest.raises(ValueError, match=r"'y' has shape \(49,\)"):
        LOGISTIC.jacobian("w", **{**dv, "y": da.ones(49)})
    with pytest.raises(ValueError, match="missing value for variable 's'"):
        LOGISTIC.jacobian("w", **{k: v for k, v in dv.items() if k != "s"})
    with pytest.raises(ValueError, match="'alpha' weights a reduction"):
        LOGISTIC.value(**{**dv, "alpha": da.ones(2)})
    with pytest.raises(ValueError, match="format='dense'"):
        LOGISTIC.jacobian("w", format="dense", **dv)
    with pytest.raises(TypeError, match="out= is not supported with Dask"):
        LOGISTIC.jacobian("w", out=np.empty(4), **dv)
    with pytest.raises(ValueError, match="format='operator' is not available with Dask"):
        LOGISTIC.hessian("w", format="operator", **dv)
    with pytest.raises(NotImplementedError, match="the Hessian with respect to the matrix"):
        LOGISTIC.hessian_diagonal("X", **dv)
    with pytest.raises(NotImplementedError, match="Hessian-vector products with respect"):
        LOGISTIC.hvp("X", np.ones((50, 4)), **dv)
    with pytest.raises(NotImplementedError, match="the mixed Hessian block of .X. and .b."):
        LOGISTIC.hessian(("X", "b"), **dv)
    with pytest.raises(ValueError, match=r"v has shape \(3,\) but 'w' has shape \(4,\)"):
        LOGISTIC.hvp("w", da.ones(3), **dv)
    with pytest.raises(ValueError, match="format='dense' builds one in-memory matrix"):
        SQUARED.hessian("y", format="dense", X=dX, w=w, y=y, b=0.0)
    weighted = fastjac.compile(alpha_ * fastjac.sum(w_ * w_) + fastjac.sum(X_ @ w_))
    with pytest.raises(NotImplementedError, match="a weight of"):
        weighted.jacobian("alpha", X=dX, w=w, alpha=1.0)
    with pytest.raises(TypeError, match="complex"):
        LOGISTIC.value(**{**dv, "y": da.ones(50, dtype=complex)})


def test_constants_and_weights_in_the_loss():
    X, w, _, _ = problem(90, 3)
    c_ = fastjac.var("c")
    loss = fastjac.compile(c_ * fastjac.sum(X_ @ w_) + 2 * c_ + 5.0, wrt="w")
    dv = dict(X=da.from_array(X, chunks=(40, 3)), w=w, c=da.from_array(np.array(1.5)))
    close(loss.value(**dv), 1.5 * (X @ w).sum() + 3 + 5, np.float64)
    close(loss.jacobian("w", **dv), 1.5 * X.sum(0), np.float64)
    close(loss.hessian("w", **dv), np.zeros((3, 3)), np.float64)
    # the NumPy path's compact Hessian by the weights is n x n also here, where e'' = 0
    np.testing.assert_array_equal(loss.hessian("w", X=X, w=w, c=1.5), np.zeros((3, 3)))


def test_a_plain_compiled_sum_takes_its_hessian_with_dask():
    x_ = fastjac.var("x")
    f = fastjac.compile(fastjac.sum(fastjac.tanh(x_) * 3))
    x = rng.normal(size=(40, 6))
    dx = da.from_array(x, chunks=(15, 4))
    close(f.hessian_diagonal("x", x=dx), -6 * np.tanh(x) * (1 - np.tanh(x) ** 2), np.float64)
    v = rng.normal(size=(40, 6))
    close(f.hvp("x", v, x=dx), -6 * np.tanh(x) * (1 - np.tanh(x) ** 2) * v, np.float64)


# -- dask.distributed ---------------------------------------------------------------------------

# (the ``client`` fixture, a LocalCluster of two processes: tests/conftest.py)

def _slow_identity(block):
    time.sleep(0.1)
    return block


@pytest.mark.cluster
def test_cluster_loss_with_a_killed_worker_equals_numpy(client):
    X, w, y, s = problem(6000, 12)
    dX = da.from_array(X, chunks=(300, 12)).map_blocks(_slow_identity, dtype=X.dtype)
    dv = dict(X=dX, w=w, y=da.from_array(y, chunks=500), s=s, b=0.5, alpha=0.1)
    L, gw, gb = logistic_oracle(X, w, y, s, 0.5, 0.1)[:3]
    H = logistic_oracle(X, w, y, s, 0.5, 0.1)[5]
    value, (g_w, g_b) = LOGISTIC.value_and_jacobian(["w", "b"], **dv)
    futures = client.compute([value, g_w, g_b, LOGISTIC.hessian("w", **dv)])
    deadline = time.time() + 20
    while time.time() < deadline and not any(client.processing().values()):
        time.sleep(0.02)
    time.sleep(0.3)
    pids = client.run(os.getpid)
    os.kill(pids[sorted(pids)[0]], 9)
    got = client.gather(futures)
    for g, want in zip(got, (L, gw, gb, H)):
        close(g, want, np.float64)
    client.wait_for_workers(2, timeout=30)


# -- compiled expressions whose sums feed further work (one graph per stage) ----------------

x_, v_ = fastjac.var("x"), fastjac.var("v")


def _staged_cases(x, v):
    """expression -> {variable: closed-form gradient}, and the value."""
    m = x.mean()
    softmax = np.exp(x) / np.exp(x).sum()
    return [
        (fastjac.sum(x_ * v_) / 4, (x * v).sum() / 4, {"x": v / 4, "v": x / 4}),
        (fastjac.log(fastjac.sum(fastjac.exp(x_))), np.log(np.exp(x).sum()), {"x": softmax}),
        (fastjac.sum((x_ - fastjac.sum(x_) / x.size) ** 2), ((x - m) ** 2).sum(),
         {"x": 2 * (x - m)}),
        (fastjac.sum(x_ * v_) * fastjac.sum(v_), (x * v).sum() * v.sum(),
         {"x": v * v.sum(), "v": x * v.sum() + (x * v).sum()}),
    ]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_expressions_whose_sums_feed_further_work(dtype):
    x = rng.normal(size=(37, 5)).astype(dtype)
    v = rng.uniform(0.5, 1.5, (37, 5)).astype(dtype)
    dx, dv = da.from_array(x, chunks=(10, 3)), da.from_array(v, chunks=(16, 5))
    x64, v64 = x.astype(np.float64), v.astype(np.float64)
    for expr, value, grads in _staged_cases(x64, v64):
        f = fastjac.compile(expr)
        kw = {n: {"x": dx, "v": dv}[n] for n in f.variables}
        lazy = f.value(**kw)
        assert isinstance(lazy, da.Array) and lazy.dtype == dtype
        close(lazy, value, dtype)
        for name, want in grads.items():
            got_value, got = f.value_and_jacobian(name, **kw)
            assert got.dtype == dtype and got.shape == x.shape
            close(got_value, value, dtype)
            close(got, want, dtype)
            close(got, np.asarray(f.jacobian(name, **{n: a.compute() for n, a in kw.items()}),
                                  np.float64), dtype)


def test_staged_scalars_and_a_variable_the_result_does_not_read():
    z_ = fastjac.var("z")
    f = fastjac.compile(fastjac.sum(x_) / z_ + z_ * z_, wrt=["x", "z"])
    x = rng.normal(size=40)
    dx = da.from_array(x, chunks=7)
    close(f.jacobian("z", x=dx, z=2.0), -x.sum() / 4 + 4, np.float64)
    close(f.jacobian("x", x=dx, z=2.0), np.full(40, 0.5), np.float64)
    g = fastjac.compile(fastjac.sum(x_) * 0 + z_ * 3, wrt=["x", "z"])
    close(g.jacobian("z", x=dx, z=1.0), 3.0, np.float64)


def test_elementwise_result_reading_a_sum_gives_its_value_not_its_jacobian():
    f = fastjac.compile(x_ * fastjac.sum(x_))
    x = rng.normal(size=(6, 4))
    dx = da.from_array(x, chunks=3)
    close(f.value(x=dx), x * x.sum(), np.float64)
    with pytest.raises(NotImplementedError, match="diagonal plus rank one"):
        f.jacobian("x", x=dx)


def test_staged_jvp_vjp_stacked_and_list_values():
    """The products and stacked rows of expressions whose sums feed further
    work, against closed forms: f = z log(sum(exp(x) y)), df/dx = z e^x y / S,
    df/dy = z e^x / S, df/dz = log S."""
    y_, z_ = fastjac.var("y"), fastjac.var("z")
    x = rng.normal(size=(30, 4))
    y = rng.uniform(1, 2, (30, 4))
    S = (np.exp(x) * y).sum()
    gx, gy, gz = 2 * np.exp(x) * y / S, 2 * np.exp(x) / S, np.log(S)
    dv = dict(x=da.from_array(x, chunks=(7, 3)), y=da.from_array(y, chunks=(10, 4)), z=2.0)
    f = fastjac.compile(fastjac.log(fastjac.sum(fastjac.exp(x_) * y_)) * z_)
    tx, ty = rng.normal(size=(30, 4)), rng.normal(size=(30, 4))
    value, jv = f.jvp(["x", "y", "z"], [tx, da.from_array(ty, chunks=9), 0.5], **dv)
    close(value, 2 * np.log(S), np.float64)
    close(jv, (gx * tx).sum() + (gy * ty).sum() + 0.5 * gz, np.float64)
    _, (vx, vz) = f.vjp(["x", "z"], 3.0, **dv)
    close(vx, 3 * gx, np.float64)
    close(vz, 3 * gz, np.float64)
    many = fastjac.compile([fastjac.sum(x_) / 3, fastjac.log(fastjac.sum(y_ * y_)), z_ * 2])
    values = many.value(**dv)
    for got, want in zip(values, (x.sum() / 3, np.log((y * y).sum()), 4.0)):
        close(got, want, np.float64)
    _, M = many.value_and_jacobian(["x", "z"], **dv)
    want = np.zeros((3, 121))
    want[0, :120] = 1 / 3
    want[2, 120] = 2
    close(M, want, np.float64)
    elementwise = fastjac.compile([fastjac.sum(x_) / 3, x_ * fastjac.sum(x_)])
    with pytest.raises(ValueError, match="needs scalar-valued expressions"):
        elementwise.value_and_jacobian(["x"], x=dv["x"])


def test_a_dask_tangent_with_numpy_variables_gives_a_lazy_product():
    x = rng.normal(size=(20, 3))
    f = fastjac.compile(fastjac.tanh(x_) * v_)
    t = rng.normal(size=(20, 3))
    _, jv = f.jvp("x", da.from_array(t, chunks=6), x=x, v=2.0)
    assert isinstance(jv, da.Array)
    np.testing.assert_array_equal(jv.compute(), f.jvp("x", t, x=x, v=2.0)[1])
    _, vj = f.vjp("x", da.from_array(t, chunks=6), x=x, v=2.0)
    assert isinstance(vj, da.Array)
    close(vj, 2 * (1 - np.tanh(x) ** 2) * t, np.float64)
