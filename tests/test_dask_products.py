"""jvp, vjp, stacked Jacobians and list values of compiled expressions with
Dask variables (issue 18; src/fastjac/_dask.py: products, stacked_jacobian,
list_value).

Oracles: closed forms written here with NumPy, in float64 (f = x*y + tanh(x)
has J_x = diag(y + 1 - tanh(x)^2) and J_y = diag(x), so jvp by x is
(y + 1 - tanh^2) * t ...), with sums taken by math.fsum; beside them, the
NumPy path of the same call on the computed arrays, which element-wise
results equal bit for bit and sums to rounding (float64 RTOL64 of the sum
of |terms|, float32 RTOL32), as in tests/test_dask.py.
"""
import math

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")

import fastjac  # noqa: E402
from fastjac import expr as _expr  # noqa: E402

RTOL64 = 1e-13
RTOL32 = 2e-6

rng = np.random.default_rng(1818)

x_, y_, z_ = fastjac.var("x"), fastjac.var("y"), fastjac.var("z")
F = fastjac.compile(x_ * y_ + fastjac.tanh(x_))                 # element-wise
S = fastjac.compile(fastjac.sum(x_ * y_ + fastjac.tanh(x_)))    # summed root
# scalar outputs: a sum over the arrays and a number that reads only z
L = fastjac.compile([fastjac.sum(x_ * y_ + z_), z_ * z_ + 1])
# a list whose outputs are element-wise, summed, and scalar-only
V = fastjac.compile([x_ * y_, fastjac.sum(fastjac.tanh(x_)), z_ * z_])
MEAN = fastjac.compile(fastjac.sum(x_ * y_) / 4)                # an inner sum

# name -> (shape, chunks of x, chunks of y): y's chunks unlike x's
CHUNKINGS = {
    "ragged": ((11, 7), ((4, 4, 3), (5, 2)), ((6, 5), (2, 2, 3))),
    "one-chunk": ((6, 5), ((6,), (5,)), ((6,), (5,))),
    "thin": ((5, 3), ((1,) * 5, (1, 2)), ((2, 3), (3,))),
    "1-d": ((17,), ((5, 5, 7),), ((9, 8),)),
    "empty": ((0, 4), ((0,), (2, 2)), ((0,), (1, 3))),
}
DTYPES = [np.float64, np.float32]


def data(shape, dtype=np.float64):
    return rng.uniform(0.5, 1.5, shape).astype(dtype)


def f64(a):
    return np.asarray(a, np.float64)


def fsum(a):
    return math.fsum(np.asarray(a, np.float64).ravel())


def close(got, want, dtype, scale=None):
    """Equal to rounding: RTOL of the largest |want| (or of ``scale``, the
    sum of |terms| for a sum)."""
    rtol = RTOL32 if np.dtype(dtype) == np.float32 else RTOL64
    ref = np.abs(want).max(initial=0) if scale is None else scale
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * (ref + 1))


def lazy(result, dtype, shape):
    """result is a Dask array of dtype and shape; its computed value."""
    assert isinstance(result, da.Array), type(result)
    assert result.dtype == dtype and result.shape == shape, (result.dtype, result.shape)
    value = result.compute()
    assert value.dtype == dtype and value.shape == shape
    return value


def J_x(x, y):
    """d(x*y + tanh x)/dx, element-wise, float64."""
    x, y = f64(x), f64(y)
    return y + 1 - np.tanh(x) ** 2


def reversed_chunks(chunks):
    return tuple(c[::-1] for c in chunks)


def arrays(chunking, dtype):
    shape, cx, cy = CHUNKINGS[chunking]
    X, Y = data(shape, dtype), data(shape, dtype)
    return shape, X, Y, da.from_array(X, chunks=cx), da.from_array(Y, chunks=cy)


# -- jvp -------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("chunking", CHUNKINGS)
def test_jvp_of_an_elementwise_expression(chunking, dtype):
    shape, X, Y, dX, dY = arrays(chunking, dtype)
    T = data(shape, dtype)
    want_value = f64(X) * f64(Y) + np.tanh(f64(X))
    np_value, np_jvp = F.jvp("x", T, x=X, y=Y)
    # the tangent as a Dask array (chunked like neither variable), or a NumPy array
    for tangent in (da.from_array(T, chunks=reversed_chunks(CHUNKINGS[chunking][2])), T):
        value, product = F.jvp("x", tangent, x=dX, y=dY)
        value, product = lazy(value, dtype, shape), lazy(product, dtype, shape)
        np.testing.assert_array_equal(value, np_value)               # bit for bit
        np.testing.assert_array_equal(product, np_jvp)
        close(value, want_value, dtype)
        close(product, J_x(X, Y) * f64(T), dtype)
    # by y, a NumPy variable beside a Dask one
    value, product = F.jvp("y", da.from_array(T, chunks=CHUNKINGS[chunking][1]), x=dX, y=Y)
    np.testing.assert_array_equal(lazy(product, dtype, shape), F.jvp("y", T, x=X, y=Y)[1])
    close(product.compute(), f64(X) * f64(T), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_jvp_by_a_list_of_variables_adds_the_products(dtype):
    shape, X, Y, dX, dY = arrays("ragged", dtype)
    T, U = data(shape, dtype), data(shape, dtype)
    dT = da.from_array(T, chunks=(3, 3))
    value, product = F.jvp(["x", "y"], [dT, U], x=dX, y=dY)
    got = lazy(product, dtype, shape)
    np.testing.assert_array_equal(got, F.jvp(["x", "y"], [T, U], x=X, y=Y)[1])
    close(got, J_x(X, Y) * f64(T) + f64(X) * f64(U), dtype)
    # a list of one
    _, product = F.jvp(["x"], [dT], x=dX, y=dY)
    np.testing.assert_array_equal(product.compute(), F.jvp("x", T, x=X, y=Y)[1])
    # a summed expression: the sum of both products
    value, product = S.jvp(("x", "y"), (dT, da.from_array(U, chunks=4)), x=dX, y=dY)
    want = J_x(X, Y) * f64(T) + f64(X) * f64(U)
    close(lazy(product, dtype, ()), fsum(want), dtype, scale=fsum(np.abs(want)))
    close(product.compute(), S.jvp(["x", "y"], [T, U], x=X, y=Y)[1], dtype,
          scale=fsum(np.abs(want)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("chunking", CHUNKINGS)
def test_jvp_of_a_sum_is_a_tree_sum(chunking, dtype):
    shape, X, Y, dX, dY = arrays(chunking, dtype)
    T = data(shape, dtype)
    value, product = S.jvp("x", da.from_array(T, chunks=CHUNKINGS[chunking][2]), x=dX, y=dY)
    terms = J_x(X, Y) * f64(T)
    values = f64(X) * f64(Y) + np.tanh(f64(X))
    np_value, np_jvp = S.jvp("x", T, x=X, y=Y)
    got_value, got = lazy(value, dtype, ()), lazy(product, dtype, ())
    close(got, fsum(terms), dtype, scale=fsum(np.abs(terms)))
    close(got, np_jvp, dtype, scale=fsum(np.abs(terms)))
    close(got_value, fsum(values), dtype, scale=fsum(np.abs(values)))
    close(got_value, np_value, dtype, scale=fsum(np.abs(values)))
    if chunking == "one-chunk":
        assert got == np_jvp and got_value == np_value      # one block: the same sum


@pytest.mark.parametrize("dtype", DTYPES)
def test_jvp_with_scalar_variables(dtype):
    shape, X, _, dX, _ = arrays("ragged", dtype)
    z = 0.75
    # dy/dz of x*z + tanh(x) is x: jvp by z with a number tangent
    for zv in (z, np.array(z, dtype), da.from_array(np.array(z, dtype))):
        for t in (2.0, np.array(2.0), da.from_array(np.array(2.0))):
            value, product = F.jvp("y", t, x=dX, y=zv)
            got = lazy(product, dtype, shape)
            np.testing.assert_array_equal(got, F.jvp("y", np_of(t), x=X, y=np_of(zv))[1])
            close(got, 2.0 * f64(X), dtype)
            close(value.compute(), f64(X) * z + np.tanh(f64(X)), dtype)
    # summed: d/dz sum(x*z + tanh x) = sum(x)
    _, product = S.jvp("y", 3.0, x=dX, y=z)
    close(lazy(product, dtype, ()), 3 * fsum(X), dtype, scale=3 * fsum(X))
    # a list: (x by t) + (z by s)
    T = data(shape, dtype)
    _, product = F.jvp(["x", "y"], [da.from_array(T, chunks=4), 0.5], x=dX, y=z)
    got = lazy(product, dtype, shape)
    np.testing.assert_array_equal(got, F.jvp(["x", "y"], [T, 0.5], x=X, y=z)[1])
    close(got, J_x(X, z) * f64(T) + 0.5 * f64(X), dtype)


def np_of(v):
    return v.compute() if isinstance(v, da.Array) else v


def test_jvp_of_scalars_only():
    # every variable a scalar, one a 0-d Dask array: one block, 0-d results
    x0, y0 = 0.5, 2.0
    value, product = S.jvp("x", da.from_array(np.array(1.5)), x=da.from_array(np.array(x0)),
                           y=y0)
    assert value.shape == () and product.shape == ()
    want = (y0 + 1 - np.tanh(x0) ** 2) * 1.5
    np.testing.assert_allclose(product.compute(), want, rtol=RTOL64)
    assert product.compute() == S.jvp("x", 1.5, x=x0, y=y0)[1]
    assert value.compute() == S.value(x=x0, y=y0)
    value, product = F.vjp("y", 2.0, x=da.from_array(np.array(x0, np.float32)), y=y0)
    assert product.dtype == np.float32 and product.compute() == np.float32(2 * x0)


def test_tangent_dtype_does_not_change_the_result_dtype():
    _, X, Y, dX, dY = arrays("ragged", np.float32)
    T = data(X.shape, np.float64)
    _, product = F.jvp("x", da.from_array(T, chunks=5), x=dX, y=dY)
    assert lazy(product, np.float32, X.shape).dtype == np.float32
    np.testing.assert_array_equal(product.compute(), F.jvp("x", T, x=X, y=Y)[1])
    # integer and bool tangents are numbers too
    _, product = F.jvp("x", da.ones(X.shape, dtype=int, chunks=3), x=dX, y=dY)
    np.testing.assert_array_equal(product.compute(),
                                  F.jvp("x", np.ones(X.shape, int), x=X, y=Y)[1])


# -- vjp -------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("chunking", CHUNKINGS)
def test_vjp_of_an_elementwise_expression(chunking, dtype):
    shape, X, Y, dX, dY = arrays(chunking, dtype)
    U = data(shape, dtype)
    for cotangent in (da.from_array(U, chunks=reversed_chunks(CHUNKINGS[chunking][2])), U):
        value, grad = F.vjp("x", cotangent, x=dX, y=dY)
        got = lazy(grad, dtype, shape)
        np.testing.assert_array_equal(got, F.vjp("x", U, x=X, y=Y)[1])
        close(got, J_x(X, Y) * f64(U), dtype)
        np.testing.assert_array_equal(lazy(value, dtype, shape), F.vjp("x", U, x=X, y=Y)[0])
    # a list wrt: a tuple, one gradient per variable
    value, grads = F.vjp(["y", "x"], da.from_array(U, chunks=CHUNKINGS[chunking][1]),
                         x=dX, y=dY)
    assert isinstance(grads, tuple) and len(grads) == 2
    np_grads = F.vjp(["y", "x"], U, x=X, y=Y)[1]
    for got, want_np, want in zip(grads, np_grads, (f64(X) * f64(U), J_x(X, Y) * f64(U))):
        got = lazy(got, dtype, shape)
        np.testing.assert_array_equal(got, want_np)
        close(got, want, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("chunking", ["ragged", "one-chunk", "thin", "empty"])
def test_vjp_by_a_scalar_variable_is_a_tree_sum(chunking, dtype):
    shape, X, _, dX, _ = arrays(chunking, dtype)
    U = data(shape, dtype)
    dU = da.from_array(U, chunks=CHUNKINGS[chunking][2])
    terms = f64(X) * f64(U)                      # u^T dy/dz, dy/dz = x
    for z in (0.75, np.array(0.75, dtype), da.from_array(np.array(0.75, dtype))):
        value, grad = F.vjp("y", dU, x=dX, y=z)
        got = lazy(grad, dtype, ())
        close(got, fsum(terms), dtype, scale=fsum(np.abs(terms)))
        close(got, F.vjp("y", U, x=X, y=np_of(z))[1], dtype, scale=fsum(np.abs(terms)))
        np.testing.assert_array_equal(lazy(value, dtype, shape),
                                      F.vjp("y", U, x=X, y=np_of(z))[0])
    # a list: (the gradient by x, shaped like x; the number by z)
    _, (gx, gz) = F.vjp(["x", "y"], U, x=dX, y=0.75)
    np.testing.assert_array_equal(lazy(gx, dtype, shape), F.vjp("x", U, x=X, y=0.75)[1])
    close(lazy(gz, dtype, ()), fsum(terms), dtype, scale=fsum(np.abs(terms)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("chunking", ["ragged", "1-d", "empty"])
def test_vjp_of_a_sum_is_the_cotangent_times_the_gradient(chunking, dtype):
    shape, X, Y, dX, dY = arrays(chunking, dtype)
    c = 1.5
    for cotangent in (c, np.array(c, dtype), np.float64(c), da.from_array(np.array(c))):
        value, grad = S.vjp("x", cotangent, x=dX, y=dY)
        got = lazy(grad, dtype, shape)
        np.testing.assert_array_equal(got, S.vjp("x", np_of(cotangent), x=X, y=Y)[1])
        close(got, c * J_x(X, Y), dtype)
        values = f64(X) * f64(Y) + np.tanh(f64(X))
        close(lazy(value, dtype, ()), fsum(values), dtype, scale=fsum(np.abs(values)))
    # by a scalar y = z: c * sum(x)
    value, grad = S.vjp(["x", "y"], da.from_array(np.array(c)), x=dX, y=0.25)
    gx, gz = grad
    np.testing.assert_array_equal(lazy(gx, dtype, shape), S.vjp("x", c, x=X, y=0.25)[1])
    close(lazy(gz, dtype, ()), c * fsum(X), dtype, scale=c * fsum(X))
    close(gz.compute(), S.vjp("y", c, x=X, y=0.25)[1], dtype, scale=c * fsum(X))


# -- stacked Jacobians and lists of expressions ---------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("chunking", CHUNKINGS)
def test_stacked_jacobian_of_a_list(chunking, dtype):
    shape, X, Y, dX, dY = arrays(chunking, dtype)
    z = 0.5
    n = X.size
    np_value, np_M = L.value_and_jacobian(["x", "y", "z"], x=X, y=Y, z=z)
    value, M = L.value_and_jacobian(["x", "y", "z"], x=dX, y=dY, z=z)
    got = lazy(M, dtype, (2, 2 * n + 1))
    assert np_M.shape == got.shape
    # rows: d sum(x*y + z) = [y, x, n]; d(z*z + 1) = [0, 0, 2z]
    want = np.zeros((2, 2 * n + 1))
    want[0, :n], want[0, n:2 * n], want[0, -1] = f64(Y).ravel(), f64(X).ravel(), n
    want[1, -1] = 2 * z
    np.testing.assert_array_equal(got[:, :-1], np_M[:, :-1])      # element-wise: bit for bit
    close(got, want, dtype)
    close(got, np_M, dtype)
    assert isinstance(value, tuple) and len(value) == 2
    terms = f64(X) * f64(Y) + z
    close(lazy(value[0], dtype, ()), fsum(terms), dtype, scale=fsum(np.abs(terms)))
    assert lazy(value[1], dtype, ()) == np_value[1] == dtype(z * z + 1)
    # jacobian() alone: the same matrix; wrt in another order
    M2 = L.jacobian(["z", "x"], x=dX, y=dY, z=z)
    close(lazy(M2, dtype, (2, n + 1)), L.jacobian(["z", "x"], x=X, y=Y, z=z), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_stacked_jacobian_by_one_variable(dtype):
    shape, X, Y, dX, dY = arrays("ragged", dtype)
    z = np.array(0.5, dtype)
    # a list of expressions, one array variable: (outputs,) + its shape
    M = L.jacobian("x", x=dX, y=dY, z=z)
    got = lazy(M, dtype, (2,) + shape)
    np.testing.assert_array_equal(got, L.jacobian("x", x=X, y=Y, z=z))
    np.testing.assert_array_equal(got[0], Y)
    assert not got[1].any()
    # one scalar variable: (outputs,), both numbers: [n, 2z]
    value, M = L.value_and_jacobian("z", x=dX, y=dY, z=da.from_array(z))
    got = lazy(M, dtype, (2,))
    close(got, [X.size, 2 * 0.5], dtype, scale=X.size)
    close(got, L.jacobian("z", x=X, y=Y, z=z), dtype, scale=X.size)
    assert isinstance(value, tuple) and len(value) == 2


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("chunking", ["ragged", "one-chunk", "empty"])
def test_stacked_jacobian_of_one_summed_expression(chunking, dtype):
    # wrt a list: one row, [J_x, J_y] flattened
    shape, X, Y, dX, dY = arrays(chunking, dtype)
    value, M = S.value_and_jacobian(["x", "y"], x=dX, y=dY)
    got = lazy(M, dtype, (1, 2 * X.size))
    np_value, np_M = S.value_and_jacobian(["x", "y"], x=X, y=Y)
    np.testing.assert_array_equal(got, np_M)
    close(got[0], np.concatenate([J_x(X, Y).ravel(), f64(X).ravel()]), dtype)
    values = f64(X) * f64(Y) + np.tanh(f64(X))
    close(lazy(value, dtype, ()), np_value, dtype, scale=fsum(np.abs(values)))
    # compile's wrt: stacked when it names several
    both = fastjac.compile(fastjac.sum(x_ * y_ + fastjac.tanh(x_)), wrt=["y", "x"])
    np.testing.assert_array_equal(both.jacobian(x=dX, y=dY).compute(),
                                  both.jacobian(x=X, y=Y))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("chunking", ["ragged", "thin", "empty"])
def test_value_of_a_list_of_expressions(chunking, dtype):
    shape, X, Y, dX, dY = arrays(chunking, dtype)
    for z in (0.5, da.from_array(np.array(0.5, dtype))):
        values = V.value(x=dX, y=dY, z=z)
        np_values = V.value(x=X, y=Y, z=0.5)
        assert isinstance(values, tuple) and len(values) == 3
        prod, total, square = values
        np.testing.assert_array_equal(lazy(prod, dtype, shape), np_values[0])
        close(prod.compute(), f64(X) * f64(Y), dtype)
        t = np.tanh(f64(X))
        close(lazy(total, dtype, ()), fsum(t), dtype, scale=fsum(np.abs(t)))
        close(total.compute(), np_values[1], dtype, scale=fsum(np.abs(t)))
        assert lazy(square, dtype, ()) == np_values[2] == dtype(0.25)
    # a list of one expression: a tuple of one
    (v,) = fastjac.compile([x_ * y_]).value(x=dX, y=Y)
    np.testing.assert_array_equal(v.compute(), X * Y)


def test_outputs_that_read_no_array_variable():
    # a sum that reads only the scalar z is one number (not one per block),
    # and so is a constant output: the first block's, not a tree sum
    G = fastjac.compile([fastjac.sum(x_ * z_), 2.0 + 0 * z_, fastjac.sum(z_ * 3)])
    X = data((7, 3))
    dX = da.from_array(X, chunks=(3, 2))                 # 6 blocks
    values = G.value(x=dX, z=0.5)
    close(lazy(values[0], np.float64, ()), 0.5 * fsum(X), np.float64, scale=fsum(X))
    assert lazy(values[1], np.float64, ()) == 2.0 and lazy(values[2], np.float64, ()) == 1.5
    got = lazy(G.jacobian(["x", "z"], x=dX, z=0.5), np.float64, (3, X.size + 1))
    want = np.zeros((3, X.size + 1))
    want[0, :-1], want[0, -1], want[2, -1] = 0.5, fsum(X), 3.0
    close(got, want, np.float64, scale=fsum(X))
    np.testing.assert_array_equal(got[:, :-1], G.jacobian(["x", "z"], x=X, z=0.5)[:, :-1])
    # every variable a scalar (one a 0-d Dask array): one block
    got = G.jacobian(["x", "z"], x=da.from_array(np.array(1.5)), z=0.5)
    np.testing.assert_array_equal(lazy(got, np.float64, (3, 2)),
                                  [[0.5, 1.5], [0.0, 0.0], [0.0, 3.0]])
    np.testing.assert_array_equal(got.compute(), G.jacobian(["x", "z"], x=1.5, z=0.5))


# -- laziness --------------------------------------------------------------------------------

def test_nothing_is_computed_before_compute(monkeypatch):
    from dask.callbacks import Callback
    calls = []
    cls = _expr.CompiledExpression
    for method in ("_run", "_fused"):                # every NumPy pass goes through these
        real = getattr(cls, method)

        def counted(self, *args, _real=real, **kwargs):
            calls.append(1)
            return _real(self, *args, **kwargs)
        monkeypatch.setattr(cls, method, counted)
    started = []
    X = da.from_array(data((8, 4)), chunks=(3, 2))
    T = da.from_array(data((8, 4)), chunks=(2, 4))
    with Callback(start=lambda dsk: started.append(1)):
        results = [*F.jvp("x", T, x=X, y=X), *S.jvp(["x", "y"], [T, T], x=X, y=X),
                   F.vjp("y", T, x=X, y=0.5)[1], S.vjp(["x", "y"], 2.0, x=X, y=X)[1][0],
                   *L.value_and_jacobian(["x", "z"], x=X, y=X, z=1.0)[0],
                   L.jacobian("z", x=X, y=X, z=1.0), *V.value(x=X, y=X, z=2.0)]
    assert started == [] and calls == []            # no task ran, no kernel probed
    assert all(isinstance(r, da.Array) for r in results)
    dask.compute(*results)
    assert calls


# -- errors -------------------------------------------------------------------------------------

def test_product_errors_are_raised_when_the_graph_is_built():
    X = da.ones((4, 3), chunks=2)
    Xn = np.ones((4, 3))
    # each message is the NumPy path's: check both
    cases = [
        (ValueError, r"the tangent of 'x' has shape \(3,\) but variable 'x' has shape "
                     r"\(4, 3\); they must match",
         lambda x: F.jvp("x", da.ones(3, chunks=1), x=x, y=x)),
        (ValueError, r"the tangent of 'x' has shape \(4,\) but variable 'x'",
         lambda x: F.jvp("x", np.ones(4), x=x, y=x)),
        (ValueError, r"the tangent of 'y' has shape \(\) but variable 'y' has shape \(4, 3\)",
         lambda x: F.jvp("y", 1.0, x=x, y=x)),
        (ValueError, r"the tangent of 'y' has shape \(4, 3\) but variable 'y' has shape \(\)",
         lambda x: F.jvp("y", da.ones((4, 3), chunks=2), x=x, y=2.0)),
        (TypeError, "the tangent of 'x' has dtype complex128; it must be real numbers",
         lambda x: F.jvp("x", da.ones((4, 3), dtype=complex, chunks=2), x=x, y=x)),
        (ValueError, r"tangent must be a list of 2 arrays, one per variable of "
                     r"wrt=\['x', 'y'\]",
         lambda x: F.jvp(["x", "y"], [np.ones((4, 3))], x=x, y=x)),
        (ValueError, r"tangent must be a list of 2 arrays",
         lambda x: F.jvp(["x", "y"], np.ones((4, 3)), x=x, y=x)),
        (ValueError, r"cotangent has shape \(3,\) but the expression's value has shape "
                     r"\(4, 3\)",
         lambda x: F.vjp("x", da.ones(3, chunks=1), x=x, y=x)),
        (ValueError, r"cotangent has shape \(4, 3\) but the expression's value has shape \(\)",
         lambda x: S.vjp("x", np.ones((4, 3)), x=x, y=x)),
        (ValueError, r"unknown variable 'w'; the expression's variables are: x, y",
         lambda x: F.jvp("w", np.ones((4, 3)), x=x, y=x)),
        (ValueError, "wrt must be a variable name or a list of names, got None",
         lambda x: F.vjp(None, np.ones((4, 3)), x=x, y=x)),
        (ValueError, r"wrt names a variable twice: \['x', 'x'\]",
         lambda x: F.vjp(["x", "x"], np.ones((4, 3)), x=x, y=x)),
        (ValueError, "missing value for variable 'y'",
         lambda x: F.jvp("x", np.ones((4, 3)), x=x)),
        (ValueError, "jvp and vjp take a single expression",
         lambda x: L.jvp("x", np.ones((4, 3)), x=x, y=x, z=1.0)),
        # jvp and vjp have no out= or format=: they are unknown variables
        (ValueError, "unknown variable 'out'",
         lambda x: F.jvp("x", np.ones((4, 3)), x=x, y=x, out=np.empty((4, 3)))),
        (ValueError, "unknown variable 'format'",
         lambda x: F.vjp("x", np.ones((4, 3)), x=x, y=x, format="dense")),
    ]
    for error, message, call in cases:
        with pytest.raises(error, match=message):
            call(X)
        with pytest.raises(error, match=message):
            call(Xn)
    with pytest.raises(ValueError, match=r"x has shape \(4, 3\) and y has shape \(2,\)"):
        F.jvp("x", X, x=X, y=da.ones(2, chunks=1))
    unknown = X[X[:, 0] > 0]                                     # nan chunk sizes
    with pytest.raises(ValueError, match=r"the tangent of 'x' has unknown chunk sizes "
                                         r"\(shape \(nan, 3\)\); call its "
                                         r"compute_chunk_sizes\(\) first"):
        F.jvp("x", unknown, x=X, y=X)
    masked = X.map_blocks(np.ma.masked_invalid, meta=np.ma.masked_array(np.empty((0, 0))))
    with pytest.raises(TypeError, match="cotangent is a Dask array of MaskedArray blocks"):
        F.vjp("x", masked, x=X, y=X)


def test_stacked_errors_are_raised_when_the_graph_is_built():
    X = da.ones((4, 3), chunks=2)
    Xn = np.ones((4, 3))
    cases = [
        (ValueError, "format='dense'.*format='compact'",
         lambda x: L.jacobian(["x", "y"], x=x, y=x, z=1.0, format="dense"),
         "format='dense'|dense"),
        (TypeError, "out= is not supported with Dask arrays.*store",
         lambda x: L.jacobian(["x", "y"], x=x, y=x, z=1.0, out=np.empty((2, 24))), None),
        (TypeError, "value_out= is not supported with Dask arrays",
         lambda x: L.value_and_jacobian("z", x=x, y=x, z=1.0, value_out=np.empty(2)), None),
        (TypeError, "out= is not supported with Dask arrays",
         lambda x: V.value(x=x, y=x, z=1.0, out=np.empty((4, 3))), None),
        (ValueError, "needs scalar-valued expressions",
         lambda x: F.jacobian(["x", "y"], x=x, y=x), "same"),
        (ValueError, "needs scalar-valued expressions",
         lambda x: V.jacobian("x", x=x, y=x, z=1.0), "same"),
        (ValueError, r"unknown variable 'w'",
         lambda x: L.jacobian(["x", "w"], x=x, y=x, z=1.0), "same"),
        (ValueError, "layout must be",
         lambda x: L.jacobian(["x"], x=x, y=x, z=1.0, layout="sideways"), "same"),
        (ValueError, r"missing value for variable 'z'",
         lambda x: V.value(x=x, y=x), "same"),
    ]
    for error, message, call, numpy_message in cases:
        with pytest.raises(error, match=message):
            call(X)
        if numpy_message == "same":          # the NumPy path raises the same error
            with pytest.raises(error, match=message):
                call(Xn)


def test_inner_sums_run_one_graph_per_stage():
    """sum(x * y) / 4 and a list with it: closed forms (d/dx = y / 4)."""
    x, y = data((4, 3)), data((4, 3))
    X, Y = da.from_array(x, chunks=2), da.from_array(y, chunks=(3, 2))
    t = data((4, 3))
    inner = fastjac.compile([fastjac.sum(x_ * y_) / 4, fastjac.sum(x_)])
    value, jv = MEAN.jvp("x", da.from_array(t, chunks=2), x=X, y=Y)
    close(value.compute(), (x * y).sum() / 4, np.float64)
    close(jv.compute(), (y * t).sum() / 4, np.float64)
    close(MEAN.vjp("x", 2.0, x=X, y=Y)[1].compute(), y / 2, np.float64)
    close(MEAN.jacobian(["x", "y"], x=X, y=Y).compute(),
          np.concatenate([y.ravel(), x.ravel()])[None] / 4, np.float64)
    close(inner.jacobian("x", x=X, y=Y).compute(), np.stack([y / 4, np.ones_like(x)]),
          np.float64)
    values = inner.value(x=X, y=Y)
    close(values[0].compute(), (x * y).sum() / 4, np.float64)
    close(values[1].compute(), x.sum(), np.float64)
    close(MEAN.jacobian("x", x=X, y=Y).compute(), y / 4, np.float64)


# -- dask.distributed ---------------------------------------------------------------------------

# (the ``client`` fixture, a LocalCluster of two processes: tests/conftest.py)

@pytest.mark.cluster
def test_cluster_products_and_stacked_jacobians(client):
    X, Y, T = data((3000, 20)), data((3000, 20)), data((3000, 20))
    dX = da.from_array(X, chunks=(700, 20))
    dY = da.from_array(Y, chunks=(1000, 10))
    futures = client.compute([F.jvp("x", da.from_array(T, chunks=500), x=dX, y=dY)[1],
                              S.jvp("x", T, x=dX, y=dY)[1],
                              *F.vjp(["x", "y"], T, x=dX, y=0.5)[1],
                              L.jacobian(["x", "z"], x=dX, y=dY, z=0.5),
                              V.value(x=dX, y=dY, z=0.5)[1]])
    jvp, sjvp, gx, gz, M, total = client.gather(futures)
    np.testing.assert_array_equal(jvp, F.jvp("x", T, x=X, y=Y)[1])
    terms = J_x(X, Y) * T
    close(sjvp, fsum(terms), np.float64, scale=fsum(np.abs(terms)))
    np.testing.assert_array_equal(gx, F.vjp("x", T, x=X, y=0.5)[1])
    close(gz, fsum(X * T), np.float64, scale=fsum(X * T))
    np.testing.assert_array_equal(M[:, :-1], L.jacobian(["x", "z"], x=X, y=Y, z=0.5)[:, :-1])
    close(M[:, -1], [X.size, 1.0], np.float64, scale=X.size)
    close(total, fsum(np.tanh(X)), np.float64, scale=fsum(np.tanh(X)))
