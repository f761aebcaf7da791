"""The expression DSL: the nodes of an expression and the functions that build them.

An expression is a small DAG of :class:`Expr` nodes built with Python
operators over named variables::

    w, x = fastjac.var("w"), fastjac.var("x")
    f = fastjac.compile(fastjac.sin(w) * fastjac.exp(x) - w / x, wrt=["w", "x"])
    f.jacobian("w", w=w0, x=x0)          # the diagonal cos(w) exp(x) - 1/x

This module owns the node classes (Expr, Var, Const, Unary, Binary, Sum,
Mean, MatMul), the functions that build them (var, sin, ..., sum, mean,
matmul, dot) and the AttributeError that lists them. A node only records
its operation and operands: what it means is decided when it is compiled
(_planner.py, _compiled.py). The public names are re-exported by expr.py.
"""
import numbers

import numpy as np

from . import _ops
from ._operators import OPERATORS

_RESERVED = frozenset({"wrt", "layout", "format", "out", "value_out"})


class Expr:
    """A node of an expression. Build them with :func:`var`, Python operators
    (``+ - * / **``, unary ``-``, ``>`` and ``<``) and the functions of this
    module; compile them with :func:`compile`."""

    __slots__ = ()
    __array_ufunc__ = None        # ndarray <op> Expr defers to Expr (and is refused)

    def __add__(self, other):
        return _binary("add", self, other)

    def __radd__(self, other):
        return _binary("add", other, self)

    def __sub__(self, other):
        return _binary("subtract", self, other)

    def __rsub__(self, other):
        return _binary("subtract", other, self)

    def __mul__(self, other):
        return _binary("multiply", self, other)

    def __rmul__(self, other):
        return _binary("multiply", other, self)

    def __truediv__(self, other):
        return _binary("divide", self, other)

    def __rtruediv__(self, other):
        return _binary("divide", other, self)

    def __pow__(self, other):
        if isinstance(other, numbers.Real) and not isinstance(other, bool) and other == 2:
            return Unary("square", self)
        return _binary("power", self, other)

    def __rpow__(self, other):
        return _binary("power", other, self)

    def __neg__(self):
        return Unary("negative", self)

    def __matmul__(self, other):
        return matmul(self, other)

    def __rmatmul__(self, other):
        return matmul(other, self)

    def __pos__(self):
        return self

    def __abs__(self):
        return Unary("abs", self)

    def __gt__(self, other):
        return _binary("greater", self, other)

    def __lt__(self, other):
        return _binary("less", self, other)

    def __ge__(self, other):
        raise TypeError("fastjac expressions support > and < (piecewise constant, "
                        "zero derivative); >= and <= are not supported")

    __le__ = __ge__

    def __bool__(self):
        raise TypeError("an expression has no truth value: use fastjac.maximum, "
                        "fastjac.minimum or fastjac.relu instead of Python's max/min/if")

    def __repr__(self):
        return f"<fastjac expression {self}>"


class Var(Expr):
    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name

    def __str__(self):
        return self.name


class Const(Expr):
    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __str__(self):
        return repr(self.value)


class Unary(Expr):
    __slots__ = ("op", "arg")

    def __init__(self, op, arg):
        self.op, self.arg = op, arg

    def __str__(self):
        return f"{self.op}({self.arg})"


class Binary(Expr):
    __slots__ = ("op", "a", "b")

    def __init__(self, op, a, b):
        self.op, self.a, self.b = op, a, b

    def __str__(self):
        return f"{self.op}({self.a}, {self.b})"


class Sum(Expr):
    __slots__ = ("arg", "axis")

    def __init__(self, arg, axis=None):
        self.arg, self.axis = arg, axis

    def __str__(self):
        return f"sum({self.arg})" if self.axis is None else f"sum({self.arg}, axis={self.axis})"


class Mean(Expr):
    """The mean of an expression's elements: a loss (fastjac._batch)."""
    __slots__ = ("arg", "axis")

    def __init__(self, arg, axis=None):
        self.arg, self.axis = arg, axis

    def __str__(self):
        return f"mean({self.arg})" if self.axis is None else f"mean({self.arg}, axis={self.axis})"


class MatMul(Expr):
    """The row-wise product X @ w: X of shape (N, n), w of shape (n,)."""
    __slots__ = ("a", "b")

    def __init__(self, a, b):
        self.a, self.b = a, b

    def __str__(self):
        return f"({self.a} @ {self.b})"


def _wrap(x, what="operand"):
    if isinstance(x, Expr):
        return x
    if isinstance(x, np.ndarray) and x.ndim == 0:
        x = x[()]
    if isinstance(x, (complex, np.complexfloating)):
        raise TypeError(f"{what} must be real, got the complex number {x!r}")
    if isinstance(x, (bool, np.bool_, numbers.Real)):
        return Const(float(x))
    if isinstance(x, (np.ndarray, list, tuple)):
        raise TypeError(
            f"array constants are not supported in an expression ({what} is an array); "
            f"name it with fastjac.var(...) and pass the array when you call the "
            f"compiled expression")
    raise TypeError(f"{what} must be a fastjac expression or a real number, "
                    f"got {type(x).__name__}")


def _binary(op, a, b):
    return Binary(op, _wrap(a, "a"), _wrap(b, "b"))


def var(name):
    """A named variable: an array (any shape) or a scalar, given at call time.

    Examples
    --------
    >>> import fastjac
    >>> x = fastjac.var("x")
    >>> fastjac.compile(fastjac.sum(x * x)).jacobian(x=[1.0, 2.0])
    array([2., 4.])
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"a variable name must be a Python identifier, got {name!r}")
    if name in _RESERVED:
        raise ValueError(f"{name!r} is reserved for a keyword argument of the compiled "
                         f"expression; choose another variable name")
    return Var(name)


# The operator functions (fastjac.exp, fastjac.maximum, ...): one for each
# record of _operators.py, defined by _define_operators below; a record
# without a docstring here gets a short one.
_DOCSTRINGS = {
    "softplus": """Element-wise softplus, log(1 + exp(x)).

Computed as max(x, 0) + log(1 + exp(-|x|)): no overflow for large x and
no cancellation anywhere (within a few ulp). Its derivative is sigmoid(x).

Parameters
----------
x : Expr or float

Returns
-------
Expr

Examples
--------
>>> import fastjac
>>> x = fastjac.var("x")
>>> fastjac.compile(fastjac.softplus(x)).value(x=[0.0, 1000.0])
array([6.93147181e-01, 1.00000000e+03])
""",
    "log1p": """Element-wise log(1 + x), accurate where x is tiny.

Parameters
----------
x : Expr or float

Returns
-------
Expr

Examples
--------
>>> import fastjac
>>> x = fastjac.var("x")
>>> fastjac.compile(fastjac.log1p(x)).value(x=[1e-20, 1.0])
array([1.00000000e-20, 6.93147181e-01])
""",
    "expm1": """Element-wise exp(x) - 1, accurate where x is tiny.

Its derivative is exp(x).

Parameters
----------
x : Expr or float

Returns
-------
Expr

Examples
--------
>>> import fastjac
>>> x = fastjac.var("x")
>>> fastjac.compile(fastjac.expm1(x)).value(x=[1e-20, 1.0])
array([1.00000000e-20, 1.71828183e+00])
""",
    "log_sigmoid": """Element-wise log(sigmoid(x)) = -log(1 + exp(-x)).

Computed as -softplus(-x): no overflow for large negative x and no
cancellation anywhere (within a few ulp). Its derivative is sigmoid(-x).

Parameters
----------
x : Expr or float

Returns
-------
Expr

Examples
--------
>>> import fastjac
>>> x = fastjac.var("x")
>>> fastjac.compile(fastjac.log_sigmoid(x)).value(x=[0.0, -1000.0])
array([-6.93147181e-01, -1.00000000e+03])
""",
    "add": """Element-wise a + b (the ``+`` operator).""",
    "subtract": """Element-wise a - b (the ``-`` operator).""",
    "multiply": """Element-wise a * b (the ``*`` operator).""",
    "divide": """Element-wise a / b (the ``/`` operator).""",
    "maximum": """Element-wise maximum; at a tie each operand gets derivative 0.5.""",
    "minimum": """Element-wise minimum; at a tie each operand gets derivative 0.5.""",
    "greater": """1.0 where a > b, else 0.0 (zero derivative).""",
    "less": """1.0 where a < b, else 0.0 (zero derivative).""",
    "power": """Element-wise a ** b.""",
    "logaddexp": """Element-wise log(exp(a) + exp(b)), as ``numpy.logaddexp``.

    Computed as max(a, b) + log(1 + exp(-|a - b|)): no overflow, no
    underflow to log(0). Its derivatives are sigmoid(a - b) and
    sigmoid(b - a) (0.5 each at a tie).

    Parameters
    ----------
    a, b : Expr or float

    Returns
    -------
    Expr

    Examples
    --------
    >>> import fastjac
    >>> a = fastjac.var("a")
    >>> fastjac.compile(fastjac.logaddexp(a, 1000.0)).value(a=[1000.0, 0.0])
    array([1000.69314718, 1000.        ])
    """,
}


def _operator_function(op):
    """The expression function of an operator record: op(x), or op(a, b)."""
    if len(op.derivatives) == 1:
        def f(x):
            return Unary(op.name, _wrap(x, "x"))
    else:
        def f(a, b):
            return _binary(op.name, a, b)
    f.__name__ = f.__qualname__ = op.name
    alias = f", as ``numpy.{op.numpy[0]}``" if op.numpy else ""
    f.__doc__ = _DOCSTRINGS.get(op.name) or (
        f"Element-wise ``{op.name}`` of an expression{alias} (derivatives as in "
        f"``fastjac.jacobian({op.name!r}, ...)``).")
    return f


def _define_operators(namespace):
    """Put one function per operator record into ``namespace``; returns their names."""
    for op in OPERATORS:
        namespace[op.name] = _operator_function(op)
    return tuple(op.name for op in OPERATORS)


OPERATOR_FUNCTIONS = _define_operators(globals())


def _axis(axis):
    """sum's and mean's axis=: None, an int or a tuple of ints (NumPy's types)."""
    if axis is None:
        return None
    if isinstance(axis, (tuple, list)):
        if not all(isinstance(a, numbers.Integral) and not isinstance(a, bool) for a in axis):
            raise TypeError(f"axis must be None, an integer or a tuple of integers, got {axis!r}")
        if len(set(axis)) != len(axis):
            raise ValueError(f"axis {tuple(axis)} names an axis twice")
        return tuple(int(a) for a in axis)
    if isinstance(axis, numbers.Integral) and not isinstance(axis, bool):
        return int(axis)
    raise TypeError(f"axis must be None, an integer or a tuple of integers, got {axis!r}")


def sum(x, axis=None):
    """The sum of the elements of an expression: a scalar.

    Parameters
    ----------
    x : Expr or number
    axis : None, int or tuple of int
        As NumPy's; a reduction of an expression covers every axis of x
        (``axis=0`` of the per-row terms of a loss is their sum over rows).
        Reducing over some axes only raises NotImplementedError.
    """
    return Sum(_wrap(x, "x"), _axis(axis))


def mean(x, axis=None):
    """The mean of the elements of an expression: ``sum(x) / x.size``.

    Compiled, an expression with ``mean`` is a loss (:class:`fastjac._batch.CompiledLoss`):
    a weighted sum of reductions, with value, gradient, Hessian, Hessian
    diagonal and Hessian-vector products. ``axis`` as in :func:`sum`.

    Examples
    --------
    >>> import numpy as np, fastjac
    >>> x = fastjac.var("x")
    >>> fastjac.compile(fastjac.mean(x * x)).jacobian("x", x=np.array([1.0, 2.0]))
    array([1., 2.])
    """
    return Mean(_wrap(x, "x"), _axis(axis))


def matmul(a, b):
    """The row-wise product ``a @ b`` of a matrix variable X (N, n) and a vector
    variable w (n,): one value x_k . w per row, as ``np.matmul``.

    In a compiled loss, its derivative with respect to w is X itself (never
    copied): the gradient of ``sum(e(X @ w))`` is X^T e' and comes out of one
    pass over X.

    Examples
    --------
    >>> import numpy as np, fastjac
    >>> X, w = fastjac.var("X"), fastjac.var("w")
    >>> loss = fastjac.compile(fastjac.sum(fastjac.softplus(X @ w)))
    >>> loss.jacobian("w", X=np.array([[1.0, 2.0]]), w=np.zeros(2))
    array([0.5, 1. ])
    """
    return MatMul(_wrap(a, "a"), _wrap(b, "b"))


def dot(a, b):
    """The dot product sum(a * b) of two expressions of the same shape."""
    return Sum(Binary("multiply", _wrap(a, "a"), _wrap(b, "b")))


def _missing_attribute(module, name):
    """The AttributeError for ``module.name``: for a plain name, say which
    functions expressions can use (``fastjac.erf`` is the usual way to
    ask for one fastjac does not have)."""
    message = f"module {module!r} has no attribute {name!r}"
    if not name.startswith("_"):
        message += (f"; the functions of fastjac expressions are, unary: "
                    f"{', '.join(_ops.UNARY_OPS)}; binary: {', '.join(_ops.BINARY_OPS)}; "
                    f"reductions: sum, dot, mean; products: matmul (X @ w)")
    return AttributeError(message)
