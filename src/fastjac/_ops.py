"""The operator vocabulary of ``jacobian`` and ``sum_gradient``.

Each name maps to the derivative codes of the kernels (see _derivatives.pxd):
a binary operator has one derivative per operand, a unary function one.
NumPy ufuncs with the same meaning are accepted as aliases (``np.multiply``
for ``"multiply"``), so code written against NumPy reads the same.
"""
import numpy as np

# name: (derivative with respect to a, derivative with respect to b)
BINARY = {
    "add": ("add_da", "add_db"),
    "subtract": ("subtract_da", "subtract_db"),
    "multiply": ("multiply_da", "multiply_db"),
    "divide": ("divide_da", "divide_db"),
    "maximum": ("maximum_da", "maximum_db"),
    "minimum": ("minimum_da", "minimum_db"),
    "greater": ("zero", "zero"),
    "less": ("zero", "zero"),
    "power": ("power_da", "power_db"),
    "logaddexp": ("logaddexp_da", "logaddexp_db"),    # log(e**a + e**b)
}

# name: derivative with respect to the single operand
UNARY = {
    "identity": "one",
    "negative": "negative",
    "square": "square",
    "sqrt": "sqrt",
    "exp": "exp",
    "log": "log",
    "sin": "sin",
    "cos": "cos",
    "tanh": "tanh",
    "sigmoid": "sigmoid",
    "relu": "relu",
    "abs": "abs",
    "softplus": "softplus",     # log(1 + e**a); its derivative is sigmoid(a)
    "log_sigmoid": "log_sigmoid",   # -softplus(-a); its derivative is sigmoid(-a)
    "log1p": "log1p",
    "expm1": "exp",             # expm1' = exp
}

# Second derivatives, for sum_hessian: a binary operator's
# (d2/da2, d2/db2, d2/da db), a unary function's d2/da2. "zero" is exact for
# the linear operators, and the convention for the piecewise ones (relu,
# abs, maximum, minimum, greater, less): 0 everywhere, kinks included, and
# stored as a structural zero (see HESSIAN_STRUCTURALLY_ZERO).
BINARY_SECOND = {
    "add": ("zero", "zero", "zero"),
    "subtract": ("zero", "zero", "zero"),
    "multiply": ("zero", "zero", "one"),
    "divide": ("zero", "divide_dbb", "divide_dab"),
    "maximum": ("zero", "zero", "zero"),
    "minimum": ("zero", "zero", "zero"),
    "greater": ("zero", "zero", "zero"),
    "less": ("zero", "zero", "zero"),
    "power": ("power_daa", "power_dbb", "power_dab"),
    "logaddexp": ("logaddexp_daa", "logaddexp_daa", "logaddexp_dab"),
}
UNARY_SECOND = {
    "identity": "zero",
    "negative": "zero",
    "square": "two",
    "sqrt": "sqrt_dd",
    "exp": "exp",             # exp'' = exp
    "log": "log_dd",
    "sin": "cos",             # sin'' = cos' = -sin
    "cos": "cos_dd",
    "tanh": "tanh_dd",
    "sigmoid": "sigmoid_dd",
    "relu": "zero",
    "abs": "zero",
    "softplus": "sigmoid",    # softplus'' = sigmoid'
    "log_sigmoid": "log_sigmoid_dd",
    "log1p": "log1p_dd",
    "expm1": "exp",
}

# Piecewise-constant operators: their Jacobian is structurally zero, so a
# sparse result stores no entries at all.
STRUCTURALLY_ZERO = frozenset({"greater", "less"})

# Alternative spellings: NumPy ufuncs and their names.
ALIASES = {
    np.add: "add", np.subtract: "subtract", np.multiply: "multiply",
    np.divide: "divide", np.true_divide: "divide", np.maximum: "maximum",
    np.minimum: "minimum", np.greater: "greater", np.less: "less",
    np.power: "power", np.negative: "negative", np.square: "square",
    np.sqrt: "sqrt", np.exp: "exp", np.log: "log", np.sin: "sin",
    np.cos: "cos", np.tanh: "tanh", np.absolute: "abs", np.positive: "identity",
    np.logaddexp: "logaddexp", np.log1p: "log1p", np.expm1: "expm1",
    "absolute": "abs", "true_divide": "divide",
}

BINARY_OPS = tuple(BINARY)
UNARY_OPS = tuple(UNARY)
