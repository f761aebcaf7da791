"""The rivals: each library's cheapest route to the numbers fastjac computes.

Design note
-----------
``rivals_for(spec)`` turns one derivative, described by a :class:`Spec` (the
forward expression, the derivative formula and the hand-written NumPy code),
into a list of :class:`_harness.Rival`, one per route of ``ROUTES``. What
each route is depends on the *mode* of the derivative:

=============  ======================  =========================================
mode           fastjac                 autodiff rivals
=============  ======================  =========================================
diag           jacobian wrt an array   JVP with a ones tangent (the diagonal);
                                       dense jacfwd / jacobian at small n
vector         jacobian wrt a scalar   JVP with tangent 1 (the vector dy/dz)
grad           sum_gradient wrt array  reverse-mode grad of sum(y)
grad_scalar    sum_gradient wrt scalar reverse-mode grad of sum(y)
=============  ======================  =========================================

numexpr and numba evaluate the derivative formula itself (a fused loop, or
a fused sum for ``grad_scalar``); NumPy runs the hand-written formula.

Every optional library is imported once, here, with its thread count set to
use every core (fastjac's kernels use all its pool's threads from 32 768
elements on). A missing library makes its rivals raise ``Skip`` with a note.
Compiled numba loops are cached by formula, so each is compiled once per
dtype, not once per size.
"""
import os
import re
import sys
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from ._harness import Rival, Skip, call_with, is_scalar

CORES = os.cpu_count() or 1

_MODULES = {}        # import name -> module, or the reason it is missing


def load(name):
    """The module, set up for benchmarking; raises Skip if it is missing."""
    if name not in _MODULES:
        try:
            _MODULES[name] = _import(name)
        except Exception as exc:                # noqa: BLE001 - ImportError and friends
            _MODULES[name] = f"{name} is not installed ({type(exc).__name__}: {exc})"[:160]
    module = _MODULES[name]
    if isinstance(module, str):
        raise Skip(module)
    return module


def _import(name):
    if name == "jax":
        import jax
        jax.config.update("jax_enable_x64", True)
        jax.config.update("jax_platforms", "cpu")
        if CACHE_DIR["path"] is not None:
            # XLA's persistent compilation cache: later runs skip the compiles
            try:
                jax.config.update("jax_compilation_cache_dir",
                                  str(CACHE_DIR["path"].parent / "jax-cache"))
                jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
                jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
            except Exception:                    # noqa: BLE001 - an older JAX: no cache
                pass
        return jax
    if name == "torch":
        import torch
        torch.set_num_threads(CORES)
        return torch
    if name == "numexpr":
        import numexpr
        numexpr.set_num_threads(CORES)
        return numexpr
    if name == "numba":
        import numba
        return numba
    if name == "autograd":
        import autograd
        import autograd.numpy  # noqa: F401
        return autograd
    if name == "sklearn":
        # the loss family's rival (bench_loss.py sets its OpenMP threads per call)
        import sklearn
        from sklearn.linear_model import _linear_loss  # noqa: F401 - LinearModelLoss
        return sklearn
    raise ValueError(name)


def versions():
    """Versions and thread counts of the rivals that are installed."""
    info = {}
    for name in ("numexpr", "numba", "jax", "torch", "autograd", "sklearn"):
        try:
            module = load(name)
        except Skip as exc:
            info[name] = {"missing": str(exc)}
            continue
        entry = {"version": getattr(module, "__version__", "?")}
        if name == "torch":
            entry["threads"] = module.get_num_threads()
        elif name == "numexpr":
            entry["threads"] = module.get_num_threads()
        elif name == "numba":
            entry["threads"] = module.config.NUMBA_NUM_THREADS
        elif name == "jax":
            entry["devices"] = [str(d) for d in module.devices()]
            entry["jaxlib"] = getattr(__import__("jaxlib"), "__version__", "?")
        elif name == "autograd":
            from importlib.metadata import version
            entry["version"] = version("autograd")
        info[name] = entry
    return info


@dataclass
class Spec:
    args: tuple                 # operands; a scalar operand is a Python float
    names: tuple                # their names in fwd and formula
    wrt: int
    mode: str                   # "diag", "vector", "grad", "grad_scalar" or "hess"
    fwd: str                    # forward expression y(names)
    formula: Optional[str]      # derivative (or summed term) as one expression
    numpy: Callable             # hand-written derivative, allocating
    numpy_out: Optional[Callable]
    dtype: Any
    n: int


def rivals_for(spec):
    if spec.mode == "hess":         # the second derivatives: formula, JAX, PyTorch
        return [Rival("numpy", lambda: _numpy(spec)),
                Rival("numpy_out", lambda: _numpy_out(spec)),
                Rival("jax", lambda: _jax(spec)), Rival("torch", lambda: _torch(spec))]
    routes = [
        Rival("numpy", lambda: _numpy(spec)),
        Rival("numpy_out", lambda: _numpy_out(spec)),
        Rival("numexpr", lambda: _numexpr(spec)),
        Rival("numba", lambda: _numba(spec, parallel=False)),
        Rival("numba_par", lambda: _numba(spec, parallel=True)),
        Rival("jax", lambda: _jax(spec)),
        Rival("torch", lambda: _torch(spec)),
        Rival("autograd", lambda: _autograd(spec)),
    ]
    if spec.mode == "diag":
        routes.insert(6, Rival("jax_dense", lambda: _jax(spec, dense=True), dense=True))
        routes.insert(8, Rival("torch_vjp", lambda: _torch(spec, vjp=True)))
        routes.insert(9, Rival("torch_dense", lambda: _torch(spec, dense=True), dense=True))
    return routes


# -- NumPy, numexpr, numba: the derivative formula ------------------------------------

def _numpy(spec):
    return call_with(spec.numpy, spec.args)


def _numpy_out(spec):
    if spec.numpy_out is None:
        raise Skip("n/a: the result is one number")
    out = np.empty(spec.n, spec.dtype)
    call = call_with(spec.numpy_out, spec.args, out)

    def fn():
        call()
        return out
    return fn


FLOAT_LITERAL = re.compile(r"(?<![\w.])(\d+\.\d*(?:e[-+]?\d+)?)")


def _array_names(spec):
    return [name for name, a in zip(spec.names, spec.args) if not is_scalar(a)]


def _numexpr(spec):
    ne = load("numexpr")
    if spec.formula is None or not any(re.search(rf"\b{v}\b", spec.formula)
                                       for v in _array_names(spec)):
        raise Skip("n/a: the derivative reads no array (a constant fill)")
    # Float literals become named constants of the arrays' dtype, so that a
    # float32 formula is computed in float32 (numexpr types literals double).
    constants = {}

    def name_constant(match):
        key = f"c{len(constants)}"
        constants[key] = spec.dtype.type(float(match.group(1)))
        return key
    expr = FLOAT_LITERAL.sub(name_constant, spec.formula)
    local = dict(constants)
    for name, a in zip(spec.names, spec.args):
        local[name] = spec.dtype.type(a) if is_scalar(a) else a
    if spec.mode == "grad_scalar":
        return lambda: ne.evaluate(f"sum({expr})", local_dict=local)
    out = np.empty(spec.n, spec.dtype)
    return lambda: ne.evaluate(expr, local_dict=local, out=out, casting="same_kind")


_NUMBA_CACHE = {}


def _numba_loop(spec, parallel):
    """The @njit loop for spec's formula (compiled lazily, once per dtype)."""
    arrays = _array_names(spec)
    key = (spec.formula, spec.names, tuple(arrays), spec.mode, parallel, spec.dtype.str)
    if key in _NUMBA_CACHE:
        return _NUMBA_CACHE[key]
    numba = load("numba")
    expr = FLOAT_LITERAL.sub(r"T(\1)", spec.formula)
    for name in arrays:
        expr = re.sub(rf"\b{name}\b", f"{name}[i]", expr)
    first = arrays[0] if arrays else None
    size = f"{first}.shape[0]" if first else "out.shape[0]"
    params = ", ".join(spec.names)
    if spec.mode == "grad_scalar":
        src = (f"def loop({params}):\n"
               f"    acc = 0.0\n"
               f"    for i in prange({size}):\n"
               f"        acc += {expr}\n"
               f"    return acc\n")
    else:
        src = (f"def loop({params}, out):\n"
               f"    for i in prange(out.shape[0]):\n"
               f"        out[i] = {expr}\n")
    loop = _compile_loop(numba, src, spec, parallel)
    _NUMBA_CACHE[key] = loop
    return loop


CACHE_DIR = {"path": None}       # set by the worker: <out>/build/numba, for cache=True


def _compile_loop(numba, src, spec, parallel):
    """@njit the generated loop; from a file under CACHE_DIR when set, so that
    numba's on-disk cache spares the compilation in later runs."""
    import hashlib
    import importlib.util
    import math
    header = ("import math\nimport numpy as np\nfrom numba import njit, prange\n"
              "\n\n@njit(inline='always', cache=True)\n"
              "def where(condition, a, b):\n"
              "    return a if condition else b\n\n\n"
              + "".join(f"{fn} = math.{fn}\n" for fn in ("exp", "log", "sqrt", "sin", "cos", "tanh"))
              + f"T = np.{spec.dtype.name}\n\n")
    if CACHE_DIR["path"] is not None:
        text = header + src
        digest = hashlib.sha1(f"{text}{parallel}".encode()).hexdigest()[:16]
        path = CACHE_DIR["path"] / f"loop_{digest}.py"
        try:
            CACHE_DIR["path"].mkdir(parents=True, exist_ok=True)
            if not path.exists():
                path.write_text(text)
            module_spec = importlib.util.spec_from_file_location(f"_fj_loop_{digest}", path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[module_spec.name] = module      # numba's cache looks it up
            module_spec.loader.exec_module(module)
            return numba.njit(parallel=parallel, error_model="numpy", cache=True)(module.loop)
        except OSError:
            pass
    namespace = {"prange": numba.prange, "T": spec.dtype.type, "where": _numba_where(),
                 "np": np}
    for fn in ("exp", "log", "sqrt", "sin", "cos", "tanh"):
        namespace[fn] = getattr(math, fn)
    exec(compile(src, f"<numba {spec.formula}>", "exec"), namespace)
    return numba.njit(parallel=parallel, error_model="numpy")(namespace["loop"])


_WHERE = []


def _numba_where():
    if not _WHERE:
        numba = load("numba")

        @numba.njit(inline="always")
        def where(condition, a, b):
            return a if condition else b
        _WHERE.append(where)
    return _WHERE[0]


def _numba(spec, parallel):
    load("numba")
    if spec.formula is None:
        raise Skip("n/a: no formula")
    loop = _numba_loop(spec, parallel)
    args = tuple(spec.dtype.type(a) if is_scalar(a) else a for a in spec.args)
    if spec.mode == "grad_scalar":
        return call_with(loop, args)
    out = np.empty(spec.n, spec.dtype)
    call = call_with(loop, args, out)

    def fn():
        call()
        return out
    return fn


# -- autodiff libraries: the forward expression ---------------------------------------

def _forward(spec, namespace):
    return eval(f"lambda {', '.join(spec.names)}: {spec.fwd}", namespace)


def _jax_namespace(jax):
    jnp = jax.numpy
    return {
        "maximum": jnp.maximum, "minimum": jnp.minimum, "exp": jnp.exp, "log": jnp.log,
        "sqrt": jnp.sqrt, "sin": jnp.sin, "cos": jnp.cos, "tanh": jnp.tanh,
        "sigmoid": jax.nn.sigmoid, "relu": jax.nn.relu, "abs": jnp.abs,
        "greater": lambda a, b: (a > b).astype(jnp.result_type(a, b)),
        "less": lambda a, b: (a < b).astype(jnp.result_type(a, b)),
    }


def _jax(spec, dense=False):
    jax = load("jax")
    jnp = jax.numpy
    f = _forward(spec, _jax_namespace(jax))
    wrt = spec.wrt
    args = tuple((jnp.asarray(a, spec.dtype) if i == wrt else a) if is_scalar(a)
                 else jax.device_put(a) for i, a in enumerate(spec.args))

    if dense:
        jf = jax.jit(jax.jacfwd(f, argnums=wrt))
    elif spec.mode == "hess":
        # the Hessian of an element-wise sum is diagonal: forward-over-reverse
        # with a tangent of ones gives that diagonal, the structured route
        def hess_diag(*a):
            def total(v):
                return jnp.sum(f(*a[:wrt], v, *a[wrt + 1:]))
            return jax.jvp(jax.grad(total), (a[wrt],), (jnp.ones_like(a[wrt]),))[1]
        jf = jax.jit(hess_diag)
    elif spec.mode in ("diag", "vector"):
        def jvp_ones(*a):
            def g(v):
                return f(*a[:wrt], v, *a[wrt + 1:])
            return jax.jvp(g, (a[wrt],), (jnp.ones_like(a[wrt]),))[1]
        jf = jax.jit(jvp_ones)
    else:
        jf = jax.jit(jax.grad(lambda *a: jnp.sum(f(*a)), argnums=wrt))
    call = call_with(jf, args)
    return lambda: call().block_until_ready()


def _torch_namespace(torch):
    return {
        "maximum": torch.maximum, "minimum": torch.minimum, "exp": torch.exp,
        "log": torch.log, "sqrt": torch.sqrt, "sin": torch.sin, "cos": torch.cos,
        "tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu,
        "abs": torch.abs,
        "greater": lambda a, b: (a > b).to(torch.result_type(a, b)),
        "less": lambda a, b: (a < b).to(torch.result_type(a, b)),
    }


def _torch(spec, dense=False, vjp=False):
    torch = load("torch")
    f = _forward(spec, _torch_namespace(torch))
    dt = torch.from_numpy(np.empty(0, spec.dtype)).dtype
    wrt = spec.wrt
    args = [torch.tensor(a, dtype=dt) if is_scalar(a) else torch.from_numpy(a)
            for a in spec.args]

    def g(v):
        return f(*args[:wrt], v, *args[wrt + 1:])
    primal = args[wrt]
    if dense:
        jacobian = torch.autograd.functional.jacobian
        return lambda: jacobian(g, primal, vectorize=True)
    if spec.mode == "hess":
        from torch.func import grad, jvp
        tangent = torch.ones_like(primal)
        grad_of_sum = grad(lambda v: g(v).sum())
        return lambda: jvp(grad_of_sum, (primal,), (tangent,))[1]
    if vjp:
        # For a diagonal Jacobian, the VJP with ones is the diagonal too, and
        # PyTorch's reverse mode is far cheaper per call than torch.func.jvp.
        leaf = primal.detach().clone().requires_grad_(True)
        ones = torch.ones_like(primal)
        return lambda: torch.autograd.grad(g(leaf), leaf, grad_outputs=ones)[0]
    if spec.mode in ("diag", "vector"):
        from torch.func import jvp
        tangent = torch.ones_like(primal)
        return lambda: jvp(g, (primal,), (tangent,))[1]
    leaf = primal.detach().clone().requires_grad_(True)
    return lambda: torch.autograd.grad(g(leaf).sum(), leaf)[0]


def _autograd_namespace(autograd):
    anp = autograd.numpy
    return {
        "maximum": anp.maximum, "minimum": anp.minimum, "exp": anp.exp, "log": anp.log,
        "sqrt": anp.sqrt, "sin": anp.sin, "cos": anp.cos, "tanh": anp.tanh,
        "sigmoid": lambda x: 0.5 * (anp.tanh(0.5 * x) + 1.0),
        "relu": lambda x: anp.maximum(x, 0.0), "abs": anp.abs,
        "greater": lambda a, b: anp.greater(a, b) * 1.0,
        "less": lambda a, b: anp.less(a, b) * 1.0,
    }


def _autograd(spec):
    autograd = load("autograd")
    import warnings
    f = _forward(spec, _autograd_namespace(autograd))
    wrt = spec.wrt
    args = tuple(spec.dtype.type(a) if is_scalar(a) else a for a in spec.args)
    warnings.filterwarnings("ignore", "Output seems independent of input")
    if spec.mode == "diag":
        d = autograd.elementwise_grad(f, wrt)
        return call_with(d, args)
    if spec.mode == "vector":
        jvp = autograd.make_jvp(f, wrt)
        one = spec.dtype.type(1.0)
        return lambda: jvp(*args)(one)[1]
    d = autograd.grad(lambda *a: autograd.numpy.sum(f(*a)), wrt)
    return call_with(d, args)
