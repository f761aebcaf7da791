"""Where fastjac's time goes, for the kernels that miss a target of issue 3.

    python benchmarks/diagnose.py overhead      # n = 16: what a call costs, piece by piece
    python benchmarks/diagnose.py compute       # ns per element, one thread, vs NumPy's ufuncs
    python benchmarks/diagnose.py threads       # n = 10^5: call-time spread, 1 thread vs all
    python benchmarks/diagnose.py threads --busy  # the same, with one core kept busy
    python benchmarks/diagnose.py neuron        # N = 10^6 x 16: time and GB/s of X, 1 thread vs all
    python benchmarks/diagnose.py expr          # n = 10^7: a compiled expression vs its STREAM twin
    python benchmarks/diagnose.py small         # n = 512..6 000: small jobs, hot loop and lone calls
    python benchmarks/diagnose.py jit_interpreted  # n = 10^7: compiled code calling the interpreter
    python benchmarks/diagnose.py numba_threads    # fastjac right after numba's prange threads

overhead: the per-call cost at n = 16 of an empty Python call, NumPy's
cheapest ufunc call, ``fastjac.kernel``, ``jacobian(..., out=)`` with a
string and with a ufunc op, the allocating call, and (if installed) a numba
``@njit`` loop; the differences show what validation costs.

compute: for each transcendental derivative, fastjac's kernel and the
NumPy ufuncs its formula needs, single-threaded (``OMP_NUM_THREADS=1`` is
set before fastjac is imported), at n = 10^5 (in cache: arithmetic, not
memory, is measured), as ns per element.

threads: the distribution of single-call times at n = 10^5 with one thread
and with all, 2 000 calls back to back: on a shared machine the threaded
call's tail shows any wait for a descheduled thread. ``--busy`` runs a
busy loop in another process meanwhile (one core taken, as by another job).
Run it with another interpreter (e.g. one with an older fastjac installed)
to compare builds side by side.

small: compute-bound kernels between 512 and 6 000 elements, one thread
against the default (two-chunk "small jobs" on two threads from 1 024
elements, 512 for a**b), both in a hot loop (median of back-to-back calls)
and as lone calls (1 ms of sleep before each: the pool's helper is asleep).

expr: ``maximum(w*x+3, 0)*x - w`` with d/dw (value and derivative in one
pass, compiled by _jit.py) at n = 10^7 against the STREAM kernel that moves
the same 320 MB (triad2 with non-temporal stores), five calls of each in
turn, eight times: the ratio of each turn, and each one's GB/s. The
machine's bandwidth moves between turns; the ratio says whether fastjac
follows it.

jit_interpreted: expressions with vectorised functions (exp, sin, tanh,
softplus), whose compiled code hands them to the interpreter's block
function, at n = 10^7, value and d/dw into preallocated arrays: the same
kernel with compilation switched off and on before each call, alternating,
seven rounds; medians of the last six.
"""
import os
import subprocess
import sys
import time

import numpy as np


def per_call(fn, number=2000, repeat=9):
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - t0) / number)
    times.sort()
    return times[len(times) // 2], times[0]


def median_call(fn, calls=5):
    """Seconds of one call of fn (after one untimed call): the median of
    ``calls`` single calls, for calls of milliseconds."""
    fn()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def overhead():
    import fastjac
    a, b, o = np.random.rand(16) + 0.5, np.random.rand(16) + 0.5, np.empty(16)
    k = fastjac.kernel("divide", 1)
    rows = [
        ("empty Python call (the timer's floor)", lambda: None),
        ("np.divide(a, b, out=o)", lambda: np.divide(a, b, out=o)),
        ("fastjac.kernel('divide', 1)(a, b, o)", lambda: k(a, b, o)),
        ("jacobian('divide', a, b, wrt=1, out=o)",
         lambda: fastjac.jacobian("divide", a, b, wrt=1, out=o)),
        ("jacobian(np.divide, a, b, wrt=1, out=o)",
         lambda: fastjac.jacobian(np.divide, a, b, wrt=1, out=o)),
        ("jacobian('divide', a, b, wrt=1)  (allocating)",
         lambda: fastjac.jacobian("divide", a, b, wrt=1)),
        ("jacobian('divide', a, 2.0, out=o)  (Python scalar)",
         lambda: fastjac.jacobian("divide", a, 2.0, out=o)),
        ("sum_gradient('divide', a, b, wrt=1, out=o)",
         lambda: fastjac.sum_gradient("divide", a, b, wrt=1, out=o)),
    ]
    try:
        from numba import njit

        @njit(error_model="numpy")
        def loop(w, x, out):
            for i in range(out.shape[0]):
                out[i] = -w[i] / (x[i] * x[i])
        rows.append(("numba @njit loop(a, b, o)", lambda: loop(a, b, o)))
    except ImportError:
        pass
    print(f"{'n = 16, float64':52s} {'median':>9s} {'best':>9s}")
    for name, fn in rows:
        med, best = per_call(fn)
        print(f"{name:52s} {med * 1e9:7.0f} ns {best * 1e9:7.0f} ns")


COMPUTE = {
    # op: (argument, NumPy formula into out)
    "exp": ("s", lambda x, o, t: np.exp(x, out=o)),
    "log": ("w", lambda x, o, t: np.divide(1.0, x, out=o)),
    "sqrt": ("w", lambda x, o, t: (np.sqrt(x, out=o), np.divide(0.5, o, out=o))),
    "sin": ("s", lambda x, o, t: np.cos(x, out=o)),
    "cos": ("s", lambda x, o, t: (np.sin(x, out=o), np.negative(o, out=o))),
    "tanh": ("s", lambda x, o, t: (np.tanh(x, out=o), np.square(o, out=o),
                                   np.subtract(1.0, o, out=o))),
    "sigmoid": ("s", lambda x, o, t: (np.multiply(x, 0.5, out=o), np.tanh(o, out=o),
                                      np.square(o, out=o), np.subtract(1.0, o, out=o),
                                      np.multiply(o, 0.25, out=o))),
    "power d/dw": ("w", lambda x, o, t: (np.subtract(t, 1.0, out=o), np.power(x, o, out=o),
                                         np.multiply(o, t, out=o))),
    "power d/dx": ("w", lambda x, o, t: (np.power(x, t, out=o), np.log(x, out=t),
                                         np.multiply(o, t, out=o))),
}


def compute():
    os.environ["OMP_NUM_THREADS"] = "1"
    if "fastjac" in sys.modules:
        print("fastjac was imported before OMP_NUM_THREADS=1; run this in a fresh process")
    import fastjac
    n = 100_000
    rng = np.random.default_rng(0)
    args = {"s": rng.uniform(-1, 1, n), "w": rng.uniform(0.5, 1.5, n)}
    x2 = rng.uniform(0.5, 1.5, n)
    o, t = np.empty(n), np.empty(n)
    print(f"{'one thread, n = 1e5, float64':28s} {'fastjac':>12s} {'NumPy formula':>14s}  (ns/element)")
    for op, (arg, numpy_formula) in COMPUTE.items():
        x = args[arg]
        if op.startswith("power"):
            wrt = 0 if op.endswith("dw") else 1
            fj = per_call(lambda: fastjac.jacobian("power", x, x2, wrt=wrt, out=o), 20, 7)[0]
            tt = x2.copy()

            def npf():
                tt[:] = x2
                numpy_formula(x, o, tt)
            ref = per_call(npf, 20, 7)[0]
        else:
            fj = per_call(lambda: fastjac.jacobian(op, x, out=o), 20, 7)[0]
            ref = per_call(lambda: numpy_formula(x, o, t), 20, 7)[0]
        print(f"{op:28s} {fj / n * 1e9:10.2f}   {ref / n * 1e9:12.2f}")


def threads():
    code = r"""
import sys, time, numpy as np, fastjac
n = 100_000
a, b, o = np.random.rand(n) + 0.5, np.random.rand(n) + 0.5, np.empty(n)
for op in ("multiply", "tanh"):
    f = (lambda: fastjac.jacobian(op, a, out=o)) if op == "tanh" else (
        lambda: fastjac.jacobian(op, a, b, out=o))
    for _ in range(200):
        f()
    ts = []
    for _ in range(2000):
        t0 = time.perf_counter(); f(); ts.append(time.perf_counter() - t0)
    ts = np.array(ts) * 1e6
    print(f"  {op:9s} median {np.median(ts):8.1f} us  p90 {np.percentile(ts, 90):8.1f} us  "
          f"p99 {np.percentile(ts, 99):8.1f} us  calls over 1 ms {100 * (ts > 1000).mean():4.1f} %")
"""
    # --busy: a process that keeps one core busy all along (what another
    # job on a shared machine does), to see what threads cost then.
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) \
        if "--busy" in sys.argv else None
    try:
        for threads in ("1", str(os.cpu_count())):
            print(f"{threads} thread(s), n = 1e5, float64 (load: {os.getloadavg()[0]:.1f}"
                  f"{', one core kept busy by another process' if busy else ''})")
            env = dict(os.environ, FASTJAC_NUM_THREADS=threads, OMP_NUM_THREADS=threads)
            subprocess.run([sys.executable, "-c", code], env=env, check=True)
    finally:
        if busy:
            busy.kill()


def neuron():
    import fastjac
    N, n = 1_000_000, 16
    rng = np.random.default_rng(0)
    print(f"neuron_gradient, N = {N:,} x n = {n}, median of 30 calls "
          f"(X read once: its bytes / time)")
    for dtype in (np.float64, np.float32):
        X = rng.standard_normal((N, n)).astype(dtype)
        y = rng.standard_normal(N).astype(dtype)
        w = (0.3 * rng.standard_normal(n)).astype(dtype)
        for threads in (1, fastjac.get_num_threads()):
            previous = fastjac.set_num_threads(threads)
            fastjac.neuron_gradient(X, y, w, 0.1)
            times = []
            for _ in range(30):
                t0 = time.perf_counter()
                fastjac.neuron_gradient(X, y, w, 0.1)
                times.append(time.perf_counter() - t0)
            fastjac.set_num_threads(previous)
            t = float(np.median(times))
            print(f"  {np.dtype(dtype).name:8s} {threads} thread(s): {t * 1e3:6.2f} ms "
                  f"= {X.nbytes / t / 1e9:5.1f} GB/s of X")


def small():
    import fastjac
    from fastjac import _kernels
    saved = _kernels.parallel_min_sizes()
    rng = np.random.default_rng(0)

    def lone(fn, calls=200):
        times = []
        for _ in range(calls):
            time.sleep(0.001)
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return float(np.median(times))
    print("us per call: one thread / default, in a hot loop and as lone calls")
    try:
        for op in ("power", "exp", "sin", "sqrt"):
            for n in (512, 1000, 2000, 6000):
                a, b, out = rng.uniform(0.5, 2, n), rng.uniform(-2, 2, n), np.empty(n)
                if op == "power":
                    def fn():
                        fastjac.jacobian("power", a, b, out=out)
                else:
                    def fn():
                        fastjac.jacobian(op, a, out=out)
                row = []
                for min_costly in (1 << 62, saved["compute_bound"]):
                    _kernels._set_parallel_min_sizes(saved["memory_bound"], min_costly)
                    row += [per_call(fn, 3000)[0] * 1e6, lone(fn) * 1e6]
                print(f"  {op:6s} n = {n:5d}: hot {row[0]:6.2f} / {row[2]:6.2f}   "
                      f"lone {row[1]:6.2f} / {row[3]:6.2f}")
    finally:
        _kernels._set_parallel_min_sizes(saved["memory_bound"], saved["compute_bound"])


def expr():
    from pathlib import Path
    import fastjac
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks._bandwidth import _build
    st = _build(Path(__file__).resolve().parent / "results" / "build")
    w, x = fastjac.var("w"), fastjac.var("x")
    n = 10_000_000
    rng = np.random.default_rng(0)
    a, b = rng.uniform(-1, 1, n), rng.uniform(-1, 1, n)
    value, grad = np.empty(n), np.empty(n)
    twin = [np.empty(n) for _ in range(4)]
    for array, fill in zip(twin, (1.0, 2.0, 0.0, 0.0)):
        st.init(array, fill)
    nbytes = 4 * 8 * n

    for title, e in (("maximum(w*x+3, 0)*x - w", fastjac.maximum(w * x + 3, 0) * x - w),
                     ("maximum(w*x+3, 0) - w/x", fastjac.maximum(w * x + 3, 0) - w / x)):
        f = fastjac.compile(e, wrt="w")
        print(f"{title}, value + d/dw, n = {n:,} ({nbytes / 1e6:.0f} MB) against "
              f"triad2_nt on the same bytes, median of 5 calls per turn")
        for _ in range(6):
            t = median_call(lambda: f.value_and_jacobian(w=a, x=b, out=grad, value_out=value))
            s = median_call(lambda: st.triad2_nt(twin[0], twin[1], twin[2], twin[3], 3.0))
            print(f"  fastjac {t * 1e3:6.2f} ms ({nbytes / t / 1e9:5.1f} GB/s)   twin "
                  f"{s * 1e3:6.2f} ms ({nbytes / s / 1e9:5.1f} GB/s)   ratio {t / s:4.2f}")


def jit_interpreted():
    import fastjac
    from fastjac import _expr
    w_, x_ = fastjac.var("w"), fastjac.var("x")
    n = 10_000_000
    rng = np.random.default_rng(0)
    exprs = {"softplus(w*x - 1.5)*sin(x) + 0.25*tanh(w)":
             fastjac.softplus(w_ * x_ - 1.5) * fastjac.sin(x_) + 0.25 * fastjac.tanh(w_),
             "exp(w)": fastjac.exp(w_),
             "exp(w)*x + w*w - x/3": fastjac.exp(w_) * x_ + w_ * w_ - x_ / 3}
    print(f"n = {n:,}, value and d/dw; ms, medians of 6 alternating calls")
    try:
        for dtype in (np.float64, np.float32):
            w = rng.uniform(0.25, 2, n).astype(dtype)
            x = rng.uniform(0.25, 2, n).astype(dtype)
            value, deriv = np.empty_like(w), np.empty_like(w)
            for title, e in exprs.items():
                # one kernel per mode: a program keeps the code of its first
                # large call, so the mode is set again before each call
                kernels = {mode: fastjac.compile(e).kernel("w", value=True)
                           for mode in ("never", "always")}
                args = [{"w": w, "x": x}[name] for name in fastjac.compile(e).variables]
                times = {mode: [] for mode in kernels}
                for _ in range(7):
                    for mode, kernel in kernels.items():
                        _expr._set_jit(mode)
                        start = time.perf_counter()
                        kernel(*args, value, deriv)
                        times[mode].append(time.perf_counter() - start)
                t = {mode: np.median(ts[1:]) * 1e3 for mode, ts in times.items()}
                print(f"  {np.dtype(dtype).name:7s} {title:44s} interpreter {t['never']:7.2f}"
                      f"   compiled {t['always']:7.2f}   ratio {t['always'] / t['never']:.2f}")
    finally:
        _expr._set_jit(None)


def fill():
    """An 80 MB fill on both threads, of ones and of zeros: ordinary against
    non-temporal stores (the STREAM kernels), and fastjac's fill beside them
    (d(x + w)/dw = 1: ordinary stores; d(x > w)/dw = 0: non-temporal)."""
    from pathlib import Path
    import fastjac
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks._bandwidth import _build
    st = _build(Path(__file__).resolve().parent / "results" / "build")
    n = 10_000_000
    x, w, out = np.ones(n), np.ones(n), np.empty(n)
    st.init(out, 0.0)
    routes = [("ones: fill", lambda: st.fill(out, 1.0)),
              ("fill_nt", lambda: st.fill_nt(out, 1.0)),
              ("fastjac add d/dw", lambda: fastjac.jacobian("add", x, w, out=out)),
              ("| zeros: fill", lambda: st.fill(out, 0.0)),
              ("fill_nt", lambda: st.fill_nt(out, 0.0)),
              ("fastjac greater d/dw", lambda: fastjac.jacobian("greater", x, w, out=out))]
    print(f"fill of {n * 8 / 1e6:.0f} MB, median of 7 calls per turn, ms")
    for _ in range(5):
        row = []
        for name, fn in routes:
            row.append(f"{name} {median_call(fn, 7) * 1e3:5.2f}")
        print("  " + "   ".join(row))


def numba_threads():
    """fastjac's call right after numba's parallel loop has run (its OpenMP
    threads may still be spinning) against the same call after a 0.2 s
    pause, alternating, 21 rounds; medians of batches (issue 20)."""
    import fastjac
    try:
        from numba import njit, prange
    except ImportError:
        print("numba_threads: numba is not installed")
        return

    @njit(parallel=True)
    def divide_dx(w, x, o):
        for i in prange(o.shape[0]):
            o[i] = -w[i] / (x[i] * x[i])

    for n in (10**5, 10**7):
        rng = np.random.default_rng(0)
        x, w = rng.uniform(0.5, 1.5, n), rng.uniform(0.5, 1.5, n)
        out, other = np.empty(n), np.empty(n)
        divide_dx(w, x, other)
        calls = 100 if n <= 10**5 else 5

        def batch(fn):
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            return (time.perf_counter() - t0) / calls

        ours = lambda: fastjac.jacobian("divide", w, x, wrt=1, out=out)  # noqa: E731
        theirs = lambda: divide_dx(w, x, other)  # noqa: E731
        paused, after, numba = [], [], []
        for _ in range(21):
            batch(theirs)
            time.sleep(0.2)
            paused.append(batch(ours))
            batch(theirs)
            after.append(batch(ours))
            time.sleep(0.2)
            numba.append(batch(theirs))
        print(f"n={n}: divide d/dx, fastjac after a pause {np.median(paused) * 1e6:9.1f} us, "
              f"right after numba's prange loop {np.median(after) * 1e6:9.1f} us; "
              f"numba alone {np.median(numba) * 1e6:9.1f} us")


if __name__ == "__main__":
    what = [a for a in sys.argv[1:] if not a.startswith("--")] or \
        ["overhead", "compute", "threads"]
    for w in what:
        if w == "compute" and len(what) > 1:
            subprocess.run([sys.executable, __file__, "compute"], check=True)
        else:
            {"overhead": overhead, "compute": compute, "threads": threads,
             "neuron": neuron, "expr": expr, "small": small, "fill": fill,
             "jit_interpreted": jit_interpreted, "numba_threads": numba_threads}[w]()
        print()
