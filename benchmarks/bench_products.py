"""Products with the Jacobian of compiled expressions: ``f.jvp`` and ``f.vjp``.

Each case is (value, product) of one expression by w with a random tangent
t (jvp) or cotangent u (vjp), against ``jax.jit`` of ``jax.jvp`` /
``jax.vjp`` with the same vectors, PyTorch's ``torch.func.jvp`` /
``torch.func.vjp``, and the hand-written NumPy formula (value, derivative,
then the product). fastjac's calls allocate their results (jvp and vjp have
no ``out=``), so the ``fastjac`` and ``fastjac_alloc`` routes are the same
call.

* ``maximum(w*x+3,0)*x-w`` (memory-bound): reads w, x and the vector,
  writes y and the product; its STREAM twin is triad2 moving the same
  bytes (5 arrays' worth in 4 arrays).
* ``sin(w)*exp(x)-w/x`` (compute-bound).
* ``sum(tanh(w*x)+3)``: jvp reads w, x, t and writes a number; vjp (a
  scalar cotangent) reads w, x and writes the gradient.
* ``sum(tanh(w*X))`` by a shared w of 16 (X of n / 16 rows): the VJP sums
  over the rows (a broadcast variable).
"""
import numpy as np

from ._harness import Case, Rival, data
from .bench_expr import _arith_nodiv as _arith, _sumtanh, _trig, lib_of
from ._rivals import load

FAMILY = "products"
DESCRIPTION = "f.jvp and f.vjp of compiled expressions against JAX and PyTorch"

WIDTH = 16              # the shared parameter's length in the broadcast case


def _sumtanh_rows(lib):
    return lambda w, x: lib["sum"](lib["tanh"](w * x))


def _np_arith(w, x):
    z = w * x + 3
    return np.maximum(z, 0) * x - w, np.where(z > 0, x * x, 0) - 1


def _np_trig(w, x):
    e = np.exp(x)
    return np.sin(w) * e - w / x, np.cos(w) * e - 1 / x


def _np_sumtanh(w, x):
    t = np.tanh(w * x)
    return np.sum(t) + 3 * t.size, (1 - t * t) * x


def _np_sumtanh_rows(w, x):
    t = np.tanh(w * x)
    return np.sum(t), ((1 - t * t) * x).sum(axis=0)


# name: (fastjac builder, lib formula, NumPy (value, d/dw per element), kind,
#        scalar result, broadcast w)
EXPRS = {
    "maximum(w*x+3,0)*x-w": (lambda fj, w, x: fj.maximum(w * x + 3, 0) * x - w, _arith,
                             _np_arith, "memory", False, False),
    "sin(w)*exp(x)-w/x": (lambda fj, w, x: fj.sin(w) * fj.exp(x) - w / x, _trig, _np_trig,
                          "compute", False, False),
    "sum(tanh(w*x)+3)": (lambda fj, w, x: fj.sum(fj.tanh(w * x) + 3), _sumtanh, _np_sumtanh,
                         "compute", True, False),
    "sum(tanh(w*X)), w shared by rows": (lambda fj, w, x: fj.sum(fj.tanh(w * x)),
                                         _sumtanh_rows, _np_sumtanh_rows, "compute", True,
                                         True),
}


def _operands(n, dtype, shared):
    d = data(n, dtype)
    w, x = d["w"], d["x"]
    if shared:
        width = min(WIDTH, n)
        x = x[:n // width * width].reshape(-1, width)
        w = w[:width].copy()
    return w, x


def _case(name, mode, n, dtype):
    import fastjac as fj

    build, formula, np_formula, kind, scalar, shared = EXPRS[name]
    w, x = _operands(n, dtype, shared)
    f = fj.compile(build(fj, fj.var("w"), fj.var("x")))
    rng = np.random.default_rng(7)
    t = rng.standard_normal(w.shape).astype(dtype)
    u = np.dtype(dtype).type(1.5) if scalar else rng.standard_normal(x.shape).astype(dtype)

    if mode == "jvp":
        def fastjac():
            return f.jvp("w", t, w=w, x=x)
    else:
        def fastjac():
            return f.vjp("w", u, w=w, x=x)

    def numpy():
        # np_formula's d/dw is per element, or the gradient for a scalar result
        def fn():
            y, d = np_formula(w, x)
            if mode == "vjp":
                return y, d * u
            return y, (np.sum(d * t) if scalar else d * t)
        return fn

    def jax():
        jx = load("jax")
        jnp = jx.numpy
        g = formula(lib_of(jnp))
        wj, xj, tj, uj = (jx.device_put(a) for a in (w, x, t, np.asarray(u)))
        if mode == "jvp":
            call = jx.jit(lambda a, b, v: jx.jvp(lambda p: g(p, b), (a,), (v,)))

            def fn():
                y, p = call(wj, xj, tj)
                return y.block_until_ready(), p.block_until_ready()
            return fn

        def vjp(a, b, c):
            y, back = jx.vjp(lambda p: g(p, b), a)
            return y, back(c)[0]
        call = jx.jit(vjp)

        def fn():
            y, p = call(wj, xj, uj)
            return y.block_until_ready(), p.block_until_ready()
        return fn

    def torch():
        th = load("torch")
        from torch.func import jvp, vjp
        g = formula(lib_of(th))
        wt, xt, tt = th.from_numpy(w), th.from_numpy(x), th.from_numpy(t)
        ut = th.tensor(u) if scalar else th.from_numpy(u)
        if mode == "jvp":
            return lambda: jvp(lambda p: g(p, xt), (wt,), (tt,))

        def fn():
            y, back = vjp(lambda p: g(p, xt), wt)
            return y, back(ut)[0]
        return fn

    itemsize = np.dtype(dtype).itemsize
    size = x.size
    if scalar and mode == "jvp":            # reads w, x, t; writes a number
        arrays, reads, writes = 3, 1, 0
    elif scalar and shared:                 # reads X (w, the gradient: 16 numbers)
        arrays, reads, writes = 1, 1, 0
    elif scalar:                            # reads w, x; writes the gradient
        arrays, reads, writes = 3, 2, 1
    else:                                   # reads w, x, the vector; writes y, product
        arrays, reads, writes = 5, 2, 2
    return Case(family=FAMILY, name=f"{mode} {name}", kind=kind, n=n, dtype=np.dtype(dtype),
                nbytes=arrays * size * itemsize, fastjac=fastjac, fastjac_alloc=fastjac,
                rivals=[Rival("numpy", numpy), Rival("jax", jax), Rival("torch", torch)],
                quick=name.startswith("maximum"), reads=reads, writes=writes,
                rtol=1e-9 if np.dtype(dtype) == np.float64 else 2e-3)


def cases(n, dtype):
    try:
        import fastjac  # noqa: F401
    except ImportError:
        return []
    return [_case(name, mode, n, dtype) for name in EXPRS for mode in ("jvp", "vjp")]
