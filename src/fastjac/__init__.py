"""fastjac: exact, structured Jacobians of element-wise operations.

The Jacobian of an element-wise operation is diagonal, that of a scalar
expansion a vector, that of a sum a gradient: fastjac computes these compact
forms with Cython kernels, in one pass over the data, and never builds a
dense n x n matrix unless you ask for one.

Public API
----------
jacobian(op, a, b=None, *, wrt=0, layout="numerator", format="compact", out=None)
sum_gradient(op, a, b=None, *, wrt=0, axis=None, layout="numerator", format="compact", out=None)
sum_hessian(op, a, b=None, *, wrt=0, layout="numerator", format="compact", out=None)
kernel(op, wrt=0)      -> a Kernel for hot loops: k(a, out) or k(a, b, out)
BINARY_OPS, UNARY_OPS, FORMATS, LAYOUTS
set_num_threads(n), get_num_threads()
show_config()
"""
from ._api import FORMATS, LAYOUTS, Kernel, jacobian, kernel, sum_gradient, sum_hessian
from ._config import show_config
from ._ops import BINARY_OPS, UNARY_OPS
from ._pool import MAX_THREADS, get_num_threads, set_num_threads
from . import _layout, _nodes, _simd, expr
from .expr import *  # noqa: F401,F403  composed expressions: var, neuron_gradient, ...
# Public as fastjac.compile, fastjac.sum, fastjac.abs, but not in __all__:
# ``from fastjac import *`` must leave Python's builtins of those names alone.
from .expr import abs as abs, compile as compile, sum as sum  # noqa: A004  (re-exported)

__version__ = "0.1.0"

_simd.select()      # the best loops this CPU runs, or $FASTJAC_SIMD

__all__ = [
    "jacobian", "sum_gradient", "sum_hessian", "kernel", "Kernel",
    "BINARY_OPS", "UNARY_OPS", "FORMATS", "LAYOUTS", "show_config", "__version__",
    "set_num_threads", "get_num_threads", "MAX_THREADS",
]
__all__ += expr.__all__     # in this form mypy reads it: the names are re-exported


# The operator classes of format="operator" import SciPy: loaded on first use.
_OPERATORS = ("JacobianOperator", "DiagonalOperator", "RowOperator", "ColumnOperator",
              "BroadcastOperator", "LowRankOperator")


def __getattr__(name):
    if name in _OPERATORS:
        return getattr(_layout.operators(), name)
    if name == "testing":
        import importlib
        return importlib.import_module(".testing", __name__)
    raise _nodes._missing_attribute(__name__, name)
