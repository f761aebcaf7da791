"""Element-wise family: the diagonal Jacobians of sections 2 and 3.

Every binary operator with respect to each operand, y = w op x, and every
unary function, y = f(s) (or f(w) where the function needs a positive
argument). The hand-written NumPy formula is each rival's cheapest route:
``∂(w x)/∂w`` is a copy of x, ``∂(w + x)/∂w`` a fill with ones.
"""
import numpy as np

from ._harness import data, op_case

FAMILY = "elementwise"
DESCRIPTION = "jacobian(op, w, x, wrt=0|1) and jacobian(f, x): the diagonal"

# Computed in the sense: transcendental derivatives.
COMPUTE = {"power", "exp", "log", "sin", "cos", "tanh", "sigmoid"}
QUICK = {("multiply", 0), ("divide", 1), ("tanh", 0)}


def _fill(value):
    def alloc(*args):
        return np.full(np.shape(args[0]), value, dtype=args[0].dtype)

    def into(*args):
        args[-1].fill(value)
    return alloc, into


def _copy(i, sign=1):
    if sign > 0:
        return (lambda *a: a[i].copy()), (lambda *a: np.copyto(a[-1], a[i]))
    return (lambda *a: -a[i]), (lambda *a: np.negative(a[i], out=a[-1]))


def _tie_step(sign):
    # d max(w, x)/dw: 1 where w > x, 0 where w < x, 0.5 at a tie = (1 + sign(w - x)) / 2
    def alloc(w, x):
        return 0.5 * (1.0 + sign * np.sign(w - x))

    def into(w, x, out):
        np.subtract(w, x, out=out)
        np.sign(out, out=out)
        if sign < 0:
            np.negative(out, out=out)
        out += 1.0
        out *= 0.5
    return alloc, into


def _divide_db():
    def into(w, x, out):
        np.multiply(x, x, out=out)
        np.divide(w, out, out=out)
        np.negative(out, out=out)
    return (lambda w, x: -w / (x * x)), into


def _power_da():
    def into(w, x, out):
        np.subtract(x, 1.0, out=out)
        np.power(w, out, out=out)
        out *= x
    return (lambda w, x: x * w ** (x - 1.0)), into


def _power_db():
    def into(w, x, out):
        np.power(w, x, out=out)
        out *= np.log(w)
    return (lambda w, x: w ** x * np.log(w)), into


# op: (fwd, [(formula wrt w, (numpy, numpy_out), reads), (… wrt x …)])
BINARY = {
    "add": ("w + x", [("1.0", _fill(1.0), 0), ("1.0", _fill(1.0), 0)]),
    "subtract": ("w - x", [("1.0", _fill(1.0), 0), ("-1.0", _fill(-1.0), 0)]),
    "multiply": ("w * x", [("x", _copy(1), 1), ("w", _copy(0), 1)]),
    "divide": ("w / x", [("1.0 / x", ((lambda w, x: 1.0 / x),
                                       (lambda w, x, o: np.divide(1.0, x, out=o))), 1),
                         ("-w / (x * x)", _divide_db(), 2)]),
    "maximum": ("maximum(w, x)",
                [("where(w > x, 1.0, where(w < x, 0.0, 0.5))", _tie_step(1), 2),
                 ("where(x > w, 1.0, where(x < w, 0.0, 0.5))", _tie_step(-1), 2)]),
    "minimum": ("minimum(w, x)",
                [("where(w < x, 1.0, where(w > x, 0.0, 0.5))", _tie_step(-1), 2),
                 ("where(x < w, 1.0, where(x > w, 0.0, 0.5))", _tie_step(1), 2)]),
    "greater": ("greater(w, x)", [("0.0", _fill(0.0), 0), ("0.0", _fill(0.0), 0)]),
    "less": ("less(w, x)", [("0.0", _fill(0.0), 0), ("0.0", _fill(0.0), 0)]),
    "power": ("w ** x", [("x * w ** (x - 1.0)", _power_da(), 2),
                         ("w ** x * log(w)", _power_db(), 2)]),
}


def _sqrt():
    def into(x, out):
        np.sqrt(x, out=out)
        np.divide(0.5, out, out=out)
    return (lambda x: 0.5 / np.sqrt(x)), into


def _tanh():
    def into(x, out):
        np.tanh(x, out=out)
        np.square(out, out=out)
        np.subtract(1.0, out, out=out)
    return (lambda x: 1.0 - np.tanh(x) ** 2), into


def _sigmoid():
    # s(1 - s) = (1 - tanh(x/2)^2) / 4: one transcendental, no overflow
    def into(x, out):
        np.multiply(x, 0.5, out=out)
        np.tanh(out, out=out)
        np.square(out, out=out)
        np.subtract(1.0, out, out=out)
        out *= 0.25
    return (lambda x: 0.25 * (1.0 - np.tanh(0.5 * x) ** 2)), into


def _relu():
    def into(x, out):
        np.greater(x, 0.0, out=out)
    return (lambda x: (x > 0).astype(x.dtype)), into


def _times(factor):
    return (lambda x: x * factor), (lambda x, o: np.multiply(x, factor, out=o))


def _ufunc(f):
    def alloc(x):
        return f(x)

    def into(x, out):
        f(x, out=out)
    return alloc, into


def _scaled(f, factor):
    def into(x, out):
        f(x, out=out)
        out *= factor
    return (lambda x: factor * f(x)), into


# name: (operand, fwd, formula, (numpy, numpy_out), reads)
UNARY = {
    "identity": ("s", "s", "1.0", _fill(1.0), 0),
    "negative": ("s", "-s", "-1.0", _fill(-1.0), 0),
    "square": ("s", "s * s", "2.0 * s", _times(2.0), 1),
    "sqrt": ("w", "sqrt(w)", "0.5 / sqrt(w)", _sqrt(), 1),
    "exp": ("s", "exp(s)", "exp(s)", _ufunc(np.exp), 1),
    "log": ("w", "log(w)", "1.0 / w", ((lambda w: 1.0 / w),
                                       (lambda w, o: np.divide(1.0, w, out=o))), 1),
    "sin": ("s", "sin(s)", "cos(s)", _ufunc(np.cos), 1),
    "cos": ("s", "cos(s)", "-sin(s)", _scaled(np.sin, -1.0), 1),
    "tanh": ("s", "tanh(s)", "1.0 - tanh(s) ** 2", _tanh(), 1),
    "sigmoid": ("s", "sigmoid(s)", "0.25 * (1.0 - tanh(0.5 * s) ** 2)", _sigmoid(), 1),
    "relu": ("s", "relu(s)", "where(s > 0.0, 1.0, 0.0)", _relu(), 1),
    "abs": ("s", "abs(s)", "where(s > 0.0, 1.0, where(s < 0.0, -1.0, 0.0))",
            _ufunc(np.sign), 1),
}


def cases(n, dtype):
    d = data(n, dtype)
    out = []
    for op, (fwd, per_wrt) in BINARY.items():
        for wrt, (formula, (alloc, into), reads) in enumerate(per_wrt):
            out.append(op_case(
                FAMILY, f"{op} d/d{'wx'[wrt]}", "compute" if op in COMPUTE else "memory",
                op, (d["w"], d["x"]), wrt=wrt, names=("w", "x"), fwd=fwd,
                formula=formula, numpy=alloc, numpy_out=into, reads=reads,
                quick=(op, wrt) in QUICK))
    for op, (arg, fwd, formula, (alloc, into), reads) in UNARY.items():
        out.append(op_case(
            FAMILY, op, "compute" if op in COMPUTE else "memory", op, (d[arg],),
            names=(arg,), fwd=fwd, formula=formula, numpy=alloc, numpy_out=into,
            reads=reads, quick=(op, 0) in QUICK))
    return out
