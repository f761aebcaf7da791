"""Concurrency: the public functions from many threads at once, on shared inputs.

* Every result computed concurrently equals, bit for bit, the result of the
  same call made serially beforehand (sizes below the GIL threshold, above
  it, and above the thread threshold, so Python threads and the kernel thread pool
  run at the same time).
* Kernels release the GIL for large arrays, and keep it for small ones, as
  the README says. This is shown without timing: with a huge switch
  interval, the interpreter never hands the GIL to another thread on its
  own, so a second thread makes progress during a call only if the call
  releases the GIL.
* No module of the library changes its global state while it works.
"""
import sys
import threading
import time

import numpy as np
import pytest

import fastjac

N_THREADS = 8
SIZES = (17, 4096, 70_000)          # small; > GIL threshold (2048); > threads (32768)


def workload():
    """(name, thunk) pairs over shared, read-only inputs."""
    rng = np.random.default_rng(1234)
    calls = []
    for n in SIZES:
        a = rng.uniform(0.5, 2.0, n)
        b = rng.uniform(-2.0, 2.0, n)
        a32 = a.astype(np.float32)
        for arr in (a, b, a32):
            arr.flags.writeable = False
        calls += [
            (f"jacobian-divide-{n}", lambda a=a, b=b: fastjac.jacobian("divide", a, b, wrt=1)),
            (f"jacobian-tanh32-{n}", lambda a=a32: fastjac.jacobian("tanh", a)),
            (f"jacobian-expand-{n}", lambda a=a: fastjac.jacobian("power", a, 2.5, wrt=1)),
            (f"sum-scalar-{n}", lambda a=a: fastjac.sum_gradient("multiply", a, 3.0, wrt=1)),
            (f"sum-scalar32-{n}", lambda a=a32: fastjac.sum_gradient("sigmoid", a32)),
            (f"sum-by-scalar-{n}", lambda b=b: fastjac.sum_gradient("maximum", b, 0.0, wrt=1)),
            (f"sum-gradient-{n}", lambda a=a, b=b: fastjac.sum_gradient("power", a, b)),
            (f"csr-{n}", lambda a=a: fastjac.jacobian("log", a, format="csr").toarray()
             if n < 5000 else fastjac.jacobian("log", a, format="csr").data),
        ]
    m = rng.uniform(-1, 1, (30, 40))
    m.flags.writeable = False
    calls += [
        ("dense-diag", lambda: fastjac.jacobian("sin", m[:5, :5], format="dense")),
        ("dense-grad-denominator", lambda: fastjac.sum_gradient(
            "square", m, format="dense", layout="denominator")),
        ("coo-by-scalar", lambda: fastjac.jacobian("multiply", m, 2.0, wrt=1,
                                                   format="coo").toarray()),
    ]
    return calls


def as_comparable(result):
    return np.asarray(result)


def test_concurrent_results_equal_serial(reliability_count):
    calls = workload()
    serial = {name: as_comparable(f()) for name, f in calls}
    errors, mismatches = [], []
    start = threading.Barrier(N_THREADS)

    def worker(seed):
        order = np.random.default_rng(seed).permutation(len(calls))
        start.wait()
        try:
            for _ in range(3):
                for i in order:
                    name, f = calls[i]
                    got = as_comparable(f())
                    if got.dtype != serial[name].dtype or not np.array_equal(
                            got, serial[name], equal_nan=True):
                        mismatches.append(name)
        except BaseException as exc:          # noqa: BLE001 - report any failure
            errors.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(N_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    reliability_count("thread", N_THREADS * 3 * len(calls))
    assert not errors, errors[:3]
    assert not mismatches, sorted(set(mismatches))


def test_shared_kernel_objects_from_threads(reliability_count):
    """One Kernel object, called from every thread with its own out."""
    rng = np.random.default_rng(7)
    kernels = {(op, wrt): fastjac.kernel(op, wrt) for op in ("multiply", "divide", "power")
               for wrt in (0, 1)}
    kernels[("exp", 0)] = fastjac.kernel("exp")
    inputs = {n: (rng.uniform(0.5, 2.0, n), rng.uniform(0.5, 2.0, n)) for n in SIZES}
    expected = {(key, n): fastjac.jacobian(key[0], *(inputs[n][:2] if key[0] != "exp"
                                                     else inputs[n][:1]), wrt=key[1])
                for key in kernels for n in SIZES}
    bad = []

    def worker():
        for _ in range(5):
            for (key, n), exp in expected.items():
                out = np.empty(n)
                args = inputs[n] if key[0] != "exp" else inputs[n][:1]
                kernels[key](*args, out)
                if not np.array_equal(out, exp):
                    bad.append((key, n))

    threads = [threading.Thread(target=worker) for _ in range(N_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    reliability_count("thread", N_THREADS * 5 * len(expected))
    assert not bad, bad[:5]


# -- the GIL --------------------------------------------------------------------------

class Ticker:
    """A thread that counts while it holds the GIL, and yields it every tick."""

    def __init__(self):
        self.ticks = 0
        self.stop = False
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        import time
        while not self.stop:
            self.ticks += 1
            time.sleep(0)           # releases the GIL, then waits to take it back


def ticks_during(call, repeats):
    """How far the ticker got while ``call`` ran, with preemption switched off."""
    import time
    old = sys.getswitchinterval()
    ticker = Ticker()
    sys.setswitchinterval(1000.0)    # the interpreter never forces a GIL hand-over
    try:
        ticker.thread.start()
        while ticker.ticks == 0:     # wait (sleeping, GIL released) until it runs
            time.sleep(0.001)
        progress = 0
        for _ in range(repeats):
            before = ticker.ticks    # from here to `after` this thread holds the GIL,
            call()                   # unless the call itself releases it
            after = ticker.ticks
            progress += after - before
        return progress
    finally:
        ticker.stop = True
        sys.setswitchinterval(old)
        ticker.thread.join()


def test_small_calls_keep_the_gil():
    """Below 2 048 elements releasing the GIL costs more than the work: it is kept."""
    a = np.linspace(0.5, 2.0, 256)
    out = np.empty(256)
    k = fastjac.kernel("tanh")

    def small():
        fastjac.jacobian("tanh", a, out=out)
        fastjac.sum_gradient("multiply", a, 2.0, wrt=1)
        k(a, out)

    assert ticks_during(small, 200) == 0


@pytest.mark.parametrize("call", ["jacobian", "sum_gradient", "kernel", "jacobian_float32"])
def test_large_calls_release_the_gil(call):
    n = 4_000_000
    a = np.linspace(0.5, 2.0, n)
    out = np.empty(n)
    k = fastjac.kernel("tanh")
    a32 = a.astype(np.float32)
    fn = {"jacobian": lambda: fastjac.jacobian("tanh", a, out=out),
          "sum_gradient": lambda: fastjac.sum_gradient("power", a, 1.5, wrt=1),
          "kernel": lambda: k(a, out),
          "jacobian_float32": lambda: fastjac.jacobian("exp", a32)}[call]
    assert ticks_during(fn, 20) > 0


# -- global state -----------------------------------------------------------------------

def module_state():
    """repr of every module-level container of every fastjac module."""
    state = {}
    for name, mod in sorted(sys.modules.items()):
        if not (name == "fastjac" or name.startswith("fastjac.")) or mod is None:
            continue
        for attr, value in sorted(vars(mod).items()):
            if isinstance(value, (dict, list, set, bytearray)) and not attr.startswith("__"):
                state[f"{name}.{attr}"] = repr(value)
            elif isinstance(value, np.ndarray):
                state[f"{name}.{attr}"] = (value.tobytes(), value.flags.writeable)
    return state


def test_calls_leave_module_state_unchanged():
    """Calls do not mutate module-level state (which would need a lock)."""
    before = module_state()
    for _, f in workload():
        f()
    fastjac.kernel("exp")(np.ones(3), np.empty(3))
    for bad in (lambda: fastjac.jacobian("nope", 1.0), lambda: fastjac.jacobian("exp", "x")):
        with pytest.raises((ValueError, TypeError)):
            bad()
    assert module_state() == before


# -- the expression layer -------------------------------------------------------------------

@pytest.mark.skipif(not hasattr(fastjac, "compile"), reason="no expression layer")
def test_shared_compiled_expression_from_threads(reliability_count):
    """One CompiledExpression, its plan cache filled concurrently by different signatures
    (array or scalar variables, different wrt, formats), gives the serial results."""
    rng = np.random.default_rng(3)
    w, x = fastjac.var("w"), fastjac.var("x")
    calls = []
    for n in (9, 5000, 70_000):
        a, b = rng.uniform(0.5, 2.0, n), rng.uniform(0.5, 2.0, n)
        for arr in (a, b):
            arr.flags.writeable = False
        calls.append((n, a, b))

    X = rng.uniform(-1, 1, (300, 7))
    y, wv = rng.uniform(0, 1, 300), rng.uniform(-1, 1, 7)

    def make():
        f = fastjac.compile(fastjac.sin(w) * fastjac.exp(x) - w / x, wrt=["w", "x"])
        g = fastjac.compile(fastjac.sum(fastjac.tanh(w * x) + 3), wrt="w")
        thunks = []
        for n, a, b in calls:
            thunks += [
                lambda a=a, b=b: f.jacobian("w", w=a, x=b),
                lambda a=a, b=b: f.jacobian("x", w=a, x=b),
                lambda a=a: f.jacobian("x", w=a, x=1.5),
                lambda b=b: f.jacobian("w", w=0.5, x=b),
                lambda a=a, b=b: f.value(w=a, x=b),
                lambda a=a, b=b: g.jacobian(w=a, x=b),
                lambda a=a: g.jacobian(w=a, x=2.0),
                lambda a=a, b=b: f.jacobian("w", w=a.astype(np.float32), x=b),
            ]
        thunks.append(lambda: f.jacobian("w", w=calls[0][1], x=calls[0][2], format="csr").toarray())
        if hasattr(fastjac, "neuron_gradient"):
            thunks.append(lambda: fastjac.neuron_gradient(X, y, wv, 0.1, return_loss=True))
        return thunks

    serial = [t() for t in make()]
    shared = make()              # fresh objects: their caches are filled by the threads
    bad, errors = [], []
    barrier = threading.Barrier(N_THREADS)

    def same(got, exp):
        if isinstance(exp, tuple):
            return isinstance(got, tuple) and len(got) == len(exp) and all(
                same(g, e) for g, e in zip(got, exp))
        got, exp = np.asarray(got), np.asarray(exp)
        return got.dtype == exp.dtype and np.array_equal(got, exp, equal_nan=True)

    def worker(seed):
        order = np.random.default_rng(seed).permutation(len(shared))
        barrier.wait()
        try:
            for _ in range(3):
                for i in order:
                    if not same(shared[i](), serial[i]):
                        bad.append(i)
        except BaseException as exc:          # noqa: BLE001
            errors.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(N_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    reliability_count("thread", N_THREADS * 3 * len(shared))
    assert not errors, errors[:3]
    assert not bad, sorted(set(bad))


@pytest.mark.parametrize("path", ["kernel", "general"])
def test_threads_running_one_program_keep_its_reference_counts(path):
    """Threads running one compiled program at once (n at the size where
    the GIL is released, where calls are shortest) leave the reference
    counts of its arrays as they were. The GIL-free part of a run once
    touched them (Cython's reference counting around ``prog.kind``): two
    threads incrementing one count at once lost an update, and the arrays
    were freed while in use -- the intermittent crash of this module."""
    w, x = fastjac.var("w"), fastjac.var("x")
    f = fastjac.compile(fastjac.sin(w) * fastjac.exp(x) - w / x, wrt=["w", "x"])
    a, b = np.random.default_rng(5).uniform(0.5, 2.0, (2, 2048))
    if path == "kernel":
        call = lambda: f.jacobian("w", w=a, x=b)                       # noqa: E731
    else:                           # mixed dtypes: coerced, then the general path
        a32 = a.astype(np.float32)
        call = lambda: f.jacobian("w", w=a32, x=b)                     # noqa: E731
    want = call()
    program = f._plan((False, False), ("w",), False).stages[0][0].program
    arrays = [program.prog, program.kind, program.index, program.slot]
    before = [sys.getrefcount(arr) for arr in arrays]
    barrier = threading.Barrier(4)
    bad = []

    def work():
        barrier.wait()
        deadline = time.perf_counter() + 2.0      # about 10^5 calls on two idle cores
        while time.perf_counter() < deadline:
            got = call()
            if not np.array_equal(got, want):
                bad.append(got)
                return

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not bad
    assert [sys.getrefcount(arr) for arr in arrays] == before


def test_no_python_object_is_touched_without_the_gil():
    """Structural guard for the test above: in the C that Cython generated
    (present after an in-place or pip build of the checkout), no reference
    count or attribute lookup lies between a manual PyEval_SaveThread and
    its PyEval_RestoreThread."""
    import glob
    import os
    import re
    src = os.path.join(os.path.dirname(__file__), os.pardir, "src", "fastjac")
    generated = sorted(glob.glob(os.path.join(src, "*.c")))
    if not generated:
        pytest.skip("no generated C next to the sources (built elsewhere)")
    found = []
    for path in generated:
        released = False
        with open(path) as fh:
            for number, line in enumerate(fh, 1):
                code = line.strip()
                if code.startswith(("*", "/*")):
                    continue                        # Cython's quoted source
                if "= PyEval_SaveThread()" in code:
                    released = True
                elif "PyEval_RestoreThread(" in code:
                    released = False
                elif released and re.search(r"INCREF|DECREF|__Pyx_GetAttr|PyObject_", code):
                    found.append(f"{os.path.basename(path)}:{number}: {code[:80]}")
    assert not found, "\n".join(found)
