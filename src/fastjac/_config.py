"""Build and runtime facts, for bug reports and benchmark headers."""
import platform
import sys

import numpy as np

from . import _kernels, _pool


def config():
    """Return a dict of the facts :func:`show_config` prints."""
    from . import __version__
    return {
        "fastjac": __version__,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "machine": platform.machine(),
        "simd": _kernels.simd(),
        "threads": _pool.get_num_threads(),
        "threads_from_memory_bound": _kernels.parallel_min_sizes()["memory_bound"],
        "threads_from_compute_bound": _kernels.parallel_min_sizes()["compute_bound"],
        "threads_from_power": _kernels.parallel_min_sizes()["power"],
    }


def show_config():
    """Print the fastjac version, the instruction set and threads in use, and numpy's version."""
    for key, value in config().items():
        print(f"{key:>26}: {value}")
