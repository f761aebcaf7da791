"""The physical limit: this machine's streaming bandwidth with all its cores.

``probe()`` builds ``_stream.pyx`` (parallel STREAM kernels: copy, scale,
triad, plus write-only fill and read-only sum for context) on first use into
``<out>/build/`` with Cython, ``-O3 -march=native`` and OpenMP, runs each on
arrays several times the size of the last-level cache, and reports the best
rate of each in GB/s (10⁹ bytes per second, STREAM's byte counting).

The *bandwidth bound* of a kernel is then ``bytes / best`` with ``best`` the
fastest of copy and triad, with ordinary or with non-temporal stores: the
least time in which it can read its inputs and write its output at the best
rate that all-core loads and stores reach here. Where Cython or a C
compiler is missing (a CI image with only the test extras), a serial NumPy
copy and triad stand in, and the result says so.
"""
import importlib.util
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

# bytes each STREAM kernel names per element of float64
TRAFFIC = {"copy": 16, "copy_nt": 16, "scale": 16, "triad": 24, "triad_nt": 24, "fill": 8,
           "fill_nt": 8, "read": 8}
BOUND_KERNELS = ("copy", "copy_nt", "triad", "triad_nt")


def _build(build_dir):
    """Compile _stream.pyx into build_dir (once) and import it."""
    from Cython.Build import cythonize
    from setuptools import Distribution, Extension

    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    pyx = HERE / "_stream.pyx"
    found = sorted(build_dir.glob("_stream*.so")) + sorted(build_dir.glob("_stream*.pyd"))
    newest = max(pyx.stat().st_mtime, (HERE / "_stream_nt.h").stat().st_mtime)
    if not found or found[0].stat().st_mtime < newest:
        last_error = None
        for flags in (["-O3", "-march=native", "-fopenmp"], ["-O3", "-fopenmp"]):
            ext = Extension("_stream", [str(pyx)], extra_compile_args=flags,
                            extra_link_args=["-fopenmp"], include_dirs=[str(HERE)])
            try:
                dist = Distribution({"ext_modules": cythonize(
                    [ext], build_dir=str(build_dir / "c"), quiet=True,
                    language_level=3)})
                cmd = dist.get_command_obj("build_ext")
                cmd.build_lib = str(build_dir)
                cmd.build_temp = str(build_dir / "tmp")
                cmd.ensure_finalized()
                cmd.run()
                break
            except Exception as exc:           # noqa: BLE001 - try the next flags
                last_error = exc
        else:
            raise RuntimeError(f"cannot build _stream.pyx: {last_error}")
        found = sorted(build_dir.glob("_stream*.so")) + sorted(build_dir.glob("_stream*.pyd"))
    spec = importlib.util.spec_from_file_location("_stream", found[0])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def probe(build_dir, quick=False):
    """Measure the streaming bandwidth; return a dict for the results header.

    Keys: ``gbps`` (kernel -> best GB/s), ``median_gbps``, ``best_gbps``
    (max of copy and triad: the bound's denominator), ``threads``,
    ``elements``, ``method`` and ``note``.
    """
    n = 1 << 24                             # 128 MB per array: 4x the L3 here
    repeats = 5 if quick else 20
    note = ""
    try:
        stream = _build(build_dir)
        threads = stream.threads()
        method = "Cython prange, -O3 -march=native -fopenmp"
        a, b, c = (np.empty(n) for _ in range(3))
        stream.init(a, 1.0), stream.init(b, 2.0), stream.init(c, 0.0)
        kernels = {
            "copy": lambda: stream.copy(a, c),
            "copy_nt": lambda: stream.copy_nt(a, c),
            "scale": lambda: stream.scale(c, b, 3.0),
            "triad": lambda: stream.triad(b, c, a, 3.0),
            "triad_nt": lambda: stream.triad_nt(b, c, a, 3.0),
            "fill": lambda: stream.fill(c, 1.5),
            "fill_nt": lambda: stream.fill_nt(c, 1.5),
            "read": lambda: stream.read(a),
        }
    except Exception as exc:                  # noqa: BLE001 - fall back, with a note
        threads = 1
        method = "NumPy, one thread (fallback)"
        note = (f"the Cython probe could not be built ({type(exc).__name__}: {exc}); "
                f"serial NumPy stands in, so bounds are optimistic for multi-core kernels")
        a, b, c = np.ones(n), np.full(n, 2.0), np.zeros(n)
        kernels = {
            "copy": lambda: np.copyto(c, a),
            "copy_nt": lambda: np.copyto(c, a),
            "triad_nt": lambda: (np.multiply(c, 3.0, out=a), np.add(a, b, out=a)),
            "fill_nt": lambda: c.fill(1.5),
            "scale": lambda: np.multiply(c, 3.0, out=b),
            "triad": lambda: (np.multiply(c, 3.0, out=a), np.add(a, b, out=a)),
            "fill": lambda: c.fill(1.5),
            "read": lambda: a.sum(),
        }
    for fn in kernels.values():
        fn()                                   # touch, warm up
    # Round-robin, so that a burst of load from elsewhere hits every kernel.
    times = {name: [] for name in kernels}
    for _ in range(repeats):
        for name, fn in kernels.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    gbps = {k: TRAFFIC[k] * n / min(t) / 1e9 for k, t in times.items()}
    median_gbps = {k: TRAFFIC[k] * n / float(np.median(t)) / 1e9 for k, t in times.items()}
    del a, b, c
    return {
        "gbps": gbps,
        "median_gbps": median_gbps,
        "best_gbps": max(gbps[k] for k in BOUND_KERNELS),
        "threads": threads,
        "elements": n,
        "method": method,
        "note": note,
    }


def bound_seconds(nbytes, bandwidth):
    """The least time to move nbytes at ``bandwidth["best_gbps"]``."""
    return nbytes / (bandwidth["best_gbps"] * 1e9)


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "results"
    result = probe(out / "build", quick="--quick" in sys.argv)
    for key, value in result["gbps"].items():
        print(f"{key:>6}: {value:7.2f} GB/s (median {result['median_gbps'][key]:.2f})")
    print(f"threads {result['threads']}, {result['method']} {result['note']}")
    os.sys.exit(0)
