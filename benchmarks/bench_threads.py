"""Thread thresholds and the memory-bandwidth bound of the fastjac kernels.

    python benchmarks/bench_threads.py               # everything below
    python benchmarks/bench_threads.py threshold     # serial vs threaded, per n
    python benchmarks/bench_threads.py bandwidth     # n = 10^7 vs the STREAM bound
    python benchmarks/bench_threads.py simd          # each instruction set, per kernel

threshold: for a memory-bound and a compute-bound set of kernels, the median
time at each n with one thread and with all threads; the smallest n from
which threads win at every larger n is the threshold to put in
_kernels.pyx (MIN_SIZE_CHEAP, MIN_SIZE_COSTLY).

bandwidth: the best bandwidth any code reaches on this machine with all
cores, measured with a STREAM-style C program compiled here (fill, copy,
triad, sum and dot loops under OpenMP, each with ordinary and with
non-temporal stores, best of both), then each memory-bound kernel at
n = 10^7 as a multiple of the time its traffic takes at that bandwidth: a
kernel reading r arrays and writing w is compared with the STREAM loop of
the same r and w (1 read + 1 write: copy; 2 + 1: triad; 0 + 1: fill;
1 + 0: sum; 2 + 0: dot). 1.00 is the bound; the goal is <= 1.15.

simd: each kernel with each instruction-set level this CPU runs
(fastjac._simd.select), serial, ns per element.

The machine may be shared: every number is a median of interleaved runs.
"""
import ctypes
import os
import subprocess
import sys
import sysconfig
import tempfile
import time

import numpy as np

import fastjac
from fastjac import _kernels, _simd

STREAM_C = r"""
#include <stddef.h>
#include <omp.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#define LOOP _Pragma("omp parallel for schedule(static)") for (ptrdiff_t i = 0; i < n; i++)
void fill(double *a, ptrdiff_t n) { LOOP a[i] = 1.0; }
void copy(double *a, const double *b, ptrdiff_t n) { LOOP a[i] = b[i]; }
void triad(double *a, const double *b, const double *c, ptrdiff_t n) { LOOP a[i] = b[i] + 3.0 * c[i]; }
double sum(const double *a, ptrdiff_t n) {
    double s = 0;
    _Pragma("omp parallel for schedule(static) reduction(+:s)")
    for (ptrdiff_t i = 0; i < n; i++) s += a[i];
    return s;
}
double dot(const double *a, const double *b, ptrdiff_t n) {
    double s = 0;
    _Pragma("omp parallel for schedule(static) reduction(+:s)")
    for (ptrdiff_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}
/* Non-temporal stores (16-byte aligned a; numpy's large arrays are). */
#if defined(__SSE2__)
#define NTLOOP(expr) _Pragma("omp parallel for schedule(static)") \
    for (ptrdiff_t j = 0; j < n / 2; j++) { ptrdiff_t i = 2 * j; _mm_stream_pd(a + i, expr); }
void fill_nt(double *a, ptrdiff_t n) { NTLOOP(_mm_set1_pd(1.0)) _mm_sfence(); }
void copy_nt(double *a, const double *b, ptrdiff_t n) { NTLOOP(_mm_loadu_pd(b + i)) _mm_sfence(); }
void triad_nt(double *a, const double *b, const double *c, ptrdiff_t n) {
    NTLOOP(_mm_add_pd(_mm_loadu_pd(b + i), _mm_mul_pd(_mm_set1_pd(3.0), _mm_loadu_pd(c + i))))
    _mm_sfence();
}
int has_nt(void) { return 1; }
#else
void fill_nt(double *a, ptrdiff_t n) { fill(a, n); }
void copy_nt(double *a, const double *b, ptrdiff_t n) { copy(a, b, n); }
void triad_nt(double *a, const double *b, const double *c, ptrdiff_t n) { triad(a, b, c, n); }
int has_nt(void) { return 0; }
#endif
"""


def median_time(fn, reps):
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def interleaved(fns, reps, rounds=5, combine=np.median):
    """Each fn's median time per round, the fns taking turns, combined over
    the rounds (median; min where a preempted thread would dominate)."""
    results = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            results[name].append(median_time(fn, reps))
    return {name: float(combine(ts)) for name, ts in results.items()}


# -- STREAM ------------------------------------------------------------------------

def load_stream():
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    tmp = tempfile.mkdtemp(prefix="fastjac-stream-")
    src, lib = os.path.join(tmp, "stream.c"), os.path.join(tmp, "stream.so")
    with open(src, "w") as f:
        f.write(STREAM_C)
    cmd = cc.split() + ["-O3", "-march=native", "-ffast-math", "-fopenmp", "-fPIC", "-shared", src, "-o", lib]
    subprocess.run(cmd, check=True)
    so = ctypes.CDLL(lib)
    P, N = ctypes.c_void_p, ctypes.c_ssize_t
    for name, args in [("fill", [P, N]), ("copy", [P, P, N]), ("triad", [P, P, P, N]),
                       ("fill_nt", [P, N]), ("copy_nt", [P, P, N]), ("triad_nt", [P, P, P, N])]:
        getattr(so, name).argtypes = args
        getattr(so, name).restype = None
    for name, args in [("sum", [P, N]), ("dot", [P, P, N])]:
        getattr(so, name).argtypes = args
        getattr(so, name).restype = ctypes.c_double
    return so


def stream_bounds(n, reps=7):
    """Best time for each traffic pattern (reads, writes) at n float64."""
    so = load_stream()
    a, b, c = np.ones(n), np.ones(n), np.ones(n)
    pa, pb, pc = (x.ctypes.data for x in (a, b, c))
    fns = {
        "fill": lambda: so.fill(pa, n), "fill_nt": lambda: so.fill_nt(pa, n),
        "copy": lambda: so.copy(pa, pb, n), "copy_nt": lambda: so.copy_nt(pa, pb, n),
        "triad": lambda: so.triad(pa, pb, pc, n), "triad_nt": lambda: so.triad_nt(pa, pb, pc, n),
        "sum": lambda: so.sum(pa, n), "dot": lambda: so.dot(pa, pb, n),
    }
    t = interleaved(fns, reps)
    best = {
        (0, 1): min(t["fill"], t["fill_nt"]),
        (1, 1): min(t["copy"], t["copy_nt"]),
        (2, 1): min(t["triad"], t["triad_nt"]),
        (1, 0): t["sum"],
        (2, 0): t["dot"],
    }
    return t, best


# -- kernels -------------------------------------------------------------------------

def memory_bound_cases(n, dtype=np.float64):
    """(label, (reads, writes), callable) for the memory-bound kernels."""
    rng = np.random.default_rng(0)
    a = rng.uniform(0.5, 2.0, n).astype(dtype)
    b = rng.uniform(0.5, 2.0, n).astype(dtype)
    z = np.array(1.5, dtype)
    out = np.empty(n, dtype)
    k = fastjac.kernel
    cases = [
        ("add (d/da = 1)", (0, 1), k("add"), (a, b, out)),
        ("greater (0)", (0, 1), k("greater"), (a, b, out)),
        ("multiply d/da = b", (1, 1), k("multiply"), (a, b, out)),
        ("negative", (0, 1), k("negative"), (a, out)),
        ("square", (1, 1), k("square"), (a, out)),
        ("relu", (1, 1), k("relu"), (a, out)),
        ("abs", (1, 1), k("abs"), (a, out)),
        ("log (1/x)", (1, 1), k("log"), (a, out)),
        ("divide d/db", (2, 1), k("divide", 1), (a, b, out)),
        ("maximum d/da", (2, 1), k("maximum"), (a, b, out)),
        ("minimum d/db", (2, 1), k("minimum", 1), (a, b, out)),
        ("expand: multiply(x, z) d/dz", (1, 1), k("multiply", 1), (a, z, out)),
        ("expand: divide(x, z) d/dz", (1, 1), k("divide", 1), (a, z, out)),
        ("expand: divide(z, x) d/dz", (1, 1), k("divide", 0), (z, a, out)),
    ]
    result = [(label, traffic, (lambda f=f, args=args: f(*args))) for label, traffic, f, args in cases]
    result += [
        ("sum: d sum(x z)/dz", (1, 0), lambda: fastjac.sum_gradient("multiply", a, z, wrt=1)),
        ("sum: d sum(x / z)/dz", (1, 0), lambda: fastjac.sum_gradient("divide", a, z, wrt=1)),
        ("sum: d sum(max(x, z))/dz", (1, 0), lambda: fastjac.sum_gradient("maximum", a, z, wrt=1)),
        ("sum: d sum(x)/dx", (0, 1), lambda: fastjac.sum_gradient(None, a, out=out)),
    ]
    return result


def bandwidth(n=10**7, reps=7):
    t, best = stream_bounds(n, reps)
    print(f"STREAM-style loops, n = {n:,} float64, {fastjac.get_num_threads()} threads "
          f"(median ms; GB/s counting the bytes the loop names, no write-allocate):")
    traffic = {"fill": (0, 1), "copy": (1, 1), "triad": (2, 1), "sum": (1, 0), "dot": (2, 0)}
    for name, ms in t.items():
        r, w = traffic[name.replace("_nt", "")]
        print(f"  {name:9s} {ms * 1e3:7.2f} ms  {(r + w) * 8 * n / ms / 1e9:6.1f} GB/s")
    cases = memory_bound_cases(n)
    times = interleaved({label: fn for label, _, fn in cases}, reps)
    print(f"\nkernels at n = {n:,} float64 (simd: {_simd.current()}), vs the best loop of the same traffic:")
    worst = 0.0
    for label, traffic, _ in cases:
        ratio = times[label] / best[traffic]
        worst = max(worst, ratio)
        print(f"  {label:30s} {times[label] * 1e3:7.2f} ms  bound {best[traffic] * 1e3:6.2f} ms"
              f"  ratio {ratio:5.2f}  (reads {traffic[0]}, writes {traffic[1]})")
    print(f"  worst ratio {worst:.2f}")


# -- thresholds -----------------------------------------------------------------------

THRESHOLD_KERNELS = {
    "memory_bound": [("multiply", 0), ("divide", 1), ("maximum", 0), ("relu", None)],
    "compute_bound": [("exp", None), ("sin", None), ("tanh", None), ("sqrt", None),
                      ("power", 1)],
}
SIZES = [1000, 2000, 4000, 8000, 16000, 32000, 64000, 128000, 256000, 512000]


def threshold(dtype=np.float64, reps=200):
    saved = _kernels.parallel_min_sizes()
    rng = np.random.default_rng(1)
    try:
        for kind, ops in THRESHOLD_KERNELS.items():
            print(f"\n{kind} (median us per call, 1 thread vs all; speedup):")
            crossings = []
            for op, wrt in ops:
                k = fastjac.kernel(op, wrt or 0)
                row, wins = [], []
                for n in SIZES:
                    a = rng.uniform(0.5, 2.0, n).astype(dtype)
                    b = rng.uniform(0.5, 2.0, n).astype(dtype)
                    out = np.empty(n, dtype)
                    args = (a, out) if wrt is None else (a, b, out)

                    def serial():
                        _kernels._set_parallel_min_sizes(1 << 62, 1 << 62)
                        for _ in range(4):
                            k(*args)

                    def threaded():
                        _kernels._set_parallel_min_sizes(0, 0)
                        for _ in range(4):
                            k(*args)
                    # min over rounds: on a shared machine a threaded call now
                    # and then waits a whole time slice for its second core
                    t = interleaved({"1": serial, "all": threaded}, max(3, reps * 1000 // n), 5,
                                    combine=np.min)
                    row.append(f"{n // 1000}k {t['1'] / 4 * 1e6:.1f}/{t['all'] / 4 * 1e6:.1f}")
                    wins.append(t["all"] < t["1"])
                # smallest n from which threads win at every larger n
                first = next((SIZES[i] for i in range(len(SIZES)) if all(wins[i:])), None)
                crossings.append(first or SIZES[-1] * 2)
                print(f"  {op:9s} " + "  ".join(row) + f"   -> threads from {first}")
            print(f"  {kind}: threads pay from about n = {int(np.median(crossings))}")
    finally:
        _kernels._set_parallel_min_sizes(saved["memory_bound"], saved["compute_bound"])


# -- instruction sets ----------------------------------------------------------------------

def simd(n=20000, reps=300):
    saved = _kernels.parallel_min_sizes()
    _kernels._set_parallel_min_sizes(1 << 62, 1 << 62)
    levels = _simd.available()
    rng = np.random.default_rng(2)
    try:
        for dtype in (np.float64, np.float32):
            a = rng.uniform(-5, 5, n).astype(dtype)
            pos = (np.abs(a) + 0.1).astype(dtype)
            b = rng.uniform(0.5, 2, n).astype(dtype)
            out = np.empty(n, dtype)
            print(f"\n{np.dtype(dtype).name}, n = {n}, one thread, ns per element:")
            print("  " + " " * 12 + "".join(f"{lvl:>10s}" for lvl in levels))
            for op, wrt, args in [("exp", 0, (a,)), ("sin", 0, (a,)), ("cos", 0, (a,)),
                                  ("tanh", 0, (a,)), ("sigmoid", 0, (a,)), ("sqrt", 0, (pos,)),
                                  ("power", 0, (pos, b)), ("power", 1, (pos, b)),
                                  ("multiply", 0, (a, b)), ("divide", 1, (a, b))]:
                k = fastjac.kernel(op, wrt)
                samples = {lvl: [] for lvl in levels}
                for _ in range(3):              # rounds, the levels taking turns
                    for lvl in levels:
                        _simd.select(lvl)
                        samples[lvl].append(median_time(lambda: k(*args, out), reps))
                t = {lvl: float(np.median(v)) for lvl, v in samples.items()}
                print(f"  {op + ('_db' if wrt else ''):12s}" + "".join(f"{t[lvl] / n * 1e9:10.3f}" for lvl in levels))
    finally:
        _simd.select()
        _kernels._set_parallel_min_sizes(saved["memory_bound"], saved["compute_bound"])


if __name__ == "__main__":
    what = sys.argv[1:] or ["simd", "threshold", "bandwidth"]
    fastjac.show_config()
    for w in what:
        {"threshold": threshold, "bandwidth": bandwidth, "simd": simd}[w]()
