"""The instruction set of every compiled loop, chosen in one place.

fastjac's loops -- the derivative kernels (_loops.pxd), the expression
interpreter and the neuron pass (_expr_loops.pxd) -- are compiled once per
level, one extension module each: ``_level_baseline`` (any x86-64 CPU, or
the compiler's default elsewhere), ``_level_avx2`` (AVX2 + FMA) and
``_level_avx512`` (AVX-512 F/CD/BW/DQ/VL). :func:`select` caps the level
asked for by what the CPU runs and by what was built, imports that module
and installs its tables in _kernels and _expr; the neuron pass uses _expr's,
and the JIT (_jit.py) compiles for :func:`current` with the same
:data:`COMPILER_FLAGS` that setup.py builds the modules with. ``import
fastjac`` calls ``select()`` once: the best level, or ``$FASTJAC_SIMD``
(``baseline``, ``avx2`` or ``avx512``) when it asks for less.

A module of a level above the CPU's is never imported: with ``-mavx2`` the
compiler uses the wider encodings everywhere in it, its initialisation
included, so the import alone could stop the process with SIGILL.

This file imports nothing from fastjac at its top: setup.py runs it to read
COMPILER_FLAGS before anything is built.
"""
import importlib
import importlib.util
import os
import warnings

LEVELS = ("baseline", "avx2", "avx512")

# gcc/clang flags of each level, for setup.py and the JIT; never -march=native,
# so that a wheel built on one machine runs on every x86-64 CPU.
COMPILER_FLAGS = {
    "baseline": [],
    "avx2": ["-mavx2", "-mfma"],
    "avx512": ["-mavx2", "-mfma", "-mavx512f", "-mavx512cd", "-mavx512bw",
               "-mavx512dq", "-mavx512vl"],
}

_in_use = None      # the level select() installed last


def cpu_level():
    """The highest level this CPU (and its operating system) runs."""
    from . import _level_baseline
    return LEVELS[_level_baseline.cpu_simd()]


def built_levels():
    """The levels whose module this installation has (the AVX ones are
    built only where the compiler accepts their flags, on x86-64)."""
    return tuple(level for level in LEVELS
                 if importlib.util.find_spec(f"fastjac._level_{level}") is not None)


def available():
    """The levels :func:`select` would honour here: built, and run by this CPU."""
    top = LEVELS.index(cpu_level())
    return tuple(level for level in built_levels() if LEVELS.index(level) <= top)


def why_unavailable(level):
    """A sentence saying why ``level`` cannot run here, or None if it can
    (for tests that skip a level)."""
    if level not in built_levels():
        return f"fastjac was built without the {level} loops"
    if LEVELS.index(level) > LEVELS.index(cpu_level()):
        return f"this CPU runs up to {cpu_level()}, not {level}"
    return None


def requested():
    """The level ``$FASTJAC_SIMD`` asks for (the best, when unset). A value
    that names no level is ignored with a RuntimeWarning: an environment
    variable must not make ``import fastjac`` fail."""
    value = os.environ.get("FASTJAC_SIMD", "").strip().lower()
    if not value:
        return LEVELS[-1]
    if value not in LEVELS:
        warnings.warn(f"FASTJAC_SIMD={value!r} ignored: it must be one of {LEVELS}",
                      RuntimeWarning, stacklevel=2)
        return LEVELS[-1]
    return value


def usable(level):
    """The highest available level at or below ``level``."""
    if level not in LEVELS:
        raise ValueError(f"SIMD level must be one of {LEVELS}, got {level!r}")
    ok = [lvl for lvl in available() if LEVELS.index(lvl) <= LEVELS.index(level)]
    return ok[-1] if ok else "baseline"


def select(level=None):
    """Run every loop at ``level`` (default: :func:`requested`), capped by
    the CPU and by what was built; return the level now in use.

    For tests and benchmarks: switching levels while another thread is
    inside a fastjac call is not supported.
    """
    global _in_use
    chosen = usable(requested() if level is None else level)
    kernel_table, expr_table = importlib.import_module(f"fastjac._level_{chosen}").tables()
    from . import _expr, _kernels
    _kernels._use_table(kernel_table)
    _expr._use_table(expr_table)
    _in_use = chosen
    return chosen


def current():
    """The level of the loops in use: 'baseline', 'avx2' or 'avx512'."""
    return _in_use if _in_use is not None else select()
