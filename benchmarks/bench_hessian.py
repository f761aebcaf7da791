"""Second derivatives: the diagonal Hessian of y = sum(op(a, b)) (sum_hessian).

Each element of op(a, b) reads one element of the operand, so the Hessian
is diagonal and fastjac computes its n numbers in one pass, with the
kernels of the other families. The autodiff rivals get the structured route
a user would take: forward-over-reverse (the JVP of the gradient) with a
tangent of ones, which is that diagonal; NumPy gets the closed form.
"""
import numpy as np

from ._harness import data, op_case

FAMILY = "hessian"
DESCRIPTION = "sum_hessian(op, a, b, wrt=k): the diagonal of d2 sum(op(a, b)) / dk2"

QUICK = {"sum(log(x)) d2/dx2", "sum(tanh(s)) d2/ds2"}


def _log():
    def into(x, out):
        np.multiply(x, x, out=out)
        np.reciprocal(out, out=out)
        np.negative(out, out=out)
    return (lambda x: -1.0 / (x * x)), into


def _tanh():
    def into(s, out):
        t = np.tanh(s)
        np.square(t, out=out)
        np.subtract(1.0, out, out=out)
        out *= t
        out *= -2.0
    return (lambda s: -2.0 * np.tanh(s) * (1.0 - np.tanh(s) ** 2)), into


def _divide_dxx():
    def into(w, x, out):
        np.multiply(x, x, out=out)
        out *= x
        np.divide(w, out, out=out)
        out *= 2.0
    return (lambda w, x: 2.0 * w / (x * x * x)), into


def _exp():
    return (lambda s: np.exp(s)), (lambda s, out: np.exp(s, out=out))


# name: (op, names, wrt, fwd, formula, numpy, reads, kind)
CASES = {
    "sum(log(x)) d2/dx2": ("log", ("x",), 0, "log(x)", "-1.0 / (x * x)", _log(), 1, "memory"),
    "sum(w / x) d2/dx2": ("divide", ("w", "x"), 1, "w / x", "2.0 * w / (x * x * x)",
                          _divide_dxx(), 2, "memory"),
    "sum(exp(s)) d2/ds2": ("exp", ("s",), 0, "exp(s)", "exp(s)", _exp(), 1, "compute"),
    "sum(tanh(s)) d2/ds2": ("tanh", ("s",), 0, "tanh(s)",
                            "-2.0 * tanh(s) * (1.0 - tanh(s) ** 2)", _tanh(), 1, "compute"),
}


def cases(n, dtype):
    d = data(n, dtype)
    return [op_case(FAMILY, name, kind, op, tuple(d[v] for v in names), wrt=wrt, reduce=True,
                    hessian=True, names=names, fwd=fwd, formula=formula, numpy=alloc,
                    numpy_out=into, reads=reads, quick=name in QUICK)
            for name, (op, names, wrt, fwd, formula, (alloc, into), reads, kind)
            in CASES.items()]
