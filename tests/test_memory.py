"""Memory: many small calls of every public function leak nothing.

Each public entry point is called 10^5 times; its error paths (where Cython
code most often forgets a reference) 10^4 to 3.10^4 times, sparse formats and
compile() 10^3 to 5.10^3 times (SciPy and compiling are slow). Three
witnesses must agree that nothing accumulates:

* tracemalloc (which sees Python objects and NumPy's data buffers): of two
  windows of 10 000 further calls, at least one grows the traced memory by
  less than 4 bytes a call (a leak grows in every window; a cache that fills
  once does not);
* the resident set size of the process (/proc/self/statm): within a small
  bound, which a leak of even one small array per call would exceed;
* ``sys.getrefcount`` of every input, ``out``, the op name and the Kernel:
  unchanged.

Leaks in C allocations that neither tracemalloc nor RSS would see are the
job of ``scripts/check_leaks.sh`` (valgrind memcheck).
"""
import gc
import os
import sys
import tracemalloc

import numpy as np
import pytest

import fastjac

CALLS = 100_000
SPARSE_CALLS = 5_000
ERROR_CALLS = 30_000      # raising and formatting a message costs ~10x a call
# A leak of one 16-element result (~240 bytes with its header) per call is
# 24 MB over 10^5 calls; these bounds are far below that and far above noise.
TRACED_CALLS = 10_000    # per window; tracemalloc slows allocation-heavy code ~7x
TRACED_BOUND = 40 * 1024  # 4 bytes per call over a window: any real leak exceeds it
RSS_BOUND = 8 * 1024 * 1024


def rss_bytes():
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None


class Inputs:
    def __init__(self):
        self.a = np.linspace(0.5, 2.0, 16)
        self.b = np.linspace(-1.0, 1.0, 16)
        self.a32 = self.a.astype(np.float32)
        self.out = np.empty(16)
        self.out0 = np.empty(())
        self.dense_out = np.empty((16, 16))
        self.bad_out = np.empty(16, np.float32)
        self.k = fastjac.kernel("divide", 1)
        # a fresh (not interned) string: its refcount is this test's alone
        self.op = "".join(["div", "ide"])
        self.lst = [0.5, 1.0, 2.0]
        if hasattr(fastjac, "compile"):
            w, x = fastjac.var("w"), fastjac.var("x")
            self.f = fastjac.compile(fastjac.sin(w) * fastjac.exp(x) - w / x, wrt=["w", "x"])
            self.g = fastjac.compile(fastjac.sum(fastjac.tanh(w * x) + 3), wrt="w")
            self.ek = fastjac.compile(fastjac.tanh(x) * 2).kernel("x")
        if hasattr(fastjac, "neuron_gradient"):
            self.X = np.linspace(-1.0, 1.0, 48).reshape(16, 3)
            self.y = np.linspace(0.0, 1.0, 16)
            self.w = np.array([0.5, -0.25, 0.125])

    def objects(self):
        return {name: obj for name, obj in vars(self).items()}


def scenarios(x):
    """(name, number of calls, one call)."""
    def expect(exc, f):
        def call():
            try:
                f()
            except exc:
                return
            raise AssertionError("no exception")
        return call

    expr = []
    if hasattr(x, "f"):
        expr = [
            ("expr-jacobian", CALLS, lambda: x.f.jacobian("w", w=x.a, x=x.b)),
            ("expr-jacobian-scalar", CALLS, lambda: x.f.jacobian("x", w=x.a32, x=2.0)),
            ("expr-value-and-jacobian", CALLS, lambda: x.f.value_and_jacobian("x", w=x.a, x=x.b)),
            ("expr-sum-gradient", CALLS, lambda: x.g.jacobian(w=x.a, x=x.b)),
            ("expr-kernel", CALLS, lambda: x.ek(x.a, x.out)),
            ("expr-compile", SPARSE_CALLS, lambda: fastjac.compile(
                fastjac.var("u") * 2 + fastjac.sin(fastjac.var("u")))),
            ("expr-error-missing", ERROR_CALLS // 3, expect(ValueError, lambda: x.f.jacobian(
                "w", w=x.a))),
            ("expr-error-dtype", ERROR_CALLS // 3, expect(TypeError, lambda: x.f.jacobian(
                "w", w=x.a, x="s"))),
            ("expr-error-out", ERROR_CALLS // 3, expect(ValueError, lambda: x.f.jacobian(
                "w", w=x.a, x=x.b, out=x.bad_out))),
            ("expr-csr", SPARSE_CALLS // 2, lambda: x.f.jacobian("w", w=x.a, x=x.b, format="csr")),
        ]
    if hasattr(x, "X"):
        expr += [
            ("neuron", CALLS, lambda: fastjac.neuron_gradient(x.X, x.y, x.w, 0.1)),
            ("neuron-loss", CALLS, lambda: fastjac.neuron_gradient(x.X, x.y, x.w, 0.1,
                                                                    return_loss=True)),
            ("neuron-error", ERROR_CALLS, expect(ValueError, lambda: fastjac.neuron_gradient(
                x.X, x.y[:3], x.w, 0.1))),
        ]
    return expr + [
        ("jacobian", CALLS, lambda: fastjac.jacobian(x.op, x.a, x.b, wrt=1)),
        ("jacobian-float32-scalar", CALLS, lambda: fastjac.jacobian("tanh", x.a32)),
        ("jacobian-out", CALLS, lambda: fastjac.jacobian("multiply", x.a, 2.0, out=x.out)),
        ("jacobian-scalars", CALLS, lambda: fastjac.jacobian("power", 2.0, 3.0)),
        ("jacobian-list", CALLS, lambda: fastjac.jacobian("exp", x.lst)),
        ("jacobian-dense", CALLS, lambda: fastjac.jacobian("sin", x.a, format="dense",
                                                           out=x.dense_out)),
        ("sum_gradient", CALLS, lambda: fastjac.sum_gradient("multiply", x.a, x.b)),
        ("sum_gradient-by-scalar", CALLS,
         lambda: fastjac.sum_gradient("multiply", x.a, 3.0, wrt=1)),
        ("sum_gradient-out0", CALLS,
         lambda: fastjac.sum_gradient("multiply", x.a, 3.0, wrt=1, out=x.out0)),
        ("kernel-call", CALLS, lambda: x.k(x.a, x.b, x.out)),
        ("kernel-make", CALLS, lambda: fastjac.kernel("tanh")),
        ("error-bad-op", ERROR_CALLS, expect(ValueError, lambda: fastjac.jacobian("nope", x.a))),
        ("error-bad-dtype", ERROR_CALLS, expect(TypeError, lambda: fastjac.jacobian(
            "exp", np.ones(2, complex)))),
        ("error-shapes", ERROR_CALLS, expect(ValueError, lambda: fastjac.jacobian(
            "add", x.a, x.b[:3]))),
        ("error-out-dtype", ERROR_CALLS, expect(ValueError, lambda: fastjac.jacobian(
            "exp", x.a, out=x.bad_out))),
        ("error-kernel", ERROR_CALLS, expect(ValueError, lambda: x.k(x.a, x.b, x.out[:3]))),
        ("error-dense-out", ERROR_CALLS, expect(ValueError, lambda: fastjac.jacobian(
            "exp", x.a, format="dense", out=x.out))),
        ("csr", SPARSE_CALLS, lambda: fastjac.jacobian("exp", x.a, format="csr")),
        ("dia-gradient", SPARSE_CALLS // 4, lambda: fastjac.sum_gradient(
            "exp", x.a[:4], format="dia", layout="denominator")),
        ("coo-by-scalar", SPARSE_CALLS // 2, lambda: fastjac.jacobian(
            "multiply", x.a, 2.0, wrt=1, format="coo")),
    ]


def run(call, n):
    for _ in range(n):
        call()


@pytest.fixture(scope="module")
def loaded():
    """Warm every path once (caches, lazy imports, interned strings)."""
    x = Inputs()
    for _, _, call in scenarios(x):
        run(call, 200)
    gc.collect()
    return x


SCENARIO_NAMES = [name for name, _, _ in scenarios(Inputs())]


@pytest.mark.parametrize("name", SCENARIO_NAMES)
def test_no_growth(loaded, name, reliability_count):
    x = loaded
    n, call = next((n, c) for nm, n, c in scenarios(x) if nm == name)
    refs = {k: sys.getrefcount(v) for k, v in x.objects().items()}

    gc.collect()
    rss0 = rss_bytes()
    run(call, n)
    gc.collect()
    rss1 = rss_bytes()

    tracemalloc.start()
    try:
        run(call, 1000)               # tracemalloc's own first allocations
        gc.collect()
        traced = [tracemalloc.get_traced_memory()[0]]
        for _ in range(2):          # two windows: a leak grows in both, a cache once
            run(call, min(n, TRACED_CALLS))
            gc.collect()
            traced.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()

    reliability_count("memory", n + 2 * min(n, TRACED_CALLS) + 1000)
    growth = [traced[1] - traced[0], traced[2] - traced[1]]
    assert min(growth) < TRACED_BOUND, f"traced memory grew by {growth} bytes per window"
    if rss0 is not None:
        assert rss1 - rss0 < RSS_BOUND, f"RSS grew by {rss1 - rss0} bytes over {n} calls"
    after = {k: sys.getrefcount(v) for k, v in x.objects().items()}
    assert after == refs


def test_large_call_frees_its_memory():
    """A call on 10^7 elements returns its scratch memory (strided input copied)."""
    a = np.linspace(0.5, 2.0, 2 * 10 ** 7)[::2]      # strided: fastjac copies it
    fastjac.jacobian("exp", a)
    gc.collect()
    rss0 = rss_bytes()
    for _ in range(5):
        r = fastjac.jacobian("exp", a)
        del r
    gc.collect()
    rss1 = rss_bytes()
    if rss0 is None:
        pytest.skip("no /proc/self/statm")
    assert rss1 - rss0 < 40 * 1024 * 1024     # one 80 MB copy leaked would show
