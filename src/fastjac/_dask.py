"""Dask arrays in, lazy Dask arrays out (issue 18).

Imported only when an operand or a variable is a ``dask.array.Array``: the
one check is in ``_api.differentiate`` (``jacobian``, ``sum_gradient``) and
in ``CompiledExpression.value_and_jacobian`` / ``value`` (expr.py), after
the NumPy fast paths. ``import fastjac`` never imports Dask.

What the graph looks like
-------------------------
Every block of the result is computed by the NumPy API itself on NumPy
blocks (``fastjac.jacobian(op, a_block, b_block, ...)``), inside a task
that runs fastjac's kernels; Dask is given ``dtype=`` and ``meta=`` so it
never calls them on fake arrays.

* Element-wise results (a diagonal, dy/dz for a scalar z, the partials of
  broadcast operands, the gradient of a sum w.r.t. an operand that has the
  full shape) are one ``blockwise`` over the operands, whose chunks Dask
  aligns as it does for NumPy broadcasting (``unify_chunks``).
* Sums (the gradient w.r.t. a scalar or a broadcast operand, axis sums, the
  value of a summed expression) are a ``blockwise`` of per-block partial
  sums, one number per block along the summed axes, each computed by
  fastjac's own one-pass kernels, then ``dask.array.reduction`` (a tree)
  adding them in float64 and rounding once to the result's dtype.

What differs from the NumPy path
--------------------------------
* ``format`` other than "compact" raises ValueError: a dense or SciPy
  sparse matrix is one in-memory object; compute the compact result (a Dask
  array) and build the matrix from it with NumPy inputs if it fits.
  ``layout`` is checked and, as for NumPy compact results, changes
  nothing: the compact arrays are the same in both layouts.
* ``out=`` raises TypeError (the result is lazy: ``da.store`` or
  ``.compute()`` it into memory).
* Where the NumPy path returns a NumPy scalar, this one returns a 0-d Dask
  array.
* Sums add per-block totals in a tree: the same numbers as the NumPy path
  to rounding (float64: a few ulp of the sum of |terms|; float32 totals
  are accumulated in float64 per block and across blocks, then rounded
  once). Element-wise results are bit-identical.
* Compiled expressions: one output, one variable; an inner reduction (a
  sum feeding element-wise work, e.g. ``sum(e) / N``) raises
  NotImplementedError, as do stacked Jacobians.

Threads
-------
A Dask scheduler runs one task per core already; fastjac's pool inside each
task would put two threads on every core. So each task marks its own thread
serial (``_pool._serial_in_this_thread``, a thread-local flag): kernels
called from a task run on that task's thread only. ``FASTJAC_DASK_POOL=1``
in the workers' environment lets tasks use the pool instead (useful with a
single-threaded scheduler and few large chunks).

Adding an entry
---------------
A new element-wise entry point (``jvp``, an operator format) needs one
function that builds its graph with :func:`elementwise` (block function,
operands, dtype); a new summed one (``sum_hessian``) uses
:func:`elementwise` for the per-block partial sums (``keep=`` the summed
axes) and :func:`tree_sum`. Its hook is one line at the top of the public
function, after its checks: ``if <operand is a Dask array>: return
_dask.<entry>(...)``, with ``_api.is_dask_array`` as the test. Block
functions are module-level (they are pickled for dask.distributed) and
wrapped in :func:`task` for the thread policy.
"""
import functools
import os
import pickle
import threading
import uuid

import numpy as np
import dask.array as da
from dask.highlevelgraph import HighLevelGraph

from . import _api, _broadcast, _pool

try:                                    # NumPy 2
    from numpy.lib.array_utils import normalize_axis_tuple
except ImportError:                     # NumPy 1.x
    from numpy.core.numeric import normalize_axis_tuple

_FLOAT32_VOTE = np.dtype(np.float32).num


# -- the thread policy ----------------------------------------------------------------

def task(fn):
    """fn as a Dask task: the kernels it calls run on its thread alone,
    unless $FASTJAC_DASK_POOL is 1 (see the module's note)."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        if os.environ.get("FASTJAC_DASK_POOL") == "1":
            return fn(*args, **kwargs)
        previous = _pool._serial_in_this_thread(True)
        try:
            return fn(*args, **kwargs)
        finally:
            _pool._serial_in_this_thread(previous)
    return run


# -- operands ----------------------------------------------------------------------------

def _is_number(x):
    return type(x) is float or type(x) is int or type(x) is bool


def _operand(x, name):
    """x as a Dask array, a NumPy array (0-d for a scalar) or a Python
    number, with the NumPy path's type errors, and its dtype vote (0 for a
    weak Python number)."""
    if _is_number(x):
        return x, 0
    if _api.is_dask_array(x):
        meta = getattr(x, "_meta", None)
        if type(meta) is not np.ndarray:
            raise TypeError(f"{name} is a Dask array of {type(meta).__name__} blocks; "
                            f"fastjac computes on numpy.ndarray blocks")
        if any(n != n for n in x.shape):
            raise ValueError(f"{name} has unknown chunk sizes (shape {x.shape}); call "
                             f"{name}.compute_chunk_sizes() first")
        return x, _api.dtype_vote(np.empty(0, x.dtype), name)
    arr = _api.as_array(x, name)
    return arr, _api.dtype_vote(arr, name)


def _result_dtype(votes):
    return np.dtype(np.float32) if max(votes, default=0) == _FLOAT32_VOTE \
        else np.dtype(np.float64)


def _shape(x):
    return () if _is_number(x) else tuple(x.shape)


def _meta(ndim, dtype):
    return np.empty((0,) * ndim, dtype)


def _graph_args(operands, ndim):
    """blockwise's (array, index) pairs: arrays aligned to the last axes of
    the result, scalars (numbers, 0-d NumPy arrays) passed as they are."""
    args = []
    for x in operands:
        if _is_number(x) or x is None or (isinstance(x, np.ndarray) and x.ndim == 0):
            args += [x, None]
        else:
            if isinstance(x, np.ndarray):
                x = da.from_array(x, chunks=-1)
            args += [x, tuple(range(ndim - x.ndim, ndim))]
    return args


def elementwise(fn, operands, ndim, dtype, keep=(), name="fastjac"):
    """A Dask array of ``fn(*blocks)`` over the blocks of ``operands``
    (broadcast to ``ndim`` axes); along the axes ``keep`` each block of
    the result has length 1 (a per-block partial sum)."""
    return da.blockwise(fn, tuple(range(ndim)), *_graph_args(operands, ndim),
                        dtype=dtype, meta=_meta(ndim, dtype), name=None,
                        token=name, adjust_chunks={i: 1 for i in keep} or None,
                        concatenate=True)


def _keep(x, axis, keepdims):
    return x


def _add(x, axis, keepdims):
    return np.add.reduce(x, axis=axis, dtype=np.float64, keepdims=keepdims)


def _total(x, axis, keepdims, dtype):
    return np.add.reduce(x, axis=axis, dtype=np.float64, keepdims=keepdims).astype(dtype)


def tree_sum(partials, axes, dtype):
    """The per-block partial sums added over ``axes`` by Dask's tree
    reduction, in float64, rounded once to ``dtype``."""
    return da.reduction(partials, _keep, functools.partial(_total, dtype=dtype),
                        combine=_add, axis=axes, keepdims=False, dtype=dtype,
                        meta=_meta(partials.ndim - len(axes), dtype), concatenate=True,
                        name="fastjac-sum")


def _check_no_out(out, what="out"):
    if out is not None:
        raise TypeError(f"{what}= is not supported with Dask arrays: the result is a lazy "
                        f"Dask array; store it with dask.array.store(result, {what}) or "
                        f"result.compute()")


def _check_compact(fmt):
    if fmt != "compact":
        raise ValueError(
            f"format={fmt!r} builds one in-memory matrix, which Dask inputs do not get: "
            f"use format='compact' (a lazy Dask array), or pass NumPy arrays (e.g. "
            f"x.compute()) when the {fmt} matrix fits in memory")


# -- jacobian and sum_gradient -------------------------------------------------------------

def _block_shape(a, b):
    return np.broadcast_shapes(np.shape(a), np.shape(b)) if b is not None else np.shape(a)


@task
def _jacobian_block(op, wrt, second, a, b):
    """The block's partials: first derivatives (jacobian), or with ``second``
    sum_hessian's element-wise ones (a diagonal block where k is not
    broadcast, or the mixed block), shaped like the block."""
    if second:
        return np.asarray(_api.sum_hessian(op, a, b, wrt=wrt)).reshape(_block_shape(a, b))
    return np.asarray(_api.jacobian(op, a, b, wrt=wrt))


@task
def _partial_sum_block(op, wrt, axis, keep_shape, second, a, b):
    """The block's partials (second partials with ``second``: sum_hessian,
    whose sums run over the axes along which k is broadcast, axis=None)
    summed over the block's part of the summed axes, in float64, those axes
    kept with length 1."""
    if second:
        total = _api.sum_hessian(op, a, b, wrt=wrt)
    else:
        total = _api.sum_gradient(op, a, b, wrt=wrt, axis=axis)
    shape = tuple(1 if i in keep_shape else n for i, n in enumerate(_block_shape(a, b)))
    return np.asarray(total, dtype=np.float64).reshape(shape)


def differentiate(summing, spec, code, a, b, wrt, axis, denominator, fmt, out, second=False):
    """``jacobian`` (summing False) or ``sum_gradient`` with a Dask operand;
    op, wrt, layout and format are checked (_api.differentiate). With
    ``second``, sum_hessian: summing for a diagonal block (wrt k), not
    summing for the mixed block (wrt (0, 1))."""
    _check_compact(fmt)
    _check_no_out(out)
    unary = spec.arity == 1
    a, vote_a = _operand(a, "a")
    if unary:
        b, vote_b = None, 0
    else:
        b, vote_b = _operand(b, "b")
    dtype = _result_dtype((vote_a, vote_b))
    shape = _shape(a) if unary else _broadcast.check_shapes(_shape(a), _shape(b))
    ndim = len(shape)
    op = spec.name
    if not summing:
        return elementwise(functools.partial(_jacobian_block, op, wrt, second), (a, b), ndim,
                           dtype, name="fastjac-jacobian")
    k_shape = _shape(a if wrt == 0 else b)
    reduced = tuple(range(ndim)) if axis is None else \
        normalize_axis_tuple(axis, ndim, "axis")
    k_aligned = (1,) * (ndim - len(k_shape)) + k_shape
    summed = tuple(i for i in reduced if k_aligned[i] == 1)
    if not summed:
        # nothing to add up: the partials are the result (shaped like k for axis=None)
        return elementwise(functools.partial(_jacobian_block, op, wrt, second), (a, b), ndim,
                           dtype, name="fastjac-sum-gradient")
    # Each block sums its part of the summed axes (the per-block call's own
    # "summed" axes are exactly these: k has length 1 along them in every
    # block); the tree adds the blocks' sums.
    block_axis = None if len(summed) == ndim else summed
    partials = elementwise(
        functools.partial(_partial_sum_block, op, wrt, block_axis, frozenset(summed), second),
        (a, b), ndim, np.dtype(np.float64), keep=summed, name="fastjac-partial-sums")
    result = tree_sum(partials, summed, dtype)
    if axis is None and result.shape != k_shape:
        result = result.reshape(k_shape)      # the gradient is shaped like k
    return result


# -- compiled expressions -------------------------------------------------------------------

_SHARED = {}                    # token -> CompiledExpression, one per process
_SHARED_LOCK = threading.Lock()


class _Shared:
    """A compiled expression in a graph: pickled as a token and its
    expression, rebuilt once per worker process (its plans, and the JIT's
    code, are then made once per process, not once per task)."""
    __slots__ = ("token", "compiled")

    def __init__(self, token, compiled):
        self.token, self.compiled = token, compiled

    def __reduce__(self):
        return _shared, (self.token, pickle.dumps(self.compiled))


def _shared(token, payload):
    with _SHARED_LOCK:
        compiled = _SHARED.get(token)
        if compiled is None:
            compiled = _SHARED[token] = pickle.loads(payload)
    return _Shared(token, compiled)


def _share(compiled):
    token = getattr(compiled, "_dask_token", None)
    if token is None:
        token = compiled._dask_token = uuid.uuid4().hex
    with _SHARED_LOCK:
        _SHARED.setdefault(token, compiled)
    return _Shared(token, compiled)


@task
def _expr_block(shared, names, name, want_value, summed_root, *blocks):
    """(value, jacobian) of one block, each as an array: a summed value as
    one number per block (all axes of length 1)."""
    values = dict(zip(names, blocks))
    f = shared.compiled
    ndim = max((np.ndim(v) for v in blocks), default=0)
    if name is None:
        value, jac = f.value(**values), None
    elif want_value:
        value, jac = f.value_and_jacobian(name, **values)
    else:
        value, jac = None, f.jacobian(name, **values)
    if value is not None:
        value = np.asarray(value)
        if summed_root:
            value = value.astype(np.float64).reshape((1,) * ndim)
    if jac is not None:
        jac = np.asarray(jac)
        if summed_root and jac.ndim == 0:       # a scalar variable after a sum
            jac = jac.astype(np.float64).reshape((1,) * ndim)
    return value, jac


def _leaf(pairs, i, chunks, meta, label):
    """Output ``i`` of the blockwise array ``pairs`` of tuples, as an array."""
    name = f"{label}-{pairs.name}"
    keys = {key[1:]: key for key in _flat_keys(pairs.__dask_keys__())}
    layer = {(name,) + index: (_pick, key, i) for index, key in keys.items()}
    graph = HighLevelGraph.from_collections(name, layer, dependencies=[pairs])
    return da.Array(graph, name, chunks=chunks, meta=meta)


def _pick(pair, i):
    return pair[i]


def _flat_keys(keys):
    if isinstance(keys, list):
        for k in keys:
            yield from _flat_keys(k)
    else:
        yield keys


def expression(compiled, wrt, layout, format, out, value_out, want_value, want_jacobian,
               variables):
    """``value_and_jacobian`` (or ``value``, want_jacobian False) of a
    compiled expression with Dask variables: (value, jacobian) of Dask
    arrays (value None when not wanted), or the value alone for ``value``."""
    from . import expr as _expr_mod
    _expr_mod._check_layout(layout)
    _check_compact(_expr_mod._check_format(format))
    _check_no_out(out)
    _check_no_out(value_out, "value_out")
    name = None
    if want_jacobian:
        names, stacked = compiled._wrt_list(wrt)
        if stacked or not compiled._single:
            raise NotImplementedError(
                "with Dask arrays, a compiled expression gives the Jacobian of one "
                "expression by one variable at a time; stacked Jacobians (a list of "
                "expressions, or wrt given as a list) need NumPy inputs")
        name = names[0]
    elif not compiled._single:
        raise NotImplementedError("with Dask arrays, value() takes a single expression")
    compiled._check_names(variables)
    if compiled._has_inner:
        return _staged(compiled, name, want_value, want_jacobian, variables)
    names = compiled.variables
    operands, votes = [], []
    shape, owner = None, None
    for v in names:
        x, vote = _operand(variables[v], v)
        operands.append(x)
        votes.append(vote)
        s = _shape(x)
        if s == ():
            continue
        if shape is None:
            shape, owner = s, v
        elif s != shape:
            raise ValueError(
                f"{owner} has shape {shape} and {v} has shape {s}; the variables of an "
                f"element-wise expression must have the same shape, or be scalars")
    dtype = _result_dtype(votes)
    shape = shape or ()
    ndim = len(shape)
    summed_root = isinstance(compiled._outputs[0], _expr_mod.Sum)
    wrt_scalar = name is not None and _shape(operands[names.index(name)]) == ()
    need_value = name is None or want_value
    fn = functools.partial(_expr_block, _share(compiled), names, name, need_value,
                           summed_root)
    pairs = da.blockwise(fn, tuple(range(ndim)), *_graph_args(operands, ndim),
                         dtype=object, meta=np.empty((0,) * ndim, object),
                         concatenate=True, token="fastjac-expr")
    ones = tuple((1,) * len(c) for c in pairs.chunks)
    value = jac = None
    if need_value:
        if summed_root:
            value = tree_sum(_leaf(pairs, 0, ones, _meta(ndim, np.float64), "value"),
                             tuple(range(ndim)), dtype)
        else:
            value = _leaf(pairs, 0, pairs.chunks, _meta(ndim, dtype), "value")
    if name is not None:
        if summed_root and wrt_scalar:
            jac = tree_sum(_leaf(pairs, 1, ones, _meta(ndim, np.float64), "jacobian"),
                           tuple(range(ndim)), dtype)
        else:
            jac = _leaf(pairs, 1, pairs.chunks, _meta(ndim, dtype), "jacobian")
    if not want_jacobian:
        return value
    return value, jac


# -- expressions whose sums feed further work: one graph per stage ---------------------------

def _substitute(root, placeholders):
    """root with each Sum node whose id is in ``placeholders`` replaced by
    the variable of that name (the nodes below it are not visited)."""
    from .expr import Binary, Sum, Unary, Var, _postorder
    new = {}
    for node in _postorder([root], lambda n: id(n) not in placeholders):
        if id(node) in placeholders:
            new[id(node)] = Var(placeholders[id(node)])
        elif isinstance(node, Unary):
            new[id(node)] = Unary(node.op, new[id(node.arg)])
        elif isinstance(node, Binary):
            new[id(node)] = Binary(node.op, new[id(node.a)], new[id(node.b)])
        elif isinstance(node, Sum):
            new[id(node)] = Sum(new[id(node.arg)], node.axis)
        else:                                   # Var, Const
            new[id(node)] = node
    return new[id(root)]


def _stages(compiled):
    """The expression as a list of (placeholder name, compiled stage), inner
    sums first and the root last (placeholder None): each stage reads the
    sums it contains as scalar variables named by their placeholders.
    Built once per compiled expression."""
    stages = compiled.__dict__.get("_dask_stages")
    if stages is None:
        from .expr import CompiledExpression
        root = compiled._outputs[0]
        sums = [s for s in compiled._sums if s is not root]
        names = {id(s): f"\x00sum{k}" for k, s in enumerate(sums)}
        stages = []
        for node in sums + [root]:
            inner = {k: v for k, v in names.items() if k != id(node)}
            stages.append((names.get(id(node)), CompiledExpression(_substitute(node, inner))))
        compiled._dask_stages = stages
    return stages


def _staged(compiled, name, want_value, want_jacobian, variables):
    """``expression()`` for an expression whose sums feed further work
    (``sum(e) / N``, ``log(sum(exp(x)))``, ``sum((x - sum(x) / N) ** 2)``):
    each sum is a tree reduction whose lazy value the stages after it read
    as a scalar; the gradient is the chain rule over the stages, as lazy
    arrays (one pass per stage and per variable it is differentiated by).
    The Jacobian needs a scalar result: an element-wise expression reading
    a sum has a Jacobian that is not diagonal (diagonal plus rank one)."""
    stages = _stages(compiled)
    env = dict(variables)
    results = []                        # (value, stage) in order
    for placeholder, stage in stages:
        value = expression(stage, None, "numerator", "compact", None, None, True, False,
                           {n: env[n] for n in stage.variables})
        if placeholder is not None:
            env[placeholder] = value
        results.append(value)
    value = results[-1]
    if not want_jacobian:
        return value
    if value.ndim:
        raise NotImplementedError(
            "with Dask arrays, the Jacobian of an element-wise expression that reads a sum "
            "(diagonal plus rank one) is not given; its value is. Differentiate a scalar "
            "expression (a sum of it), or pass NumPy arrays")

    def partial(stage, wrt):
        stage_vars = {n: env[n] for n in stage.variables}
        return expression(stage, wrt, "numerator", "compact", None, None, False, True,
                          stage_vars)[1]
    # reverse mode over the stages: adjoint[k] = d(result) / d(value of stage k)
    adjoint = [None] * len(stages)
    adjoint[-1] = 1.0
    gradient = None
    for k in reversed(range(len(stages))):
        a = adjoint[k]
        if a is None:
            continue
        placeholder, stage = stages[k]
        for j, (inner, _) in enumerate(stages[:k]):
            if inner in stage.variables:
                term = a * partial(stage, inner)
                adjoint[j] = term if adjoint[j] is None else adjoint[j] + term
        if name in stage.variables:
            term = a * partial(stage, name)
            gradient = term if gradient is None else gradient + term
    # (every variable is read by a stage, and every stage feeds the result)
    return (value if want_value else None), gradient.astype(value.dtype)
