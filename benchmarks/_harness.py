"""The benchmark harness: cases, timing, answer checks, bandwidth bounds.

Design note
-----------
Every ``benchmarks/bench_<family>.py`` that defines ``cases(n, dtype)`` is a
family of the suite; ``discover()`` finds them, so a new family (e.g. the
expression layer's ``bench_expr.py``) needs no change here or in run.py.

The interface a family implements::

    FAMILY = "elementwise"                 # optional; default: the file's suffix
    DESCRIPTION = "..."                    # optional; one line for the report

    def cases(n: int, dtype: numpy.dtype) -> list[Case]:
        ...

A :class:`Case` is one derivative at one size and dtype. It names the
kernel (``name``, unique within its family), says whether it is bound by
memory or by arithmetic (``kind``), how many bytes it must read and write
at the least (``nbytes``, which gives its bandwidth bound), and carries
zero-argument callables:

* ``fastjac`` -- the main timing: fastjac writing into a preallocated
  ``out=``; its result is the answer every rival is checked against;
* ``fastjac_alloc`` -- the allocating call (no ``out=``), optional;
* ``fastjac_kernel`` -- the ``fastjac.kernel(op, wrt)`` low-level call,
  optional;
* ``rivals`` -- a list of :class:`Rival`: a name (a column of the report,
  see ``ROUTES``) and a ``build()`` that does all setup (imports, JIT
  compilation, moving data to the library's arrays) and returns the
  zero-argument callable to time. ``build`` raises :class:`Skip` (or any
  exception) when the rival is missing or cannot compute the case: the
  report records the note and goes on.

``op_case(...)`` builds a Case for an operator of fastjac's API from a few
formulas (the forward expression, the derivative formula), and derives
every rival from them with ``_rivals.py``; families of other shapes build
their Cases and Rivals directly.

Timing: a callable is warmed up (JIT compilation and first-touch happen
outside the timing), its answer is checked against fastjac's, then it is
called in batches long enough for the clock (so per-call times at n = 16
are meaningful) and the median per-call time over many batches is kept.
Asynchronous results (JAX) are blocked on inside the callable.
"""
import gc
import importlib
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

HERE = Path(__file__).resolve().parent

# The routes of the report, in column order: fastjac's three entry points,
# then the rivals. Each rival route has a description for the report header.
FASTJAC_ROUTES = ("fastjac", "fastjac_alloc", "fastjac_kernel", "stream")
ROUTES = {
    "stream": "the bound, timed beside fastjac: the STREAM kernel (Cython prange) that "
              "moves the same bytes (copy, triad, two-output triad, fill or read), n >= 10^5",
    "numpy": "NumPy: the hand-written derivative formula, allocating",
    "numpy_out": "NumPy: the same formula into preallocated out= arrays",
    "numexpr": "numexpr: the formula fused, evaluate(..., out=out)",
    "numba": "numba: an @njit fused loop into out",
    "numba_par": "numba: the same loop, @njit(parallel=True) with prange",
    "jax": "JAX on CPU: jax.jit of jax.jvp with a ones tangent (jax.grad for sums)",
    "jax_dense": "JAX on CPU: jax.jit(jax.jacfwd), the dense n x n Jacobian (small n)",
    "torch": "PyTorch on CPU: torch.func.jvp with ones (torch.autograd.grad for sums)",
    "torch_vjp": "PyTorch on CPU: torch.autograd.grad with ones grad_outputs (a VJP: the diagonal too)",
    "torch_dense": "PyTorch on CPU: torch.autograd.functional.jacobian, dense (small n)",
    "autograd": "autograd: elementwise_grad (make_jvp for a scalar operand, grad for sums)",
    "scipy": "SciPy: the same product or solve with the CSR matrix of the Jacobian "
             "(the operator family)",
    "sklearn": "scikit-learn: LinearModelLoss(HalfBinomialLoss()) loss_gradient, the hessp of "
               "gradient_hessian_product applied to v, or gradient_hessian (the loss family)",
    "sklearn_setup": "scikit-learn: gradient_hessian_product (its setup: gradient and h * X) "
                     "and then hessp(v), both timed (the loss family's hvp)",
}
# Rivals that fill a preallocated array are compared with fastjac's out=
# call; rivals that allocate their result with fastjac's allocating call.
PREALLOCATING = frozenset({"numpy_out", "numexpr", "numba", "numba_par"})
DENSE_MAX_N = 2000          # dense Jacobian routes run at n <= this only
KERNEL_MAX_N = 1_000_000    # fastjac.kernel (call overhead) is timed at n <= this only
CHECK_ALL_MAX = 1_000_000   # answers are compared in full up to this size, sampled above


class Skip(Exception):
    """Raised by a Rival's build() when it cannot run: the message is the note."""


@dataclass
class Rival:
    name: str                                  # a key of ROUTES
    build: Callable[[], Callable[[], Any]]     # setup -> the callable to time
    dense: bool = False                        # returns the n x n Jacobian


@dataclass
class Case:
    family: str
    name: str
    kind: str                                  # "memory" or "compute"
    n: int
    dtype: Any
    nbytes: int                                # least bytes read + written
    fastjac: Callable[[], Any]                 # out= (the reference answer)
    fastjac_alloc: Optional[Callable[[], Any]] = None
    fastjac_kernel: Optional[Callable[[], Any]] = None
    rivals: list = field(default_factory=list)
    quick: bool = False                        # part of the --quick subset
    trivial: bool = False                      # NumPy's formula is a bare copy or fill
    # The n-element arrays read and written at the least (writes 0: a scalar
    # result). They pick the STREAM twin (stream_twin), whose arrays share
    # nbytes equally; a case with other arrays names its traffic's pattern
    # (the neuron: reads 1, writes 0, one read of X and y).
    reads: int = 0
    writes: int = 0
    rtol: Optional[float] = None               # answer check; default by dtype


# -- data ------------------------------------------------------------------------

_DATA = {}


def data(n, dtype):
    """Operands shared by every case at (n, dtype), made once.

    ``w``, ``x``: positive, in [0.5, 1.5) (safe for log, sqrt, power and
    division; no ties between them); ``s``: signed, in [-1, 1) with |s| >=
    1e-3 (no kinks of relu or abs); ``z``: a Python float scalar operand.
    """
    key = (n, np.dtype(dtype).str)
    if key not in _DATA:
        _DATA.clear()                          # keep one size in memory at a time
        rng = np.random.default_rng(20260)
        w = rng.uniform(0.5, 1.5, n).astype(dtype)
        x = rng.uniform(0.5, 1.5, n).astype(dtype)
        x[x == w] += np.asarray(0.125, dtype)
        s = rng.uniform(-1.0, 1.0, n).astype(dtype)
        s[np.abs(s) < 1e-3] = 0.5
        _DATA[key] = {"w": w, "x": x, "s": s, "z": 1.25}
    return _DATA[key]


def call_with(fn, args, *more):
    """A no-argument function calling fn(*args, *more) with the arguments
    written out: a call through ``*args`` costs 40-200 ns more than the same
    call written by hand (CPython builds a tuple, and a dict for keywords),
    which at n = 16 is more than some kernels. Every library's route is built
    this way, so none pays that cost and a user's hand-written call is timed."""
    full = tuple(args) + more
    if len(full) == 1:
        (a,) = full
        return lambda: fn(a)
    if len(full) == 2:
        a, b = full
        return lambda: fn(a, b)
    if len(full) == 3:
        a, b, c = full
        return lambda: fn(a, b, c)
    return lambda: fn(*full)


def is_scalar(arg):
    return np.ndim(arg) == 0


def nbytes_for(n, dtype, reads, writes):
    return (reads + writes) * n * np.dtype(dtype).itemsize


# -- building a Case from an operator ----------------------------------------------

def op_case(family, name, kind, op, args, *, wrt=0, reduce=False, names,
            fwd, formula, numpy, numpy_out, reads, quick=False, rtol=None, hessian=False):
    """A Case for ``fastjac.jacobian`` (or ``sum_gradient`` if ``reduce``,
    ``sum_hessian``'s diagonal if ``hessian``).

    op, args, wrt : the fastjac call ``jacobian(op, *args, wrt=wrt)``; a
        scalar operand is a Python float.
    names : the argument names used by the formulas, e.g. ("w", "x").
    fwd : the forward expression y in those names, evaluated with each
        autodiff library's functions (maximum, tanh, sigmoid, relu, ...).
    formula : the derivative as one scalar expression (numexpr and numba;
        ``where(c, a, b)``, exp, log, tanh... ; for a sum with respect to a
        scalar, the summed term), or None where neither applies.
    numpy, numpy_out : the hand-written NumPy derivative, allocating and
        into ``out`` (for a scalar result, numpy_out may be None).
    reads : how many n-element arrays the derivative must read.
    """
    import fastjac

    from . import _rivals

    dtype = np.dtype(dtype_of(args))
    n = max(np.size(a) for a in args)
    wrt_scalar = is_scalar(args[wrt])
    scalar_result = reduce and wrt_scalar
    writes = 0 if scalar_result else 1
    entry = fastjac.sum_hessian if hessian else \
        fastjac.sum_gradient if reduce else fastjac.jacobian
    out = np.empty((), dtype) if scalar_result else np.empty(n, dtype)

    # the calls written out (see call_with): jacobian(op, a, b, wrt=.., out=..)
    a0, a1 = (args[0], None) if len(args) == 1 else args

    def fj():
        return entry(op, a0, a1, wrt=wrt, out=out)

    def fj_alloc():
        return entry(op, a0, a1, wrt=wrt)

    fj_kernel = None
    if not reduce:
        k = fastjac.kernel(op, wrt)
        fj_kernel = call_with(k, [np.asarray(a, dtype) if is_scalar(a) else a for a in args],
                              out)

    mode = "hess" if hessian else ("grad_scalar" if wrt_scalar else "grad") if reduce else \
        ("vector" if wrt_scalar else "diag")
    spec = _rivals.Spec(args=args, names=names, wrt=wrt, mode=mode, fwd=fwd,
                        formula=formula, numpy=numpy, numpy_out=numpy_out,
                        dtype=dtype, n=n)
    arrays = [v for v, a in zip(names, args) if not is_scalar(a)]
    bare = formula is None or formula.strip() in arrays or not any(
        re.search(rf"\b{v}\b", formula) for v in arrays)
    return Case(family=family, name=name, kind=kind, n=n, dtype=dtype,
                nbytes=nbytes_for(n, dtype, reads, writes), trivial=bare and not scalar_result,
                reads=reads, writes=writes,
                fastjac=fj, fastjac_alloc=fj_alloc, fastjac_kernel=fj_kernel,
                rivals=_rivals.rivals_for(spec), quick=quick, rtol=rtol)


def dtype_of(args):
    arrays = [a for a in args if not is_scalar(a)]
    return arrays[0].dtype if arrays else np.dtype(np.float64)


# -- answers ---------------------------------------------------------------------

def to_numpy(result):
    """A NumPy array from any library's result (JAX, PyTorch, scalars).

    A tuple of several parts of different sizes (a loss's value and
    gradient) is one flat array of its parts, in order."""
    if isinstance(result, tuple) and len(result) == 1:
        result = result[0]
    if isinstance(result, tuple):
        parts = [to_numpy(part) for part in result]
        if len({part.shape for part in parts}) > 1:
            return np.concatenate([part.reshape(-1) for part in parts])
        return np.stack(parts)
    if hasattr(result, "detach"):              # torch.Tensor
        result = result.detach().cpu().numpy()
    return np.asarray(result)


def check(expected, got, dense, dtype, rtol=None):
    """None if got matches fastjac's expected answer, else a reason."""
    expected = np.asarray(expected)
    got = to_numpy(got)
    if dense:
        n = expected.size
        if got.size != n * n:
            return f"dense result has {got.size} entries, expected {n}x{n}"
        got = got.reshape(n, n)
        off = got - np.diag(np.diagonal(got))
        if np.any(off != 0):
            return "dense result has nonzero off-diagonal entries"
        got = np.diagonal(got)
    got = got.reshape(expected.shape) if got.size == expected.size else got
    if got.shape != expected.shape:
        return f"shape {got.shape}, expected {expected.shape}"
    if rtol is None:
        rtol = 1e-9 if np.dtype(dtype) == np.float64 else 2e-4
    e = expected.reshape(-1)
    g = got.reshape(-1)
    if e.size > CHECK_ALL_MAX:
        # Above 10^6 elements: every element of the first and last 2^16, and
        # a stride through the rest (about 10^6 in all); comparing all 10^7
        # costs more than timing the kernel, and any error of a formula or
        # of a chunk boundary shows in this sample.
        stride = e.size // CHECK_ALL_MAX + 1
        pick = np.unique(np.concatenate([np.arange(1 << 16), np.arange(0, e.size, stride),
                                         np.arange(e.size - (1 << 16), e.size)]))
        e, g = e[pick], g[pick]
    e = e.astype(np.float64)
    g = g.astype(np.float64)
    finite = np.abs(e[np.isfinite(e)])
    atol = rtol * float(finite.max()) if finite.size else 0.0
    with np.errstate(invalid="ignore"):
        diff = np.abs(g - e)
        ok = (diff <= atol + rtol * np.abs(e)) | (g == e) | (np.isnan(e) & np.isnan(g))
    if not ok.all():
        bad = diff[~ok]
        worst = float(np.nanmax(bad)) if not np.isnan(bad).all() else float("nan")
        return f"wrong answer (max abs error {worst:.3g} at {int((~ok).sum())} elements)"
    return None


# -- timing ----------------------------------------------------------------------

def calibrate(fn, quick=False, once=None):
    """(seconds per call, calls per batch) for an already warm fn (``once``: a
    call's duration already measured, which spares a slow call).

    A batch repeats fn until it lasts about 1 ms (0.5 ms in quick mode),
    so that a sub-microsecond call is timed over thousands of calls.
    """
    batch = 5e-4 if quick else 1e-3
    if once is None or once < batch:
        t0 = time.perf_counter()
        fn()
        once = time.perf_counter() - t0
    once = max(once, 1e-8)
    if once < batch:                            # recalibrate on a short batch
        k = max(1, min(1000, int(batch / once)))
        t0 = time.perf_counter()
        for _ in range(k):
            fn()
        once = max((time.perf_counter() - t0) / k, 1e-8)
    return once, max(1, int(batch / once))


def warm(fn, seconds, calls=100, expect=None):
    """Call fn until ``calls`` calls or ``seconds`` have passed (at least twice,
    or once for a call over 5 ms); return the duration of the last call.

    On this 2-vCPU VM, a team of worker threads that has been idle wakes
    slowly for its first dozen calls or so (8 ms each, then 2 µs: the host
    learns to keep the idle vCPU polling): a route is timed only after
    it has been called for a while, as in a hot loop.

    ``expect`` (the STREAM twin's, see ``stream_twin``): the longest a warm
    call can take. While calls are slower, warming goes on (up to ``calls``
    calls or 1 s): a slow first call of a waking or descheduled OpenMP team
    would otherwise end the warm-up at once, and every call timed after it
    could be as slow.
    """
    t0 = time.perf_counter()
    last = 0.0
    for i in range(calls):
        t1 = time.perf_counter()
        fn()
        t2 = time.perf_counter()
        last = t2 - t1
        if expect is not None and last > expect and t2 - t0 < 1.0:
            continue
        if (i >= 1 and t2 - t0 > seconds) or t2 - t0 > 0.005:  # one slow call is enough
            break
    return last


ROUNDS = 3         # turns the routes of a case take (full mode), see measure
# After a route whose calls take SETTLE_AFTER seconds or more, wait SETTLE_S
# before the next: OpenBLAS's threads (NumPy's X @ w in the neuron) spin
# about 0.1 s after each call, and on 2 vCPUs a STREAM twin or fastjac call
# made meanwhile ran at a third of its speed (the neuron's twin: 11.7 ms in
# the run, 3.2 ms alone).
SETTLE_AFTER, SETTLE_S = 1e-3, 0.1
# Likewise before fastjac's calls after a rival with a thread pool of its own
# (``run_case(beside=True)``): numba's OpenMP threads spin after a parallel
# loop, and fastjac's two-thread calls timed meanwhile read up to twice their
# time (minimum d/dx at n = 10^5: median 27 us beside numba, best batch 15 us,
# 15 us in fastjac's own process).
POOLED_ROUTES = frozenset({"numexpr", "numba_par", "jax", "jax_dense", "torch", "torch_vjp",
                           "torch_dense", "sklearn", "sklearn_setup"})
SETTLE_POOL_S = 0.02


def measure(routes, quick=False):
    """Median per-call seconds of each warm callable in ``routes`` (a dict).

    Each route is timed in blocks of back-to-back batches, as a hot loop
    would call it: interleaving the routes call by call would let one
    library's idle worker threads (OpenMP, XLA, numba) fall asleep and
    charge every call the wake-up, or spin and steal the cores from the
    next library. Each block starts with ``warm``. The blocks of the routes
    take turns, in ``ROUNDS`` rounds: on a machine shared with other jobs
    the load changes from one second to the next, and a ratio of two routes
    (fastjac against its STREAM twin, or NumPy) is only fair when both saw
    the same moments. The median over all batches (5 to 11 per route, 3 to 7
    in quick mode; 1 for calls over 0.2 s) is kept, and the best batch.
    Garbage collection is off while timing, as in timeit.
    """
    budget = 0.02 if quick else 0.04            # seconds of batches per route, roughly
    warm_s = 0.005
    low, high = (3, 7) if quick else (5, 11)    # batches
    rounds = 1 if quick else ROUNDS
    times = {name: [] for name in routes}
    numbers, plan, per_call = {}, {}, {}
    previous = None

    def share(name, r):                         # batches of route `name` in round r
        return plan[name] // rounds + (r < plan[name] % rounds)
    enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            for name, fn in routes.items():
                if r > 0 and share(name, r) == 0:
                    continue                    # this route's batches are all taken
                if not quick and per_call.get(previous, 0) >= SETTLE_AFTER:
                    time.sleep(SETTLE_S)    # the last route's threads go idle first
                elif not quick and previous in POOLED_ROUTES and name in FASTJAC_ROUTES:
                    time.sleep(SETTLE_POOL_S)
                previous = name
                last = warm(fn, warm_s, expect=getattr(fn, "expect", None))
                if r == 0:
                    once, number = calibrate(fn, quick, last)
                    numbers[name], per_call[name] = number, once
                    # slow calls too get `low` batches (a median of 3 is one batch,
                    # which one disturbed moment decides), but 1 over 0.2 s
                    floor = 1 if once * number > 0.2 else low
                    plan[name] = int(min(high, max(floor, budget / (once * number))))
                number = numbers[name]
                for _ in range(share(name, r)):
                    t0 = time.perf_counter()
                    for _ in range(number):
                        fn()
                    times[name].append((time.perf_counter() - t0) / number)
    finally:
        if enabled:
            gc.enable()
    out = {}
    for name, ts in times.items():
        q1, med, q3 = np.percentile(ts, [25, 50, 75])
        out[name] = {"median": float(med), "best": float(min(ts)), "q1": float(q1),
                     "q3": float(q3), "batches": len(ts), "number": numbers[name]}
    return out


def call_overhead(quick=False):
    """The timer's own cost per call of an empty function (not subtracted)."""
    return measure({"empty": lambda: None}, quick)["empty"]["median"]


# -- the bandwidth bound, timed beside the kernels -------------------------------------

STREAM = {"module": None, "build_dir": None}
STREAM_MIN_N = 100_000
STREAM_WARM_GBPS = 5.0      # a twin's call slower than its bytes at this rate is not warm
# (reads, writes) -> the STREAM kernel with that traffic
STREAM_PATTERNS = {(1, 1): "copy", (2, 1): "triad", (2, 2): "triad2", (0, 1): "fill",
                   (1, 0): "read"}


def stream_twin(case):
    """The STREAM kernel that moves the bytes the case must move, or None.

    ``(case.reads, case.writes)`` picks the kernel: one input and one
    output: copy; two inputs: triad; two inputs and two outputs: triad2
    (c = a + s*b and d = b + s*a, one pass); output only: fill; input only:
    a sum. Its reads + writes float64 arrays share ``case.nbytes`` equally,
    so the twin moves exactly the case's bytes: n elements' worth each for
    an n-element case (float32 cases run the float64 kernels on half as
    many elements), and for the neuron one read of X and y together.
    Outputs of 16 MB and more (each) are written with non-temporal stores,
    as fastjac writes them -- except a fill: the twin fills ones with
    ordinary stores, as fastjac does (faster here: ``diagnose.py fill``;
    fastjac streams fills of zeros, faster still). None below
    ``STREAM_MIN_N`` elements (``case.n``) or without a C compiler. The callable's ``expect`` attribute (its bytes
    at ``STREAM_WARM_GBPS``) tells ``warm`` when a call is not yet warm.
    """
    if case.n < STREAM_MIN_N or STREAM["build_dir"] is None:
        return None
    pattern = STREAM_PATTERNS.get((case.reads, case.writes))
    if pattern is None or case.nbytes <= 0:
        return None
    if STREAM["module"] is None:
        from ._bandwidth import _build
        try:
            STREAM["module"] = _build(STREAM["build_dir"])
        except Exception:                        # noqa: BLE001 - no compiler: no twin
            STREAM["build_dir"] = None
            return None
    st = STREAM["module"]
    m = case.nbytes // (8 * (case.reads + case.writes))
    # inputs first (1.0, 2.0), then outputs (0.0); first touch in parallel
    arrays = [np.empty(m) for _ in range(case.reads + case.writes)]
    for array, value in zip(arrays, [1.0, 2.0][:case.reads] + [0.0] * case.writes):
        st.init(array, value)
    nt = m * 8 >= 16 << 20
    if pattern == "copy":
        a, c = arrays
        fn = (lambda: st.copy_nt(a, c)) if nt else (lambda: st.copy(a, c))
    elif pattern == "triad":
        b, c, a = arrays
        fn = (lambda: st.triad_nt(b, c, a, 3.0)) if nt else (lambda: st.triad(b, c, a, 3.0))
    elif pattern == "triad2":
        a, b, c, d = arrays
        fn = ((lambda: st.triad2_nt(a, b, c, d, 3.0)) if nt
              else (lambda: st.triad2(a, b, c, d, 3.0)))
    elif pattern == "fill":
        (c,) = arrays
        fn = lambda: st.fill(c, 1.0)          # noqa: E731
    else:
        (a,) = arrays
        fn = lambda: st.read(a)               # noqa: E731
    fn.expect = case.nbytes / (STREAM_WARM_GBPS * 1e9)
    return fn


# -- running a case ------------------------------------------------------------------

def run_case(case, quick=False, log=print, time_fastjac=True, beside=False):
    """Time a case's fastjac routes and every rival; return a result dict.

    Each rival is built (setup and JIT compilation), called once to warm
    up and checked against fastjac's answer; the routes that pass are then
    timed together by ``measure``. ``times`` maps a route to its timing;
    ``notes`` maps a route that was not timed to the reason (missing
    library, not applicable, wrong answer, error).

    ``beside``: a rival group's worker also times fastjac's out= and
    allocating calls, in the same rounds as the rivals, into
    ``result["beside"]``: the rivals' ratios are taken against those
    (``ratio``), measured in the same process at the same moments, rather
    than against the fastjac group's timing made minutes apart.
    """
    result = {"family": case.family, "name": case.name, "kind": case.kind,
              "n": case.n, "dtype": np.dtype(case.dtype).name, "nbytes": case.nbytes,
              "trivial": case.trivial, "times": {}, "notes": {}}
    expected = np.array(to_numpy(case.fastjac()), copy=True)
    routes = {}
    if beside:
        routes["fastjac"] = case.fastjac
        if case.fastjac_alloc is not None:
            routes["fastjac_alloc"] = case.fastjac_alloc
    for route, fn in (("fastjac", case.fastjac), ("fastjac_alloc", case.fastjac_alloc),
                      ("fastjac_kernel", case.fastjac_kernel)):
        if fn is None or not time_fastjac:
            continue
        if route == "fastjac_kernel" and case.n > KERNEL_MAX_N:
            result["notes"][route] = (f"not timed above n = {KERNEL_MAX_N:,}: the call "
                                      f"overhead it saves is under a microsecond")
            continue
        reason = check(expected, fn(), False, case.dtype, case.rtol)
        if reason:
            result["notes"][route] = reason
            log(f"    ! {case.name} {route}: {reason}")
            continue
        routes[route] = fn
    if time_fastjac:
        twin = stream_twin(case)
        if twin is not None:
            routes["stream"] = twin
    for rival in case.rivals:
        if rival.dense and case.n > DENSE_MAX_N:
            continue
        try:
            fn = rival.build()
            got = fn()                          # warm-up: JIT compiles here
            reason = check(expected, got, rival.dense, case.dtype, case.rtol)
            del got
        except Skip as exc:
            result["notes"][rival.name] = str(exc)
            continue
        except Exception as exc:                # noqa: BLE001 - a rival's failure is a note
            result["notes"][rival.name] = f"error: {type(exc).__name__}: {exc}"[:200]
            continue
        if reason:
            result["notes"][rival.name] = reason
            log(f"    ! {case.name} {rival.name}: {reason}")
            continue
        routes[rival.name] = fn
    times = measure(routes, quick)
    if beside:
        result["beside"] = {r: times.pop(r) for r in ("fastjac", "fastjac_alloc") if r in times}
    result["times"] = times
    return result


def ratio(case, route, stat="median"):
    """rival time / fastjac time for one route of a (merged) case result, or None.

    The fastjac time is the one measured beside the rival, in its group's
    process (``run_case(beside=True)``), where there is one; else the
    fastjac group's. Preallocating rivals are compared with fastjac's out=
    call, allocating ones with fastjac's allocating call (or out= when
    there is none).
    """
    times = case["times"]
    if route not in times or route in FASTJAC_ROUTES:
        return None
    ref = case.get("beside", {}).get(GROUP_OF.get(route), times)
    if "fastjac" not in ref:
        return None
    base = ref["fastjac"] if route in PREALLOCATING else ref.get("fastjac_alloc", ref["fastjac"])
    return times[route][stat] / base[stat]


# -- discovery -------------------------------------------------------------------

def discover(families=None):
    """The family modules: every benchmarks/bench_*.py with a cases() function.

    Returns a list of (family name, module), sorted by file name; ``families``
    (names) keeps only those.
    """
    found = []
    for path in sorted(HERE.glob("bench_*.py")):
        module = importlib.import_module(f"{__package__}.{path.stem}")
        if not callable(getattr(module, "cases", None)):
            continue
        name = getattr(module, "FAMILY", path.stem[len("bench_"):])
        if families and name not in families:
            continue
        found.append((name, module))
    return found


def geomean(values):
    values = [v for v in values if v and v > 0 and math.isfinite(v)]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else float("nan")


# -- one process per library ---------------------------------------------------------

# The routes each worker process times. Libraries with thread pools of their
# own (fastjac's, OpenMP in numba and PyTorch, XLA's in JAX, numexpr's) run
# in separate processes: in one process, one library's spinning or sleeping
# workers distort the next library's timings (a parallel numba call at
# n = 16 measured 16 ms instead of 1.5 µs after the others had run).
GROUPS = {
    "fastjac": ("fastjac", "fastjac_alloc", "fastjac_kernel", "stream", "numpy", "numpy_out",
                "scipy"),
    "numexpr": ("numexpr",),
    "numba": ("numba", "numba_par"),
    "jax": ("jax", "jax_dense"),
    "torch": ("torch", "torch_vjp", "torch_dense"),
    "autograd": ("autograd",),
    "sklearn": ("sklearn", "sklearn_setup"),
}
GROUP_OF = {route: group for group, routes in GROUPS.items() for route in routes}


def select(case, routes):
    """Keep only the given routes of a case (fastjac's out= call stays: it
    gives the answer every rival is checked against, timed or not)."""
    keep = set(routes)
    case.rivals = [r for r in case.rivals if r.name in keep]
    if "fastjac_alloc" not in keep:
        case.fastjac_alloc = None
    if "fastjac_kernel" not in keep:
        case.fastjac_kernel = None
    return case


def run_group(group, sizes, dtypes, families, quick, log):
    """Yield the result dict of every case, timing only ``group``'s routes.

    A family whose ``cases()`` raises, or a case whose fastjac reference
    raises, yields ``{"error": ...}`` instead and the run goes on.
    """
    routes = GROUPS[group]
    for dtype in dtypes:
        for n in sizes:
            for family, module in discover(families):
                try:
                    cases = module.cases(n, np.dtype(dtype))
                except Exception as exc:          # noqa: BLE001 - reported, run goes on
                    log(f"    ! {family} cases({n}, {dtype}) failed: {exc!r}")
                    yield {"error": f"{family}.cases({n}, {np.dtype(dtype).name}): "
                                    f"{type(exc).__name__}: {exc}"[:300]}
                    continue
                for case in cases:
                    if quick and not case.quick:
                        continue
                    try:
                        rival_group = "fastjac" not in routes
                        yield run_case(select(case, routes + ("fastjac_alloc",) * rival_group),
                                       quick, log, time_fastjac=not rival_group,
                                       beside=rival_group)
                    except Exception as exc:      # noqa: BLE001 - reported, run goes on
                        log(f"    ! {family} {case.name} failed: {exc!r}")
                        yield {"error": f"{family} {case.name} n={n} "
                                        f"{np.dtype(dtype).name}: {type(exc).__name__}: {exc}"[:300]}
