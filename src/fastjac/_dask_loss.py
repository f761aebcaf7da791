"""Losses over Dask arrays: one pass per block of rows, then a tree sum.

Imported only when a variable of a ``CompiledLoss`` call (or its tangent,
cotangent or Hessian-vector ``v``) is a Dask array; each method of
CompiledLoss checks that after its NumPy fast path.

How
---
A loss is a weighted sum of reductions (fastjac._batch). Everything asked
of one reduction is a sum over its rows (a term with ``X @ w``) or over its
elements (a term without): the value, the gradient by the weights w or by
a scalar, the Hessian diagonal, a Hessian-vector product, X^T diag(e'') X.
The gradient by a per-row variable (y, or X itself) is per row. So:

* the terms are grouped by what they run over: the rows of one matrix X
  (every term with ``X @ w`` for that X), or the elements of arrays of one
  shape (an L2 penalty ``sum(w * w)`` is such a group);
* a group is one ``blockwise`` task per block: a block of rows of X with
  all of its columns, and the same rows of the per-row arrays (Dask
  aligns their chunks). The task runs the NumPy path's own pass
  (``CompiledLoss._value_grad``, ``_hvp``, ``_hessian_parts``,
  ``_mixed_total``) on a *block view* of the loss: the group's terms, each
  ``mean(e)`` made ``sum(e) / size`` with the size of the whole array, so
  a block's results are exactly its share of the whole;
* a summed result (one float64 partial per block) goes through Dask's
  tree reduction (``_dask.tree_sum``); a per-row result keeps the blocks.

The groups' results are added in float64 and rounded once to the loss's
dtype. Every check of the NumPy path (names, shapes, axis, what cannot be
differentiated) is made when the graph is built, by the same functions.

What differs from NumPy inputs is what differs on the rest of the Dask
path (_dask.py): results are lazy Dask arrays (0-d where the NumPy path
gives a number), ``out=`` raises TypeError, and sums equal the NumPy
path's to rounding. A gradient is given in format "compact" only; a
Hessian in "compact" and "dense" ("operator" is refused: each product
would be a pass over the cluster's data, call :meth:`hvp` for that).
"""
import copy
import functools

import numpy as np
import dask.array as da

from . import _dask
from ._api import is_dask_array
from ._batch import (_mean_size, _refuse_matrix, _refuse_weight, _size, check_same_shape,
                     weighted)

_V = "\x00v"            # the block of a Hessian-vector product's v


# -- the block view: a group's terms, each mean made a sum over the whole ----------

def _block_view(loss, indices, sizes):
    """A CompiledLoss of the terms ``indices`` of ``loss``, where a mean of
    the whole array's ``size`` elements is a sum times 1/size (built once
    per process and group)."""
    views = loss.__dict__.setdefault("_block_views", {})
    key = (indices, sizes)
    view = views.get(key)
    if view is None:
        view = object.__new__(type(loss))
        view.__dict__.update(loss.__dict__)
        terms = []
        for i, size in zip(indices, sizes):
            term = copy.copy(loss._terms[i])
            if term.mean:
                term.mean, term.factor = False, term.factor / size
            terms.append(term)
        names = {n for term in terms for n in term.names}
        view.variables = tuple(n for n in loss.variables if n in names)
        view._names = set(view.variables)
        view._terms, view._constants = terms, []
        view._weights = [n for term in terms for n, _ in term.coef_vars]
        view._programs, view._calls, view._block_views = {}, {}, {}
        views[key] = view
    return view


@_dask.task
def _group_block(shared, indices, sizes, names, request, dtype, summed, out_ndim, *blocks):
    """One group's results on one block: a tuple of float64 arrays, a
    summed one shaped (1,) * out_ndim + its shape (a per-block partial)."""
    view = _block_view(shared.compiled, indices, sizes)
    kwargs, v = {}, None
    for name, block in zip(names, blocks):
        if type(block) is list:         # X's and w's columns: one chunk (_Group.run)
            block = block[0]
        if name == _V or not _dask._is_number(block):
            block = np.asarray(block, dtype)
        if name == _V:
            v = block
        else:
            kwargs[name] = block
    block_dtype, values, shapes = view._values(kwargs)
    kind, wrts = request[0], request[1]
    if kind == "hvp":
        parts = [view._hvp(wrts[0], v, values, block_dtype, shapes)[0]]
    elif kind == "hessian":
        diag, dense = view._hessian_parts(wrts[0], values, block_dtype, shapes)
        parts = [diag] + ([dense] if request[2] else [])
    elif kind == "mixed":
        parts = [view._mixed_total(wrts[0], wrts[1], values, block_dtype, shapes)]
    else:
        want_value, want_grad, want_hdiag = request[2]
        value, grads, hdiags = view._value_grad(wrts, values, block_dtype, shapes,
                                                want_value, want_grad, want_hdiag)
        parts = ([value] if want_value else []) + (grads or []) + (hdiags or [])
    lead = (1,) * out_ndim
    return tuple(np.asarray(p, np.float64).reshape(lead + np.shape(p)) if s
                 else np.asarray(p, np.float64) for p, s in zip(parts, summed))


# -- one call: the variables, checked, and the groups -------------------------------

class _Call:
    """A call's variables as Dask arrays, NumPy arrays and numbers, checked
    as the NumPy path checks them, and the loss's terms grouped."""

    def __init__(self, loss, variables):
        loss._check_names(variables)
        self.loss = loss
        self.operands, votes = {}, []
        for name in loss.variables:
            x, vote = _dask._operand(variables[name], name)
            self.operands[name] = x
            votes.append(vote)
        self.dtype = _dask._result_dtype(votes)
        shaped = {n: (np.asarray(x) if _dask._is_number(x) else x)
                  for n, x in self.operands.items()}
        self.shape = {n: tuple(x.shape) for n, x in shaped.items()}
        shapes = loss._shapes(shaped)
        groups = {}
        for i, term in enumerate(loss._terms):
            arrays = {repr(n): self.shape[n] for n in term.vars if self.shape[n]}
            if term.matmul is None and any(s != shapes[i] for s in arrays.values()):
                _dask._refuse_broadcast(arrays, f"the arrays of {term.reduction}")
            key = ("rows", term.matmul[0]) if term.matmul else ("elements", shapes[i])
            groups.setdefault(key, []).append(i)
        self.groups = []
        for (kind, what), indices in groups.items():
            sizes = tuple(_mean_size(loss._terms[i], shapes[i]) if loss._terms[i].mean else 1
                          for i in indices)
            self.groups.append(_Group(self, kind, what, tuple(indices), sizes))

    def constants(self):
        """The value of the loss's constant part (float64; lazy if a weight is a Dask array)."""
        def value_of(name):
            x = self.operands[name]
            return x.astype(np.float64) if is_dask_array(x) else float(np.asarray(x))
        total = 0.0
        for c, cvars in self.loss._constants:
            total = total + weighted(c, cvars, value_of)
        return total

    def run(self, request_of, parts_of):
        """{result index: sum over the groups of that result}:
        ``request_of(group)`` is what the group's tasks compute, (kind,
        wrts, options[, v]); ``parts_of(group)`` lists their results as
        (result index, shape, summed)."""
        totals = {}
        for group in self.groups:
            for index, part in group.run(request_of(group), parts_of(group)):
                totals[index] = part if index not in totals else totals[index] + part
        return totals


class _Group:
    """Terms running over the same blocks: the rows of one X, or the
    elements of arrays of one shape."""

    def __init__(self, call, kind, what, indices, sizes):
        self.call, self.indices, self.sizes = call, indices, sizes
        loss = call.loss
        self.terms = [loss._terms[i] for i in indices]
        self.names = [n for n in loss.variables if any(n in t.names for t in self.terms)]
        # block index of each variable: X rows (0) x columns (1), per-row arrays
        # (0,), the weights w (1,): summed over; arrays of the group's shape: all axes
        self.index = {}
        if kind == "rows":
            self.out_ndim = 1
            for n in self.names:
                shape = call.shape[n]
                if n == what:
                    self.index[n] = (0, 1)
                elif any(t.matmul and n == t.matmul[1] for t in self.terms):
                    self.index[n] = (1,)
                else:
                    self.index[n] = (0,) if shape else ()
        else:
            self.out_ndim = len(what)
            for n in self.names:
                self.index[n] = tuple(range(len(what))) if call.shape[n] else ()

    def blocked(self, name):
        """True when the variable's derivatives are per block (not summed)."""
        return 0 in self.index.get(name, ())

    def roles(self, wrt):
        return [self.call.loss._role(t, wrt) for t in self.terms]

    def run(self, request, parts):
        """[(result index, Dask array)] of this group's share of each part."""
        if not parts:
            return []
        call = self.call
        names = list(self.names)
        args = []
        for n in names:
            args += _dask.graph_arg(call.operands[n], self.index[n])
        if request[0] == "hvp":
            names.append(_V)
            args += _dask.graph_arg(request[3], self.index[request[1][0]])
        # The columns of X (and w, v) are summed over in the task: one chunk
        # each, handed over as a list of that one block (concatenate=False:
        # Dask would otherwise copy every block of X through concatenate3).
        for i in range(0, len(args), 2):
            if args[i + 1] is not None and 1 in args[i + 1] and self.out_ndim == 1:
                args[i] = args[i].rechunk({args[i + 1].index(1): -1})
        shared = _dask._share(call.loss)
        summed = tuple(s for _, _, s in parts)
        fn = functools.partial(_group_block, shared, self.indices, self.sizes, tuple(names),
                               request[:3], call.dtype, summed, self.out_ndim)
        out = tuple(range(self.out_ndim))
        pairs = da.blockwise(fn, out, *args, dtype=object,
                             meta=np.empty((0,) * self.out_ndim, object),
                             concatenate=False, token="fastjac-loss")
        results = []
        for k, (index, shape, is_summed) in enumerate(parts):
            meta = np.empty((0,) * (self.out_ndim + len(shape)), np.float64)
            if is_summed:
                ones = tuple((1,) * len(c) for c in pairs.chunks)
                part = _dask.leaf(pairs, k, ones, meta, "loss-partial", shape)
                if out:
                    part = _dask.tree_sum(part, out, np.dtype(np.float64))
                results.append((index, part))
            else:
                extra = shape[self.out_ndim:]
                meta = np.empty((0,) * len(shape), np.float64)
                results.append((index, _dask.leaf(pairs, k, pairs.chunks, meta, "loss-block",
                                                  extra)))
        return results


def _zeros(call, name):
    """A structurally zero derivative, shaped (and chunked) like the variable."""
    x = call.operands[name]
    if is_dask_array(x):
        return da.zeros(x.shape, chunks=x.chunks, dtype=np.float64)
    return da.zeros(call.shape[name], dtype=np.float64)


def _rounded(x, dtype):
    return x.astype(dtype) if is_dask_array(x) else da.from_array(np.asarray(x, dtype))


# -- the entries (CompiledLoss's methods with Dask variables) ----------------------

def _value_grad(loss, wrts, variables, want_value, want_grad, want_hdiag):
    """(value, [gradient], [Hessian diagonal]) as lazy arrays in the loss's dtype."""
    call = _Call(loss, variables)
    for term in loss._terms:
        _refuse_weight(term, wrts)
        if want_hdiag:
            for w in wrts:
                _refuse_matrix(term, loss._role(term, w), w, "the Hessian")

    def parts(group):
        present = [w for w in wrts if w in group.names]
        found = []
        if want_value:
            found.append(("value", (), True))
        for kind, wanted in (("grad", want_grad), ("hdiag", want_hdiag)):
            if not wanted:
                continue
            for w in present:
                found.append(((kind, w), call.shape[w], not group.blocked(w)))
        return found

    def request_of(group):
        present = tuple(w for w in wrts if w in group.names)
        return ("pass", present, (want_value, want_grad, want_hdiag))
    totals = call.run(request_of, parts)
    value = None
    if want_value:
        value = _rounded(totals.get("value", 0.0) + call.constants(), call.dtype)

    def result(kind, w):
        part = totals.get((kind, w))
        return (part if part is not None else _zeros(call, w)).astype(call.dtype)
    grads = [result("grad", w) for w in wrts] if want_grad else None
    hdiags = [result("hdiag", w) for w in wrts] if want_hdiag else None
    return value, grads, hdiags


def value(loss, variables):
    return _value_grad(loss, (), variables, True, False, False)[0]


def gradient(loss, wrts, stacked, fmt, out, variables, want_value):
    """CompiledLoss._gradient with Dask variables: (value or None, gradient(s))."""
    _dask._check_compact(fmt)
    _dask._check_no_out(out)
    value, grads, _ = _value_grad(loss, wrts, variables, want_value, True, False)
    return value, (grads if stacked else grads[0])


def hessian_diagonal(loss, wrt, variables, with_value_gradient):
    value, grads, hdiags = _value_grad(loss, (wrt,), variables, with_value_gradient,
                                       with_value_gradient, True)
    return (value, grads[0], hdiags[0]) if with_value_gradient else hdiags[0]


def hvp(loss, wrt, v, variables):
    call = _Call(loss, variables)
    for term in loss._terms:
        _refuse_matrix(term, loss._role(term, wrt), wrt, "Hessian-vector products")
    v, _ = _dask._operand(v, "v")
    check_same_shape("v", np.shape(v), wrt, call.shape[wrt])
    request = ("hvp", (wrt,), None, v)
    total = call.run(lambda group: request,
                     lambda group: [("hv", call.shape[wrt], not group.blocked(wrt))]
                     if wrt in group.names else []).get("hv")
    return (total if total is not None else _zeros(call, wrt)).astype(call.dtype)


def hessian(loss, wrt, format, variables):
    """The Hessian ("compact" or "dense": format is checked), or a mixed
    block for a pair wrt."""
    if format == "operator":
        raise ValueError("format='operator' is not available with Dask arrays: each "
                         "product would be a pass over the data; call hvp(wrt, v, ...) "
                         "for a lazy product, or pass NumPy arrays")
    call = _Call(loss, variables)
    if isinstance(wrt, tuple):
        return _mixed(call, loss, wrt, format)
    shape = call.shape[wrt]
    has_dense = False
    for term in loss._terms:
        role = loss._role(term, wrt)
        _refuse_matrix(term, role, wrt, "the Hessian")
        has_dense |= role == "w"
    if not has_dense and format == "dense" and shape:
        _dask._check_compact("dense")       # an n x n diagonal matrix: not built lazily
    size = _size(shape)

    def parts(group):
        if wrt not in group.names:
            return []
        found = [("diag", shape, not group.blocked(wrt))]
        if any(r == "w" for r in group.roles(wrt)):
            found.append(("dense", (size, size), True))
        return found

    def request_of(group):
        return ("hessian", (wrt,), any(r == "w" for r in group.roles(wrt)))
    totals = call.run(request_of, parts)
    diag = totals.get("diag")
    if diag is None:
        diag = _zeros(call, wrt)
    if has_dense:
        result = totals["dense"] + da.diag(diag.reshape(-1))
    elif format == "dense":                 # a scalar: a 1 x 1 matrix
        result = diag.reshape(1, 1)
    else:
        result = diag
    return result.astype(call.dtype)


def _mixed(call, loss, pair, format):
    """d2L/(da db) for a and b, one of them a scalar (CompiledLoss._mixed)."""
    a, b = pair
    sa, sb = call.shape[a], call.shape[b]
    loss._mixed_terms(a, b, sa, sb)
    vector = a if sa else b

    def parts(group):
        if a not in group.names or b not in group.names:
            return []
        return [("mixed", sa or sb, not (sa or sb) or not group.blocked(vector))]
    total = call.run(lambda group: ("mixed", (a, b), None), parts).get("mixed")
    if total is None:
        total = da.zeros(sa or sb, dtype=np.float64)
    total = total.astype(call.dtype)
    if format == "dense":                   # (size of a) x (size of b)
        total = total.reshape(sa[0] if sa else 1, sb[0] if sb else 1)
    return total


def dot(names, grads, tangents):
    """The jvp of a loss: sum over the variables of gradient . tangent, lazily."""
    total = 0.0
    for name, g, t in zip(names, grads, tangents):
        t, _ = _dask._operand(t, "tangent")
        check_same_shape("tangent", np.shape(t), name, g.shape)
        g = da.asarray(g).astype(np.float64).reshape(-1)
        t = da.asarray(t).astype(np.float64).reshape(-1)
        total = total + (g * t).sum()
    return da.asarray(total).astype(grads[0].dtype)
