"""Memory: fastjac's compact and sparse results against dense Jacobians.

The diagonal Jacobian ∂(w ⊗ x)/∂w of n float64 numbers is measured at
small n (tracemalloc's peak over the call, which sees every NumPy and SciPy
allocation) for fastjac's compact, CSR and dense formats; JAX's
``jacfwd`` and PyTorch's ``autograd.functional.jacobian`` are represented
by the bytes of the n × n result they return (their allocators are not
visible to tracemalloc, so this is a lower bound on their peak). Beyond
the measured sizes the same quantities are computed: n·8 bytes compact,
n·(8 + 4) + 4(n + 1) CSR with 32-bit indices, n²·8 dense.
"""
import tracemalloc

import numpy as np

MEASURED = (16, 1_000, 2_000)
COMPUTED = (100_000, 10_000_000)


def _peak(fn):
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        result = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, result


def formula(n, itemsize=8):
    return {"compact": n * itemsize, "csr": n * (itemsize + 4) + 4 * (n + 1),
            "dense": n * n * itemsize}


def measure(quick=False):
    import fastjac
    sizes = MEASURED[:2] if quick else MEASURED
    rows = []
    try:
        import scipy.sparse  # noqa: F401 - imported before measuring, not inside
        have_scipy = True
    except ImportError:
        have_scipy = False
    jax = torch = None
    try:
        if quick:
            raise ImportError("quick mode: fastjac's formats only")
        import jax
        jax.config.update("jax_enable_x64", True)
    except Exception:                           # noqa: BLE001 - optional
        jax = None
    try:
        if quick:
            raise ImportError("quick mode: fastjac's formats only")
        import torch
    except Exception:                           # noqa: BLE001 - optional
        torch = None
    for n in sizes:
        rng = np.random.default_rng(0)
        w, x = rng.uniform(0.5, 1.5, n), rng.uniform(0.5, 1.5, n)
        row = {"n": n, "measured": True}
        fastjac.jacobian("multiply", w, x, format="dense")            # warm up
        row["fastjac_compact"] = _peak(lambda: fastjac.jacobian("multiply", w, x))[0]
        row["fastjac_dense"] = _peak(
            lambda: fastjac.jacobian("multiply", w, x, format="dense"))[0]
        if have_scipy:
            fastjac.jacobian("multiply", w, x, format="csr")
            row["fastjac_csr"] = _peak(
                lambda: fastjac.jacobian("multiply", w, x, format="csr"))[0]
        if jax is not None:
            f = jax.jit(jax.jacfwd(lambda a, b: a * b))
            row["jax_jacfwd_result"] = int(np.asarray(f(w, x)).nbytes)
        if torch is not None:
            tw, tx = torch.from_numpy(w), torch.from_numpy(x)
            jac = torch.autograd.functional.jacobian(lambda a: a * tx, tw, vectorize=True)
            row["torch_jacobian_result"] = int(jac.numel() * jac.element_size())
        row["formula"] = formula(n)
        rows.append(row)
    for n in COMPUTED:
        rows.append({"n": n, "measured": False, "formula": formula(n)})
    return {"rows": rows, "scipy": have_scipy, "jax": jax is not None,
            "torch": torch is not None}
