"""The checks at fastjac's boundary, for its Python layer: one home each.

What comes in from a caller is checked here, with the wording every entry
point shares: the coercion of named arrays (``coerce_named``, by the core's
rules), ``out=`` (``check_out``, ``check_no_out``), ``layout=`` and
``format=`` (``check_layout``, ``check_format``) and the size of a matrix
before it is allocated (``check_dense_size``). The expression layer
(_compiled.py), losses (_batch.py), the neuron (_neuron.pyx), broadcasting,
operators, structured factors, Dask and fastjac.testing call these.

Why a module of its own rather than _layout.py: these checks serve every
layer, most of which never build a matrix; _layout.py turns compact results
into matrices and is one more caller.

The core API (_api.pyx) runs some of these checks on every call, where at
n = 16 the checks are the cost, so they are compiled there:

* layout, format and the coercion of one operand are _api's cpdef functions,
  the one implementation of each; the functions here call them;
* ``out=`` has C twins (_api.check_out, ExprKernel._check_out) that test in C
  and hand any failure to ``check_out`` here, which words the error.

_api imports _layout, which imports this module, while _api is still
initialising: so ``_api``'s functions are looked up when called, never
bound when this module is imported.
"""
import os

import numpy as np

from . import _api

_FLOAT32 = np.dtype(np.float32).num


# -- coercion (the core's rules: float32 stays, ints/bool -> float64, else TypeError) --------

def as_operand(x, name):
    """(x as an ndarray, the float type it asks for): _api's coercion of one
    operand, with its TypeErrors naming ``name``. The larger vote of two
    operands wins (NPY_DOUBLE over NPY_FLOAT)."""
    arr = _api.as_array(x, name)
    return arr, _api.dtype_vote(arr, name)


def dtype_vote(arr, name):
    """The float type an array (of any size: only its dtype is read) asks
    for, or the core's TypeError naming ``name``."""
    return _api.dtype_vote(arr, name)


def coerce_named(values):
    """Coerce a dict name -> array_like to C-contiguous arrays of one dtype,
    by the core's rules and with its errors (as_operand).

    Python numbers are weak (take the arrays' dtype). Returns (dtype, dict).
    """
    ready = _ready(values)
    if ready is not None:
        return ready
    vote = 0
    arrays = {}
    for name, x in values.items():
        if type(x) is float or type(x) is int or type(x) is bool:
            continue
        arrays[name], arr_vote = as_operand(x, name)
        vote = max(vote, arr_vote)
    dtype = np.dtype(np.float32) if vote == _FLOAT32 else np.dtype(np.float64)
    out = {}
    for name, x in values.items():
        arr = arrays.get(name)
        if arr is None:
            out[name] = np.array(x, dtype=dtype)
        elif arr.dtype == dtype and arr.flags.c_contiguous and arr.flags.aligned \
                and arr.dtype.isnative:
            out[name] = arr
        else:
            out[name] = np.ascontiguousarray(arr, dtype=dtype)
    return dtype, out


FLOAT_DTYPES = (np.dtype(np.float64), np.dtype(np.float32))


def _ready(values):
    """coerce_named's result when it has nothing to convert: every value an
    ndarray of one float dtype, C-contiguous, aligned and native, or a Python
    float (made a 0-d array of that dtype); None otherwise. (The hot loops'
    case, checked with a few attribute reads.)"""
    dtype = None
    for x in values.values():
        if type(x) is np.ndarray:
            if dtype is None:
                dtype = x.dtype
            if x.dtype is not dtype and x.dtype != dtype:
                return None
            if not x.flags.c_contiguous or not x.flags.aligned:
                return None
        elif type(x) is not float:
            return None
    # (dtype None: no array; np.dtype compares equal to None, hence "is")
    if dtype is None or dtype not in FLOAT_DTYPES or not dtype.isnative:
        return None
    return dtype, {k: (np.array(x, dtype) if type(x) is float else x) for k, x in values.items()}


# -- layout= and format= ---------------------------------------------------------------------

def check_layout(layout):
    """True for "denominator", False for "numerator", else ValueError (_api's check)."""
    return _api.check_layout(layout)


def check_format(format):
    """The format, "sparse" meaning "csr", else ValueError listing
    fastjac.FORMATS (_api's check)."""
    return _api.check_format(format)


# -- out= ------------------------------------------------------------------------------------

def check_out(out, shape, dtype, what="result", name="out"):
    """``out`` when it is a writeable ndarray of exactly ``shape`` and ``dtype``,
    else TypeError or ValueError; ``what`` names the result (in the shape
    message), ``name`` the argument. The wording of every out= check in fastjac."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(out).__name__}")
    if out.dtype != dtype:
        raise ValueError(f"{name} has dtype {out.dtype} but the result has dtype "
                         f"{np.dtype(dtype)}; they must match exactly")
    if out.shape != tuple(shape):
        raise ValueError(f"{name} has shape {out.shape} but the {what} has shape "
                         f"{tuple(shape)}; they must match")
    if not out.flags.writeable:
        raise ValueError(f"{name} is read-only; pass a writeable array")
    return out


def check_no_out(fmt, out):
    """out= is for the array formats only."""
    if out is not None:
        raise ValueError(f"out= is only supported with format 'compact' or 'dense', "
                         f"not {fmt!r}")


# -- sizes -----------------------------------------------------------------------------------

def check_dense_size(shape, dtype, what="dense Jacobian",
                     instead="format='compact' or a sparse format"):
    """Raise MemoryError, before allocating, for a matrix larger than RAM;
    the message suggests ``instead``."""
    nbytes = int(np.prod(shape, dtype=object)) * np.dtype(dtype).itemsize
    if nbytes <= 1 << 26:          # 64 MiB: always fine, skip reading /proc
        return
    limit = _available_memory()
    if nbytes > limit:
        raise MemoryError(
            f"a {what} of shape {tuple(shape)} and dtype {np.dtype(dtype)} needs "
            f"{nbytes} bytes ({_human(nbytes)}), more than the memory available "
            f"({_human(limit)}); use {instead}")


def _available_memory():
    """Bytes the OS could give us now: MemAvailable on Linux, else physical RAM."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not POSIX: assume 64 GiB
        return 64 << 30


def _human(nbytes):
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if nbytes < 1024 or unit == "PiB":
            return f"{nbytes:.1f} {unit}" if unit != "bytes" else f"{nbytes} bytes"
        nbytes /= 1024
