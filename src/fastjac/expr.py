"""Composed expressions: write a function once, get its Jacobian many times.

The public module of fastjac's expressions (``fastjac.var``, ``fastjac.compile``,
...; all of them are also attributes of ``fastjac``). The code lives in:

* _nodes.py: the DSL, the nodes of an expression and the functions that
  build them;
* _planner.py: the cut of an expression into stages, and their programs;
* _compiled.py: CompiledExpression and compile, which plan per signature
  and run the programs;
* _batch.py: CompiledLoss, the compiled form of a loss (``X @ w``, ``mean``);
* _neuron.pyx: neuron_gradient.

Each of them starts with its part of the design. This module only gathers
the public names (and keeps the old paths of the few private ones other
code reaches for: pickles name ``fastjac.expr._unpickle_compiled``).
"""
from ._batch import CompiledLoss
from ._checks import check_out, coerce_named  # noqa: F401  (importable from here before)
from ._compiled import CompiledExpression, _unpickle_compiled, compile  # noqa: F401
from ._expr import ExprKernel
from ._neuron import neuron_gradient
from ._nodes import (Binary, Const, Expr, MatMul, Mean, Sum, Unary, Var,  # noqa: F401
                     _missing_attribute, abs, add, cos, divide, dot, exp, expm1, greater,
                     identity, less, log, log1p, log_sigmoid, logaddexp, matmul, maximum,
                     mean, minimum, multiply, negative, power, relu, sigmoid, sin, softplus,
                     sqrt, square, subtract, sum, tanh, var)
from .expr_factors import Factor

# ``compile``, ``sum`` and ``abs`` are public (fastjac.compile, fastjac.sum,
# fastjac.abs) but left out of __all__: ``from fastjac import *`` must not
# replace Python's builtins of those names. Python's abs() of an expression
# works anyway, through Expr.__abs__.
__all__ = [
    "Expr", "Factor", "var", "ExprKernel", "CompiledExpression", "neuron_gradient",
    "add", "subtract", "multiply", "divide", "maximum", "minimum", "greater", "less", "power",
    "dot", "identity", "negative", "square", "sqrt", "exp", "log", "sin", "cos", "tanh",
    "sigmoid", "relu", "softplus", "log_sigmoid", "logaddexp", "log1p", "expm1",
    "mean", "matmul", "CompiledLoss",
]


# Reprs, help() and pickles name these by their path before the split: a
# pickled expression refers to fastjac.expr.Var, fastjac.expr._unpickle_compiled,
# ..., so pickles load across versions (and fastjac.expr has them all).
for _public in (Expr, Var, Const, Unary, Binary, Sum, Mean, MatMul, CompiledExpression,
                _unpickle_compiled, compile, var, sum, mean, matmul, dot, add, subtract,
                multiply, divide, maximum, minimum, greater, less, power, logaddexp, identity,
                negative, square, sqrt, exp, log, sin, cos, tanh, sigmoid, relu, abs, softplus,
                log_sigmoid, log1p, expm1):
    _public.__module__ = __name__
del _public


def __getattr__(name):
    raise _missing_attribute(__name__, name)
