from typing import Any, Literal, Optional, Union, overload

import numpy as np
import numpy.typing as npt

from ._api import _Format, _Layout

# (dC/dw, dC/db), or (dC/dw, dC/db, C) with return_loss=True; dC/dw is an
# ndarray in the compact and dense formats, a scipy.sparse array otherwise.
@overload
def neuron_gradient(
    X: npt.ArrayLike,
    y: npt.ArrayLike,
    w: npt.ArrayLike,
    b: npt.ArrayLike,
    *,
    layout: _Layout = "numerator",
    format: _Format = "compact",
    out: Optional[np.ndarray] = None,
    return_loss: Literal[False] = False,
) -> tuple[Any, np.floating[Any]]: ...
@overload
def neuron_gradient(
    X: npt.ArrayLike,
    y: npt.ArrayLike,
    w: npt.ArrayLike,
    b: npt.ArrayLike,
    *,
    layout: _Layout = "numerator",
    format: _Format = "compact",
    out: Optional[np.ndarray] = None,
    return_loss: Literal[True],
) -> tuple[Any, np.floating[Any], np.floating[Any]]: ...
@overload
def neuron_gradient(
    X: npt.ArrayLike,
    y: npt.ArrayLike,
    w: npt.ArrayLike,
    b: npt.ArrayLike,
    *,
    layout: _Layout = "numerator",
    format: _Format = "compact",
    out: Optional[np.ndarray] = None,
    return_loss: bool = False,
) -> Union[tuple[Any, np.floating[Any]], tuple[Any, np.floating[Any], np.floating[Any]]]: ...
