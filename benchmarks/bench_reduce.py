"""Sum-reduction family: gradients of y = sum(op(a, b)) (section 5).

With respect to an array the gradient has n entries (for y = w . x it is
x: a copy); with respect to a scalar operand it is one number, a sum over
the array (d sum(x z)/dz = sum(x)). The autodiff rivals take the gradient
of the sum in reverse mode, their natural route; numexpr and numba sum the
derivative's terms in one fused pass.
"""
import numpy as np

from ._harness import data, op_case

FAMILY = "reduce"
DESCRIPTION = "sum_gradient(op, a, b, wrt=0|1): a gradient, or one number for a scalar operand"

QUICK = {"sum(w * x) d/dw", "sum(x * z) d/dz"}


def _fill_ones():
    return (lambda x: np.ones_like(x)), (lambda x, out: out.fill(1.0))


def _copy(i):
    return (lambda *a: a[i].copy()), (lambda *a: np.copyto(a[-1], a[i]))


def _divide_dx():
    def into(w, x, out):
        np.multiply(x, x, out=out)
        np.divide(w, out, out=out)
        np.negative(out, out=out)
    return (lambda w, x: -w / (x * x)), into


def _max_dw():
    def into(w, x, out):
        np.subtract(w, x, out=out)
        np.sign(out, out=out)
        out += 1.0
        out *= 0.5
    return (lambda w, x: 0.5 * (1.0 + np.sign(w - x))), into


def _tanh():
    def into(s, out):
        np.tanh(s, out=out)
        np.square(out, out=out)
        np.subtract(1.0, out, out=out)
    return (lambda s: 1.0 - np.tanh(s) ** 2), into


# name: (op, names, wrt, fwd, formula (the gradient, or the summed term), numpy, reads, kind)
CASES = {
    "sum(x) d/dx": (None, ("x",), 0, "x", "1.0", _fill_ones(), 0, "memory"),
    "sum(tanh(s)) d/ds": ("tanh", ("s",), 0, "tanh(s)", "1.0 - tanh(s) ** 2", _tanh(), 1,
                          "compute"),
    "sum(w * x) d/dw": ("multiply", ("w", "x"), 0, "w * x", "x", _copy(1), 1, "memory"),
    "sum(w * x) d/dx": ("multiply", ("w", "x"), 1, "w * x", "w", _copy(0), 1, "memory"),
    "sum(w / x) d/dx": ("divide", ("w", "x"), 1, "w / x", "-w / (x * x)", _divide_dx(), 2,
                        "memory"),
    "sum(maximum(w, x)) d/dw": ("maximum", ("w", "x"), 0, "maximum(w, x)",
                                "where(w > x, 1.0, where(w < x, 0.0, 0.5))", _max_dw(), 2,
                                "memory"),
    "sum(x * z) d/dz": ("multiply", ("x", "z"), 1, "x * z", "x",
                        ((lambda x, z: np.sum(x)), None), 1, "memory"),
    "sum(x / z) d/dz": ("divide", ("x", "z"), 1, "x / z", "-x / (z * z)",
                        ((lambda x, z: -np.sum(x) / (z * z)), None), 1, "memory"),
    "sum(x ** z) d/dz": ("power", ("x", "z"), 1, "x ** z", "x ** z * log(x)",
                         ((lambda x, z: np.sum(x ** z * np.log(x))), None), 1, "compute"),
}


def cases(n, dtype):
    d = data(n, dtype)
    out = []
    for name, (op, names, wrt, fwd, formula, (alloc, into), reads, kind) in CASES.items():
        scalar = names[wrt] == "z"
        out.append(op_case(
            FAMILY, name, kind, op, tuple(d[v] for v in names), wrt=wrt, reduce=True,
            names=names, fwd=fwd, formula=formula, numpy=alloc, numpy_out=into,
            reads=reads, quick=name in QUICK,
            rtol=1e-3 if scalar and np.dtype(dtype) == np.float32 else None))
    return out
