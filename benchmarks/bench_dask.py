"""fastjac inside Dask graphs (issue 18): throughput, NumPy formulas, overhead.

    python benchmarks/bench_dask.py                # the report below (a few minutes)
    python benchmarks/bench_dask.py --total 4e6    # smaller data, quicker

As a family of the suite (``cases``, found by run.py): each case is one
Dask graph over n elements in 10 chunks (chunks of 10^6 at n = 10^7),
computed on Dask's threaded scheduler; the "fastjac" route is fastjac's
graph, the "numpy" route the same graph built from NumPy formulas.

The standalone report measures, on the same total data (``--total``
elements, float64), each a median of interleaved runs:

* throughput: fastjac in memory (one call) against fastjac in Dask (the
  result gathered by compute(), and kept in blocks by persist()), chunks
  of 10^6 and more -- the fraction of in-memory throughput kept;
* against NumPy formulas in Dask, same chunks: the speed-up;
* threads: fastjac serial in each task (the default) against fastjac's pool
  in each task (FASTJAC_DASK_POOL=1), both on the threaded scheduler;
* per-task overhead: chunks from 10^2 to 10^6 elements: (time in Dask -
  time in memory) / tasks, and the chunk size below which the scheduler
  costs more than the kernel.
"""
import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "src"))

from benchmarks._harness import Case, Rival  # noqa: E402

FAMILY = "dask"
DESCRIPTION = "fastjac's graphs in Dask (10 chunks, threaded scheduler) vs NumPy formulas in Dask"


def _setups(n, chunk, dtype):
    """name -> (kind, nbytes, fastjac thunk -> dask array, numpy thunk -> dask array,
    in-memory fastjac thunk)."""
    import dask.array as da
    import fastjac
    rng = np.random.default_rng(18)
    a = rng.uniform(0.5, 1.5, n).astype(dtype)
    b = rng.uniform(0.5, 1.5, n).astype(dtype)
    da_a, da_b = da.from_array(a, chunks=chunk), da.from_array(b, chunks=chunk)
    width = 10 if n >= 160 else 4
    X = b[: n // width * width].reshape(-1, width)
    dX = da.from_array(X, chunks=(max(1, chunk // width), width))
    w = rng.uniform(0.5, 1.5, width).astype(dtype)
    xv, zv, yv = fastjac.var("x"), fastjac.var("z"), fastjac.var("y")
    loss = fastjac.compile(fastjac.sum(fastjac.log(1 + fastjac.exp(-yv * zv * xv))), wrt="z")
    X_, w_, t_ = fastjac.var("X"), fastjac.var("w"), fastjac.var("t")
    logistic = fastjac.compile(fastjac.mean(fastjac.softplus(X_ @ w_) - t_ * (X_ @ w_)),
                               wrt="w")
    targets = (rng.uniform(size=X.shape[0]) < 0.5).astype(dtype)
    d_targets = da.from_array(targets, chunks=dX.chunks[0])
    w_small = (w - 1) / width

    def logistic_dask():
        value, grad = logistic.value_and_jacobian("w", X=dX, w=w_small, t=d_targets)
        return da.concatenate([value[None], grad])

    def logistic_numpy():
        z = dX @ w_small
        value = (da.logaddexp(0, z) - d_targets * z).mean()
        grad = dX.T @ (1 / (1 + da.exp(-z)) - d_targets) / X.shape[0]
        return da.concatenate([value[None].astype(dtype), grad.astype(dtype)])

    def logistic_memory():
        value, grad = logistic.value_and_jacobian("w", X=X, w=w_small, t=targets)
        return np.concatenate([[value], grad])
    sign = np.where(a > 1, 1.0, -1.0).astype(dtype)
    da_sign = da.from_array(sign, chunks=chunk)
    z = 0.3
    item = np.dtype(dtype).itemsize
    return {
        "jacobian divide d/db": (
            "memory", 3 * n * item,
            lambda: fastjac.jacobian("divide", da_a, da_b, wrt=1),
            lambda: -da_a / (da_b * da_b),
            lambda: fastjac.jacobian("divide", a, b, wrt=1)),
        "jacobian tanh": (
            "compute", 2 * n * item,
            lambda: fastjac.jacobian("tanh", da_a),
            lambda: 1 - da.tanh(da_a) ** 2,
            lambda: fastjac.jacobian("tanh", a)),
        "sum_gradient w*X d/dw": (
            "memory", n * item,
            lambda: fastjac.sum_gradient("multiply", w, dX),
            lambda: dX.sum(0),
            lambda: fastjac.sum_gradient("multiply", w, X)),
        "batch loss sum(log(1+exp(-y z x))) d/dz": (
            "compute", 2 * n * item,
            lambda: loss.jacobian("z", x=da_a, z=z, y=da_sign),
            lambda: (-da_sign * da_a / (1 + np.exp(da_sign * z * da_a))).sum(),
            lambda: loss.jacobian("z", x=a, z=z, y=sign)),
        "logistic loss X @ w: value and d/dw": (
            "memory", (X.size + X.shape[0]) * item, logistic_dask, logistic_numpy,
            logistic_memory),
    }


def cases(n, dtype):
    try:
        import dask  # noqa: F401
    except ImportError:
        return []
    chunk = max(1, n // 10)
    out = []
    for name, (kind, nbytes, fj, numpy, _) in _setups(n, chunk, dtype).items():
        out.append(Case(
            family=FAMILY, name=name, kind=kind, n=n, dtype=dtype, nbytes=nbytes,
            fastjac=(lambda fj=fj: fj().compute(scheduler="threads")),
            rivals=[Rival("numpy", lambda numpy=numpy: (
                lambda: numpy().compute(scheduler="threads")))],
            quick=name == "sum_gradient w*X d/dw",
            rtol=1e-10 if dtype == np.float64 else 1e-4))
    return out


# -- the standalone report -----------------------------------------------------------------

def _median_interleaved(fns, rounds):
    """Median seconds of each callable, called in turn ``rounds`` times."""
    times = {k: [] for k in fns}
    for fn in fns.values():
        fn()                                # warm (JIT, first touch)
    for _ in range(rounds):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}


def report(total, rounds, throughput_only=False):
    import dask
    import fastjac
    print(f"fastjac {fastjac.__version__}, dask {dask.__version__}, "
          f"{os.cpu_count()} CPUs, fastjac threads {fastjac.get_num_threads()}, "
          f"total {total:.0e} float64 elements, median of {rounds} interleaved runs")
    print("\n## Throughput, same total data (threaded scheduler)\n")
    print("compute(): the result gathered into one NumPy array (Dask concatenates the "
          "blocks: one more copy of an element-wise result); persist(): the blocks kept "
          "as they are, as on a cluster. Kept: in-memory time / time in Dask.\n")
    print("| case | chunk | in memory | fastjac in Dask, compute() | kept | persist() | kept "
          "| NumPy in Dask, compute() | speed-up |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for chunk in (10**6, 2 * 10**6, 5 * 10**6):
        if chunk > total:
            continue
        for name, (kind, nbytes, fj, numpy, mem) in _setups(total, chunk, np.float64).items():
            t = _median_interleaved({
                "mem": mem,
                "fj": lambda fj=fj: fj().compute(scheduler="threads"),
                "keep": lambda fj=fj: fj().persist(scheduler="threads"),
                "np": lambda numpy=numpy: numpy().compute(scheduler="threads")}, rounds)
            gbs = lambda s: nbytes / s / 1e9   # noqa: E731
            print(f"| {name} | {chunk:.0e} | {t['mem'] * 1e3:.1f} ms ({gbs(t['mem']):.1f} GB/s) | "
                  f"{t['fj'] * 1e3:.1f} ms ({gbs(t['fj']):.1f} GB/s) | "
                  f"{t['mem'] / t['fj']:.0%} | {t['keep'] * 1e3:.1f} ms | "
                  f"{t['mem'] / t['keep']:.0%} | {t['np'] * 1e3:.1f} ms | "
                  f"{t['np'] / t['fj']:.2f}x |")
    if throughput_only:
        return
    scheduler_floor(total, rounds)

    print("\n## Threads inside tasks: serial per task (default) vs fastjac's pool\n")
    print("| case | chunk | scheduler | serial per task | pool per task |")
    print("|---|---:|---|---:|---:|")
    for chunk in (10**6, total // 2):
        setups = _setups(total, chunk, np.float64)
        for name in ("jacobian divide d/db", "jacobian tanh"):
            fj = setups[name][2]
            for sched in ("threads", "synchronous"):
                def run(pool, fj=fj, sched=sched):
                    if pool:
                        os.environ["FASTJAC_DASK_POOL"] = "1"
                    try:
                        fj().compute(scheduler=sched)
                    finally:
                        os.environ.pop("FASTJAC_DASK_POOL", None)
                t = _median_interleaved({"serial": lambda: run(False),
                                         "pool": lambda: run(True)}, rounds)
                print(f"| {name} | {chunk:.0e} | {sched} | {t['serial'] * 1e3:.1f} ms | "
                      f"{t['pool'] * 1e3:.1f} ms |")

    print("\n## Per-task overhead (jacobian divide d/db, threaded scheduler)\n")
    print("(a graph of from_array chunks, the derivative, and the result gathered; "
          "the overhead includes Dask's optimisation of the graph)\n")
    print("| chunk | tasks | in memory | in Dask | overhead per task | kernel per chunk |")
    print("|---:|---:|---:|---:|---:|---:|")
    for chunk in (100, 1_000, 10_000, 100_000, 1_000_000):
        n = min(total, 200 * chunk)          # 200 tasks (fewer for the largest chunks)
        setups = _setups(n, chunk, np.float64)
        _, _, fj, _, mem = setups["jacobian divide d/db"]
        t = _median_interleaved({"mem": mem, "fj": lambda fj=fj: fj().compute(
            scheduler="threads")}, rounds)
        tasks = -(-n // chunk)
        per_task = (t["fj"] - t["mem"]) / tasks
        print(f"| {chunk:.0e} | {tasks} | {t['mem'] * 1e3:.2f} ms | {t['fj'] * 1e3:.1f} ms | "
              f"{per_task * 1e6:.0f} µs | {t['mem'] / tasks * 1e6:.1f} µs |")


def _nothing(block):
    return np.zeros((1,) + block.shape[1:], np.float64)


def scheduler_floor(total, rounds):
    """The sum_gradient graph against the same graph shape whose blocks do
    nothing: what Dask's scheduler costs before any kernel runs."""
    import dask.array as da
    print("\n## Dask's floor: sum_gradient w*X's graph, and one whose blocks do nothing\n")
    print("| chunk | tasks | in memory | fastjac in Dask | no-op blocks + tree sum |")
    print("|---:|---:|---:|---:|---:|")
    for chunk in (10**6, 10**7):
        if chunk > total:
            continue
        setups = _setups(total, chunk, np.float64)
        _, _, fj, _, mem = setups["sum_gradient w*X d/dw"]
        graph = fj().dask                 # (for its number of tasks)
        rows = max(1, chunk // 10)
        X = da.from_array(np.zeros((total // 10, 10)), chunks=(rows, 10))

        def noop(X=X):
            return X.map_blocks(_nothing, chunks=(1, 10), meta=np.empty((0, 0))).sum(0).compute(
                scheduler="threads")
        t = _median_interleaved({"mem": mem, "fj": lambda fj=fj: fj().compute(
            scheduler="threads"), "noop": noop}, rounds)
        print(f"| {chunk:.0e} | {len(graph)} | {t['mem'] * 1e3:.1f} ms | {t['fj'] * 1e3:.1f} ms | "
              f"{t['noop'] * 1e3:.1f} ms |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--total", type=float, default=2e7, help="elements (default 2e7)")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--throughput-only", action="store_true",
                   help="only the throughput table")
    args = p.parse_args(argv)
    report(int(args.total), args.rounds, args.throughput_only)


if __name__ == "__main__":
    main()
