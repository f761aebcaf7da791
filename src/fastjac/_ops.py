"""The operator vocabulary of ``jacobian``, ``sum_gradient`` and ``sum_hessian``.

Read from the operator records of _operators.py (one record per operator):
a binary operator has one derivative code per operand, a unary function
one (see _derivatives.pxd for the codes). NumPy ufuncs with the same
meaning are accepted as aliases (``np.multiply`` for ``"multiply"``), so
code written against NumPy reads the same.
"""
import numpy as np

from ._operators import OPERATORS

# name: (derivative with respect to a, derivative with respect to b)
BINARY = {op.name: op.derivatives for op in OPERATORS if len(op.derivatives) == 2}

# name: derivative with respect to the single operand
UNARY = {op.name: op.derivatives[0] for op in OPERATORS if len(op.derivatives) == 1}

# Second derivatives, for sum_hessian: a binary operator's
# (d2/da2, d2/db2, d2/da db), a unary function's d2/da2. "zero" is exact for
# the linear operators, and the convention for the piecewise ones (relu,
# abs, maximum, minimum, greater, less): 0 everywhere, kinks included, and
# stored as a structural zero (see HESSIAN_STRUCTURALLY_ZERO).
BINARY_SECOND = {op.name: op.second for op in OPERATORS if len(op.derivatives) == 2}
UNARY_SECOND = {op.name: op.second[0] for op in OPERATORS if len(op.derivatives) == 1}

# Piecewise-constant operators: their Jacobian is structurally zero, so a
# sparse result stores no entries at all.
STRUCTURALLY_ZERO = frozenset(op.name for op in OPERATORS
                              if all(code == "zero" for code in op.derivatives))

# Alternative spellings: NumPy ufuncs, and the ufuncs' names where they
# differ from the operator's ("absolute", "true_divide", "positive").
ALIASES = {getattr(np, ufunc): op.name for op in OPERATORS for ufunc in op.numpy}
ALIASES.update({ufunc: op.name for op in OPERATORS for ufunc in op.numpy if ufunc != op.name})

BINARY_OPS = tuple(BINARY)
UNARY_OPS = tuple(UNARY)
