"""Build and runtime facts, for bug reports and benchmark headers."""
import platform
import sys

import numpy as np

from . import _kernels


def config():
    """Return a dict of the facts :func:`show_config` prints."""
    from . import __version__
    return {
        "fastjac": __version__,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "machine": platform.machine(),
        "openmp_threads": _kernels.openmp_threads(),
        "parallel_min_size": _kernels.parallel_min_size(),
    }


def show_config():
    """Print the fastjac version, the build's threading and its dependencies."""
    for key, value in config().items():
        print(f"{key:>18}: {value}")
