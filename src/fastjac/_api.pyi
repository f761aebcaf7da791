from typing import Any, Literal, Optional, Union

import numpy as np
import numpy.typing as npt
from typing_extensions import disjoint_base

# Shared with the other stubs (expr.pyi, _neuron.pyi, expr_factors.pyi).
_Layout = Literal["numerator", "denominator"]
_Format = Literal["compact", "dense", "csr", "csc", "coo", "dia", "sparse", "operator"]
_Op = Union[str, np.ufunc]

FORMATS: tuple[str, ...]
LAYOUTS: tuple[str, ...]

def check_format(format: object) -> str: ...
def check_layout(layout: object) -> bool: ...
def is_dask_array(x: object) -> bool: ...
def jacobian(
    op: _Op,
    a: npt.ArrayLike,
    b: Optional[npt.ArrayLike] = None,
    *,
    wrt: int = 0,
    layout: _Layout = "numerator",
    format: _Format = "compact",
    out: Optional[np.ndarray] = None,
) -> Any: ...
def sum_gradient(
    op: Optional[_Op],
    a: npt.ArrayLike,
    b: Optional[npt.ArrayLike] = None,
    *,
    wrt: int = 0,
    axis: Union[None, int, tuple[int, ...]] = None,
    layout: _Layout = "numerator",
    format: _Format = "compact",
    out: Optional[np.ndarray] = None,
) -> Any: ...
def sum_hessian(
    op: Optional[_Op],
    a: npt.ArrayLike,
    b: Optional[npt.ArrayLike] = None,
    *,
    wrt: Union[int, tuple[int, int]] = 0,
    layout: _Layout = "numerator",
    format: _Format = "compact",
    out: Optional[np.ndarray] = None,
) -> Any: ...

@disjoint_base
class Op:
    @property
    def name(self) -> str: ...
    @property
    def arity(self) -> int: ...
    @property
    def code_a(self) -> int: ...
    @property
    def code_b(self) -> int: ...
    @property
    def structurally_zero(self) -> bool: ...
    @property
    def code_aa(self) -> int: ...
    @property
    def code_bb(self) -> int: ...
    @property
    def code_ab(self) -> int: ...

@disjoint_base
class Kernel:
    @property
    def op(self) -> Op: ...
    @property
    def wrt(self) -> int: ...
    def __call__(self, *args: np.ndarray) -> np.ndarray: ...

def kernel(op: _Op, wrt: int = 0) -> Kernel: ...

# Both operands of a call in one float dtype (internal: its fields are C-level only).
@disjoint_base
class Operands: ...

# for the Python layer's checks (_checks.py)
def dtype_vote(arr: np.ndarray, name: str) -> int: ...
def as_array(x: object, name: str) -> np.ndarray: ...
