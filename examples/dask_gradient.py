"""The gradient of a batch loss over data larger than the workers' memory.

    python examples/dask_gradient.py            # X of 2e9 float64 (16 GB), 2 GB per worker
    python examples/dask_gradient.py --small    # X of 2e7 float64, seconds (CI)

X, shape (N, n), and the labels y are generated lazily by
``dask.array.random`` from a seed, block by block on the workers: they
never exist in one place. The loss is the mean logistic loss of a linear
model with weights w shared by the N rows, plus an L2 penalty,

    L(w) = mean(softplus(X w) - y * (X w)) + alpha/2 |w|^2,
    dL/dw = X^T (sigmoid(X w) - y) / N + alpha w,

and ``loss.value_and_jacobian("w", X=X, w=w, y=y)`` returns L and dL/dw as
lazy Dask arrays: each task generates its block of rows and reads it once
(z = X_b w, then X_b^T (sigmoid(z) - y_b) while the block is in cache);
Dask adds the blocks' partial sums in a tree. The script prints the
result, checks it against the closed form on a subsample of rows,
reports the peak memory of every worker, and times the same graph built
from NumPy formulas (``X @ w``, then ``X.T @ r``).
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
    rows = 2 * 10**5 if args.small else 10**6      # a chunk: 16 MB (80 MB)
    alpha = 1e-3
    cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                           memory_limit=args.memory_limit, host="127.0.0.1",
                           dashboard_address=None)
    client = Client(cluster)
    try:
        rng = da.random.default_rng(2026)
        X = rng.standard_normal((N, n), chunks=(rows, n))
        w_true = np.linspace(-1.0, 1.0, n)
        # labels drawn from the model itself, block by block with X
        u = rng.uniform(0.0, 1.0, N, chunks=rows)
        y = (u < 1 / (1 + da.exp(-(X @ w_true)))).astype(np.float64)
        w = np.zeros(n) + 0.1
        print(f"X: {N} x {n} float64 = {X.nbytes / 1e9:.2f} GB in {X.npartitions} chunks of "
              f"{rows * n * 8 / 1e6:.0f} MB; {args.workers} workers of {args.memory_limit}")

        X_, w_, y_ = fastjac.var("X"), fastjac.var("w"), fastjac.var("y")
        z = X_ @ w_
        loss = fastjac.compile(fastjac.mean(fastjac.softplus(z) - y_ * z)
                               + alpha / 2 * fastjac.sum(w_ * w_), wrt="w")

        def numpy_formula(X, y):
            z = X @ w
            value = (da.logaddexp(0, z) - y * z).mean() + alpha / 2 * w @ w
            grad = X.T @ (1 / (1 + da.exp(-z)) - y) / X.shape[0] + alpha * w
            return value, grad

        # warm the workers (imports, first allocations) on one chunk of each graph
        da.compute(*loss.value_and_jacobian("w", X=X[:rows], w=w, y=y[:rows]))
        da.compute(*numpy_formula(X[:rows], y[:rows]))

        value, grad = loss.value_and_jacobian("w", X=X, w=w, y=y)    # lazy: nothing ran yet
        t0 = time.perf_counter()
        L, g = da.compute(value, grad)
        t_fastjac = time.perf_counter() - t0
        print(f"L = {L:.6f}")
        print("dL/dw =", np.array2string(g, precision=5, max_line_width=120))

        # the closed form on a subsample: the first rows of X and y (the same
        # generator, so the same numbers), computed with NumPy
        m = min(N, 200_000)
        Xs, ys = da.compute(X[:m], y[:m])
        zs = Xs @ w
        expected = Xs.T @ (1 / (1 + np.exp(-zs)) - ys) / m + alpha * w
        got = loss.jacobian("w", X=X[:m], w=w, y=y[:m]).compute()
        err = np.abs(got - expected).max() / np.abs(expected).max()
        assert err < 1e-12, (got, expected)
        print(f"check: on the first {m} rows the gradient equals the closed form "
              f"X^T (sigmoid(Xw) - y) / N + alpha w to {err:.1e} (relative)")

        formula = numpy_formula(X, y)
        t0 = time.perf_counter()
        L_numpy, g_numpy = da.compute(*formula)
        t_numpy = time.perf_counter() - t0
        assert np.allclose(g_numpy, g, rtol=1e-9, atol=1e-12) and np.isclose(L_numpy, L)

        peaks = client.run(peak_rss_bytes)
        for worker, peak in sorted(peaks.items()):
            print(f"peak memory of worker {worker}: {peak / 1e9:.2f} GB")
        print(f"fastjac in Dask: {t_fastjac:.2f} s, {X.nbytes / t_fastjac / 1e9:.2f} GB/s of X; "
              f"NumPy formulas in Dask: {t_numpy:.2f} s, {X.nbytes / t_numpy / 1e9:.2f} GB/s "
              f"({t_numpy / t_fastjac:.2f}x). Both include generating X and y on the workers.")
    finally:
        client.close()
        cluster.close()


if __name__ == "__main__":
    main()
