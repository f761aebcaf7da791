"""Losses over batches (fastjac._batch): X @ w, mean, sum(axis=), and the
value, gradient, Hessian, Hessian diagonal and Hessian-vector product of
each loss of scikit-learn's LinearModelLoss, against closed forms written
here (per-row first and second derivatives by hand) and finite differences.
"""
import pickle

import numpy as np
import pytest

import fastjac

X_, w_, y_, s_, b_ = (fastjac.var(n) for n in ("X", "w", "y", "s", "b"))
Z_ = X_ @ w_ + b_


def _sigmoid(z):
    return 0.5 * (1 + np.tanh(0.5 * z))


def _huber_expr(r, delta=1.0):
    a = abs(r)
    m = fastjac.minimum(a, delta)
    return m * (a - 0.5 * m)


# name: (expression of the per-row loss e(z, y), e, e', e'') -- closed forms
LOSSES = {
    "squared": (0.5 * (Z_ - y_) ** 2,
                lambda z, y: 0.5 * (z - y) ** 2, lambda z, y: z - y,
                lambda z, y: np.ones_like(z)),
    "logistic": (fastjac.softplus(Z_) - y_ * Z_,
                 lambda z, y: np.logaddexp(0, z) - y * z,
                 lambda z, y: _sigmoid(z) - y,
                 lambda z, y: _sigmoid(z) * (1 - _sigmoid(z))),
    "logistic_logsig": (-(y_ * fastjac.log_sigmoid(Z_) + (1 - y_) * fastjac.log_sigmoid(-Z_)),
                        lambda z, y: np.logaddexp(0, z) - y * z,
                        lambda z, y: _sigmoid(z) - y,
                        lambda z, y: _sigmoid(z) * (1 - _sigmoid(z))),
    "poisson": (fastjac.exp(Z_) - y_ * Z_,
                lambda z, y: np.exp(z) - y * z, lambda z, y: np.exp(z) - y,
                lambda z, y: np.exp(z)),
    "huber": (_huber_expr(Z_ - y_),
              lambda z, y: np.where(abs(z - y) <= 1, 0.5 * (z - y) ** 2, abs(z - y) - 0.5),
              lambda z, y: np.clip(z - y, -1, 1),
              lambda z, y: (abs(z - y) <= 1).astype(float)),
    "tanh_unit": ((fastjac.tanh(Z_) - y_) ** 2,
                  lambda z, y: (np.tanh(z) - y) ** 2,
                  lambda z, y: 2 * (np.tanh(z) - y) * (1 - np.tanh(z) ** 2),
                  lambda z, y: 2 * (1 - np.tanh(z) ** 2) ** 2
                  - 4 * (np.tanh(z) - y) * np.tanh(z) * (1 - np.tanh(z) ** 2)),
    "sigmoid_unit": ((fastjac.sigmoid(Z_) - y_) ** 2,
                     lambda z, y: (_sigmoid(z) - y) ** 2,
                     lambda z, y: 2 * (_sigmoid(z) - y) * _sigmoid(z) * (1 - _sigmoid(z)),
                     lambda z, y: 2 * (_sigmoid(z) * (1 - _sigmoid(z))) ** 2
                     + 2 * (_sigmoid(z) - y) * _sigmoid(z) * (1 - _sigmoid(z))
                     * (1 - 2 * _sigmoid(z))),
}


def _data(name, N, n, dtype, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, n)) / np.sqrt(n)
    w = rng.standard_normal(n)
    if name.startswith("logistic"):
        y = (rng.random(N) < 0.5).astype(float)
    elif name == "poisson":
        y = rng.poisson(1.0, N).astype(float)
    else:
        y = rng.standard_normal(N)
    s = rng.random(N) + 0.5
    return {"X": X.astype(dtype), "w": w.astype(dtype), "y": y.astype(dtype),
            "s": s.astype(dtype), "b": dtype(0.3)}


def _oracle(name, d):
    """(value, grad w, hess w, grad b, hess bb, hess wb) of mean(s * e) in float64."""
    _, e, e1, e2 = LOSSES[name]
    X, w, y, s, b = (np.asarray(d[k], np.float64) for k in "Xwysb")
    z = X @ w + b
    N = len(y)
    value = np.sum(s * e(z, y)) / N
    g = X.T @ (s * e1(z, y)) / N
    H = X.T @ ((s * e2(z, y))[:, None] * X) / N
    return value, g, H, np.sum(s * e1(z, y)) / N, np.sum(s * e2(z, y)) / N, \
        X.T @ (s * e2(z, y)) / N


def _tol(dtype):
    return dict(rtol=2e-4, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("N,n", [(37, 5), (1000, 10), (3000, 33), (77, 64), (41, 16), (19, 65)])
def test_every_loss_against_closed_forms(name, N, n, dtype):
    d = _data(name, N, n, dtype)
    loss = fastjac.compile(fastjac.mean(s_ * LOSSES[name][0]))
    value, g, H, gb, hbb, hwb = _oracle(name, d)
    tol = _tol(dtype)
    v = loss.value(**d)
    assert v.dtype == dtype
    np.testing.assert_allclose(v, value, **tol)
    gw = loss.jacobian("w", **d)
    assert gw.dtype == dtype and gw.shape == (n,)
    np.testing.assert_allclose(gw, g, **tol)
    val2, gw2 = loss.value_and_jacobian("w", **d)
    np.testing.assert_allclose(val2, value, **tol)
    np.testing.assert_allclose(gw2, g, **tol)
    np.testing.assert_allclose(loss.jacobian("b", **d), gb, **tol)
    Hw = loss.hessian("w", **d)
    assert Hw.shape == (n, n) and Hw.dtype == dtype
    np.testing.assert_allclose(Hw, H, **tol)
    np.testing.assert_allclose(loss.hessian_diagonal("w", **d), np.diag(H), **tol)
    vec = np.random.default_rng(1).standard_normal(n)
    np.testing.assert_allclose(loss.hvp("w", vec, **d), H @ vec, **tol)
    np.testing.assert_allclose(loss.hessian("b", **d), hbb, **tol)
    np.testing.assert_allclose(loss.hessian(("w", "b"), **d), hwb, **tol)
    val3, g3, hd3 = loss.value_gradient_hessian_diagonal("w", **d)
    np.testing.assert_allclose([val3], [value], **tol)
    np.testing.assert_allclose(g3, g, **tol)
    np.testing.assert_allclose(hd3, np.diag(H), **tol)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_finite_differences(name):
    """Gradient and Hessian-vector product against central differences of
    the value (and of the gradient): an oracle independent of the closed forms."""
    d = _data(name, 200, 6, np.float64, seed=3)
    if name == "huber":
        d["y"] = d["y"] * 0.3      # keep rows away from the kink |z - y| = 1 ...
    loss = fastjac.compile(fastjac.mean(s_ * LOSSES[name][0]))
    h = 1e-6
    w = d["w"]
    fd = np.array([(loss.value(**{**d, "w": w + h * e}) - loss.value(**{**d, "w": w - h * e}))
                   / (2 * h) for e in np.eye(6)])
    np.testing.assert_allclose(loss.jacobian("w", **d), fd, rtol=1e-6, atol=1e-8)
    v = np.linspace(-1, 1, 6)
    fd_hv = (loss.jacobian("w", **{**d, "w": w + h * v})
             - loss.jacobian("w", **{**d, "w": w - h * v})) / (2 * h)
    if name == "huber":            # ... or exclude those that cross it
        z = d["X"] @ w + d["b"] - d["y"]
        if np.any(abs(abs(z) - 1) < 1e-4):
            pytest.skip("a row sits on Huber's kink")
    np.testing.assert_allclose(loss.hvp("w", v, **d), fd_hv, rtol=1e-5, atol=1e-7)


def test_logistic_with_l2_penalty_dense_operator_and_jax():
    d = _data("logistic", 500, 8, np.float64)
    alpha = fastjac.var("alpha")
    expr = fastjac.mean(s_ * (fastjac.softplus(Z_) - y_ * Z_)) + 0.5 * alpha * fastjac.sum(w_ * w_)
    loss = fastjac.compile(expr)
    d["alpha"] = 0.1
    value, g, H, *_ = _oracle("logistic", d)
    w = d["w"]
    np.testing.assert_allclose(loss.value(**d), value + 0.05 * w @ w, rtol=1e-12)
    np.testing.assert_allclose(loss.jacobian("w", **d), g + 0.1 * w, rtol=1e-10)
    Hfull = H + 0.1 * np.eye(8)
    np.testing.assert_allclose(loss.hessian("w", **d), Hfull, rtol=1e-10)
    np.testing.assert_allclose(loss.hessian("w", format="dense", **d), Hfull, rtol=1e-10)
    np.testing.assert_allclose(loss.hessian_diagonal("w", **d), np.diag(Hfull), rtol=1e-10)
    v = np.arange(8.0)
    np.testing.assert_allclose(loss.hvp("w", v, **d), Hfull @ v, rtol=1e-10)
    pytest.importorskip("scipy")
    op = loss.hessian("w", format="operator", **d)
    assert op.shape == (8, 8)
    np.testing.assert_allclose(op @ v, Hfull @ v, rtol=1e-10)
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy

    def f(w):
        z = d["X"] @ w + d["b"]
        return jnp.mean(d["s"] * (jnp.logaddexp(0, z) - d["y"] * z)) + 0.05 * w @ w
    np.testing.assert_allclose(loss.jacobian("w", **d), jax.grad(f)(w), rtol=1e-10)
    np.testing.assert_allclose(loss.hessian("w", **d), jax.hessian(f)(w), rtol=1e-10)


def test_elementwise_loss_has_a_diagonal_hessian():
    x, y = fastjac.var("x"), fastjac.var("y")
    f = fastjac.compile(fastjac.sum(fastjac.exp(x) * y + x * x * x))
    xv, yv = np.array([0.1, -0.4, 2.0]), np.array([1.0, 2.0, 3.0])
    expected = np.exp(xv) * yv + 6 * xv
    np.testing.assert_allclose(f.hessian("x", x=xv, y=yv), expected, rtol=1e-13)
    np.testing.assert_allclose(f.hessian("x", format="dense", x=xv, y=yv), np.diag(expected),
                               rtol=1e-13)
    np.testing.assert_allclose(f.hessian_diagonal("x", x=xv, y=yv), expected, rtol=1e-13)
    np.testing.assert_allclose(f.hvp("x", [1.0, 0.0, 2.0], x=xv, y=yv),
                               expected * [1, 0, 2], rtol=1e-13)
    # a scalar variable: a number; mixed with another scalar
    a, c = fastjac.var("a"), fastjac.var("c")
    g = fastjac.compile(fastjac.sum(a * a * c * x))
    assert g.hessian("a", a=2.0, c=3.0, x=xv) == pytest.approx(2 * 3.0 * xv.sum())
    assert g.hessian(("a", "c"), a=2.0, c=3.0, x=xv) == pytest.approx(2 * 2.0 * xv.sum())


def test_gradient_wrt_matrix_and_per_row_variable():
    d = _data("logistic", 64, 4, np.float64)
    loss = fastjac.compile(fastjac.sum(s_ * (fastjac.softplus(Z_) - y_ * Z_)))
    z = d["X"] @ d["w"] + d["b"]
    e1 = d["s"] * (_sigmoid(z) - d["y"])
    np.testing.assert_allclose(loss.jacobian("X", **d), np.outer(e1, d["w"]), rtol=1e-12)
    np.testing.assert_allclose(loss.jacobian("y", **d), -d["s"] * z, rtol=1e-12)
    np.testing.assert_allclose(loss.jacobian("s", **d), np.logaddexp(0, z) - d["y"] * z,
                               rtol=1e-12)
    # per-row second derivative in y is zero (linear): diagonal of zeros
    np.testing.assert_array_equal(loss.hessian_diagonal("y", **d), np.zeros(64))


def test_mean_sum_axis_and_layouts():
    d = _data("squared", 50, 3, np.float64)
    del d["s"], d["b"]
    e = (X_ @ w_ - y_) ** 2
    r = d["X"] @ d["w"] - d["y"]
    for expr in (fastjac.sum(e, axis=0), fastjac.sum(e, axis=-1), fastjac.sum(e, axis=(0,))):
        np.testing.assert_allclose(fastjac.compile(expr).value(**d), r @ r, rtol=1e-13)
    mean = fastjac.compile(fastjac.mean(e, axis=0))
    np.testing.assert_allclose(mean.value(**d), r @ r / 50, rtol=1e-13)
    g = 2 * d["X"].T @ r / 50
    np.testing.assert_allclose(mean.jacobian("w", format="dense", **d), g[None, :], rtol=1e-12)
    np.testing.assert_allclose(mean.jacobian("w", layout="denominator", format="dense", **d),
                               g[:, None], rtol=1e-12)
    out = np.empty(3)
    assert mean.jacobian("w", out=out, **d) is out
    np.testing.assert_allclose(out, g, rtol=1e-12)


def test_threads_do_not_change_bits():
    d = _data("logistic", 40000, 17, np.float64)
    loss = fastjac.compile(fastjac.mean(s_ * (fastjac.softplus(Z_) - y_ * Z_)))
    before = fastjac.get_num_threads()
    try:
        fastjac.set_num_threads(1)
        one = loss.value_gradient_hessian_diagonal("w", **d)
        fastjac.set_num_threads(2)
        two = loss.value_gradient_hessian_diagonal("w", **d)
    finally:
        fastjac.set_num_threads(before)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)
    value, g, H, *_ = _oracle("logistic", d)
    np.testing.assert_allclose(one[1], g, rtol=1e-9)


def test_several_variables_jvp_vjp_in_one_pass():
    d = _data("poisson", 300, 5, np.float64)
    loss = _logistic()
    value, g, H, gb, *_ = _oracle("logistic", d)
    val, (gw, gbb, gs) = loss.value_and_jacobian(["w", "b", "s"], **d)
    np.testing.assert_allclose(val, value, rtol=1e-12)
    np.testing.assert_allclose(gw, g, rtol=1e-10)
    np.testing.assert_allclose(gbb, gb, rtol=1e-10)
    z = d["X"] @ d["w"] + d["b"]
    np.testing.assert_allclose(gs, (np.logaddexp(0, z) - d["y"] * z) / 300, rtol=1e-12)
    t = np.linspace(0, 1, 5)
    v2, prod = loss.jvp(["w", "b"], [t, 2.0], **d)
    np.testing.assert_allclose(prod, g @ t + 2 * gb, rtol=1e-10)
    v3, cot = loss.vjp("w", 3.0, **d)
    np.testing.assert_allclose(cot, 3 * g, rtol=1e-10)
    with pytest.raises(ValueError, match="cotangent must be a number"):
        loss.vjp("w", np.ones(2), **d)
    with pytest.raises(ValueError, match="2 variables but 1 tangents"):
        loss.jvp(["w", "b"], [t], **d)
    with pytest.raises(ValueError, match="names a variable twice"):
        loss.jacobian(["w", "w"], **d)
    with pytest.raises(ValueError, match="out= is for one variable"):
        loss.jacobian(["w", "b"], out=np.empty(5), **d)
    with pytest.raises(NotImplementedError, match="kernel"):
        loss.kernel("w")
    assert isinstance(loss, fastjac.CompiledExpression)


def test_empty_and_tiny_batches():
    loss = fastjac.compile(fastjac.sum((X_ @ w_ - y_) ** 2))
    d = {"X": np.zeros((0, 3)), "w": np.ones(3), "y": np.zeros(0)}
    assert loss.value(**d) == 0
    np.testing.assert_array_equal(loss.jacobian("w", **d), np.zeros(3))
    mean = fastjac.compile(fastjac.mean((X_ @ w_ - y_) ** 2))
    with pytest.raises(ValueError, match="mean of no elements"):
        mean.value(**d)
    d1 = {"X": np.array([[2.0]]), "w": np.array([3.0]), "y": np.array([1.0])}
    assert loss.value(**d1) == 25.0
    np.testing.assert_array_equal(loss.jacobian("w", **d1), [20.0])
    np.testing.assert_array_equal(loss.hessian("w", **d1), [[8.0]])


def test_pickle_roundtrip():
    loss = fastjac.compile(fastjac.mean(fastjac.softplus(X_ @ w_) - y_ * (X_ @ w_)))
    again = pickle.loads(pickle.dumps(loss))
    d = _data("logistic", 30, 4, np.float64)
    del d["s"], d["b"]
    np.testing.assert_array_equal(again.jacobian("w", **d), loss.jacobian("w", **d))


# -- errors --------------------------------------------------------------------------

def _logistic():
    return fastjac.compile(fastjac.mean(s_ * (fastjac.softplus(Z_) - y_ * Z_)))


def test_shape_errors_name_the_variable():
    loss = _logistic()
    d = _data("logistic", 20, 3, np.float64)
    with pytest.raises(ValueError, match="'X' is the matrix .* must be 2-D"):
        loss.value(**{**d, "X": d["X"][0]})
    with pytest.raises(ValueError, match=r"'w' has shape \(4,\) .* shape \(3,\)"):
        loss.value(**{**d, "w": np.ones(4)})
    with pytest.raises(ValueError, match=r"'y' has shape \(19,\).*one value per row"):
        loss.value(**{**d, "y": np.ones(19)})
    with pytest.raises(ValueError, match=r"v has shape \(2,\)"):
        loss.hvp("w", np.ones(2), **d)
    with pytest.raises(TypeError, match="real array"):
        loss.hvp("w", np.array(["a", "b", "c"]), **d)
    with pytest.raises(ValueError, match="missing value for variable 'y'"):
        loss.value(**{k: v for k, v in d.items() if k != "y"})
    with pytest.raises(ValueError, match="unknown variable 'q'"):
        loss.value(q=1.0, **d)
    with pytest.raises(ValueError, match="format must be one of"):
        loss.hessian("w", format="csr", **d)
    with pytest.raises(ValueError, match="name the variable"):
        loss.jacobian(**d)
    with pytest.raises(NotImplementedError, match="matrix 'X'"):
        loss.hessian("X", **d)
    with pytest.raises(NotImplementedError, match="matrix 'X'"):
        loss.hvp("X", d["X"], **d)
    f = fastjac.compile(fastjac.mean(s_ * (fastjac.softplus(Z_) - y_ * Z_)), wrt="w")
    with pytest.raises(ValueError, match="not compiled for differentiation"):
        f.jacobian("b", **d)
    x, q = fastjac.var("x"), fastjac.var("q")
    g = fastjac.compile(fastjac.sum(x * q, axis=0))
    with pytest.raises(ValueError, match="must broadcast together"):
        g.value(x=np.ones(3), q=np.ones(4))
    with pytest.raises(ValueError, match="axis 1 is out of bounds"):
        fastjac.compile(fastjac.sum(x, axis=1)).value(x=np.ones(3))
    with pytest.raises(NotImplementedError, match="some axes only"):
        fastjac.compile(fastjac.sum(x, axis=0)).value(x=np.ones((2, 3)))
    with pytest.raises(ValueError, match="must be a scalar"):
        fastjac.compile(q * fastjac.sum(x, axis=0)).value(x=np.ones(3), q=np.ones(3))


def test_unsupported_expressions_are_refused_at_compile():
    x, v = fastjac.var("x"), fastjac.var("v")
    with pytest.raises(NotImplementedError, match="two different products"):
        fastjac.compile(fastjac.sum(X_ @ w_ + X_ @ v))
    with pytest.raises(NotImplementedError, match="inside a reduction"):
        fastjac.compile(fastjac.mean(x * fastjac.sum(x)))
    with pytest.raises(NotImplementedError, match="weighted sum"):
        fastjac.compile(fastjac.log(fastjac.mean(x)))
    with pytest.raises(NotImplementedError, match="both an operand"):
        fastjac.compile(fastjac.sum(X_ @ w_ * w_))
    with pytest.raises(NotImplementedError, match="between two variables"):
        fastjac.compile(fastjac.sum((X_ * 2) @ w_))
    with pytest.raises(NotImplementedError, match="compile it alone"):
        fastjac.compile([fastjac.mean(x), x])
    with pytest.raises(TypeError, match="axis must be None"):
        fastjac.sum(x, axis=1.5)
    with pytest.raises(ValueError, match="names an axis twice"):
        fastjac.mean(x, axis=(0, 0))
    with pytest.raises(NotImplementedError, match="weight of"):
        fastjac.compile(x * fastjac.mean(x))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_softplus_from_one_exponential_keeps_the_bits_of_each_formula(dtype):
    """softplus_vd (value and derivatives from one exp) against the value
    alone and the core's derivative kernel: the same bits."""
    x = fastjac.var("x")
    xs = np.array([0.0, -0.0, 1e-12, -3.5, 2.25, 30.0, -30.0, 745.0, -745.0, np.inf,
                   -np.inf, np.nan] + list(np.linspace(-40, 40, 301)), dtype)
    value, slope = fastjac.compile(fastjac.softplus(x)).value_and_jacobian("x", x=xs)
    np.testing.assert_array_equal(value, fastjac.compile(fastjac.softplus(x)).value(x=xs))
    np.testing.assert_array_equal(slope, fastjac.jacobian("softplus", xs))
    # the second derivative in a loss, against sum_hessian's kernel (same formula
    # up to rounding: sigmoid' = e / (1 + e)^2)
    loss = fastjac.compile(fastjac.sum(fastjac.softplus(x), axis=0))
    finite = xs[np.isfinite(xs)]
    np.testing.assert_allclose(loss.hessian_diagonal("x", x=finite),
                               fastjac.sum_hessian("softplus", finite),
                               rtol=4 * np.finfo(dtype).eps, atol=0)
    lsig = fastjac.compile(fastjac.sum(fastjac.log_sigmoid(x), axis=0))
    np.testing.assert_array_equal(lsig.jacobian("x", x=finite),
                                  fastjac.jacobian("log_sigmoid", finite))
    np.testing.assert_allclose(lsig.hessian_diagonal("x", x=finite),
                               fastjac.sum_hessian("log_sigmoid", finite),
                               rtol=4 * np.finfo(dtype).eps, atol=0)


def test_resolved_calls_repeat_the_full_path_bit_for_bit():
    """The second call of a signature runs a LossCall (checks of types and
    shapes only): the same bits as the first call, and a call that differs
    in anything goes back to the full path and its errors."""
    alpha = fastjac.var("alpha")
    loss = fastjac.compile(fastjac.mean(s_ * (fastjac.softplus(Z_) - y_ * Z_))
                           + alpha * fastjac.sum(w_ * w_) / 2 + 1.5)
    for dtype in (np.float64, np.float32):
        d = _data("logistic", 300, 7, dtype)
        d["alpha"], d["b"] = 0.25, 0.5
        v = np.linspace(-1, 1, 7).astype(dtype)
        first = (loss.value(**d), loss.value_and_jacobian("w", **d), loss.jacobian("w", **d),
                 loss.jacobian("b", **d), loss.hvp("w", v, **d))
        both = loss.value_and_jacobian(["w", "b"], **d)
        both_again = loss.value_and_jacobian(["w", "b"], **d)
        assert both_again[0] == both[0] and type(both_again[1]) is list
        np.testing.assert_array_equal(both_again[1][0], both[1][0])
        assert both_again[1][1] == both[1][1] and both_again[1][1] == first[3]
        np.testing.assert_array_equal(both_again[1][0], first[1][1])
        for key in (("value", None), (True, "w"), (False, "w"), (False, "b"),
                    (True, ("w", "b"))):
            assert loss._calls[key](d) is not None, key      # resolved, and it runs
        assert loss._calls[("hvp", "w")](d, v) is not None
        again = (loss.value(**d), loss.value_and_jacobian("w", **d), loss.jacobian("w", **d),
                 loss.jacobian("b", **d), loss.hvp("w", v, **d))
        for a, b in zip(first[:1] + (first[1][0], first[1][1]) + first[2:],
                        again[:1] + (again[1][0], again[1][1]) + again[2:]):
            np.testing.assert_array_equal(a, b)
            assert type(a) is type(b)
        assert again[1][1].dtype == dtype and type(again[0]) is np.dtype(dtype).type
        value, g, H, gb, *_ = _oracle("logistic", d)
        w = d["w"].astype(np.float64)
        np.testing.assert_allclose(again[1][0], value + 0.125 * w @ w + 1.5, **_tol(dtype))
        np.testing.assert_allclose(again[1][1], g + 0.25 * w, **_tol(dtype))
        np.testing.assert_allclose(again[4], (H + 0.25 * np.eye(7)) @ v, **_tol(dtype))
    # after resolved calls: wrong shapes, types and missing names still raise
    with pytest.raises(ValueError, match=r"'y' has shape \(299,\)"):
        loss.value_and_jacobian("w", **{**d, "y": d["y"][:-1]})
    with pytest.raises(ValueError, match="missing value"):
        loss.value_and_jacobian("w", **{k: x for k, x in d.items() if k != "s"})
    with pytest.raises(ValueError, match=r"v has shape \(6,\)"):
        loss.hvp("w", v[:-1], **d)
    with pytest.raises(ValueError, match="must be a scalar"):
        loss.value(**{**d, "alpha": np.ones(2, np.float32)})
    # ... and so do a bad layout or format next to a resolved signature
    for method in (loss.value_and_jacobian, loss.jacobian, loss.value_and_gradient,
                   loss.gradient):
        with pytest.raises(ValueError, match="layout must be 'numerator' or 'denominator'"):
            method("w", layout="rows", **d)
        with pytest.raises(ValueError, match="format"):
            method("w", format="csx", **d)
    # a strided or non-native array takes the full path, same numbers
    dd = {**d, "X": np.asfortranarray(d["X"])}
    np.testing.assert_allclose(loss.jacobian("w", **dd), loss.jacobian("w", **d), rtol=1e-6)
    d64 = {**d, "y": d["y"].astype(">f4")}
    np.testing.assert_allclose(loss.jacobian("w", **d64), loss.jacobian("w", **d), rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_element_wise_gradient_of_a_mean_has_the_same_bits_on_every_call(dtype):
    """d mean(w * x)/dw = x / N, one element per element of w: the first
    call (full path) and the resolved calls scale it alike, in float64 and
    rounded once, as the oracle here does."""
    a, b = fastjac.var("a"), fastjac.var("b")
    loss = fastjac.compile(fastjac.mean(a * b))
    rng = np.random.default_rng(3)
    av, bv = (rng.uniform(0.25, 2.0, 1001).astype(dtype) for _ in range(2))
    calls = [loss.jacobian("a", a=av, b=bv) for _ in range(3)]
    expected = (bv.astype(np.float64) * (1.0 / 1001)).astype(dtype)
    for g in calls:
        assert g.dtype == dtype
        np.testing.assert_array_equal(g, expected)


@pytest.mark.parametrize("n", [3, 16, 70])
def test_neuron_gradient_is_the_loss_of_a_relu_unit(n):
    """fastjac.neuron_gradient keeps its own pass; the same loss through
    compile gives the same numbers (two implementations, checked against
    each other and the closed form)."""
    rng = np.random.default_rng(n)
    X, y = rng.standard_normal((500, n)), rng.standard_normal(500)
    w, b = rng.standard_normal(n) * 0.4, 0.05
    loss = fastjac.compile(fastjac.mean((y_ - fastjac.relu(X_ @ w_ + b_)) ** 2))
    value, (gw, gb) = loss.value_and_jacobian(["w", "b"], X=X, y=y, w=w, b=b)
    nw, nb, nloss = fastjac.neuron_gradient(X, y, w, b, return_loss=True)
    z = X @ w + b
    r = np.where(z > 0, z - y, 0.0)
    np.testing.assert_allclose(gw, 2 * X.T @ r / 500, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(gw, nw, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose([gb, value], [nb, nloss], rtol=1e-12)
