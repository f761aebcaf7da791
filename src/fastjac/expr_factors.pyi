from typing import Any, Literal, NoReturn, Optional, Sequence, overload

import numpy as np
import numpy.typing as npt

from ._api import _Layout

class Factor:
    """diag(d) + U V^T: the Jacobian of y (y_shape) by x (x_shape)."""

    y_shape: tuple[int, ...]
    x_shape: tuple[int, ...]
    d: Optional[np.ndarray]
    U: np.ndarray
    V: np.ndarray
    structurally_zero: bool
    def __init__(
        self,
        y_shape: Sequence[int],
        x_shape: Sequence[int],
        d: Optional[npt.ArrayLike] = None,
        U: Optional[npt.ArrayLike] = None,
        V: Optional[npt.ArrayLike] = None,
        structurally_zero: bool = False,
    ) -> None: ...
    @classmethod
    def diagonal(cls, d: npt.ArrayLike, shape: Optional[Sequence[int]] = None) -> Factor: ...
    @classmethod
    def row(cls, g: npt.ArrayLike, x_shape: Optional[Sequence[int]] = None) -> Factor: ...
    @classmethod
    def column(cls, c: npt.ArrayLike, y_shape: Optional[Sequence[int]] = None) -> Factor: ...
    @classmethod
    def scalar(cls, v: npt.ArrayLike, dtype: Optional[npt.DTypeLike] = None) -> Factor: ...
    @classmethod
    def zero(
        cls, y_shape: Sequence[int], x_shape: Sequence[int], dtype: npt.DTypeLike = ...
    ) -> Factor: ...
    @classmethod
    def from_dense(
        cls, M: npt.ArrayLike, y_shape: Sequence[int], x_shape: Sequence[int]
    ) -> Factor: ...
    @property
    def shape(self) -> tuple[int, int]: ...
    @property
    def dtype(self) -> np.dtype[Any]: ...
    @property
    def rank(self) -> int: ...
    @property
    def kind(self) -> Literal["scalar", "gradient", "by_scalar", "diagonal", "general"]: ...
    __array_ufunc__: None
    def __add__(self, other: Factor) -> Factor: ...
    @property
    def T(self) -> Factor: ...
    # always raises TypeError: a Factor is not an array (use toarray)
    def __array__(self, dtype: Any = None, copy: Any = None) -> NoReturn: ...
    # F @ G is the chain rule (a Factor), F @ v a product (an ndarray). A Factor
    # has __array__ (which raises), so mypy sees it as array-like too: the
    # first overload wins, as at run time.
    @overload
    def __matmul__(self, other: Factor) -> Factor: ...  # type: ignore[overload-overlap]
    @overload
    def __matmul__(self, other: npt.ArrayLike) -> np.ndarray: ...
    def __rmatmul__(self, other: npt.ArrayLike) -> np.ndarray: ...
    @overload
    def dot(self, other: Factor) -> Factor: ...  # type: ignore[overload-overlap]
    @overload
    def dot(self, other: npt.ArrayLike) -> np.ndarray: ...
    # an ndarray, a NumPy scalar, or the Factor itself (kind "general")
    def compact(self) -> Any: ...
    def toarray(self, layout: _Layout = "numerator") -> np.ndarray: ...
    # an ndarray ("dense") or a scipy.sparse array
    def to_matrix(
        self, denominator: bool, fmt: str, out: Optional[np.ndarray] = None
    ) -> Any: ...
