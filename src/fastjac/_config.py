"""Build and runtime facts, for bug reports and benchmark headers."""
import platform
import sys

import numpy as np

from . import _kernels, _pool, _simd


def config():
    """Return a dict of the facts :func:`show_config` prints."""
    from . import __version__
    return {
        "fastjac": __version__,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "machine": platform.machine(),
        "simd": _simd.current(),
        "cpu_runs_up_to": _simd.cpu_level(),
        "threads": _pool.get_num_threads(),
        "threads_from_memory_bound": _kernels.parallel_min_sizes()["memory_bound"],
        "threads_from_compute_bound": _kernels.parallel_min_sizes()["compute_bound"],
        "small_jobs_from_compute_bound": _kernels.parallel_min_sizes()[
            "compute_bound_small_jobs"],
        "small_jobs_from_power": _kernels.parallel_min_sizes()["power_small_jobs"],
    }


def show_config():
    """Print the fastjac version, the instruction set and threads in use, and numpy's version."""
    info = config()
    width = max(map(len, info))
    for key, value in info.items():
        print(f"{key:>{width}}: {value}")
