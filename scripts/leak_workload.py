"""The workload scripts/check_leaks.sh runs under valgrind memcheck.

``python scripts/leak_workload.py N`` calls every public function of fastjac
(every op, both dtypes, scalar expansion, sums, every format and layout,
out=, the low-level kernel, error paths, and the expression layer when it is
present) N times, on small arrays and on one array large enough for the
GIL-free and threaded (chunked) paths. ``--baseline`` does the same NumPy/SciPy work
without calling fastjac, to learn the interpreter's own noise.
"""
import sys

import numpy as np
import scipy.sparse  # noqa: F401  (imported in both runs, so its noise is baseline)

BASELINE = "--baseline" in sys.argv
N = int(next((a for a in sys.argv[1:] if a.isdigit()), "3"))

a = np.linspace(0.5, 2.0, 33)
b = np.linspace(-1.5, 1.5, 33)
m = np.linspace(-1.0, 1.0, 12).reshape(3, 4)
big = np.linspace(0.5, 2.0, 40_000)          # > GIL and thread thresholds
a32, b32 = a.astype(np.float32), b.astype(np.float32)


def errors(calls):
    for call in calls:
        try:
            call()
        except (TypeError, ValueError, MemoryError, OverflowError):
            pass


def core(fastjac):
    for op in fastjac.BINARY_OPS:
        for wrt in (0, 1):
            fastjac.jacobian(op, a, b, wrt=wrt)
            fastjac.jacobian(op, a32, 2.0, wrt=wrt)
            fastjac.jacobian(op, 3.0, b, wrt=wrt, format="csr")
            fastjac.sum_gradient(op, a, b, wrt=wrt)
            fastjac.sum_gradient(op, a32, b32[0], wrt=wrt)
            fastjac.kernel(op, wrt)(a, b, np.empty_like(a))
    for op in fastjac.UNARY_OPS:
        fastjac.jacobian(op, a)
        fastjac.jacobian(op, a32[::2])
        fastjac.sum_gradient(op, m, format="dense", layout="denominator")
        fastjac.kernel(op)(a32, np.empty_like(a32))
    for fmt in ("dense", "csr", "csc", "coo", "dia"):
        for layout in ("numerator", "denominator"):
            fastjac.jacobian("multiply", a[:8], b[:8], format=fmt, layout=layout)
            fastjac.jacobian("multiply", m, 2.0, wrt=1, format=fmt, layout=layout)
            fastjac.sum_gradient("exp", m, format=fmt, layout=layout)
            fastjac.jacobian("less", a[:8], b[:8], format=fmt, layout=layout)
    out = np.empty_like(a)
    fastjac.jacobian("tanh", a, out=out)
    fastjac.jacobian("tanh", a, out=np.empty(66)[::2])
    fastjac.jacobian("multiply", out, b, out=out)
    fastjac.sum_gradient("multiply", a, 2.0, wrt=1, out=np.empty(()))
    fastjac.jacobian("exp", big)
    fastjac.jacobian("divide", big, big[::-1], wrt=1)
    fastjac.sum_gradient("power", big, 2.0, wrt=1)
    fastjac.kernel("exp")(big, np.empty_like(big))
    ro = np.empty(33)
    ro.flags.writeable = False
    errors([
        lambda: fastjac.jacobian("nope", a),
        lambda: fastjac.jacobian("exp", np.ones(3, complex)),
        lambda: fastjac.jacobian("exp", None),
        lambda: fastjac.jacobian("exp", [1.0, None]),
        lambda: fastjac.jacobian("add", a, b[:3]),
        lambda: fastjac.jacobian("add", a, b, wrt=2),
        lambda: fastjac.jacobian("exp", a, out=ro),
        lambda: fastjac.jacobian("exp", a, out=np.empty(33, np.float32)),
        lambda: fastjac.jacobian("exp", a, format="dense", out=np.empty(3)),
        lambda: fastjac.jacobian("exp", np.ones(10 ** 6), format="dense"),
        lambda: fastjac.jacobian("exp", np.ma.array([1.0])),
        lambda: fastjac.kernel("multiply")(a, b, out[:3]),
        lambda: fastjac.kernel("multiply")(a, b[::-1].copy()[::-1], out),
        lambda: fastjac.kernel("multiply")(a[1:], a[1:], a[:-1]),
    ])


def expressions(fastjac):
    if not hasattr(fastjac, "compile"):
        return
    w, x = fastjac.var("w"), fastjac.var("x")
    f = fastjac.compile(fastjac.sin(w) * fastjac.exp(x) - w / x, wrt=["w", "x"])
    f.jacobian("w", w=a, x=b)
    f.jacobian("x", w=a32, x=2.0, format="csr")
    f.value_and_jacobian("w", w=a, x=b)
    g = fastjac.compile(fastjac.sum(fastjac.tanh(w * x) + 3), wrt="w")
    g.jacobian(w=a, x=b)
    g.jacobian(w=a, x=b, format="dense")
    k = fastjac.compile(fastjac.tanh(x) * 2).kernel("x")
    k(a, np.empty_like(a))
    if hasattr(fastjac, "neuron_gradient"):
        X = np.linspace(-1, 1, 60).reshape(20, 3)
        y = np.linspace(0, 1, 20)
        fastjac.neuron_gradient(X, y, np.array([0.5, -0.2, 0.1]), 0.1, return_loss=True)
    errors([lambda: f.jacobian("w", w=a, x=b[:3]), lambda: f.jacobian("q", w=a, x=b),
            lambda: g.jacobian(w="s", x=b)])


def numpy_only():
    for _ in range(40):
        np.tanh(a) * b
        np.exp(big).sum()
    scipy.sparse.csr_array(np.eye(4))


for _ in range(N):
    if BASELINE:
        numpy_only()
    else:
        import fastjac
        core(fastjac)
        expressions(fastjac)
print(f"leak_workload: {N} rounds{' (baseline)' if BASELINE else ''} done")
