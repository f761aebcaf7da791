"""An oracle for the tests, written from the specification alone.

Nothing here imports fastjac: the forward functions are plain NumPy, the
Jacobians come from central finite differences in float64, and the 2-D
shapes of section 1 of the specification are spelled out again here.
"""
import numpy as np

# y = op(w, x), element-wise, as the specification's tables define them.
BINARY = {
    "add": lambda w, x: w + x,
    "subtract": lambda w, x: w - x,
    "multiply": lambda w, x: w * x,
    "divide": lambda w, x: w / x,
    "maximum": np.maximum,
    "minimum": np.minimum,
    "greater": lambda w, x: (w > x).astype(float),
    "less": lambda w, x: (w < x).astype(float),
    "power": lambda w, x: w ** x,
    "logaddexp": lambda w, x: np.log(np.exp(w) + np.exp(x)),
}

UNARY = {
    "identity": lambda x: x,
    "negative": lambda x: -x,
    "square": lambda x: x * x,
    "sqrt": np.sqrt,
    "exp": np.exp,
    "log": np.log,
    "sin": np.sin,
    "cos": np.cos,
    "tanh": np.tanh,
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "relu": lambda x: np.maximum(x, 0.0),
    "abs": np.abs,
    "softplus": lambda x: np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0.0),
    "log_sigmoid": lambda x: -np.log1p(np.exp(-np.abs(x))) + np.minimum(x, 0.0),
    "log1p": lambda x: np.log(1.0 + x),
    "expm1": lambda x: np.exp(x) - 1.0,
}

# Closed forms of the spec's derivative columns: (d/dw, d/dx) and f'.
BINARY_DERIVATIVES = {
    "add": (lambda w, x: np.ones_like(w * x), lambda w, x: np.ones_like(w * x)),
    "subtract": (lambda w, x: np.ones_like(w * x), lambda w, x: -np.ones_like(w * x)),
    "multiply": (lambda w, x: x + 0 * w, lambda w, x: w + 0 * x),
    "divide": (lambda w, x: 1 / x + 0 * w, lambda w, x: -w / x**2),
    "maximum": (lambda w, x: (w > x) + 0.5 * (w == x), lambda w, x: (x > w) + 0.5 * (w == x)),
    "minimum": (lambda w, x: (w < x) + 0.5 * (w == x), lambda w, x: (x < w) + 0.5 * (w == x)),
    "greater": (lambda w, x: 0 * (w * x), lambda w, x: 0 * (w * x)),
    "less": (lambda w, x: 0 * (w * x), lambda w, x: 0 * (w * x)),
    "power": (lambda w, x: x * w ** (x - 1), lambda w, x: w**x * np.log(w)),
    "logaddexp": (lambda w, x: np.exp(w) / (np.exp(w) + np.exp(x)),
                  lambda w, x: np.exp(x) / (np.exp(w) + np.exp(x))),
}

UNARY_DERIVATIVES = {
    "identity": lambda x: np.ones_like(x),
    "negative": lambda x: -np.ones_like(x),
    "square": lambda x: 2 * x,
    "sqrt": lambda x: 0.5 / np.sqrt(x),
    "exp": np.exp,
    "log": lambda x: 1 / x,
    "sin": np.cos,
    "cos": lambda x: -np.sin(x),
    "tanh": lambda x: 1 / np.cosh(x) ** 2,
    "sigmoid": lambda x: np.exp(-x) / (1 + np.exp(-x)) ** 2,
    "relu": lambda x: (x > 0).astype(float),
    "abs": np.sign,
    "softplus": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "log_sigmoid": lambda x: 1.0 / (1.0 + np.exp(x)),
    "log1p": lambda x: 1.0 / (1.0 + x),
    "expm1": np.exp,
}


def forward(op, a, b=None):
    """y = op(a, b) in float64."""
    if op in UNARY:
        return UNARY[op](np.asarray(a, dtype=np.float64))
    return BINARY[op](np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))


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
