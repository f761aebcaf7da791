"""Build the Cython kernels.

Compiler directives live here, once. ``FASTJAC_DEBUG_CYTHON=1`` turns bounds
and wraparound checks back on (for debugging a kernel); the default build
relies on the Python layer having validated every shape.

OpenMP is probed with a tiny test program: where the compiler lacks it the
kernels still build, serially (Cython's ``prange`` degrades to ``range``).
"""
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("FASTJAC_DEBUG_CYTHON", "0") not in ("", "0")

DIRECTIVES = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,  # IEEE division: x / 0 is inf, never ZeroDivisionError
    "embedsignature": True,
    "binding": False,
}

EXTENSIONS = ["_kernels", "_api", "_expr", "_neuron"]


def openmp_flags():
    """Return the OpenMP compile flag if the C compiler accepts it, else None."""
    if os.environ.get("FASTJAC_NO_OPENMP", "0") not in ("", "0"):
        return None
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    code = "#include <omp.h>\nint main(void){return omp_get_max_threads() < 1;}\n"
    tmp = tempfile.mkdtemp()
    try:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(code)
        cmd = cc.split() + ["-fopenmp", src, "-o", os.path.join(tmp, "probe")]
        ok = subprocess.run(cmd, capture_output=True).returncode == 0
    except OSError:
        ok = False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not ok:
        print("fastjac: the C compiler has no OpenMP; building serial kernels", file=sys.stderr)
        return None
    return "-fopenmp"


def extensions():
    omp = openmp_flags()
    compile_args = ["-O3", "-fno-math-errno"]
    link_args = []
    if omp:
        compile_args.append(omp)
        link_args.append(omp)
    macros = [("NPY_NO_DEPRECATED_API", "NPY_1_25_API_VERSION"),
              ("FASTJAC_OPENMP", "1" if omp else "0")]
    return [
        Extension(
            f"fastjac.{name}",
            [f"src/fastjac/{name}.pyx"],
            include_dirs=[numpy.get_include(), "src/fastjac"],
            define_macros=macros,
            extra_compile_args=compile_args,
            extra_link_args=link_args,
        )
        for name in EXTENSIONS
    ]


setup(
    ext_modules=cythonize(
        extensions(),
        compiler_directives=DIRECTIVES,
        compile_time_env={"FASTJAC_DEBUG": DEBUG},
    ),
)
