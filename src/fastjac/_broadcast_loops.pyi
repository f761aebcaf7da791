# fastjac._broadcast_loops: sum_gradient's sums over broadcast axes (for _broadcast.py).
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

_Out = TypeVar("_Out", bound=npt.NDArray[np.floating[Any]])

# k (width,) against x (rows, width): out[j] = sum over rows of d(k_j, x[r, j])
def sum_rows(code: int, k_is_a: bool, k: npt.NDArray[np.floating[Any]],
             x: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float64]: ...
# k (rows,) against x (rows, length): out[i] = sum over j of d(k_i, x[i, j])
def sum_inner(code: int, k_is_a: bool, k: npt.NDArray[np.floating[Any]],
              x: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float64]: ...
# out[i] = d(a_i, b_i); returns out
def partials_into(code: int, a: npt.NDArray[np.floating[Any]],
                  b: npt.NDArray[np.floating[Any]], out: _Out) -> _Out: ...
