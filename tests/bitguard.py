"""The bits of every formula, recorded before a refactoring and checked after.

A refactoring that moves formulas (issue 14: one record per operator, one C
header per formula) must not change a single output bit. This script runs a
fixed corpus through every public route a formula takes -- the kernels
(``jacobian``, ``sum_gradient``, ``sum_hessian``, with broadcasting), and
compiled expressions interpreted and compiled to C -- at every SIMD level
this CPU runs, in float32 and float64, and writes one SHA-256 per output::

    PYTHONPATH=src python tests/bitguard.py record before.json
    ... change the code, rebuild ...
    PYTHONPATH=src python tests/bitguard.py check before.json

``check`` names every output whose bits changed and exits 1 if any value
did; outputs that differ only in the sign or payload of NaN results are
listed apart and do not fail the check. Digests depend on the CPU's SIMD levels
and on the compiler, so a record is only compared on the machine and build
environment that wrote it; that is why this is a script and not a test.
The inputs are special values (signed zeros, subnormals, the edges of the
normal range, infinities, NaN, ties) and random numbers over many scales.
"""
import hashlib
import json
import os
import sys

import numpy as np

import fastjac
from fastjac import _expr, _ops, _simd

N = 4099        # odd: every loop's vector body and its tail


def inputs(dtype):
    """Two operand arrays of N elements: a grid of special values against
    itself, then random numbers from 1e-30 to 1e30 of both signs."""
    info = np.finfo(dtype)
    special = np.array([0.0, -0.0, 1.0, -1.0, 0.5, 2.0, 3.0, -2.5, 1e-3, 0.55, -0.55,
                        0.3, 700.0, -700.0, 710.0, 90.0, -90.0, 2.0 ** 17, -(2.0 ** 17),
                        2.0 ** 20, 1e30, -1e30, float(info.tiny), float(info.tiny) / 8,
                        -float(info.tiny), float(info.max), -float(info.max),
                        np.inf, -np.inf, np.nan], dtype=np.float64)
    a_grid, b_grid = np.meshgrid(special, special, indexing="ij")
    rng = np.random.default_rng(20261207)
    rest = N - a_grid.size
    scale = 10.0 ** rng.uniform(-30, 30, size=(2, rest))
    wide = rng.standard_normal((2, rest)) * np.where(rng.random((2, rest)) < 0.5, 1.0, scale)
    with np.errstate(over="ignore"):
        a = np.concatenate([a_grid.ravel(), wide[0]]).astype(dtype)
        b = np.concatenate([b_grid.ravel(), wide[1]]).astype(dtype)
    return a, b


def kernel_cases(a, b):
    """(name, thunk) for the kernels: every operator's derivatives, their
    sums, second derivatives, and one broadcast case each."""
    row = b[:64]
    grid = a[:64 * 64].reshape(64, 64)
    for op in _ops.UNARY_OPS:
        yield f"jacobian/{op}", lambda op=op: fastjac.jacobian(op, a)
        yield f"sum_gradient/{op}", lambda op=op: fastjac.sum_gradient(op, a)
        yield f"sum_hessian/{op}", lambda op=op: fastjac.sum_hessian(op, a)
        yield f"sum_gradient_axis0/{op}", lambda op=op: fastjac.sum_gradient(op, grid, axis=0)
    for op in _ops.BINARY_OPS:
        for wrt in (0, 1):
            yield f"jacobian/{op}/{wrt}", lambda op=op, wrt=wrt: fastjac.jacobian(op, a, b, wrt=wrt)
            yield f"sum_gradient/{op}/{wrt}", \
                lambda op=op, wrt=wrt: fastjac.sum_gradient(op, a, b, wrt=wrt)
            yield f"sum_hessian/{op}/{wrt}", \
                lambda op=op, wrt=wrt: fastjac.sum_hessian(op, a, b, wrt=wrt)
            yield f"broadcast_jacobian/{op}/{wrt}", \
                lambda op=op, wrt=wrt: fastjac.jacobian(op, grid, row, wrt=wrt)
            yield f"broadcast_sum_gradient/{op}/{wrt}", \
                lambda op=op, wrt=wrt: fastjac.sum_gradient(op, grid, row, wrt=wrt, axis=0)
        yield f"sum_hessian/{op}/01", lambda op=op: fastjac.sum_hessian(op, a, b, wrt=(0, 1))


def expression_cases(a, b):
    """(name, thunk) for compiled expressions: each operator alone (value,
    Jacobian, gradient of its sum), and a few composed ones."""
    x, y = fastjac.var("x"), fastjac.var("y")
    exprs = {}      # name: (expression, its variables)
    for op in _ops.UNARY_OPS:
        exprs[op] = getattr(fastjac.expr, op)(x), ("x",)
    for op in _ops.BINARY_OPS:
        exprs[op] = getattr(fastjac.expr, op)(x, y), ("x", "y")
    both = ("x", "y")
    exprs["composed_arith"] = fastjac.maximum(x * y + 3, 0) - x / y + fastjac.sqrt(x * x), both
    exprs["composed_smooth"] = (fastjac.softplus(x * y) - y * fastjac.log_sigmoid(x)
                                + fastjac.tanh(x) * fastjac.sigmoid(y)), both
    exprs["composed_log"] = (fastjac.log1p(x * x) + fastjac.expm1(y / 8)
                             + fastjac.abs(x - y)), both
    for name, (e, names) in exprs.items():
        f = fastjac.compile(e)
        g = fastjac.compile(fastjac.sum(e))
        values = {v: (a if v == "x" else b) for v in names}
        yield f"expr_value/{name}", lambda f=f, values=values: f.value(**values)
        for v in names:
            yield f"expr_jacobian/{name}/{v}", \
                lambda f=f, v=v, values=values: f.jacobian(v, **values)
            yield f"expr_gradient/{name}/{v}", \
                lambda g=g, v=v, values=values: g.jacobian(v, **values)


def digest(result, canonical_nan=False):
    """SHA-256 of a result's dtype, shape and bytes (tuples: of each part);
    with ``canonical_nan``, every NaN first replaced by one quiet NaN (the
    sign and payload of a NaN that arithmetic produces are not specified by
    IEEE 754, and depend on the order in which the compiler puts operands)."""
    h = hashlib.sha256()
    for part in (result if isinstance(result, tuple) else (result,)):
        arr = np.array(part, copy=True, order="C")
        if canonical_nan and arr.dtype.kind == "f":
            arr[np.isnan(arr)] = np.nan
        h.update(f"{arr.dtype.str}{arr.shape}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def run():
    """{case key: (digest, digest with NaNs made one)} for the whole corpus."""
    out = {}
    for level in _simd.available():
        _simd.select(level)
        for dtype in (np.float32, np.float64):
            a, b = inputs(dtype)
            cases = list(kernel_cases(a, b))
            for jit in ("never", "always"):
                _expr._set_jit(jit)
                cases_e = list(expression_cases(a, b))
                for name, thunk in (cases if jit == "never" else []) + cases_e:
                    key = f"{level}/{np.dtype(dtype).name}/{jit}/{name}"
                    with np.errstate(all="ignore"):
                        result = thunk()
                    out[key] = (digest(result), digest(result, canonical_nan=True))
    _expr._set_jit(None)
    _simd.select()
    return out


def main(argv):
    if len(argv) != 3 or argv[1] not in ("record", "check"):
        sys.exit(__doc__)
    results = run()
    if argv[1] == "record":
        with open(argv[2], "w") as f:
            json.dump(results, f, indent=0, sort_keys=True)
        print(f"recorded {len(results)} outputs in {argv[2]}")
        return 0
    with open(argv[2]) as f:
        recorded = json.load(f)
    changed = [k for k in recorded if k in results and results[k][1] != recorded[k][1]]
    nan_signs = [k for k in recorded if k in results and k not in changed
                 and results[k][0] != recorded[k][0]]
    missing = sorted(set(recorded) - set(results))
    for k in changed:
        print(f"CHANGED {k}")
    for k in nan_signs:
        print(f"NaN BITS {k}")
    for k in missing:
        print(f"MISSING {k}")
    new = len(set(results) - set(recorded))
    same = len(recorded) - len(changed) - len(nan_signs) - len(missing)
    print(f"{same} of {len(recorded)} outputs bit-identical, {len(nan_signs)} identical but "
          f"for the sign or payload of NaN results, {len(changed)} changed, {len(missing)} "
          f"missing, {new} new ({os.environ.get('FASTJAC_SIMD', 'all levels')})")
    return 1 if changed or missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
