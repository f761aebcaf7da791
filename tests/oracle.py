"""An independent float64 oracle for fastjac, written from the specification.

Nothing here imports fastjac. Everything is plain NumPy in float64:

* ``FORWARD``: y = op(w, x) (or f(x)) as the specification's tables define it;
* ``DERIVATIVE``: closed forms of the derivative columns of sections 2 and 3,
  with the README's conventions at non-differentiable points, as a pair
  ``(d/dw, d/dx)`` per operator (a unary function has only ``d/dw``);
* ``dense_jacobian_fd(f, x)``: the dense m x n numerator-layout Jacobian of
  any f: R^n -> R^m by a fourth-order central difference;
* ``compact_jacobian`` / ``compact_sum_gradient``: the compact results of the
  public API, from the closed forms;
* ``dense_from_compact``: the 2-D matrix of a compact result in either layout
  (section 1), built entry by entry, independently of fastjac's _layout.py;
* ``forward``, ``fd_jacobian``, ``finite_difference``: y = op(a, b) and its
  Jacobian by second-order central differences; ``expected_jacobian_matrix``
  and ``expected_gradient_matrix``: the 2-D shapes of section 1 spelled out
  from a flat finite-difference Jacobian;
* ``tolerance``: a principled error bound for comparing a result computed in
  float32 or float64 with the float64 oracle.

The closed forms are themselves checked against ``dense_jacobian_fd`` in
``test_properties.py``, so the chain is: finite differences -> closed forms
-> fastjac.
"""
import math

import numpy as np

__all__ = [
    "BINARY_OPS", "UNARY_OPS", "FORWARD", "DERIVATIVE", "UFUNC_ALIASES",
    "derivative", "dense_jacobian_fd", "compact_jacobian", "compact_sum_gradient",
    "dense_from_compact", "expected_dtype", "tolerance", "assert_close",
    "fd_safe", "as_float64", "forward", "finite_difference", "fd_jacobian",
    "expected_jacobian_matrix", "expected_gradient_matrix", "SECOND_DERIVATIVE",
]

BINARY_OPS = ("add", "subtract", "multiply", "divide", "maximum", "minimum",
              "greater", "less", "power", "logaddexp")
UNARY_OPS = ("identity", "negative", "square", "sqrt", "exp", "log", "sin", "cos",
             "tanh", "sigmoid", "relu", "abs", "softplus",
             "log_sigmoid", "log1p", "expm1", "log2")

# NumPy ufuncs the README says are accepted as spellings of an op.
UFUNC_ALIASES = {
    "add": np.add, "subtract": np.subtract, "multiply": np.multiply,
    "divide": np.divide, "maximum": np.maximum, "minimum": np.minimum,
    "greater": np.greater, "less": np.less, "power": np.power,
    "negative": np.negative, "square": np.square, "sqrt": np.sqrt, "exp": np.exp,
    "log": np.log, "log2": np.log2, "sin": np.sin, "cos": np.cos, "tanh": np.tanh, "abs": np.absolute,
    "logaddexp": np.logaddexp, "log1p": np.log1p, "expm1": np.expm1,
}


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _logistic(x):
    """sigmoid(x) without overflow: 1/(1 + e) for x >= 0, e/(1 + e) below,
    e = exp(-|x|) (keeps its relative accuracy where it is tiny)."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


FORWARD = {
    "add": lambda w, x: w + x,
    "subtract": lambda w, x: w - x,
    "multiply": lambda w, x: w * x,
    "divide": lambda w, x: w / x,
    "maximum": np.maximum,
    "minimum": np.minimum,
    "greater": lambda w, x: np.greater(w, x).astype(np.float64),
    "less": lambda w, x: np.less(w, x).astype(np.float64),
    "power": np.power,
    "logaddexp": np.logaddexp,
    "identity": lambda x: x * 1.0,
    "negative": lambda x: -x,
    "square": lambda x: x * x,
    "sqrt": np.sqrt,
    "exp": np.exp,
    "log": np.log,
    "log2": np.log2,
    "sin": np.sin,
    "cos": np.cos,
    "tanh": np.tanh,
    "sigmoid": _sigmoid,
    "relu": lambda x: np.maximum(x, 0.0),
    "abs": np.abs,
    "softplus": lambda x: np.logaddexp(0.0, x),
    "log_sigmoid": lambda x: -np.logaddexp(0.0, -x),
    "log1p": np.log1p,
    "expm1": np.expm1,
}


# -- closed forms ---------------------------------------------------------------
# Each takes float64 arrays (already broadcast to one shape) and returns a
# float64 array. Where a formula is undefined the README's convention applies;
# NaN in a piecewise function gives NaN.

def _step(u, v):
    """d max(u, v)/du: 1, 0, 0.5 at a tie, NaN if either is NaN."""
    out = np.where(u > v, 1.0, np.where(u < v, 0.0, 0.5))
    return np.where(np.isnan(u) | np.isnan(v), np.nan, out)


def _power_dw(w, x):
    with np.errstate(all="ignore"):
        d = x * np.power(w, x - 1.0)
    return np.where(x == 0, 0.0, d)


def power_ambiguous(w, x):
    """Where d(w**x)/dw has no single IEEE answer: finite w < 0 and a non-integer
    x whose x - 1 rounds to an integer (x = 1e-300): w**(x-1) is NaN in exact
    arithmetic (no real power) but finite on the rounded exponent. A result
    may be either; tests skip these points."""
    w, x = as_float64(w), as_float64(x)
    with np.errstate(all="ignore"):
        return (w < 0) & np.isfinite(w) & np.isfinite(x) & (x != np.floor(x)) \
            & ((x - 1.0) == np.floor(x - 1.0))


def _power_dx(w, x):
    with np.errstate(all="ignore"):
        d = np.power(w, x) * np.log(w)
    return np.where((w == 0) & (x >= 0), 0.0, d)


def _logaddexp_d(u, v):
    """d log(e**u + e**v)/du = sigmoid(u - v); 0.5 at a tie (equal
    infinities too), NaN if either is NaN."""
    with np.errstate(invalid="ignore"):
        return np.where(u == v, 0.5, _logistic(u - v))


def _relu_d(x):
    return np.where(np.isnan(x), np.nan, (x > 0).astype(np.float64))


def _abs_d(x):
    return np.where(np.isnan(x), np.nan, np.sign(x))


def _tanh_d(x):
    # 1 - tanh^2 = sech^2 = 1 / cosh^2, computed as 4 e / (1 + e)^2, e = exp(-2|x|)
    e = np.exp(-2.0 * np.abs(x))
    return 4.0 * e / (1.0 + e) ** 2


def _sigmoid_d(x):
    e = np.exp(-np.abs(x))
    return e / (1.0 + e) ** 2


DERIVATIVE = {
    "add": (lambda w, x: np.ones(np.broadcast(w, x).shape),
            lambda w, x: np.ones(np.broadcast(w, x).shape)),
    "subtract": (lambda w, x: np.ones(np.broadcast(w, x).shape),
                 lambda w, x: -np.ones(np.broadcast(w, x).shape)),
    "multiply": (lambda w, x: np.broadcast_to(x, np.broadcast(w, x).shape) * 1.0,
                 lambda w, x: np.broadcast_to(w, np.broadcast(w, x).shape) * 1.0),
    "divide": (lambda w, x: np.broadcast_to(1.0 / x, np.broadcast(w, x).shape) * 1.0,
               # -(w/x)/x, not -w/(x*x): x*x overflows where the answer does not
               lambda w, x: -(w / x) / x),
    "maximum": (lambda w, x: _step(w, x), lambda w, x: _step(x, w)),
    "minimum": (lambda w, x: _step(x, w), lambda w, x: _step(w, x)),
    "greater": (lambda w, x: np.zeros(np.broadcast(w, x).shape),
                lambda w, x: np.zeros(np.broadcast(w, x).shape)),
    "less": (lambda w, x: np.zeros(np.broadcast(w, x).shape),
             lambda w, x: np.zeros(np.broadcast(w, x).shape)),
    "power": (_power_dw, _power_dx),
    "logaddexp": (lambda w, x: _logaddexp_d(w, x), lambda w, x: _logaddexp_d(x, w)),
    "identity": (lambda x: np.ones(np.shape(x)),),
    "negative": (lambda x: -np.ones(np.shape(x)),),
    "square": (lambda x: 2.0 * x,),
    "sqrt": (lambda x: 0.5 / np.sqrt(x),),
    "exp": (np.exp,),
    "log": (lambda x: 1.0 / x,),
    "log2": (lambda x: 1.0 / (x * np.log(2.0)),),
    "sin": (np.cos,),
    "cos": (lambda x: -np.sin(x),),
    "tanh": (_tanh_d,),
    "sigmoid": (_sigmoid_d,),
    "relu": (_relu_d,),
    "abs": (_abs_d,),
    "softplus": (_logistic,),
    "log_sigmoid": (lambda x: _logistic(-x),),
    "log1p": (lambda x: 1.0 / (1.0 + x),),
    "expm1": (np.exp,),
}


# -- second derivatives (sum_hessian) ------------------------------------------
# op: (d2/da2, d2/db2, d2/da db) for a binary operator, (d2/da2,) for a unary
# one, with fastjac's conventions at kinks (0) and for power (see
# sum_hessian's Notes).

def _zeros(a, b=None):
    return np.zeros_like(a * (1 if b is None else b))


def _power_aa(a, b):
    with np.errstate(all="ignore"):
        v = b * (b - 1) * a ** (b - 2)
    return np.where((b == 0) | (b == 1), 0.0, v)


def _power_ab(a, b):
    with np.errstate(all="ignore"):
        v = a ** (b - 1) * (1 + b * np.log(a))
    return np.where((a == 0) & (b > 1), 0.0, v)


def _power_bb(a, b):
    with np.errstate(all="ignore"):
        v = a ** b * np.log(a) ** 2
    return np.where((a == 0) & (b >= 0), 0.0, v)


_SECOND_BINARY = {
    "add": (_zeros, _zeros, _zeros),
    "subtract": (_zeros, _zeros, _zeros),
    "multiply": (_zeros, _zeros, lambda a, b: np.ones_like(a * b)),
    "divide": (_zeros, lambda a, b: 2 * a / b ** 3, lambda a, b: -1 / b ** 2),
    "maximum": (_zeros, _zeros, _zeros),
    "minimum": (_zeros, _zeros, _zeros),
    "greater": (_zeros, _zeros, _zeros),
    "less": (_zeros, _zeros, _zeros),
    "power": (_power_aa, _power_bb, _power_ab),
    "logaddexp": (lambda a, b: _logistic(a - b) * _logistic(b - a), lambda a, b: _logistic(a - b) * _logistic(b - a),
                  lambda a, b: -_logistic(a - b) * _logistic(b - a)),
}
_SECOND_UNARY = {
    "identity": _zeros,
    "negative": _zeros,
    "square": lambda a: np.full_like(a, 2.0),
    "sqrt": lambda a: -0.25 * a ** -1.5,
    "exp": np.exp,
    "log": lambda a: -1 / a ** 2,
    "log2": lambda a: -1 / (a ** 2 * np.log(2.0)),
    "sin": lambda a: -np.sin(a),
    "cos": lambda a: -np.cos(a),
    "tanh": lambda a: -2 * np.tanh(a) * (1 - np.tanh(a) ** 2),
    "sigmoid": lambda a: _logistic(a) * (1 - _logistic(a)) * (1 - 2 * _logistic(a)),
    "relu": _zeros,
    "abs": _zeros,
    "softplus": lambda a: _logistic(a) * (1 - _logistic(a)),
    "log_sigmoid": lambda a: -_logistic(a) * (1 - _logistic(a)),
    "log1p": lambda a: -1 / (1 + a) ** 2,
    "expm1": np.exp,
}
SECOND_DERIVATIVE = {**_SECOND_BINARY, **{k: (f,) for k, f in _SECOND_UNARY.items()}}


def as_float64(x):
    """An operand (array_like or Python number) as a float64 array."""
    return np.asarray(x, dtype=np.float64)


def derivative(op, w, x=None, wrt=0):
    """Element-wise derivative of op at (w, x), float64, broadcast to one shape."""
    w = as_float64(w)
    with np.errstate(all="ignore"):
        if op in UNARY_OPS:
            assert wrt == 0 and x is None
            return np.asarray(DERIVATIVE[op][0](w), dtype=np.float64)
        x = as_float64(x)
        return np.asarray(DERIVATIVE[op][wrt](w, x), dtype=np.float64)


def compact_jacobian(op, w, x=None, wrt=0):
    """The compact Jacobian: shaped like y (the array operand), float64."""
    return derivative(op, w, x, wrt)


def compact_sum_gradient(op, w, x=None, wrt=0):
    """The compact gradient of sum(op(w, x)): shaped like the operand, or a float."""
    op = "identity" if op is None else op
    d = derivative(op, w, x, wrt)
    wrt_operand = as_float64(w if wrt == 0 else x)
    if wrt_operand.ndim == 0:
        # A scalar operand: its derivative is the sum over the expansion.
        terms = d.reshape(-1)
        if np.all(np.isfinite(terms)):
            try:
                return np.float64(math.fsum(terms.tolist()))
            except OverflowError:           # partial sums beyond float64
                pass
        return np.float64(np.sum(terms))
    return d


def forward(op, a, b=None):
    """y = op(a, b) in float64."""
    with np.errstate(all="ignore"):
        if op in UNARY_OPS:
            return FORWARD[op](as_float64(a))
        return FORWARD[op](as_float64(a), as_float64(b))


def finite_difference(f, v, step=1e-6):
    """Central differences: J[i, j] = d f(v).ravel()[i] / d v.ravel()[j]."""
    v = np.array(v, dtype=np.float64)
    flat = v.reshape(-1)
    y0 = np.asarray(f(v), dtype=np.float64).reshape(-1)
    jac = np.empty((y0.size, flat.size))
    for j in range(flat.size):
        h = step * max(1.0, abs(flat[j]))
        up, down = flat.copy(), flat.copy()
        up[j] += h
        down[j] -= h
        jac[:, j] = (np.asarray(f(up.reshape(v.shape))).reshape(-1)
                     - np.asarray(f(down.reshape(v.shape))).reshape(-1)) / (2 * h)
    return jac


def fd_jacobian(op, a, b, wrt):
    """The m x n Jacobian of y = op(a, b) (flattened) by operand ``wrt``."""
    if wrt == 0:
        return finite_difference(lambda v: forward(op, v, b), a)
    return finite_difference(lambda v: forward(op, a, v), b)


def expected_jacobian_matrix(fd, y_shape, v_shape, layout):
    """Section 1: the 2-D form of dy/dv given the flat finite-difference Jacobian."""
    if len(v_shape) == 0 and len(y_shape) == 2:      # matrix Y (p x q) by scalar: p x q
        numerator = fd.reshape(y_shape)
    else:                                            # m x n, m = y.size, n = v.size
        numerator = fd
    return numerator.T if layout == "denominator" else numerator


def expected_gradient_matrix(gradient, v_shape, layout):
    """Section 1: the 2-D form of the gradient of a scalar by v."""
    g = np.asarray(gradient, dtype=np.float64)
    if len(v_shape) == 2:          # scalar by matrix X (p x q): q x p, entry (i, j) = dy/dX_ji
        numerator = g.reshape(v_shape).T
    else:                          # scalar by vector (or flattened n-d, or scalar): 1 x n
        numerator = g.reshape(1, -1)
    return numerator.T if layout == "denominator" else numerator


def dense_jacobian_fd(f, x, h=None):
    """Dense numerator-layout Jacobian of f: R^n -> R^m at x, by finite differences.

    A fourth-order central difference,
    (-f(x+2h) + 8 f(x+h) - 8 f(x-h) + f(x-2h)) / (12 h), with a per-coordinate
    step h_j = eps^(1/5) * max(1, |x_j|): the truncation error is O(h^4) and
    the rounding error O(eps / h), both about eps^(4/5) ~ 3e-13 relative to
    the scale of f. ``f`` takes and returns float64 arrays; x may have any
    shape (it is flattened in C order, as is f(x)). Returns an (m, n) array.
    """
    x = np.array(x, dtype=np.float64)
    flat = x.reshape(-1)
    y0 = np.asarray(f(x), dtype=np.float64).reshape(-1)
    jac = np.empty((y0.size, flat.size))
    for j in range(flat.size):
        hj = h if h is not None else np.finfo(np.float64).eps ** 0.2 * max(1.0, abs(flat[j]))
        values = []
        for k in (2, 1, -1, -2):
            xk = flat.copy()
            xk[j] += k * hj
            values.append(np.asarray(f(xk.reshape(x.shape)), dtype=np.float64).reshape(-1))
        jac[:, j] = (-values[0] + 8 * values[1] - 8 * values[2] + values[3]) / (12 * hj)
    return jac


def fd_safe(op, w, x=None, wrt=0, margin=1e-2, pole_margin=0.25):
    """True where finite differences of op are meaningful at (w, x).

    Away from kinks (ties of maximum/minimum, 0 for relu/abs) by more than
    the stencil's reach (4 h <= 1e-2 for |values| < 4), from poles and domain
    boundaries (1/x, log, sqrt, power's base) by ``pole_margin``, where the
    truncation error h^4 f^(5) grows like 1/distance^6, and from overflow.
    """
    w = as_float64(w)
    ok = np.isfinite(w) & (np.abs(w) < 50)
    if op in UNARY_OPS:
        if op in ("relu", "abs"):
            ok &= np.abs(w) > margin
        if op in ("sqrt", "log", "log2"):
            ok &= w > pole_margin
        if op == "log1p":
            ok &= w > -1 + pole_margin
        return ok
    x = as_float64(x)
    ok = ok & np.isfinite(x) & (np.abs(x) < 50)
    if op in ("maximum", "minimum", "greater", "less"):
        ok &= np.abs(w - x) > margin
    if op == "divide":
        ok &= np.abs(x) > pole_margin
    if op == "power":
        ok &= (w > pole_margin) & (np.abs(x) < 8) & (np.abs(x * np.log(np.maximum(w, margin))) < 30)
    return ok


def dense_from_compact(compact, kind, layout, wrt_shape=None):
    """The 2-D matrix of section 1 for a compact result, built entry by entry.

    kind: "diagonal" (jacobian w.r.t. an array), "by_scalar" (jacobian of y
    w.r.t. a scalar), "gradient" (sum_gradient w.r.t. an array) or "scalar".
    Matrices (2-D) keep their axes; other ranks are flattened in C order.
    """
    c = np.asarray(compact)
    if kind == "scalar":
        return c.reshape(1, 1).copy()
    if kind == "diagonal":
        flat = c.reshape(-1)
        n = flat.size
        mat = np.zeros((n, n), dtype=c.dtype)
        for i in range(n):
            mat[i, i] = flat[i]
        return mat                     # diagonal: symmetric, same in both layouts
    if c.ndim == 2:
        p, q = c.shape
        if kind == "by_scalar":        # numerator p x q: entry dY_ij/dz
            num = np.empty((p, q), dtype=c.dtype)
            for i in range(p):
                for j in range(q):
                    num[i, j] = c[i, j]
        else:                          # gradient: numerator q x p, (i, j) = dy/dX_ji
            num = np.empty((q, p), dtype=c.dtype)
            for i in range(q):
                for j in range(p):
                    num[i, j] = c[j, i]
    else:
        flat = c.reshape(-1)
        num = flat.reshape(-1, 1).copy() if kind == "by_scalar" else flat.reshape(1, -1).copy()
    return num if layout == "numerator" else num.T.copy()


# -- dtypes and tolerances ---------------------------------------------------------

def _kind_of(x):
    """'weak' for Python numbers, else the NumPy dtype of x."""
    if type(x) in (int, float, bool):
        return "weak"
    return np.asarray(x).dtype


def expected_dtype(*operands):
    """The README's rule: float32 stays, float16 -> float32, ints/bool -> float64,
    mixed floats promote as NumPy, Python numbers are weak."""
    votes = []
    for x in operands:
        if x is None:
            continue
        k = _kind_of(x)
        if k == "weak":
            continue
        if k.kind == "f" and k.itemsize <= 4:      # float16, float32, any byte order
            votes.append(np.float32)
        else:
            votes.append(np.float64)
    if not votes or np.float64 in votes:
        return np.dtype(np.float64)
    return np.dtype(np.float32)


# Relative error amplification of the formulas when their inputs are exact in
# the working precision: every closed form is a handful of correctly-rounded
# or libm (<= 1 ulp or so) operations, except power, whose exponent (x - 1)
# is rounded before it meets log(w): a relative error of eps * |(x-1) ln w|,
# and logaddexp, whose closed form rounds w - x before sigmoid, where the
# relative error grows like eps * |w - x|.
ULPS = 16


def _condition(op, w, x, wrt):
    if op == "logaddexp":
        w, x = as_float64(w), as_float64(x)
        with np.errstate(all="ignore"):
            c = 1.0 + np.abs(w - x)
        return np.where(np.isfinite(c), c, 1.0)
    if op != "power":
        return 1.0
    w, x = as_float64(w), as_float64(x)
    with np.errstate(all="ignore"):
        lw = np.abs(np.log(np.abs(w)))
        c = 1.0 + np.abs(x - 1.0) * lw + np.abs(x) * lw
    return np.where(np.isfinite(c), c, 1.0)


def tolerance(op, w, x, wrt, dtype):
    """(rtol, atol) for comparing a result in ``dtype`` with the float64 oracle.

    rtol = ULPS ulps of dtype times the condition of the formula; atol = ULPS
    times the smallest normal number of dtype, for results that underflow.
    """
    info = np.finfo(dtype)
    rtol = ULPS * info.eps * _condition(op, w, x, wrt)
    atol = ULPS * info.tiny
    return rtol, atol


def assert_close(result, expected, rtol, atol, dtype=None, err_msg=""):
    """result == expected within rtol * |expected| + atol, elementwise.

    NaN must match NaN, an infinity must match the same infinity; a result
    that overflowed to inf in ``dtype`` is accepted where the float64 oracle
    is within rtol of that dtype's largest number.
    """
    r = np.asarray(result, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    assert r.shape == e.shape, f"shape {r.shape} != {e.shape} {err_msg}"
    rtol = np.broadcast_to(rtol, e.shape)
    nan_r, nan_e = np.isnan(r), np.isnan(e)
    bad = nan_r != nan_e
    both = ~nan_r & ~nan_e
    if dtype is not None:
        big = np.finfo(dtype).max
        with np.errstate(all="ignore"):
            e = np.where(np.isinf(r) & (np.abs(e) >= big * (1 - rtol)), r, e)
            e = np.where(np.isfinite(e), e.astype(dtype).astype(np.float64), e)
    inf = both & (np.isinf(r) | np.isinf(e))
    bad |= inf & (r != e)
    fin = both & ~inf
    with np.errstate(all="ignore"):
        bad |= fin & (np.abs(r - e) > rtol * np.abs(e) + atol)
    if bad.any():
        idx = np.argwhere(bad)[:5]
        detail = "; ".join(f"at {tuple(i)}: got {r[tuple(i)]!r}, expected {e[tuple(i)]!r}"
                           for i in idx)
        raise AssertionError(f"{int(bad.sum())} of {bad.size} values differ: {detail} {err_msg}")


# -- section 6: the single neuron ----------------------------------------------------------

def neuron_gradient(X, y, w, b):
    """(dC/dw, dC/db, C) of C = (1/N) sum_i (y_i - max(0, w.x_i + b))^2, from section 6.

    dC/dw = (2/N) sum_{i: z_i > 0} (z_i - y_i) x_i and dC/db = (2/N) sum_{i: z_i > 0}
    (z_i - y_i), with z_i = w.x_i + b; in float64 (math.fsum for the sums).
    """
    X, y, w = as_float64(X), as_float64(y), as_float64(w)
    b = float(b)
    N = X.shape[0]
    z = np.array([math.fsum((X[i] * w).tolist()) + b for i in range(N)])
    active = z > 0
    r = np.where(active, z - y, 0.0)
    grad_w = np.array([math.fsum((r * X[:, j]).tolist()) for j in range(X.shape[1])]) * 2 / N
    grad_b = math.fsum(r.tolist()) * 2 / N
    loss = math.fsum(((y - np.maximum(z, 0.0)) ** 2).tolist()) / N
    return grad_w, grad_b, loss
