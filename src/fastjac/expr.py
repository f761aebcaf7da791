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
from . import _nodes
from ._batch import CompiledLoss
from ._checks import check_out, coerce_named  # noqa: F401  (importable from here before)
from ._compiled import CompiledExpression, _unpickle_compiled, compile  # noqa: F401
from ._expr import ExprKernel
from ._neuron import neuron_gradient
from ._nodes import (Binary, Const, Expr, MatMul, Mean, Sum, Unary, Var,  # noqa: F401
                     _missing_attribute, dot, matmul, mean, sum, var)
from .expr_factors import Factor

# The operator functions (exp, maximum, ...), one per record of _operators.py.
globals().update({name: getattr(_nodes, name) for name in _nodes.OPERATOR_FUNCTIONS})

# ``compile``, ``sum`` and ``abs`` are public (fastjac.compile, fastjac.sum,
# fastjac.abs) but left out of __all__: ``from fastjac import *`` must not
# replace Python's builtins of those names. Python's abs() of an expression
# works anyway, through Expr.__abs__.
__all__ = [
    "Expr", "Factor", "var", "ExprKernel", "CompiledExpression", "neuron_gradient",
    "dot", "mean", "matmul", "CompiledLoss",
] + [name for name in _nodes.OPERATOR_FUNCTIONS if name != "abs"]


# Reprs, help() and pickles name these by their path before the split: a
# pickled expression refers to fastjac.expr.Var, fastjac.expr._unpickle_compiled,
# ..., so pickles load across versions (and fastjac.expr has them all).
for _public in (Expr, Var, Const, Unary, Binary, Sum, Mean, MatMul, CompiledExpression,
                _unpickle_compiled, compile, var, sum, mean, matmul, dot,
                *(globals()[name] for name in _nodes.OPERATOR_FUNCTIONS)):
    _public.__module__ = __name__
del _public


def __getattr__(name):
    raise _missing_attribute(__name__, name)
