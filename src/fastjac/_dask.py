"""Dask arrays in, lazy Dask arrays out (issue 18).

Imported only when an operand or a variable is a ``dask.array.Array``: the
one check is in ``_api.differentiate`` (``jacobian``, ``sum_gradient``) and
in ``CompiledExpression.value_and_jacobian`` / ``value`` / ``_product_args``
(``jvp``, ``vjp``) in _compiled.py, after the NumPy fast paths. ``import
fastjac`` never imports Dask.

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
* Compiled expressions: ``jacobian``, ``value_and_jacobian``, ``value``,
  ``jvp`` and ``vjp``, also stacked Jacobians (wrt a list, or a list of
  scalar expressions: the NumPy path's compact matrix, assembled with
  ``da.stack`` / ``da.concatenate`` from each output's gradients) and the
  value of a list (a tuple). One pass over the blocks per call: each
  block runs the NumPy method; its results are element-wise blocks,
  per-block partial sums (tree_sum), or one number that reads no array
  variable (the first block's). Tangents and cotangents may be Dask,
  NumPy or numbers. Array variables of different shapes are broadcast as
  on the NumPy path: each becomes a lazy ``da.broadcast_to`` of the common
  shape S (each task then holds one block of it), and a gradient or VJP
  by it is summed over the broadcast axes with Dask's own ``sum`` (a tree,
  in float64). Stacked Jacobians and lists of expressions keep requiring
  one shape (NotImplementedError). An expression whose sums feed further
  work (``sum(e) / N``, ``log(sum(exp(x)))``) runs one graph per stage (:func:`_staged`): each
  sum is a tree reduction whose lazy value the next stage reads as a
  number, the gradient is the chain rule over the stages; its jvp, vjp and
  stacked rows come from those gradients. Its result must be a number for
  derivatives (an element-wise result reading a sum has a Jacobian that is
  diagonal plus rank one: NotImplementedError); its value is always given.

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

from . import _api, _broadcast, _checks, _compiled, _pool
from ._compiled import CompiledExpression
from ._nodes import Binary, Sum, Unary, Var
from ._planner import _Stage, _postorder, _topological

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
        _check_blocks(x, name)
        return x, _checks.dtype_vote(np.empty(0, x.dtype), name)
    return _checks.as_operand(x, name)


def _check_blocks(x, name, fix=None):
    """A Dask array fastjac can compute on: NumPy blocks of known sizes
    (``fix``: the call the message suggests, default name.compute_chunk_sizes())."""
    meta = getattr(x, "_meta", None)
    if type(meta) is not np.ndarray:
        raise TypeError(f"{name} is a Dask array of {type(meta).__name__} blocks; "
                        f"fastjac computes on numpy.ndarray blocks")
    if any(n != n for n in x.shape):
        raise ValueError(f"{name} has unknown chunk sizes (shape {x.shape}); call "
                         f"{fix or name + '.compute_chunk_sizes()'} first")


def _result_dtype(votes):
    return np.dtype(np.float32) if max(votes, default=0) == _FLOAT32_VOTE \
        else np.dtype(np.float64)


def _shape(x):
    return () if _is_number(x) else tuple(x.shape)


def _meta(ndim, dtype):
    return np.empty((0,) * ndim, dtype)


def graph_arg(x, index):
    """blockwise's (array, index) pair of one operand: a scalar (a number,
    None, a 0-d NumPy array) as it is, a NumPy array as one chunk."""
    if _is_number(x) or x is None or (isinstance(x, np.ndarray) and x.ndim == 0):
        return [x, None]
    if isinstance(x, np.ndarray):
        x = da.from_array(x, chunks=-1)
    return [x, index]


def _graph_args(operands, ndim):
    """blockwise's (array, index) pairs: arrays aligned to the last axes of
    the result, scalars passed as they are."""
    args = []
    for x in operands:
        args += graph_arg(x, tuple(range(ndim - np.ndim(x), ndim)) if x is not None else None)
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


def leaf(pairs, i, chunks, meta, label, extra=()):
    """Output ``i`` of the blockwise array ``pairs`` of tuples, as an array;
    ``extra``: the lengths of trailing axes of one chunk each that the
    outputs have beyond the blocks' axes."""
    name = f"{label}-{i}-{pairs.name}"
    tail = (0,) * len(extra)
    layer = {(name,) + key[1:] + tail: (_pick, key, i)
             for key in _flat_keys(pairs.__dask_keys__())}
    graph = HighLevelGraph.from_collections(name, layer, dependencies=[pairs])
    return da.Array(graph, name, chunks=tuple(chunks) + tuple((n,) for n in extra),
                    meta=meta)


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
    _checks.check_layout(layout)
    _check_compact(_checks.check_format(format))
    _check_no_out(out)
    _check_no_out(value_out, "value_out")
    name = None
    if want_jacobian:
        names, stacked = compiled._wrt_list(wrt)
        if stacked or not compiled._single:
            return stacked_jacobian(compiled, names, not stacked, want_value, variables)
        name = names[0]
    elif not compiled._single:
        return list_value(compiled, variables)
    compiled._check_names(variables)
    variables, widened = _broadcast_variables(compiled, variables)
    if widened:
        result = expression(compiled, name, layout, format, out, value_out, want_value,
                            want_jacobian, variables)
        if name not in widened or not _scalar_root(compiled, variables):
            return result           # element-wise: the compact result has the shape S
        value, jac = result
        return value, _summed_to(jac, widened[name])
    if compiled._has_inner:
        return _staged(compiled, name, want_value, want_jacobian, variables)
    names = compiled.variables
    operands, dtype, shape = _expression_operands(compiled, variables)
    ndim = len(shape)
    summed_root = isinstance(compiled._outputs[0], Sum)
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
            value = tree_sum(leaf(pairs, 0, ones, _meta(ndim, np.float64), "value"),
                             tuple(range(ndim)), dtype)
        else:
            value = leaf(pairs, 0, pairs.chunks, _meta(ndim, dtype), "value")
    if name is not None:
        if summed_root and wrt_scalar:
            jac = tree_sum(leaf(pairs, 1, ones, _meta(ndim, np.float64), "jacobian"),
                           tuple(range(ndim)), dtype)
        else:
            jac = leaf(pairs, 1, pairs.chunks, _meta(ndim, dtype), "jacobian")
    if not want_jacobian:
        return value
    return value, jac


# -- expressions whose sums feed further work: one graph per stage ---------------------------

def _sums_as_variables(root, names):
    """root with each Sum node whose id is in ``names`` read as the scalar
    variable of that name (the nodes below it are not visited)."""
    new = {}
    for node in _postorder([root], lambda n: id(n) not in names):
        if id(node) in names:
            new[id(node)] = Var(names[id(node)])
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
    """The expression as a list of (the name of its sum's variable, compiled
    stage), inner sums first and the root last (name None): each stage
    reads the sums it contains as scalar variables of those names.
    Built once per compiled expression."""
    stages = compiled.__dict__.get("_dask_stages")
    if stages is None:
        root = compiled._outputs[0]
        sums = [s for s in compiled._sums if s is not root]
        names = {id(s): f"\x00sum{k}" for k, s in enumerate(sums)}
        stages = []
        for node in sums + [root]:
            inner = {k: v for k, v in names.items() if k != id(node)}
            stages.append((names.get(id(node)), CompiledExpression(_sums_as_variables(node, inner))))
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
    results = []                        # each stage's lazy value, in order
    for sum_name, stage in stages:
        value = expression(stage, None, "numerator", "compact", None, None, True, False,
                           {n: env[n] for n in stage.variables})
        if sum_name is not None:
            env[sum_name] = value
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
        stage = stages[k][1]
        for j, (inner, _) in enumerate(stages[:k]):
            if inner in stage.variables:
                term = a * partial(stage, inner)
                adjoint[j] = term if adjoint[j] is None else adjoint[j] + term
        if name in stage.variables:
            term = a * partial(stage, name)
            gradient = term if gradient is None else gradient + term
    # (every variable is read by a stage, and every stage feeds the result)
    return (value if want_value else None), gradient.astype(value.dtype)


# -- jvp, vjp, stacked Jacobians, lists of expressions ----------------------------------------
#
# One blockwise pass over the variables (and the tangents or the cotangent):
# each block calls the NumPy method itself (f.jvp, f.vjp, f.value_and_jacobian
# with a list wrt, f.value) on NumPy blocks and returns a tuple of results,
# each of one kind:
#   _ELEMENTWISE  shaped like the block: the result is those blocks, as they are;
#   _SUMMED       one float64 number per block (the block's part of a sum over
#                 the elements), added by tree_sum;
#   _FIRST        one number, the same in every block (it reads no array
#                 variable, e.g. z**2 for a scalar z, or everything is a
#                 scalar): the first block's.

_ELEMENTWISE, _SUMMED, _FIRST = "elementwise", "summed", "first"


def _expression_operands(compiled, variables):
    """The variables of a compiled expression, checked (names, blocks,
    dtypes, one shape for the arrays): (operands in compiled.variables
    order, dtype, the arrays' one shape)."""
    compiled._check_names(variables)
    operands, votes = [], []
    shape, owner = None, None
    for v in compiled.variables:
        x, vote = _operand(variables[v], v)
        operands.append(x)
        votes.append(vote)
        s = _shape(x)
        if s == ():
            continue
        if shape is None:
            shape, owner = s, v
        elif s != shape:
            # (jacobian, jvp and vjp broadcast their variables first: here a
            # stacked Jacobian or a list of expressions)
            _refuse_broadcast({owner: shape, v: s}, "the variables of an element-wise expression",
                              "for one expression and one variable of wrt at a time")
    return operands, _result_dtype(votes), shape or ()


def _broadcast_variables(compiled, variables):
    """(variables, {name: original shape}) with every array variable of
    another shape than their broadcast shape S made a lazy Dask array of S
    (da.broadcast_to: no memory until a block is computed, and then only
    that block). ({}: the arrays have one shape, nothing changed.)"""
    named = {v: _shape(variables[v]) for v in compiled.variables if _shape(variables[v])}
    if len(set(named.values())) <= 1:
        return variables, {}
    shape = _broadcast.broadcast_named(named, "the variables of an element-wise expression")
    widened = {v: s for v, s in named.items() if s != shape}
    out = dict(variables)
    for v in widened:
        x = variables[v]
        out[v] = da.broadcast_to(x if _api.is_dask_array(x) else da.from_array(np.asarray(x)),
                                 shape)
    return out, widened


def _broadcast_seed(names, stacked, seed, variables):
    """jvp's tangents as a list, each checked against its variable's own
    shape (``variables``: before they are broadcast)."""
    tangents = _compiled._tangent_list(seed, names, stacked)
    for n, t in zip(names, tangents):
        _seed(t, _shape(variables[n]), np.dtype(np.float64), f"the tangent of {n!r}",
              f"variable {n!r}")
    return tangents


def _scalar_root(compiled, variables):
    """The (single) expression's value is a number: a sum, or arithmetic on
    sums that reads no array variable after them."""
    root = compiled._outputs[0]
    return isinstance(root, Sum) or (
        compiled._has_inner and all(_shape(variables[v]) == () for v in _Stage(root).vars))


def _summed_to(g, shape):
    """A lazy per-element result by a variable broadcast from ``shape``,
    summed (in float64, Dask's tree) over the broadcast axes."""
    st = _broadcast.structure_of(g.shape, shape, True)
    if not st.summed:
        return g
    return g.sum(axis=st.summed, dtype=np.float64).astype(g.dtype).reshape(shape)


def _refuse_broadcast(named, what, supported="for NumPy arrays only"):
    """Shapes (name -> shape) that differ among Dask operands where they are
    not broadcast: NotImplementedError if they broadcast together, else
    ValueError."""
    _broadcast.broadcast_named(named, what)
    listed = " and ".join(f"{name} has shape {s}" for name, s in named.items())
    raise NotImplementedError(f"{listed}: with Dask arrays here, {what} must have one "
                              f"shape (or be scalars); broadcasting them is supported "
                              f"{supported}")


def _output_kinds(compiled, shapes, ndim):
    """The kind of each output's value: a sum over the elements of an array
    variable, element-wise, or a number that reads no array variable."""
    kinds = []
    for root in compiled._outputs:
        reads_array = ndim > 0 and any(
            isinstance(node, Var) and shapes[node.name] != ()
            for node in _topological([root]))
        kinds.append(_FIRST if not reads_array else
                     _SUMMED if isinstance(root, Sum) else _ELEMENTWISE)
    return kinds


def _seed(t, shape, dtype, what, of):
    """A tangent or cotangent (Dask, NumPy or a number) checked as by the
    NumPy path (_compiled._product_operand), with its messages; NumPy ones come
    back as arrays of ``dtype``, Dask ones as they are (each block is cast by
    the NumPy method that receives it)."""
    if _api.is_dask_array(t):
        _check_blocks(t, what, "its compute_chunk_sizes()")
        # the NumPy check on a stand-in of t's dtype and shape (no memory)
        _compiled._product_operand(np.broadcast_to(np.zeros((), t.dtype), t.shape), shape,
                                   t.dtype, what, of)
        return t
    return _compiled._product_operand(t, shape, dtype, what, of)


def _as_kind(x, kind, ndim):
    x = np.asarray(x)
    if kind == _SUMMED:
        return x.astype(np.float64).reshape((1,) * ndim)
    if kind == _FIRST:
        return x.reshape((1,) * ndim)
    return x


def _blocks(fn, operands, ndim):
    """The blockwise array of ``fn``'s tuples, one per block."""
    return da.blockwise(fn, tuple(range(ndim)), *_graph_args(operands, ndim),
                        dtype=object, meta=np.empty((0,) * ndim, object),
                        concatenate=True, token="fastjac-expr")


def _result(pairs, i, kind, ndim, dtype, label):
    """Output ``i`` of the blocks' tuples as a lazy array of ``dtype``, by its kind."""
    label = f"{label}{i}"
    if kind == _ELEMENTWISE:
        return leaf(pairs, i, pairs.chunks, _meta(ndim, dtype), label)
    ones = tuple((1,) * len(c) for c in pairs.chunks)
    if kind == _SUMMED:
        return tree_sum(leaf(pairs, i, ones, _meta(ndim, np.float64), label),
                        tuple(range(ndim)), dtype)
    return leaf(pairs, i, ones, _meta(ndim, dtype), label)[(0,) * ndim]


@task
def _product_block(shared, names, mode, wrt, stacked, kinds, ndim, *blocks):
    """f.jvp or f.vjp of one block: (value, product) or (value, *gradients)."""
    n = len(names)
    values = dict(zip(names, blocks[:n]))
    seeds = blocks[n:]
    f = shared.compiled
    if mode == "jvp":
        value, product = f.jvp(list(wrt) if stacked else wrt[0],
                               list(seeds) if stacked else seeds[0], **values)
        results = (value, product)
    else:
        value, grads = f.vjp(list(wrt) if stacked else wrt[0], seeds[0], **values)
        results = (value,) + (tuple(grads) if stacked else (grads,))
    return tuple(_as_kind(r, k, ndim) for r, k in zip(results, kinds))


def products(compiled, mode, names, stacked, seed, variables):
    """``jvp`` (mode "jvp", seed: the tangent, a list of them for a list
    wrt) or ``vjp`` (seed: the cotangent) of a single compiled expression
    with Dask variables; wrt is checked (_compiled's _product_args). Returns
    (value, product) or (value, gradient or tuple of gradients), lazy."""
    compiled._check_names(variables)
    original = variables
    variables, widened = _broadcast_variables(compiled, variables)
    if widened and mode == "jvp":
        # each tangent checked against its variable's own shape, then broadcast
        seed = _broadcast_seed(names, stacked, seed, original)
        shape = _shape(variables[next(iter(widened))])
        seed = [da.broadcast_to(da.asarray(t), shape) if n in widened else t
                for n, t in zip(names, seed)]
        seed = seed if stacked else seed[0]
    operands, dtype, shape = _expression_operands(compiled, variables)
    ndim = len(shape)
    shapes = {v: _shape(x) for v, x in zip(compiled.variables, operands)}
    summed_root = _scalar_root(compiled, variables)
    y_kind = _FIRST if ndim == 0 else _SUMMED if summed_root else _ELEMENTWISE
    if mode == "jvp":
        seed = _compiled._tangent_list(seed, names, stacked)
        seeds = [_seed(t, shapes[n], dtype, f"the tangent of {n!r}", f"variable {n!r}")
                 for n, t in zip(names, seed)]
        kinds = (y_kind, y_kind)
    else:
        y_shape = () if summed_root else shape
        seeds = [_seed(seed, y_shape, dtype, "cotangent", "the expression's value")]
        # by an array variable: shaped like it; by a scalar: a sum over the elements
        kinds = (y_kind,) + tuple(_ELEMENTWISE if shapes[n] != () else
                                  _FIRST if ndim == 0 else _SUMMED for n in names)
    if compiled._has_inner:
        value, product = _staged_products(compiled, mode, names, stacked, seeds, variables)
    else:
        fn = functools.partial(_product_block, _share(compiled), compiled.variables, mode,
                               tuple(names), stacked, kinds, ndim)
        pairs = _blocks(fn, operands + seeds, ndim)
        results = [_result(pairs, i, k, ndim, dtype, mode) for i, k in enumerate(kinds)]
        value, product = results[0], (results[1] if mode == "jvp" or not stacked
                                      else tuple(results[1:]))
    if mode == "vjp" and widened:       # a VJP by a broadcast variable: summed over S
        grads = [_summed_to(g, widened[n]) if n in widened else g
                 for n, g in zip(names, product if stacked else (product,))]
        product = tuple(grads) if stacked else grads[0]
    return value, product


@task
def _list_block(shared, names, wrt, kinds, ndim, *blocks):
    """The outputs' values of one block, then (with ``wrt``) the pieces of
    the stacked Jacobian: for each variable of wrt, each output's gradient
    by it (the block's columns of the NumPy path's matrix)."""
    values = dict(zip(names, blocks))
    f = shared.compiled
    if wrt is None:
        vals, M = f.value(**values), None
    else:
        vals, M = f.value_and_jacobian(list(wrt), **values)
    if f._single:
        vals = (vals,)
    results = list(vals)
    if M is not None:
        M = np.asarray(M).reshape(len(vals), -1)
        offset = 0
        for name in wrt:
            s = np.shape(values[name])
            size = int(np.prod(s))
            results += [M[i, offset:offset + size].reshape(s) for i in range(len(vals))]
            offset += size
    return tuple(_as_kind(r, k, ndim) for r, k in zip(results, kinds))


def _list_graph(compiled, names, variables):
    """(the outputs' lazy values, their lazy gradients [output][variable
    of names]) of a compiled list of expressions (or of one, for a stacked
    Jacobian), from one pass over the blocks; names None: the values only."""
    operands, dtype, shape = _expression_operands(compiled, variables)
    ndim = len(shape)
    shapes = {v: _shape(x) for v, x in zip(compiled.variables, operands)}
    out_kinds = _output_kinds(compiled, shapes, ndim)
    if names is not None and _ELEMENTWISE in out_kinds:
        _refuse_elementwise_stack()
    kinds = list(out_kinds)
    for name in names or ():
        # by an array variable: the gradient is shaped like it; by a scalar,
        # it is of the kind of the output's value
        kinds += [_ELEMENTWISE if shapes[name] != () else k for k in out_kinds]
    fn = functools.partial(_list_block, _share(compiled), compiled.variables,
                           None if names is None else tuple(names), tuple(kinds), ndim)
    pairs = _blocks(fn, operands, ndim)
    results = [_result(pairs, i, k, ndim, dtype, "list") for i, k in enumerate(kinds)]
    n_out = len(out_kinds)
    values = results[:n_out]
    grads = [[results[n_out * (1 + j) + i] for j in range(len(names or ()))]
             for i in range(n_out)]
    return values, grads


def list_value(compiled, variables):
    """``value()`` of a compiled list of expressions with Dask variables: a
    tuple of lazy values, one per output (checks: expression())."""
    if compiled._has_inner:
        return tuple(expression(f, None, "numerator", "compact", None, None, True, False,
                                {n: variables[n] for n in f.variables})
                     for f in _outputs_alone(compiled, variables))
    return tuple(_list_graph(compiled, None, variables)[0])


def stacked_jacobian(compiled, names, one_variable, want_value, variables):
    """The stacked Jacobian of ``value_and_jacobian`` (wrt a list, or a
    list of expressions) with Dask variables, as the NumPy path's compact
    result: (number of outputs, total elements of the wrt variables), or
    with ``one_variable`` (number of outputs,) + that variable's shape.
    Each output must be scalar; row i holds output i's gradients by the
    variables of ``names``, flattened and concatenated. Returns (value,
    matrix), value None unless ``want_value``, a tuple for a list of
    expressions (checks: expression())."""
    if compiled._has_inner:
        values, grads = _staged_rows(compiled, names, variables)
    else:
        values, grads = _list_graph(compiled, names, variables)
    if one_variable:
        jac = da.stack([row[0] for row in grads])
    else:
        jac = da.stack([da.concatenate([_flat(g) for g in row]) for row in grads])
    value = None
    if want_value:
        value = values[0] if compiled._single else tuple(values)
    return value, jac


def _flat(g):
    """g flattened in C order, lazily: its trailing axes in one chunk first
    (which Dask's reshape needs, also for an empty array)."""
    if g.ndim > 1:
        g = g.rechunk({i: -1 for i in range(1, g.ndim)})
    return g.reshape(-1)


def _refuse_elementwise_stack():
    raise ValueError(
        "the stacked Jacobian of a list of expressions (or of wrt given as a "
        "list) needs scalar-valued expressions (use fastjac.sum, fastjac.dot, "
        "or scalar variables); for the Jacobian of an element-wise expression, "
        "compile it on its own and ask for one variable at a time")


def _outputs_alone(compiled, variables):
    """Each output of a compiled list as a compiled expression of its own
    (made once), for the staged path; [compiled] for a single expression."""
    if compiled._single:
        return [compiled]
    alone = compiled.__dict__.get("_dask_outputs")
    if alone is None:
        alone = compiled._dask_outputs = [CompiledExpression(o) for o in compiled._outputs]
    return alone


def _staged_rows(compiled, names, variables):
    """(values, gradients [output][variable of names]) of the outputs of an
    expression (or list) whose sums feed further work, each output's
    gradients from _staged; every output must be a number."""
    operands, _, _ = _expression_operands(compiled, variables)
    by_name = dict(zip(compiled.variables, operands))
    values, grads = [], []
    for f in _outputs_alone(compiled, variables):
        own = {n: variables[n] for n in f.variables}
        value = expression(f, None, "numerator", "compact", None, None, True, False, own)
        if value.ndim:
            _refuse_elementwise_stack()
        row = []
        for name in names:
            if name in f.variables:
                row.append(expression(f, name, "numerator", "compact", None, None, False,
                                      True, own)[1])
            else:                               # the output does not read it
                x = by_name[name]
                row.append(da.zeros(_shape(x), dtype=value.dtype,
                                    chunks=x.chunks if _api.is_dask_array(x) else -1))
        values.append(value)
        grads.append(row)
    return values, grads


def _staged_products(compiled, mode, names, stacked, seeds, variables):
    """jvp and vjp of an expression whose sums feed further work, from its
    staged gradients (a scalar result: see _staged)."""
    value, grads = None, []
    for name in names:
        value, g = expression(compiled, name, "numerator", "compact", None, None, True, True,
                              variables)
        grads.append(g)
    if mode == "jvp":
        total = 0.0
        for g, t in zip(grads, seeds):
            total = total + (g.astype(np.float64) * t).sum()
        return value, total.astype(value.dtype)
    u = seeds[0]
    scaled = tuple((g * u).astype(value.dtype) for g in grads)
    return value, (scaled if stacked else scaled[0])
