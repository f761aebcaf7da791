"""f.jvp and f.vjp of compiled expressions against finite-difference Jacobians
of the same functions written in NumPy."""
import numpy as np
import pytest

import fastjac as fj
from oracle import finite_difference

RNG = np.random.default_rng(23)
w_, x_, z_ = fj.var("w"), fj.var("x"), fj.var("z")

# name, expression, the NumPy function of (w, x, z), variables that are scalars
CASES = [
    ("elementwise", fj.sin(w_) * fj.exp(x_) - w_ / x_ + z_,
     lambda w, x, z: np.sin(w) * np.exp(x) - w / x + z),
    ("sum", fj.sum(fj.tanh(w_ * x_)) * z_, lambda w, x, z: np.sum(np.tanh(w * x)) * z),
    ("inner reduction", fj.tanh(w_ * fj.dot(w_, x_)) + z_ * x_,
     lambda w, x, z: np.tanh(w * np.dot(w, x)) + z * x),
    ("mean after sum", fj.log(fj.sum(fj.exp(w_ * x_))) / z_,
     lambda w, x, z: np.log(np.sum(np.exp(w * x))) / z),
]


def point(dtype=np.float64):
    return {"w": RNG.uniform(0.3, 1.2, 5).astype(dtype),
            "x": RNG.uniform(0.6, 1.4, 5).astype(dtype), "z": dtype(RNG.uniform(0.8, 1.5))}


def fd(fun, values, name):
    """The dense numerator Jacobian d fun / d name, flattened, by central differences."""
    def f(v):
        args = dict(values)
        args[name] = v if np.ndim(values[name]) else v.reshape(())
        return np.atleast_1d(fun(**{k: np.asarray(a, np.float64) for k, a in args.items()}))
    return finite_difference(f, np.asarray(values[name], np.float64))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name, expr, fun", CASES, ids=[c[0] for c in CASES])
def test_jvp_and_vjp_against_finite_differences(name, expr, fun, dtype):
    values = point(dtype)
    f = fj.compile(expr)
    tol = dict(rtol=1e-6, atol=1e-8) if dtype == np.float64 else dict(rtol=2e-3, atol=2e-4)
    y = np.asarray(fun(**values), np.float64)
    Js = {n: fd(fun, values, n) for n in f.variables}
    tangents = {n: RNG.standard_normal(np.shape(values[n])) for n in f.variables}
    u = RNG.standard_normal(y.shape)
    # one variable at a time, and all at once
    for n in f.variables:
        value, jv = f.jvp(n, tangents[n], **values)
        np.testing.assert_allclose(value, y, **tol)
        assert np.shape(jv) == y.shape and np.asarray(jv).dtype == dtype
        np.testing.assert_allclose(np.reshape(jv, -1), Js[n] @ np.reshape(tangents[n], -1),
                                   **tol)
        value, g = f.vjp(n, u, **values)
        assert np.shape(g) == np.shape(values[n]) and np.asarray(g).dtype == dtype
        np.testing.assert_allclose(np.reshape(g, -1), np.reshape(u, -1) @ Js[n], **tol)
    names = list(f.variables)
    value, jv = f.jvp(names, [tangents[n] for n in names], **values)
    want = sum(Js[n] @ np.reshape(tangents[n], -1) for n in names)
    np.testing.assert_allclose(np.reshape(jv, -1), want, **tol)
    value, gs = f.vjp(names, u, **values)
    assert isinstance(gs, tuple) and len(gs) == len(names)
    for n, g in zip(names, gs):
        np.testing.assert_allclose(np.reshape(g, -1), np.reshape(u, -1) @ Js[n], **tol)


def test_vjp_by_a_scalar_sums_over_its_expansion():
    f = fj.compile(w_ * z_ + x_)
    w, x = RNG.uniform(size=4), RNG.uniform(size=4)
    u = RNG.standard_normal(4)
    _, g = f.vjp("z", u, w=w, x=x, z=2.0)
    assert np.ndim(g) == 0
    np.testing.assert_allclose(g, np.dot(u, w), rtol=1e-14)
    _, jv = f.jvp("z", 0.5, w=w, x=x, z=2.0)
    np.testing.assert_allclose(jv, 0.5 * w, rtol=1e-14)


def test_errors():
    f = fj.compile(w_ * x_)
    values = {"w": np.ones(3), "x": np.ones(3)}
    with pytest.raises(ValueError, match=r"tangent of 'w' has shape \(2,\)"):
        f.jvp("w", np.ones(2), **values)
    with pytest.raises(ValueError, match="list of 2 arrays"):
        f.jvp(["w", "x"], np.ones(3), **values)
    with pytest.raises(TypeError, match="complex"):
        f.jvp("w", np.ones(3) * 1j, **values)
    with pytest.raises(ValueError, match=r"cotangent has shape \(4,\)"):
        f.vjp("w", np.ones(4), **values)
    with pytest.raises(ValueError, match="unknown variable"):
        f.jvp("q", np.ones(3), **values)
    with pytest.raises(ValueError, match="twice"):
        f.vjp(["w", "w"], np.ones(3), **values)
    with pytest.raises(ValueError, match="wrt must be"):
        f.jvp(None, np.ones(3), **values)
    with pytest.raises(ValueError, match="single expression"):
        fj.compile([fj.sum(w_), fj.sum(x_)]).jvp("w", np.ones(3), **values)
    with pytest.raises(ValueError, match="missing value"):
        f.jvp("w", np.ones(3), w=np.ones(3))


def test_one_fused_pass_where_there_is_no_inner_reduction():
    """Element-wise expressions and final sums run the fused programs (the
    tangent and cotangent are inputs of the pass); an inner reduction goes
    through the structured factors. Both give the closed-form products, on
    the interpreter and, at 70 000 elements, on the compiled loop."""
    for n in (5, 70_000):
        w, x = RNG.uniform(0.5, 1.5, n), RNG.uniform(0.5, 1.5, n)
        t, u = RNG.standard_normal(n), RNG.standard_normal(n)
        f = fj.compile(w_ * x_ + fj.exp(w_) / x_)
        value, jv = f.jvp("w", t, w=w, x=x)
        np.testing.assert_allclose(jv, (x + np.exp(w) / x) * t, rtol=1e-13)
        value, g = f.vjp("x", u, w=w, x=x)
        np.testing.assert_allclose(g, u * (w - np.exp(w) / x ** 2), rtol=1e-13)
        np.testing.assert_allclose(value, w * x + np.exp(w) / x, rtol=1e-15)
        assert len(f._product_plans) == 2 and not f._has_inner
        s = fj.compile(fj.sum(w_ * x_) * z_)
        value, jv = s.jvp(["w", "z"], [t, 0.5], w=w, x=x, z=2.0)
        np.testing.assert_allclose(jv, 2.0 * np.dot(x, t) + 0.5 * np.dot(w, x), rtol=1e-11)
        _, (gw, gz) = s.vjp(["w", "z"], 3.0, w=w, x=x, z=2.0)
        np.testing.assert_allclose(gw, 6.0 * x, rtol=1e-14)
        np.testing.assert_allclose(gz, 3.0 * np.dot(w, x), rtol=1e-11)
    inner = fj.compile(fj.tanh(w_ * fj.dot(w_, x_)))
    inner.jvp("w", np.ones(3), w=np.ones(3), x=np.ones(3))
    assert inner._has_inner and not inner._product_plans


def test_products_by_a_structurally_zero_derivative_are_zero():
    f = fj.compile(w_ * 2.0 + fj.greater(z_, w_))       # d/dz is zero everywhere
    w = np.array([0.5, 1.5, 2.5])
    value, (gw, gz) = f.vjp(["w", "z"], np.ones(3), w=w, z=1.0)
    np.testing.assert_array_equal(value, 2 * w + (1.0 > w))
    np.testing.assert_array_equal(gw, 2.0)
    assert np.ndim(gz) == 0 and gz == 0.0
    _, jv = f.jvp("z", 1.0, w=w, z=1.0)
    np.testing.assert_array_equal(jv, 0.0)


def test_dask_arrays_give_lazy_products():
    # Dask variables: lazy Dask results (tests/test_dask_products.py covers them)
    da = pytest.importorskip("dask.array")
    f = fj.compile(w_ * x_)
    w, x = da.ones(4, chunks=2), np.arange(4.0)
    for value, product in (f.jvp("w", np.ones(4), w=w, x=x), f.vjp("w", np.ones(4), w=w, x=x)):
        assert isinstance(value, da.Array) and isinstance(product, da.Array)
        np.testing.assert_array_equal(product.compute(), x)


def test_repeated_calls_take_the_checked_shortcut_with_the_same_results():
    # after a first call, jvp/vjp of one variable run through a cached
    # _ProductCall; every other call must still get the full path's answer
    # and its errors
    f = fj.compile(fj.maximum(w_ * x_ + 3, 0) * x_ - w_ / z_)
    g = fj.compile(fj.sum(fj.tanh(w_ * x_) * z_))
    for dtype in (np.float64, np.float32):
        w = RNG.uniform(0.5, 1.5, 7).astype(dtype)
        x = RNG.uniform(0.5, 1.5, 7).astype(dtype)
        z = np.asarray(1.25, dtype)
        t = RNG.standard_normal(7).astype(dtype)
        first = f.jvp("w", t, w=w, x=x, z=z), f.vjp("x", t, w=w, x=x, z=z), \
            g.jvp("z", 0.5, w=w, x=x, z=z), g.vjp("w", dtype(2.0), w=w, x=x, z=z)
        assert ("jvp", "w") in f._product_calls and ("vjp", "w") in g._product_calls
        again = f.jvp("w", t, w=w, x=x, z=z), f.vjp("x", t, w=w, x=x, z=z), \
            g.jvp("z", 0.5, w=w, x=x, z=z), g.vjp("w", dtype(2.0), w=w, x=x, z=z)
        for (v1, p1), (v2, p2) in zip(first, again):
            assert np.asarray(v2).dtype == dtype and np.asarray(p2).dtype == dtype
            np.testing.assert_array_equal(v1, v2)
            np.testing.assert_array_equal(p1, p2)
        # calls the shortcut does not take: the same numbers as a fresh compile
        fresh = fj.compile(fj.maximum(w_ * x_ + 3, 0) * x_ - w_ / z_)
        for args in (dict(w=w, x=x[::-1], z=z),                 # not contiguous
                     dict(w=w.astype(np.float64), x=x, z=z),    # another dtype
                     dict(w=w, x=x, z=float(z)),                # a Python number
                     dict(w=w, x=x, z=np.full(7, z))):          # z an array
            np.testing.assert_array_equal(f.jvp("w", t, **args)[1], fresh.jvp("w", t, **args)[1])
        with pytest.raises(ValueError, match=r"the tangent of 'w' has shape \(6,\)"):
            f.jvp("w", t[:6], w=w, x=x, z=z)
        with pytest.raises(ValueError, match=r"cotangent has shape \(\)"):
            f.vjp("x", np.asarray(1.0, dtype), w=w, x=x, z=z)
        with pytest.raises(ValueError, match="missing value for variable 'z'"):
            f.jvp("w", t, w=w, x=x)
