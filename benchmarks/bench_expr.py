"""Composed-expression family: value + derivative of a whole expression in one
fused pass (fastjac.compile, spec section 6), and the neuron-loss gradient.

* "5-op" cases: y = maximum(w * x + 3, 0) - w / x (multiply, add, maximum,
  divide, subtract; memory-bound: read w and x, write y and dy/dw) and the
  spec's y = sin(w) * exp(x) - w / x (compute-bound: sin, cos, exp). The
  answer is the (2, n) array [y, dy/dw]. fastjac's routes: ``fastjac`` is
  ``value_and_jacobian(..., out=, value_out=)``, ``fastjac_kernel`` the
  ``ExprKernel`` of ``compiled.kernel("w", value=True)``. Rivals: the NumPy
  formulas (allocating, and into preallocated arrays), numexpr (two fused
  evaluate calls with out=), ``jax.jit`` of ``jax.jvp`` with a ones tangent
  (it returns y and the tangent), PyTorch's ``torch.func.jvp``. Their STREAM
  twin (n >= 10^5) reads two arrays and writes two (``triad2``).
* "sum(tanh(w*x)+3)": value and gradient (the issue's example).
* "neuron": dC/dw of C = mean((y - relu(X w + b))^2), X of N x 16 (N = n, at
  most 10^6; the case's ``n`` stays the size asked for), against
  ``jax.jit(jax.grad(loss))`` and PyTorch autograd; its bound is one read of
  X and y (``nbytes`` = X.nbytes + y.nbytes; w is 16 numbers), and its
  STREAM twin the parallel sum over as many bytes (reads 1, writes 0).
"""
import numpy as np

from ._harness import Case, Rival, Skip, data
from ._rivals import load

FAMILY = "expr"
DESCRIPTION = ("compiled expressions: value + derivative in one fused pass; the neuron-loss "
               "gradient")

NEURON_FEATURES = 16
NEURON_MAX_ROWS = 1_000_000


# -- the expressions, in every library ------------------------------------------------

def lib_of(module):
    """The functions the formulas below call, from jax.numpy or torch."""
    return {name: getattr(module, name) for name in ("maximum", "sin", "exp", "tanh", "sum")}


def _arith(lib):
    return lambda w, x: lib["maximum"](w * x + 3, 0 * w) - w / x


def _arith_nodiv(lib):
    return lambda w, x: lib["maximum"](w * x + 3, 0 * w) * x - w


def _trig(lib):
    return lambda w, x: lib["sin"](w) * lib["exp"](x) - w / x


def _sumtanh(lib):
    return lambda w, x: lib["sum"](lib["tanh"](w * x) + 3)


EXPRS = {
    # name: (fastjac builder, lib formula, numpy value+derivative into (v, d, t1, t2),
    #        numexpr (value, derivative), kind, reduce)
    "maximum(w*x+3,0)-w/x value+d/dw": (
        lambda fj, w, x: fj.maximum(w * x + 3, 0) - w / x, _arith,
        "_np_arith", ("where(w*x+3>0, w*x+3, 0) - w/x", "where(w*x+3>0, x, 0) - 1/x"),
        "memory", False),
    # the same five kinds of work without a division: memory-bound on this CPU,
    # where two divisions per element are not (see benchmarks/analysis.md)
    "maximum(w*x+3,0)*x-w value+d/dw": (
        lambda fj, w, x: fj.maximum(w * x + 3, 0) * x - w, _arith_nodiv,
        "_np_arith_nodiv", ("where(w*x+3>0, w*x+3, 0)*x - w", "where(w*x+3>0, x*x, 0) - 1"),
        "memory", False),
    "sin(w)*exp(x)-w/x value+d/dw": (
        lambda fj, w, x: fj.sin(w) * fj.exp(x) - w / x, _trig,
        "_np_trig", ("sin(w)*exp(x) - w/x", "cos(w)*exp(x) - 1/x"), "compute", False),
    "sum(tanh(w*x)+3) value+grad d/dw": (
        lambda fj, w, x: fj.sum(fj.tanh(w * x) + 3), _sumtanh,
        "_np_sumtanh", None, "compute", True),
}


def _np_arith(w, x, v, d, t1, t2):
    np.multiply(w, x, out=t1)
    t1 += 3
    np.maximum(t1, 0, out=v)
    np.divide(w, x, out=t2)
    v -= t2
    np.greater(t1, 0, out=d)
    d *= x
    np.divide(1.0, x, out=t2)
    d -= t2


def _np_arith_nodiv(w, x, v, d, t1, t2):
    np.multiply(w, x, out=t1)
    t1 += 3
    np.maximum(t1, 0, out=v)
    v *= x
    v -= w
    np.greater(t1, 0, out=d)
    np.multiply(x, x, out=t2)
    d *= t2
    d -= 1


def _np_trig(w, x, v, d, t1, t2):
    np.sin(w, out=t1)
    np.exp(x, out=t2)
    np.multiply(t1, t2, out=v)
    np.cos(w, out=t1)
    np.multiply(t1, t2, out=d)
    np.divide(w, x, out=t1)
    v -= t1
    np.divide(1.0, x, out=t1)
    d -= t1


def _np_sumtanh(w, x, v, d, t1, t2):
    np.multiply(w, x, out=t1)
    np.tanh(t1, out=t1)
    v[...] = np.sum(t1) + 3 * t1.size
    np.square(t1, out=t1)
    np.subtract(1.0, t1, out=d)
    d *= x


def _expr_case(name, n, dtype):
    import fastjac as fj

    build, formula, np_name, ne, kind, reduce = EXPRS[name]
    d = data(n, dtype)
    w, x = d["w"], d["x"]
    compiled = fj.compile(build(fj, fj.var("w"), fj.var("x")), wrt="w")
    kernel = compiled.kernel("w", value=True)
    if reduce:
        value, grad = np.empty((), dtype), np.empty(n, dtype)

        def fastjac_out():
            compiled.value_and_jacobian("w", w=w, x=x, out=grad)
            return grad

        def fastjac_kernel():
            kernel(w, x, value, grad)
            return grad
        writes = 1
    else:
        buf = np.empty((2, n), dtype)

        def fastjac_out():
            compiled.value_and_jacobian("w", w=w, x=x, out=buf[1], value_out=buf[0])
            return buf

        def fastjac_kernel():
            kernel(w, x, buf[0], buf[1])
            return buf
        writes = 2

    def fastjac_alloc():
        v, j = compiled.value_and_jacobian("w", w=w, x=x)
        return j if reduce else (v, j)

    np_into = globals()[np_name]

    def numpy_out():
        v = np.empty((), dtype) if reduce else np.empty(n, dtype)
        dd, t1, t2 = np.empty(n, dtype), np.empty(n, dtype), np.empty(n, dtype)

        def fn():
            np_into(w, x, v, dd, t1, t2)
            return dd if reduce else (v, dd)
        return fn

    def numpy_alloc():
        def fn():
            v = np.empty((), dtype) if reduce else np.empty(n, dtype)
            dd, t1, t2 = np.empty(n, dtype), np.empty(n, dtype), np.empty(n, dtype)
            np_into(w, x, v, dd, t1, t2)
            return dd if reduce else (v, dd)
        return fn

    def numexpr():
        if ne is None:
            raise Skip("n/a: numexpr has no tanh-sum with a gradient in one call")
        mod = load("numexpr")
        v, dd = np.empty(n, dtype), np.empty(n, dtype)
        local = {"w": w, "x": x}

        def fn():
            mod.evaluate(ne[0], local_dict=local, out=v, casting="same_kind")
            mod.evaluate(ne[1], local_dict=local, out=dd, casting="same_kind")
            return v, dd
        return fn

    def jax():
        jx = load("jax")
        jnp = jx.numpy
        f = formula(lib_of(jnp))
        wj, xj = jx.device_put(w), jx.device_put(x)
        if reduce:
            vg = jx.jit(jx.value_and_grad(f, argnums=0))

            def fn():
                v, g = vg(wj, xj)
                return g.block_until_ready()
            return fn
        jvp = jx.jit(lambda a, b: jx.jvp(lambda u: f(u, b), (a,), (jnp.ones_like(a),)))

        def fn():
            y, t = jvp(wj, xj)
            return y.block_until_ready(), t.block_until_ready()
        return fn

    def torch():
        th = load("torch")
        f = formula(lib_of(th))
        wt, xt = th.from_numpy(w), th.from_numpy(x)
        if reduce:
            leaf = wt.detach().clone().requires_grad_(True)

            def fn():
                y = f(leaf, xt)
                return th.autograd.grad(y, leaf)[0]
            return fn
        from torch.func import jvp
        ones = th.ones_like(wt)

        def fn():
            return jvp(lambda u: f(u, xt), (wt,), (ones,))
        return fn

    rivals = [Rival("numpy", numpy_alloc), Rival("numpy_out", numpy_out),
              Rival("numexpr", numexpr), Rival("jax", jax), Rival("torch", torch)]
    itemsize = np.dtype(dtype).itemsize
    return Case(family=FAMILY, name=name, kind=kind, n=n, dtype=np.dtype(dtype),
                nbytes=(2 + writes) * n * itemsize, fastjac=fastjac_out,
                fastjac_alloc=fastjac_alloc, fastjac_kernel=fastjac_kernel, rivals=rivals,
                quick=name.startswith("maximum(w*x+3,0)-"), reads=2, writes=writes)


# -- the neuron ------------------------------------------------------------------------

def _neuron_case(n, dtype):
    import fastjac as fj

    N = min(n, NEURON_MAX_ROWS)
    rng = np.random.default_rng(20261)
    X = rng.standard_normal((N, NEURON_FEATURES)).astype(dtype)
    y = rng.standard_normal(N).astype(dtype)
    w = (rng.standard_normal(NEURON_FEATURES) * 0.3).astype(dtype)
    b = 0.1
    gw = np.empty(NEURON_FEATURES, dtype)

    def fastjac_out():
        fj.neuron_gradient(X, y, w, b, out=gw)
        return gw

    def fastjac_alloc():
        return fj.neuron_gradient(X, y, w, b)[0]

    def jax():
        jx = load("jax")
        jnp = jx.numpy
        Xj, yj, wj = jx.device_put(X), jx.device_put(y), jx.device_put(w)
        bj = jnp.asarray(b, dtype)

        def loss(w_, b_):
            return jnp.mean((yj - jx.nn.relu(Xj @ w_ + b_)) ** 2)
        grad = jx.jit(jx.grad(loss, argnums=(0, 1)))

        def fn():
            g_w, g_b = grad(wj, bj)
            g_b.block_until_ready()
            return g_w.block_until_ready()
        return fn

    def torch():
        th = load("torch")
        Xt, yt = th.from_numpy(X), th.from_numpy(y)
        wt = th.from_numpy(w.copy()).requires_grad_(True)
        bt = th.tensor(b, dtype=Xt.dtype, requires_grad=True)

        def fn():
            loss = th.mean((yt - th.relu(Xt @ wt + bt)) ** 2)
            return th.autograd.grad(loss, (wt, bt))[0]
        return fn

    def numpy_alloc():
        def fn():
            z = X @ w + dtype(b)
            r = np.where(z > 0, z - y, 0)
            return (2 / N) * (r @ X)
        return fn

    # Traffic: one read of X and y, nothing written but 16 numbers: the
    # STREAM "read" pattern (reads=1, writes=0) over X.nbytes + y.nbytes.
    return Case(family=FAMILY, name=f"neuron dC/dw, N={N} x {NEURON_FEATURES}", kind="memory",
                n=n, dtype=np.dtype(dtype), nbytes=X.nbytes + y.nbytes, fastjac=fastjac_out,
                fastjac_alloc=fastjac_alloc,
                rivals=[Rival("numpy", numpy_alloc), Rival("jax", jax), Rival("torch", torch)],
                quick=True, reads=1, writes=0, rtol=1e-9 if dtype == np.float64 else 1e-3)


def cases(n, dtype):
    out = [_expr_case(name, n, dtype) for name in EXPRS]
    if n >= 1000:
        out.append(_neuron_case(n, np.dtype(dtype).type))
    return out
