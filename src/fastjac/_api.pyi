from typing import Any, Literal, Optional, Union

import numpy as np
import numpy.typing as npt

_Layout = Literal["numerator", "denominator"]
_Format = Literal["compact", "dense", "csr", "csc", "coo", "dia", "sparse"]
_Op = Union[str, np.ufunc]

FORMATS: tuple[str, ...]
LAYOUTS: tuple[str, ...]

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

class Op:
    name: str
    arity: int
    structurally_zero: bool

class Kernel:
    op: Op
    wrt: int
    def __call__(self, *arrays: np.ndarray) -> np.ndarray: ...

def kernel(op: _Op, wrt: int = 0) -> Kernel: ...
