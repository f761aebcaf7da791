"""Build the Cython kernels.

Compiler directives live here, once. ``FASTJAC_DEBUG_CYTHON=1`` turns bounds
and wraparound checks back on (for debugging a kernel); the default build
relies on the Python layer having validated every shape.

Threads come from fastjac's own pool (src/fastjac/_pool.h, POSIX threads),
not from OpenMP: no OpenMP runtime is needed to build or to run.
"""
import json
import multiprocessing
import os
import platform
import runpy
import shutil
import subprocess
import sys
import sysconfig
import tempfile

import Cython
import numpy
from Cython.Build import cythonize
from Cython.Build.Dependencies import create_dependency_tree
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

DEBUG = os.environ.get("FASTJAC_DEBUG_CYTHON", "0") not in ("", "0")

# Cython and the C compiler run on every CPU: the modules are independent.
JOBS = os.cpu_count() or 1

DIRECTIVES = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,  # IEEE division: x / 0 is inf, never ZeroDivisionError
    # Signatures for inspect.signature, IDEs and Jupyter, as __text_signature__
    # ("clinic"): the functions stay builtin functions, called as before;
    # binding=True would make every def function a cyfunction instead.
    "embedsignature": True,
    "embedsignature.format": "clinic",
    "binding": False,
}
COMPILE_TIME_ENV = {"FASTJAC_DEBUG": DEBUG}

EXTENSIONS = ["_pool", "_kernels", "_api", "_expr", "_neuron", "_broadcast_loops",
              "_level_baseline"]

# The loops again, compiled for wider x86-64 vector units (_level.pxi);
# fastjac._simd imports the best one the CPU runs, at run time, so the
# baseline build (and a wheel) still runs on any x86-64. The flags are
# fastjac._simd's, the same that the JIT uses. Built where the compiler
# accepts them; FASTJAC_SIMD_VARIANTS=0 skips them (faster development builds).
COMPILER_FLAGS = runpy.run_path("src/fastjac/_simd.py")["COMPILER_FLAGS"]

# The Cython glue of the operator records (_operators.py) and of the
# formulas (_formulas_typed.h): written before cythonize reads it.
runpy.run_path("src/fastjac/_codegen.py")["write"]()
SIMD_VARIANTS = {f"_level_{level}": flags for level, flags in COMPILER_FLAGS.items() if flags}


# gcc gives up inlining the math of _vecmath.h (through Cython's inline
# wrappers) into the kernel loops at its default early-inlining budget, and a
# loop with a call in it is not vectorised.
INLINE_FLAGS = ["--param", "early-inlining-insns=200"]


def compiler_accepts(flags):
    """True if the C compiler compiles an empty program with these flags."""
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    tmp = tempfile.mkdtemp()
    try:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write("int main(void){return 0;}\n")
        cmd = cc.split() + flags + ["-Werror", "-c", src, "-o", os.path.join(tmp, "probe.o")]
        return subprocess.run(cmd, capture_output=True).returncode == 0
    except OSError:
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def simd_variants():
    """The SIMD_VARIANTS this compiler builds, on x86-64 only."""
    if os.environ.get("FASTJAC_SIMD_VARIANTS", "1") in ("", "0"):
        return {}
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return {}
    return {name: flags for name, flags in SIMD_VARIANTS.items() if compiler_accepts(flags)}


# -- reusing the generated C ------------------------------------------------------
#
# cythonize translates a module again when any file it depends on is newer
# than its .c, Cython's and NumPy's .pxd files included. Under pip those are
# always newer: its isolated build environment is installed afresh for every
# pip install, so a second `pip install .` (or the README's `pip install
# ".[test]"` after it) translated, and then compiled, every module again.
# Here a module's .c is reused when it is newer than each of this project's
# files the module depends on and was generated with the same options (the
# STAMP: Cython and NumPy versions, directives); otherwise cythonize runs,
# forced when the options changed.

STAMP = os.path.join("build", "cython-options.json")


def cython_options():
    return {"cython": Cython.__version__, "numpy": numpy.__version__,
            "directives": DIRECTIVES, "compile_time_env": COMPILE_TIME_ENV}


def options_unchanged():
    """True when the .c files were generated with cython_options()."""
    try:
        with open(STAMP) as f:
            return json.load(f) == cython_options()
    except (OSError, ValueError):
        return False


def reusable_c(pyx):
    """The .c generated from ``pyx``, if newer than the project's files it
    depends on; else None."""
    c_file = os.path.splitext(pyx)[0] + ".c"
    if not os.path.exists(c_file):
        return None
    generated = os.path.getmtime(c_file)
    project = os.path.abspath("src") + os.sep
    for dependency in create_dependency_tree().all_dependencies(pyx):
        path = os.path.abspath(dependency)
        if path.startswith(project) and os.path.getmtime(path) >= generated:
            return None
    return c_file


def extensions(reuse_c):
    """The extension modules; from their .c where reuse_c and reusable_c allow."""
    # -fno-trapping-math lets gcc if-convert the selects of _vecmath.h (so it
    # vectorises them); unlike -ffast-math it keeps NaN, inf and signed zeros.
    compile_args = ["-O3", "-fno-math-errno", "-fno-trapping-math"]
    if not DEBUG:
        # No debug information (Python's own CFLAGS ask for -g): it is most
        # of the objects' size and a quarter of the compile time of the
        # large loop modules.
        compile_args.append("-g0")
    if compiler_accepts(INLINE_FLAGS):
        compile_args += INLINE_FLAGS
    link_args = []
    if os.name == "posix":          # the thread pool (_pool.h)
        compile_args.append("-pthread")
        link_args.append("-pthread")
    macros = [("NPY_NO_DEPRECATED_API", "NPY_1_25_API_VERSION")]
    variants = simd_variants()

    def source(name):
        pyx = f"src/fastjac/{name}.pyx"
        return (reuse_c and reusable_c(pyx)) or pyx

    return [
        Extension(
            f"fastjac.{name}",
            [source(name)],
            include_dirs=[numpy.get_include(), "src/fastjac"],
            define_macros=macros,
            extra_compile_args=compile_args + variants.get(name, []),
            extra_link_args=link_args,
            # the headers, and where the compiler flags come from: a build
            # that reuses the .c files still compiles with the current flags
            depends=["src/fastjac/_vecmath.h", "src/fastjac/_pool.h",
                     "src/fastjac/_formulas.h", "src/fastjac/_formulas_typed.h",
                     "src/fastjac/_neuron_rows.h", "src/fastjac/_batch_rows.h",
                     "src/fastjac/_cpu.h",
                     "setup.py", "src/fastjac/_simd.py"],
        )
        for name in EXTENSIONS + list(variants)
    ]


class ParallelBuildExt(build_ext):
    """build_ext that compiles the extension modules JOBS at a time unless
    -j/--parallel says otherwise (also under pip, which passes no -j)."""

    def finalize_options(self):
        if self.parallel is None:
            self.parallel = JOBS
        super().finalize_options()


def cythonize_jobs():
    # cythonize's workers must be forked: a spawned one (Windows, macOS,
    # the forkserver default of Python 3.14) would run this script again.
    return JOBS if multiprocessing.get_start_method() == "fork" else 0


def cythonized_extensions():
    same_options = options_unchanged()
    modules = cythonize(
        extensions(reuse_c=same_options),
        compiler_directives=DIRECTIVES,
        compile_time_env=COMPILE_TIME_ENV,
        nthreads=cythonize_jobs(),
        force=not same_options,
    )
    os.makedirs(os.path.dirname(STAMP), exist_ok=True)
    with open(STAMP, "w") as f:
        json.dump(cython_options(), f)
    return modules


setup(
    ext_modules=cythonized_extensions(),
    cmdclass={"build_ext": ParallelBuildExt},
)
