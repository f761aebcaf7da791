"""Broadcast family: a parameter shared by a batch, and sums over axes (issue 15).

The main case is the gradient with respect to a shared w of shape (n,) of
y = sum(op(w, X)) over a batch X of shape (N, n): one pass over X, with
nothing of the size of X allocated. The size of a case is that of X (the
``n`` of the suite); its width is 10 (4 at 16 elements) and, from 10^5
elements, 1000 as well; X is taken in C and in Fortran order. Beside it:
NumPy's best formula for the same numbers (``X.sum(0)``, allocating; the
einsum contraction into ``out``), JAX's ``jit(grad)`` and PyTorch's
``autograd.grad`` of the summed loss, and the STREAM read of X's bytes.
Per-row sums (a scale s of shape (N, 1), ``axis=-1``) and the diagonal
Jacobian of the column sums (``axis=0``) complete the family.
"""
import numpy as np

from . import _rivals
from ._harness import Case, Rival, call_with

FAMILY = "broadcast"
DESCRIPTION = ("sum_gradient(op, w, X) with w (n,) shared by the rows of X (N, n), "
               "and sums over axes: one pass over X")

QUICK = "sum(w * X) d/dw"         # in C order, at the first width


def _shared(w, X):
    """(NumPy allocating, NumPy into out) for each case name's formula."""
    dt = X.dtype

    def step(u, v):
        return np.where(u > v, dt.type(1), np.where(u < v, dt.type(0), dt.type(0.5)))

    return {
        "sum(w * X) d/dw": (lambda: X.sum(0), lambda out: np.einsum("ij->j", X, out=out)),
        "sum(maximum(w, X)) d/dw": (lambda: step(w, X).sum(0),
                                    lambda out: np.sum(step(w, X), 0, out=out)),
        "sum(w / X) d/dw": (lambda: (1 / X).sum(0), lambda out: np.sum(1 / X, 0, out=out)),
        "sum(X / w) d/dw": (lambda: -X.sum(0) / (w * w),
                            lambda out: np.divide(-np.sum(X, 0, out=out), w * w, out=out)),
        "sum(w ** X) d/dw": (lambda: (X * w ** (X - 1)).sum(0),
                             lambda out: np.sum(X * w ** (X - 1), 0, out=out)),
        "sum(w * X, axis=0) d/dw": (lambda: X.sum(0),
                                    lambda out: np.einsum("ij->j", X, out=out)),
    }


def _jax(op, k_first, k, X):
    """jax.jit(jax.grad) of sum(op(k, X)) (or op(X, k)) with respect to k."""
    jax = _rivals.load("jax")
    jnp = jax.numpy
    f = getattr(jnp, op)
    if k_first:
        def loss(k, X):
            return jnp.sum(f(k, X))
    else:
        def loss(k, X):
            return jnp.sum(f(X, k))
    call = call_with(jax.jit(jax.grad(loss)), (jax.device_put(k), jax.device_put(X)))
    return lambda: call().block_until_ready()


def _torch(op, k_first, k, X):
    """torch.autograd.grad of sum(op(k, X)) (or op(X, k)) with respect to k."""
    torch = _rivals.load("torch")
    f = {"multiply": torch.mul, "maximum": torch.maximum, "divide": torch.div,
         "power": torch.pow}[op]
    X = torch.from_numpy(X)
    leaf = torch.from_numpy(k.copy()).requires_grad_(True)
    grad = torch.autograd.grad
    if k_first:
        return lambda: grad(f(leaf, X).sum(), leaf)[0]
    return lambda: grad(f(X, leaf).sum(), leaf)[0]


def _autodiff(op, k_first, k, X):
    return [Rival("jax", lambda: _jax(op, k_first, k, X)),
            Rival("torch", lambda: _torch(op, k_first, k, X))]


# name: (op, w is operand a, axis)
SHARED = {
    "sum(w * X) d/dw": ("multiply", True, None),
    "sum(maximum(w, X)) d/dw": ("maximum", True, None),
    "sum(w / X) d/dw": ("divide", True, None),
    "sum(X / w) d/dw": ("divide", False, None),
    "sum(w ** X) d/dw": ("power", True, None),
    "sum(w * X, axis=0) d/dw": ("multiply", True, 0),
}
COMPUTE = {"sum(w ** X) d/dw"}


def _case(name, kind, X, out, fj, fj_alloc, numpy, numpy_out, autodiff, quick):
    return Case(family=FAMILY, name=name, kind=kind, n=X.size, dtype=X.dtype,
                nbytes=X.nbytes, fastjac=fj, fastjac_alloc=fj_alloc,
                rivals=[Rival("numpy", lambda: numpy),
                        Rival("numpy_out", lambda: (lambda: numpy_out(out)))] + autodiff,
                quick=quick, reads=1, writes=0, rtol=None if X.dtype == np.float64 else 1e-3)


def cases(n, dtype):
    import fastjac

    rng = np.random.default_rng(20261)
    widths = [10 if n >= 160 else 4] + ([1000] if n >= 100_000 else [])
    out_cases = []
    for width in widths:
        rows = max(1, n // width)
        base = rng.uniform(0.5, 1.5, (rows, width)).astype(dtype)
        w = rng.uniform(0.5, 1.5, width).astype(dtype)
        s = rng.uniform(0.5, 1.5, (rows, 1)).astype(dtype)
        for order in ("C", "F"):
            X = np.asarray(base, order=order)
            shape = f"X (N, {width}) {order}"
            formulas = _shared(w, X)
            for name, (op, w_first, axis) in SHARED.items():
                a, b, wrt = (w, X, 0) if w_first else (X, w, 1)
                out = np.empty(width, dtype)

                def fj(op=op, a=a, b=b, wrt=wrt, axis=axis, out=out):
                    return fastjac.sum_gradient(op, a, b, wrt=wrt, axis=axis, out=out)

                def fj_alloc(op=op, a=a, b=b, wrt=wrt, axis=axis):
                    return fastjac.sum_gradient(op, a, b, wrt=wrt, axis=axis)

                numpy, numpy_out = formulas[name]
                full = f"{name}, {shape}"
                out_cases.append(_case(full, "compute" if name in COMPUTE else "memory",
                                       X, out, fj, fj_alloc, numpy, numpy_out,
                                       _autodiff(op, w_first, w, X),
                                       name == QUICK and order == "C" and width == widths[0]))
            # per-row sums: s (N, 1) against X, y = sum(s * X, axis=-1)
            out = np.empty(rows, dtype)

            def fj(s=s, X=X, out=out):
                return fastjac.sum_gradient("multiply", s, X, axis=-1, out=out)

            def fj_alloc(s=s, X=X):
                return fastjac.sum_gradient("multiply", s, X, axis=-1)

            out_cases.append(_case(f"sum(s * X, axis=-1) d/ds, {shape}", "memory", X, out, fj,
                                   fj_alloc, lambda X=X: X.sum(1),
                                   lambda out, X=X: np.einsum("ij->i", X, out=out),
                                   _autodiff("multiply", True, s, X), False))
    return out_cases
