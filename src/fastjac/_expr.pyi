# _expr.pyx: ExprKernel, and the names the rest of fastjac uses. Program and
# FastPlan, the interpreter's own classes, and LossCall, LossTerm (_batch.py's) are left out
# (STUBTEST_ALLOWLIST in tests/test_typing.py).
import inspect
from typing import Any, Optional

import numpy as np
from typing_extensions import disjoint_base

from .expr import CompiledExpression

OPCODES: dict[str, int]
REGISTER_KINDS: dict[str, int]
BLOCK_SIZE: int
STREAM_BYTES: int
STEP_MAX_REGS: int

def current_table() -> Any: ...
def overlaps(x: np.ndarray, y: np.ndarray) -> bool: ...
def _use_table(capsule: Any) -> None: ...
def _set_jit(mode: Optional[str] = None) -> int: ...
def run_rows(prog: Any, X: np.ndarray, w: np.ndarray, v: Optional[np.ndarray],
             arrays: tuple[Any, ...],
             z_array: int, t_array: int, scalars: Any, n_xw: int, n_xx: int,
             full_outs: tuple[Any, ...], is_double: bool) -> np.ndarray: ...

@disjoint_base
class ExprKernel:
    @property
    def compiled(self) -> CompiledExpression: ...
    @property
    def wrt(self) -> str: ...
    @property
    def with_value(self) -> bool: ...
    @property
    def n_vars(self) -> int: ...
    @property
    def arguments(self) -> tuple[str, ...]: ...
    @property
    def __signature__(self) -> inspect.Signature: ...
    def __init__(self, compiled: CompiledExpression, wrt: str, with_value: bool) -> None: ...
    # k(*variables, out) or, with value=True, k(*variables, value_out, out), positionally
    # in the order of .arguments or by keyword: out
    def __call__(self, *args: np.ndarray, **kwargs: np.ndarray) -> np.ndarray: ...
