"""The gradient of a batch loss over data larger than the workers' memory.

    python examples/dask_gradient.py            # X of 2e9 float64 (16 GB), 2 GB per worker
    python examples/dask_gradient.py --small    # X of 2e7 float64, seconds (CI)

X, shape (N, n), is generated lazily by ``dask.array.random`` from a seed,
block by block on the workers: it never exists in one place. The loss
shares a parameter w of shape (n,) across the N rows,

    L(w) = sum_ij max(w_j, X_ij),      dL/dw_j = #{i : X_ij < w_j} (+ 1/2 per tie),

and ``fastjac.sum_gradient("maximum", w, X)`` returns dL/dw as a lazy Dask
array: each task generates its block of X, and fastjac's one-pass kernel
reduces it to n partial sums; Dask adds them in a tree. The script prints
the gradient, checks it against the closed form on a subsample of rows,
reports the peak memory of every worker, and times the same graph built
from NumPy formulas, ``where(X < w, 1, where(X > w, 0, 0.5)).sum(0)``.
Needs ``pip install "fastjac[dask]"``.
"""
import argparse
import resource
import time

import numpy as np

import fastjac


def peak_rss_bytes():
    """This process's peak resident memory (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main(argv=None):
    import dask.array as da
    from distributed import Client, LocalCluster

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="2e7 elements: seconds, for CI")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--memory-limit", default="2GB", help="per worker (default 2GB)")
    args = p.parse_args(argv)

    total = 2 * 10**7 if args.small else 2 * 10**9
    n = 10
    N = total // n
    rows = 10**6                        # a chunk: 10^7 elements, 80 MB
    if args.small:
        rows = 2 * 10**5
    cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                           memory_limit=args.memory_limit, host="127.0.0.1",
                           dashboard_address=None)
    client = Client(cluster)
    try:
        X = da.random.default_rng(2026).uniform(0.0, 1.0, size=(N, n), chunks=(rows, n))
        w = np.linspace(0.05, 0.95, n)
        nbytes = X.nbytes
        print(f"X: {N} x {n} float64 = {nbytes / 1e9:.2f} GB in {X.npartitions} chunks of "
              f"{rows * n * 8 / 1e6:.0f} MB; {args.workers} workers of {args.memory_limit}")

        def numpy_formula(X):
            return da.where(X < w, 1.0, da.where(X > w, 0.0, 0.5)).sum(0)

        # warm the workers (imports, first allocations) on one chunk of each graph
        fastjac.sum_gradient("maximum", w, X[:rows]).compute()
        numpy_formula(X[:rows]).compute()

        grad = fastjac.sum_gradient("maximum", w, X)             # lazy: nothing ran yet
        t0 = time.perf_counter()
        g = grad.compute()
        t_fastjac = time.perf_counter() - t0
        print("dL/dw =", np.array2string(g, precision=1, max_line_width=120))

        # the closed form on a subsample: the first rows of X (the same
        # generator, so the same numbers), counted with NumPy
        sub = X[: min(N, 200_000)]
        expected = np.where(sub.compute() < w, 1.0, np.where(sub.compute() > w, 0.0, 0.5)).sum(0)
        got = fastjac.sum_gradient("maximum", w, sub).compute()
        assert np.array_equal(got, expected), (got, expected)
        # and the whole: each X_ij is uniform on [0, 1), so E[dL/dw_j] = N w_j
        rel = np.abs(g / (N * w) - 1).max()
        print(f"check: subsample of {sub.shape[0]} rows equals the closed form exactly; "
              f"whole gradient within {rel:.1e} of its expectation N*w")

        formula = numpy_formula(X)
        t0 = time.perf_counter()
        g_numpy = formula.compute()
        t_numpy = time.perf_counter() - t0
        assert np.allclose(g_numpy, g, rtol=1e-12)

        peaks = client.run(peak_rss_bytes)
        for worker, peak in sorted(peaks.items()):
            print(f"peak memory of worker {worker}: {peak / 1e9:.2f} GB")
        print(f"fastjac in Dask: {t_fastjac:.2f} s, {nbytes / t_fastjac / 1e9:.2f} GB/s of X; "
              f"NumPy formulas in Dask: {t_numpy:.2f} s, {nbytes / t_numpy / 1e9:.2f} GB/s "
              f"({t_numpy / t_fastjac:.2f}x). Both include generating X on the workers.")
    finally:
        client.close()
        cluster.close()


if __name__ == "__main__":
    main()
