"""Losses over batches: value, gradient, Hessian and Hessian-vector products
of a scalar loss, with ``X @ w`` rows read once.

Design note
-----------
A *loss* is a scalar expression that is a weighted sum of reductions::

    L = c_1 * sum(E_1) + c_2 * mean(E_2) + ... + constant

where each c_t is a constant or a product of scalar variables, and each
E_t is element-wise (the operators of _nodes.py) over per-row arrays,
scalars, and at most one row-wise product ``z = X @ w`` (X of shape
(N, n), w of shape (n,)). A term without ``@`` is element-wise over
arrays that broadcast together, as a compiled expression is (an L2 penalty
``sum(w * w)`` is such a term); a result per element by a variable
broadcast to the term's shape is summed over the broadcast axes
(_broadcast.sum_to_shape).

Every derivative of a term follows from the first and second derivatives
of its element-wise part e(z, ...) with respect to z and to the other
variables, per row:

    dL/dw        = X^T e_z                 (one n-vector)
    d2L/dw2      = X^T diag(e_zz) X        (n x n; only its diagonal, or its
                                            product with v, when asked)
    d2L/dw2 v    = X^T (e_zz * (X v))
    d2L/dw db    = X^T e_zb                (b a scalar parameter)

A term's program (the interpreter of _expr_loops.pxd, forward mode to
second order: value, tangents and second tangents of every node) computes
e and the derivatives asked for on a block of rows; the row pass
(``row_pass``) computes z = X_b w for the block, runs the program, and
accumulates X_b^T out while the block is still in cache. So a gradient, a
Hessian diagonal or a Hessian-vector product costs one read of X, where
the textbook formula (and scikit-learn's LinearModelLoss, JAX and PyTorch)
read it twice: X @ w, then X^T g.

The second derivatives of the operators are the tags of sum_hessian
(_ops.UNARY_SECOND and BINARY_SECOND, formulas in _formulas.h), with
its conventions at the kinks: relu'' = abs'' = 0, maximum and minimum have
zero second derivatives.

What is not a loss (a sum inside a sum, two different products X @ w in
one term, X or w also read element-wise in the term of their product, a
reduction over some axes only) raises NotImplementedError when the
expression is compiled, saying which part.
"""

import numpy as np

from . import _broadcast, _expr, _layout, _ops
from ._api import is_dask_array
from ._checks import check_format, check_layout, check_out, coerce_named
from ._compiled import CompiledExpression, _broadcast_run, _dask_in
from ._nodes import Binary, Const, Expr, MatMul, Mean, Sum, Unary, Var
from ._planner import _Builder, _children, _finish, _ONE, _OPCODES, _KINDS, _postorder, _results

_Z = "\x00z"          # the program's array input holding X @ w for the block
_T = "\x00t"          # and X @ v (a Hessian-vector product)

HESSIAN_FORMATS = ("compact", "dense", "operator")
_ARRAY_Z, _ARRAY_T = -2, -3    # LossTerm's codes for the program arrays _Z and _T


# =============================================================================
# Analysis: a loss as a weighted sum of reductions
# =============================================================================

def is_loss(root):
    """True when the expression needs this module: it has ``@``, ``mean``
    or a ``sum`` with ``axis=``."""
    stack, seen = [root], set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, (MatMul, Mean)) or (isinstance(node, Sum) and node.axis is not None):
            return True
        stack.extend(_children(node))
    return False


def _constant_part(node):
    """(constant, [scalar variable names with exponents]) when node is a
    product of numbers and variables (a coefficient), else None."""
    if isinstance(node, Const):
        return node.value, []
    if isinstance(node, Var):
        return 1.0, [(node.name, 1)]
    if isinstance(node, Unary) and node.op in ("negative", "identity"):
        inner = _constant_part(node.arg)
        if inner is None:
            return None
        return (-inner[0] if node.op == "negative" else inner[0]), inner[1]
    if isinstance(node, Binary) and node.op in ("multiply", "divide"):
        a, b = _constant_part(node.a), _constant_part(node.b)
        if a is None or b is None:
            return None
        if node.op == "multiply":
            return a[0] * b[0], a[1] + b[1]
        if b[0] == 0:
            return None
        return a[0] / b[0], a[1] + [(name, -p) for name, p in b[1]]
    return None


class _Term:
    """One reduction of the loss, times its coefficient."""

    def __init__(self, reduction, factor, coef_vars):
        self.reduction = reduction
        self.mean = isinstance(reduction, Mean)
        self.axis = reduction.axis
        self.factor = factor            # a number
        self.coef_vars = coef_vars      # [(name, exponent)]: scalar variables
        self.matmul = None              # (X name, w name)
        self.nodes = []                 # element-wise nodes, children first
        self.vars = []                  # names read element-wise
        # element-wise work; a product X @ w is a leaf (its operands are
        # not read element-wise), a reduction inside is refused below
        order = _postorder([reduction.arg],
                           lambda node: not isinstance(node, (MatMul, Sum, Mean)))
        for node in order:
            if isinstance(node, (Sum, Mean)):
                raise NotImplementedError(
                    f"a reduction inside a reduction ({node} inside {reduction}) is not "
                    f"supported in a loss; a loss is a weighted sum of sum(...) and "
                    f"mean(...) of element-wise expressions")
            if isinstance(node, MatMul):
                if not (isinstance(node.a, Var) and isinstance(node.b, Var)):
                    raise NotImplementedError(
                        f"{node}: the row-wise product X @ w is supported between two "
                        f"variables (X of shape (N, n), w of shape (n,))")
                pair = (node.a.name, node.b.name)
                if self.matmul is not None and self.matmul != pair:
                    raise NotImplementedError(
                        f"{reduction} has two different products X @ w "
                        f"({self.matmul[0]} @ {self.matmul[1]} and {pair[0]} @ {pair[1]}); "
                        f"one per reduction is supported: write them as separate sums")
                self.matmul = pair
        self.nodes = order
        for node in order:
            if isinstance(node, Var) and node.name not in self.vars:
                self.vars.append(node.name)
        if self.matmul is not None:
            both = [name for name in self.matmul if name in self.vars]
            if both:
                raise NotImplementedError(
                    f"{both[0]!r} is both an operand of {self.matmul[0]} @ {self.matmul[1]} "
                    f"and read element-wise in {reduction}; write those parts as separate "
                    f"sums (an L2 penalty sum(w * w) is its own term)")

    @property
    def names(self):
        """Every variable the term reads (the coefficient's included)."""
        names = list(self.vars)
        if self.matmul is not None:
            names += [n for n in self.matmul if n not in names]
        return names + [n for n, _ in self.coef_vars if n not in names]


def _terms(root):
    """The loss as ([_Term], constant, [(name, exponent)] of the constant):
    raises NotImplementedError naming the part that is not a weighted sum of
    reductions."""
    terms, constants = [], []

    def walk(node, factor, coef_vars):
        if isinstance(node, (Sum, Mean)):
            terms.append(_Term(node, factor, coef_vars))
            return
        if isinstance(node, Unary) and node.op in ("identity", "negative"):
            walk(node.arg, -factor if node.op == "negative" else factor, coef_vars)
            return
        if isinstance(node, Binary) and node.op in ("add", "subtract"):
            walk(node.a, factor, coef_vars)
            walk(node.b, -factor if node.op == "subtract" else factor, coef_vars)
            return
        if isinstance(node, Binary) and node.op in ("multiply", "divide"):
            b = _constant_part(node.b)
            if b is not None:
                if node.op == "multiply":
                    walk(node.a, factor * b[0], coef_vars + b[1])
                else:
                    walk(node.a, factor / b[0], coef_vars + [(n, -p) for n, p in b[1]])
                return
            a = _constant_part(node.a)
            if a is not None and node.op == "multiply":
                walk(node.b, factor * a[0], coef_vars + a[1])
                return
        part = _constant_part(node)
        if part is not None:
            constants.append((factor * part[0], coef_vars + part[1]))
            return
        raise NotImplementedError(
            f"{node} is not supported in a loss over batches: a loss is a weighted sum "
            f"of sum(...) and mean(...) of element-wise expressions (weights: numbers "
            f"and scalar variables)")

    walk(root, 1.0, [])
    return terms, constants


# =============================================================================
# Programs: value, first and second derivatives of a term's element-wise part
# =============================================================================

class _Second(_Builder):
    """_Builder with products of tangents and cached derivative registers."""

    def __init__(self):
        super().__init__()
        self._derivs = {}

    def code(self, name, a, b):
        """The register of derivative ``name`` at (a, b); None for zero."""
        if name == "zero":
            return None
        if name == "one":
            return _ONE
        if name == "two":
            return self.const(2.0)
        key = (name, a, b)
        r = self._derivs.get(key)
        if r is None:
            r = self._derivs[key] = self.deriv(name, a, b)
        return r

    def t_mul(self, x, y):
        """x * y for tangents or derivative registers (None: zero)."""
        if x is None or y is None:
            return None
        if x is _ONE:
            return y
        if y is _ONE:
            return x
        return self.emit("multiply", x, y)


def _term_program(term, scalar_vars, dirs, outs):
    """Build the program of one term.

    dirs: the directions, each _Z or a variable name (seeded with ones).
    outs: what to compute, in output order, each (sink, what) with sink
    "acc" (a sum) or a per-row output ("xw", "xx" or "full": see _TermRun),
    and what one of ("value",), ("d", k), ("dd", k, l) or ("ddt", k) (=
    d2e/dk2 times X @ v).
    Returns (Program, [result index or None (structurally zero)], arrays,
    scalars) where a result index is the accumulator or output number.
    """
    B = _Second()
    V, T, S = {}, {}, {}
    second = any(what[0] in ("dd", "ddt") for _, what in outs)    # second derivatives asked
    nd = len(dirs)
    pairs = [(k, l) for k in range(nd) for l in range(k, nd)]

    def seeds(key):
        return [_ONE if d == key else None for d in dirs]

    for node in term.nodes:
        zero2 = {p: None for p in pairs}
        if isinstance(node, MatMul):
            V[node] = B.array(_Z)
            T[node], S[node] = seeds(_Z), zero2
        elif isinstance(node, Var):
            V[node] = B.scalar(("var", node.name)) if node.name in scalar_vars \
                else B.array(node.name)
            T[node], S[node] = seeds(node.name), zero2
        elif isinstance(node, Const):
            V[node] = B.const(node.value)
            T[node], S[node] = [None] * nd, zero2
        elif isinstance(node, Unary):
            a, ta, sa = V[node.arg], T[node.arg], S[node.arg]
            op = node.op
            if op == "identity":
                V[node], T[node], S[node] = a, list(ta), dict(sa)
                continue
            if op == "negative":
                V[node] = B.emit("negative", a)
                T[node] = [B.t_neg(t) for t in ta]
                S[node] = {p: B.t_neg(s) for p, s in sa.items()}
                continue
            moving = any(t is not None for t in ta)
            flip = op == "log_sigmoid" and moving       # log_sigmoid(a) = -softplus(-a)
            if flip:
                a, op = B.emit("negative", a), "softplus"
                ta = [B.t_neg(t) for t in ta]
                sa = {p: B.t_neg(x) for p, x in sa.items()}
            if op == "softplus" and moving:
                # value, first and second derivative from one exponential
                v, d1 = B.reg("temp"), B.reg("temp")
                d2 = B.reg("temp") if second else None
                B.instr.append([_OPCODES["softplus_vd"], v, a, d1, -1 if d2 is None else d2])
            else:
                v = B.emit(op, a)
                d1 = B.code(_ops.UNARY[op], a, a) if moving else None
                d2 = B.code(_ops.UNARY_SECOND[op], a, a) if moving and second else None
            V[node] = v
            T[node] = [B.t_mul(d1, t) for t in ta]
            S[node] = {(k, l): B.t_add(B.t_mul(d2, B.t_mul(ta[k], ta[l])), B.t_mul(d1, sa[(k, l)]))
                       for k, l in pairs}
            if flip:
                V[node] = B.emit("negative", v)
                T[node] = [B.t_neg(t) for t in T[node]]
                S[node] = {p: B.t_neg(x) for p, x in S[node].items()}
        else:                                   # Binary
            a, b = V[node.a], V[node.b]
            ta, tb, sa, sb = T[node.a], T[node.b], S[node.a], S[node.b]
            op = node.op
            V[node] = B.emit(op, a, b)
            if op in _ops.STRUCTURALLY_ZERO:
                T[node], S[node] = [None] * nd, zero2
                continue
            if op in ("add", "subtract"):
                comb = B.t_add if op == "add" else B.t_sub
                T[node] = [comb(x, y) for x, y in zip(ta, tb)]
                S[node] = {p: comb(sa[p], sb[p]) for p in pairs}
                continue
            if op == "multiply":
                T[node] = [B.t_add(B.t_mul(b, x), B.t_mul(a, y)) for x, y in zip(ta, tb)]
                S[node] = {(k, l): _sum_of(B, B.t_mul(ta[k], tb[l]), B.t_mul(ta[l], tb[k]),
                                           B.t_mul(b, sa[(k, l)]), B.t_mul(a, sb[(k, l)]))
                           for k, l in pairs}
                continue
            moves_a = any(t is not None for t in ta)
            moves_b = any(t is not None for t in tb)
            code_a, code_b = _ops.BINARY[op]
            code_aa, code_bb, code_ab = _ops.BINARY_SECOND[op]
            da = B.code(code_a, a, b) if moves_a else None
            db = B.code(code_b, a, b) if moves_b else None
            daa = B.code(code_aa, a, b) if moves_a and second else None
            dbb = B.code(code_bb, a, b) if moves_b and second else None
            dab = B.code(code_ab, a, b) if moves_a and moves_b and second else None
            T[node] = [B.t_add(B.t_mul(da, x), B.t_mul(db, y)) for x, y in zip(ta, tb)]
            S[node] = {(k, l): _sum_of(
                B, B.t_mul(daa, B.t_mul(ta[k], ta[l])),
                B.t_mul(dab, B.t_add(B.t_mul(ta[k], tb[l]), B.t_mul(ta[l], tb[k]))),
                B.t_mul(dbb, B.t_mul(tb[k], tb[l])),
                B.t_mul(da, sa[(k, l)]), B.t_mul(db, sb[(k, l)])) for k, l in pairs}

    root = term.reduction.arg
    bound = set()
    produced = {r for ins in B.instr for r in _results(ins)}
    results = []
    for sink, what in outs:
        if what[0] == "value":
            r = V[root]
        elif what[0] == "d":
            r = T[root][what[1]]
        elif what[0] == "dd":
            k, l = sorted(what[1:])
            r = S[root][(k, l)]
        else:                                   # ("ddt", k): second derivative times t
            r = B.t_mul(S[root][(what[1], what[1])], B.array(_T))
        if r is None:
            results.append(None)
            continue
        r = B.reg_of(r)
        if sink == "acc":                       # else a per-row output
            results.append(B.n_acc)
            B.instr.append([_OPCODES["sum"], B.n_acc, r, r, 0])
            B.n_acc += 1
            continue
        j = B.n_outs
        B.n_outs += 1
        if r in produced and B.kind[r] == _KINDS["temp"] and r not in bound:
            B.kind[r], B.index[r] = _KINDS["out"], j
            bound.add(r)
        else:
            B.emit("copy", r, dst=B.reg("out", j))
        results.append(j)
    return _finish(B), results, list(B.arrays), list(B.scalars)


def _sum_of(B, *parts):
    total = None
    for p in parts:
        total = B.t_add(total, p)
    return total


# =============================================================================
# The compiled loss
# =============================================================================

class CompiledLoss(CompiledExpression):
    """A scalar loss over a batch, analysed once; see :func:`fastjac.compile`.

    Obtained from :func:`fastjac.compile` for an expression with ``X @ w``,
    :func:`fastjac.mean` or ``sum(..., axis=...)``, or from a compiled
    scalar expression's :meth:`hessian` and friends. Variables are keyword
    arguments: X of shape (N, n) and w of shape (n,) for each product
    ``X @ w``; arrays of shape (N,) (one value per row: targets, sample
    weights) or scalars in the element-wise parts of that reduction; for a
    reduction without ``@``, arrays that broadcast together, or scalars. dtypes follow
    :func:`fastjac.jacobian`: float32 stays float32, everything else becomes
    float64; every sum is accumulated in float64 and rounded once.

    Each derivative method takes ``wrt``, the name of one variable (a list
    of names for gradients). For the weights ``w`` of ``X @ w``: the
    gradient is X^T e' (n,), the Hessian X^T diag(e'') X (n x n), computed
    in one pass over X each (see the design note of fastjac._batch).
    A CompiledLoss is a CompiledExpression whose one output is a scalar;
    :meth:`kernel` is not available for it.
    """

    def __init__(self, root, wrt=None, *, variables=None):
        if not isinstance(root, Expr):
            raise TypeError(f"a loss is one expression, got {type(root).__name__}")
        self._root = root
        self._terms, self._constants = _terms(root)
        self._set_variables(_postorder([root]), variables, wrt)
        for term in self._terms:
            for name, _ in term.coef_vars:
                if name in term.vars or (term.matmul and name in term.matmul):
                    raise NotImplementedError(
                        f"{name!r} is both a weight of {term.reduction} and read inside "
                        f"it; write the weight inside the sum")
        self._programs = {}             # _TermRun by term and signature
        self._calls = {}                # _expr.LossCall by method and wrt (last signature)
        self._single, self._outputs = True, [root]
        self._names = set(self.variables)
        self._weights = [n for t in self._terms for n, _ in t.coef_vars] + \
            [n for _, cv in self._constants for n, _ in cv]

    def __repr__(self):
        return f"<fastjac compiled loss {self._root} wrt {list(self.wrt)}>"

    def __reduce__(self):
        # rebuilt from the expression where it is unpickled (as CompiledExpression)
        return _unpickle_loss, (self._root, self.wrt, self.variables)

    # -- checks --------------------------------------------------------------------
    def _check_wrt(self, wrt):
        if not isinstance(wrt, str):
            raise ValueError(f"wrt must be the name of one variable, got {wrt!r}")
        self._check_name(wrt)
        if wrt not in self.wrt:
            raise ValueError(f"variable {wrt!r} was not compiled for differentiation; "
                             f"compile with wrt={list(self.wrt) + [wrt]}")
        return wrt

    def _values(self, kwargs):
        """(dtype, values, element shape of each term), every check made."""
        if kwargs.keys() != self._names:
            self._check_names(kwargs)
        dtype, values = coerce_named(kwargs)
        return dtype, values, self._shapes(values)

    def _shapes(self, values):
        """The element shape of each term, every shape check made; values
        need only .shape and .ndim (_dask_loss passes Dask arrays)."""
        shapes = [self._check_shapes(term, values) for term in self._terms]
        for name in self._weights:
            if values[name].ndim != 0:
                raise ValueError(f"{name!r} weights a reduction of the loss and must be a "
                                 f"scalar, got shape {values[name].shape}")
        return shapes

    @staticmethod
    def _check_shapes(term, values):
        """The shapes of one reduction's variables; returns its element shape."""
        if term.matmul is not None:
            xn, wn = term.matmul
            X, w = values[xn], values[wn]
            if X.ndim != 2:
                raise ValueError(f"{xn!r} is the matrix of {xn} @ {wn} and must be 2-D "
                                 f"(N rows x n features), got shape {X.shape}")
            if w.shape != (X.shape[1],):
                raise ValueError(f"{wn!r} has shape {w.shape} but {xn!r} has shape {X.shape}; "
                                 f"{xn} @ {wn} needs {wn!r} of shape ({X.shape[1]},)")
            shape = (X.shape[0],)
            for name in term.vars:
                v = values[name]
                if v.ndim != 0 and v.shape != shape:
                    raise ValueError(
                        f"{name!r} has shape {v.shape}; in {term.reduction}, a variable "
                        f"must have one value per row of {xn!r}, shape {shape}, or be a "
                        f"scalar")
        else:
            shape = _broadcast.broadcast_named(
                {repr(name): values[name].shape for name in term.vars if values[name].ndim},
                f"in {term.reduction}, the arrays of an element-wise reduction")
        if term.axis is not None:
            _check_axis(term, len(shape))
        return shape

    # -- one term's pass ------------------------------------------------------------
    def _pass(self, i, values, dtype, shape, dirs, outs, v=None, trace=None, owners=None):
        """Run term i: a list of results, one per entry of outs (see _TermRun;
        None where a result is structurally zero). ``trace`` collects
        (i, run, outs, owners) for _resolve: owners[r] is the index of the
        differentiated variable out r belongs to (None: the value).
        (i, run, outs) for _resolve."""
        term = self._terms[i]
        scalar_vars = frozenset(n for n in term.vars if values[n].ndim == 0)
        key = (i, scalar_vars, tuple(dirs), tuple(outs))
        run = self._programs.get(key)
        if run is None:
            run = self._programs[key] = _TermRun(term, scalar_vars, dirs, outs)
        if trace is not None:
            trace.append((i, run, outs, owners))
        return run(values, dtype, shape, v, self._scratch())

    def _sink(self, role, values, wrt, second=False):
        """Where a term's derivative by wrt goes: a number for a scalar, X^T
        (or (X*X)^T for a Hessian diagonal) for the weights of X @ w, per
        element otherwise."""
        if role == "w":
            return "xx" if second else "xw"
        if role == "X":
            return "full"
        return "acc" if values[wrt].ndim == 0 else "full"

    def _resolve(self, trace, values, dtype, wrts, stacked, want_value, want_grad, is_hvp):
        """The LossCall that repeats the call just made by the full path
        (its _pass trace) for arguments of the same signature; None where
        the call has parts a LossCall does not do (the matrix X as wrt,
        weights of the loss's constants, a term without a pass)."""
        if any(cv for _, cv in self._constants) or len(self.variables) > 32:
            return None
        names = self.variables
        pos = {name: k for k, name in enumerate(names)}
        kinds = [-1 if values[name].ndim == 0 else values[name].ndim for name in names]
        terms = []
        for i, run, outs, owners in trace:
            term = self._terms[i]
            if any(self._role(term, w) == "X" for w in wrts):
                return None
            if term.matmul is None and \
                    len({values[a].shape for a in term.vars if values[a].ndim}) > 1:
                return None             # broadcast variables: a LossCall reads one shape
            prog = run.program
            array_var = [_ARRAY_Z if a == _Z else _ARRAY_T if a == _T else pos[a]
                         for a in run.arrays]
            scalar_var = [pos[src[1]] if src[0] == "var" else -1 for src in run.scalars]
            scalar_const = [src[1] if src[0] == "const" else 0.0 for src in run.scalars]
            value_acc = -1
            slots = {sink: [-1] * len(wrts) for sink in ("acc", "xw", "full")}
            for r, (sink, what) in enumerate(outs):
                j = run.where[run.order.index(r)]
                if j is None:
                    continue
                if owners[r] is None:
                    value_acc = j
                else:
                    slots[sink][owners[r]] = j
            shape_var = -1
            if term.matmul is None:
                arrays = [a for a in run.arrays if a not in (_Z, _T)]
                shape_var = pos[arrays[0]] if arrays else -1
            terms.append(_expr.LossTerm(
                prog, array_var, scalar_var, scalar_const,
                pos[term.matmul[0]] if term.matmul else -1,
                pos[term.matmul[1]] if term.matmul else -1, shape_var,
                value_acc, slots["acc"], slots["xw"], slots["full"],
                run.n_xw, run.n_xx, term.factor, [(pos[n], p) for n, p in term.coef_vars],
                term.mean))
        constant = 0.0
        for c, _ in self._constants:
            constant += c
        return _expr.LossCall(tuple(names), dtype, kinds, terms, constant,
                              [pos[w] for w in wrts], stacked, want_value, want_grad, is_hvp)

    def _scale(self, term, values, shape):
        """The term's coefficient: its factor, its scalar variables, 1/size for a mean."""
        c = weighted(term.factor, term.coef_vars, lambda name: float(values[name]))
        if term.mean:
            c /= _mean_size(term, shape)
        return c

    def _role(self, term, name):
        if term.matmul is not None and name == term.matmul[1]:
            return "w"
        if term.matmul is not None and name == term.matmul[0]:
            return "X"
        if name in term.vars:
            return "elem"
        return None

    # -- value and gradient ------------------------------------------------------------
    def _value_grad(self, wrts, values, dtype, shapes, want_value=True, want_grad=True,
                    want_hdiag=False, trace=None):
        """(value, [gradient per wrt], [Hessian diagonal per wrt]) in float64,
        one pass per term for all of them."""
        value = 0.0
        for c, cvars in self._constants:
            value += weighted(c, cvars, lambda name: float(values[name]))
        grads = [np.zeros(values[w].shape) for w in wrts] if want_grad else None
        hdiags = [np.zeros(values[w].shape) for w in wrts] if want_hdiag else None
        for i, term in enumerate(self._terms):
            roles = [self._role(term, w) for w in wrts]
            _refuse_weight(term, wrts)
            dirs, outs, slots = [], [("acc", ("value",))] if want_value else [], []
            for k, (w, role) in enumerate(zip(wrts, roles)):
                if role is None:
                    continue
                key = _Z if role in ("w", "X") else w
                if key not in dirs:
                    dirs.append(key)
                d = dirs.index(key)
                if want_grad:
                    outs.append((self._sink(role, values, w), ("d", d)))
                    slots.append((grads, k, role))
                if want_hdiag:
                    _refuse_matrix(term, role, w, "the Hessian")
                    outs.append((self._sink(role, values, w, second=True), ("dd", d, d)))
                    slots.append((hdiags, k, role))
            if not outs:
                continue
            c = self._scale(term, values, shapes[i])
            res = self._pass(i, values, dtype, shapes[i], tuple(dirs), outs, trace=trace,
                             owners=[None] * want_value + [k for _, k, _ in slots])
            if want_value:
                value += c * res.pop(0)
            for (target, k, role), r in zip(slots, res):
                if r is not None:
                    if role == "X":
                        r = np.multiply.outer(r, values[term.matmul[1]])
                    # in float64, as the LossCall of later calls: a float32 r
                    # times the Python float c would be rounded in float32
                    target[k] += c * _broadcast.sum_to_shape(
                        np.asarray(r, dtype=np.float64), target[k].shape)
        return value, grads, hdiags

    def value(self, **variables):
        """The loss, a NumPy scalar of the computation dtype.

        Examples
        --------
        >>> import numpy as np, fastjac
        >>> X, w, y = fastjac.var("X"), fastjac.var("w"), fastjac.var("y")
        >>> loss = fastjac.compile(fastjac.mean((X @ w - y) ** 2))
        >>> loss.value(X=np.eye(2), w=np.array([1.0, 2.0]), y=np.array([1.0, 0.0]))
        np.float64(2.0)
        """
        call = self._calls.get(("value", None))
        if call is not None:
            result = call(variables)
            if result is not None:
                return result
        if _dask_in(variables):
            from . import _dask_loss
            return _dask_loss.value(self, variables)
        dtype, values, shapes = self._values(variables)
        trace = []
        value, _, _ = self._value_grad((), values, dtype, shapes, want_grad=False, trace=trace)
        self._calls[("value", None)] = self._resolve(trace, values, dtype, (), False, True,
                                                     False, False)
        return dtype.type(value)

    # The resolved call of a signature already seen, then _gradient: in C
    # (_expr.pyx), where the docstrings are.
    jacobian = _expr.loss_jacobian
    value_and_jacobian = _expr.loss_value_and_jacobian

    gradient = jacobian
    value_and_gradient = value_and_jacobian

    def _default_wrt(self, wrt):
        if wrt is None:
            if len(self.wrt) != 1:
                raise ValueError(f"name the variable to differentiate by: wrt= one of "
                                 f"{list(self.wrt)}")
            return self.wrt[0]
        return self._check_wrt(wrt)

    def _gradient(self, wrt, layout, format, out, variables, want_value):
        """(value or None, gradient): the resolved call if there is one, else
        the full path."""
        key = _expr.resolved_key(want_value, wrt, layout, format, out)
        result = _expr.resolved_result(self, key, variables)
        if result is not None:
            return result if want_value else (None, result)
        return self._full_gradient(wrt, layout, format, out, variables, want_value, key)

    def _full_gradient(self, wrt, layout, format, out, variables, want_value, key):
        """_gradient's full path: every check, one pass, and the LossCall of
        this signature kept under ``key`` (None: not resolved)."""
        stacked = isinstance(wrt, (list, tuple))
        if stacked:
            wrts = tuple(self._check_wrt(w) for w in wrt)
            if len(set(wrts)) != len(wrts):
                raise ValueError(f"wrt names a variable twice: {list(wrt)}")
            if out is not None:
                raise ValueError("out= is for one variable; with a list wrt, leave it out")
        else:
            wrts = (self._default_wrt(wrt),)
        denominator = check_layout(layout)
        fmt = check_format(format)
        if _dask_in(variables):
            from . import _dask_loss
            return _dask_loss.gradient(self, wrts, stacked, fmt, out, variables, want_value)
        dtype, values, shapes = self._values(variables)
        trace = [] if key is not None else None
        value, grads, _ = self._value_grad(wrts, values, dtype, shapes, want_value=want_value,
                                           trace=trace)
        if trace is not None:
            self._calls[key] = self._resolve(trace, values, dtype, wrts, stacked, want_value,
                                             True, False)
        results = [_deliver_gradient(g.astype(dtype, copy=False), w, denominator, fmt, out)
                   for w, g in zip(wrts, grads)]
        result = results if stacked else results[0]
        return (dtype.type(value), result) if want_value else (None, result)

    def jvp(self, wrt, tangent, **variables):
        """``(L, dL . tangent)``: for a scalar loss, the gradient's dot product
        with the tangent (a list of tangents for a list wrt: the sum)."""
        names = [wrt] if isinstance(wrt, str) else list(wrt)
        tangents = [tangent] if isinstance(wrt, str) else list(tangent)
        if len(tangents) != len(names):
            raise ValueError(f"wrt names {len(names)} variables but {len(tangents)} "
                             f"tangents were given")
        value, grads = self._gradient(names, "numerator", "compact", None, variables, True)
        if _dask_in(variables, tangents):
            from . import _dask_loss
            return value, _dask_loss.dot(names, grads, tangents)
        total = 0.0
        for name, g, t in zip(names, grads, tangents):
            t = _vector_like(t, np.asarray(g), g.dtype, "tangent", name)
            total += float(np.dot(g.reshape(-1).astype(np.float64),
                                  t.reshape(-1).astype(np.float64)))
        return value, value.dtype.type(total)

    def vjp(self, wrt, cotangent, **variables):
        """``(L, cotangent * dL/d(wrt))``: for a scalar loss the cotangent is a
        number; a tuple of results for a list wrt."""
        if np.ndim(cotangent) != 0:
            raise ValueError(f"a loss is a scalar: the cotangent must be a number, got shape "
                             f"{np.shape(cotangent)}")
        names = [wrt] if isinstance(wrt, str) else list(wrt)
        value, grads = self._gradient(names, "numerator", "compact", None, variables, True)
        if is_dask_array(cotangent):            # lazy, as the Dask variables' gradients
            scaled = tuple(g * cotangent.astype(g.dtype) for g in grads)
        else:
            scaled = tuple(g * g.dtype.type(cotangent) for g in grads)
        return value, (scaled[0] if isinstance(wrt, str) else scaled)

    def kernel(self, wrt=None, *, value=False):
        """Not available for a loss: call :meth:`value_and_jacobian` (its
        per-call cost is that of the checks, see docs/losses.md)."""
        raise NotImplementedError("kernel() is not available for a compiled loss; call "
                                  "value_and_jacobian or jacobian")

    # -- second derivatives ---------------------------------------------------------------
    def hessian_diagonal(self, wrt=None, **variables):
        """The diagonal of d2L/d(wrt)2, of wrt's shape, in one pass over X.

        For L = sum_k e(x_k . w, ...) and wrt = w: sum_k e''_k x_kj^2.
        """
        wrt = self._default_wrt(wrt)
        if _dask_in(variables):
            from . import _dask_loss
            return _dask_loss.hessian_diagonal(self, wrt, variables, False)
        dtype, values, shapes = self._values(variables)
        _, _, hdiag = self._value_grad((wrt,), values, dtype, shapes, want_value=False,
                                       want_grad=False, want_hdiag=True)
        return _deliver_array(hdiag[0], dtype)

    def value_gradient_hessian_diagonal(self, wrt=None, **variables):
        """(L, dL/d(wrt), diagonal of d2L/d(wrt)2), all from one pass over X."""
        wrt = self._default_wrt(wrt)
        if _dask_in(variables):
            from . import _dask_loss
            return _dask_loss.hessian_diagonal(self, wrt, variables, True)
        dtype, values, shapes = self._values(variables)
        value, grad, hdiag = self._value_grad((wrt,), values, dtype, shapes, want_hdiag=True)
        return dtype.type(value), _deliver_array(grad[0], dtype), _deliver_array(hdiag[0], dtype)

    def hvp(self, wrt, v, **variables):
        """The Hessian-vector product d2L/d(wrt)2 @ v, in one pass over X.

        For the weights w of X @ w: per row, t = x_k . v, then e''_k t x_k is
        accumulated -- the n x n Hessian is never formed.

        Parameters
        ----------
        wrt : str
            The variable.
        v : array_like of wrt's shape
        **variables
            The values of the variables.
        """
        call = self._calls.get(("hvp", wrt)) if type(wrt) is str else None
        if call is not None:
            result = call(variables, v)
            if result is not None:
                return result
        wrt = self._check_wrt(wrt)
        if _dask_in(variables, v):
            from . import _dask_loss
            return _dask_loss.hvp(self, wrt, v, variables)
        dtype, values, shapes = self._values(variables)
        v = _vector_like(v, values[wrt], dtype, "v", wrt)
        hv, trace = self._hvp(wrt, v, values, dtype, shapes)
        if trace is not None:
            self._calls[("hvp", wrt)] = self._resolve(trace, values, dtype, (wrt,), False,
                                                      False, False, True)
        return _deliver_array(hv, dtype)

    def _hvp(self, wrt, v, values, dtype, shapes):
        """(d2L/d(wrt)2 @ v in float64, the trace of its passes for _resolve,
        None when the call has a part a LossCall cannot repeat)."""
        hv = np.zeros(values[wrt].shape, np.float64)
        trace = []
        for i, term in enumerate(self._terms):
            role = self._role(term, wrt)
            if role is None:
                continue
            _refuse_matrix(term, role, wrt, "Hessian-vector products")
            c = self._scale(term, values, shapes[i])
            if role == "w":
                (r,) = self._pass(i, values, dtype, shapes[i], (_Z,), [("xw", ("ddt", 0))],
                                  v=v, trace=trace, owners=[0])
                if r is not None:
                    hv += c * r
            elif term.matmul is None and v.ndim:
                # an element-wise term: a diagonal, times v in the pass (_T is v)
                (r,) = self._pass(i, values, dtype, shapes[i], (wrt,), [("full", ("ddt", 0))],
                                  v=v, trace=trace, owners=[0])
                if r is not None:
                    hv += c * _broadcast.sum_to_shape(r, hv.shape)
            else:
                trace = None                    # (a per-row variable, or a scalar)
                sink = self._sink(role, values, wrt)
                (h,) = self._pass(i, values, dtype, shapes[i], (wrt,),
                                  [(sink, ("dd", 0, 0))])
                if h is not None:
                    hv += c * np.asarray(h) * v
        return hv, trace

    def hessian(self, wrt=None, *, format="compact", **variables):
        """The Hessian d2L/d(wrt)2, structured.

        Parameters
        ----------
        wrt : str or (str, str)
            The variable; or two variables for the mixed block d2L/(da db)
            (the weights w of X @ w and a scalar b: X^T e_zb, shape (n,);
            two scalars: a number).
        format : {"compact", "dense", "operator"}
            "compact": a diagonal Hessian (element-wise terms only) as its
            diagonal, of wrt's shape; the weights of X @ w as the dense
            n x n matrix X^T diag(e'') X (n is the number of features); a
            scalar as a number. "dense": always a matrix (size x size).
            "operator": a scipy LinearOperator whose matvec is :meth:`hvp`
            (one pass over X per product; the variables are copied).
        **variables
            The values of the variables.
        """
        if format not in HESSIAN_FORMATS:
            raise ValueError(f"format must be one of {', '.join(map(repr, HESSIAN_FORMATS))} "
                             f"for a Hessian, got {format!r}")
        if isinstance(wrt, (tuple, list)):
            return self._mixed(wrt, format, variables)
        wrt = self._default_wrt(wrt)
        if _dask_in(variables):
            from . import _dask_loss
            return _dask_loss.hessian(self, wrt, format, variables)
        dtype, values, shapes = self._values(variables)
        if format == "operator":
            return _hessian_operator(self, wrt, values, dtype)
        diag, dense = self._hessian_parts(wrt, values, dtype, shapes)
        return _deliver_hessian(diag, dense, format, dtype)

    def _hessian_parts(self, wrt, values, dtype, shapes):
        """(the Hessian's diagonal of element-wise terms, X^T diag(e'') X of the
        terms where wrt is the weights of X @ w, or None), float64."""
        shape = values[wrt].shape
        size = _size(shape)
        diag = np.zeros(shape, np.float64)
        dense = None
        for i, term in enumerate(self._terms):
            role = self._role(term, wrt)
            if role is None:
                continue
            _refuse_matrix(term, role, wrt, "the Hessian")
            c = self._scale(term, values, shapes[i])
            if role == "w":
                if dense is None:           # n x n even where e'' is 0 (a linear term)
                    dense = np.zeros((size, size), np.float64)
                (h,) = self._pass(i, values, dtype, shapes[i], (_Z,),
                                  [("full", ("dd", 0, 0))])
                if h is not None:
                    dense += c * _weighted_gram(values[term.matmul[0]], h)
            else:
                sink = self._sink(role, values, wrt)
                (h,) = self._pass(i, values, dtype, shapes[i], (wrt,),
                                  [(sink, ("dd", 0, 0))])
                if h is not None:
                    diag += c * _broadcast.sum_to_shape(np.asarray(h), diag.shape)
        return diag, dense

    def _mixed(self, wrt, format, variables):
        if len(wrt) != 2:
            raise ValueError(f"wrt names one variable, or two for a mixed block; got {wrt!r}")
        a, b = (self._check_wrt(name) for name in wrt)
        if a == b:
            return self.hessian(a, format=format, **variables)
        if format == "operator":
            raise ValueError("format='operator' is for the Hessian of one variable")
        if _dask_in(variables):
            from . import _dask_loss
            return _dask_loss.hessian(self, (a, b), format, variables)
        dtype, values, shapes = self._values(variables)
        total = self._mixed_total(a, b, values, dtype, shapes)
        return _deliver_mixed(total, values[a].shape, values[b].shape, format, dtype)

    def _mixed_terms(self, a, b, sa, sb):
        """[(term index, role of a, role of b)] of the terms with a mixed
        block, every check made (sa, sb: the shapes of a and b)."""
        if len(sa) > 1 or len(sb) > 1 or (sa and sb):
            raise NotImplementedError(
                f"the mixed Hessian block of {a!r} and {b!r} is supported when one of them is "
                f"a scalar and the other a scalar or a vector; got shapes {sa} and {sb}")
        found = []
        for i, term in enumerate(self._terms):
            ra, rb = self._role(term, a), self._role(term, b)
            if ra is None or rb is None:
                continue
            if "X" in (ra, rb):
                raise NotImplementedError(
                    f"mixed Hessians with the matrix of {term.matmul[0]} @ "
                    f"{term.matmul[1]} are not supported")
            found.append((i, ra, rb))
        return found

    def _mixed_total(self, a, b, values, dtype, shapes):
        """d2L/(da db) in float64 (shape of the vector of the two, or ())."""
        sa, sb = values[a].shape, values[b].shape
        total = np.zeros(sa or sb, np.float64)
        for i, ra, rb in self._mixed_terms(a, b, sa, sb):
            term = self._terms[i]
            c = self._scale(term, values, shapes[i])
            keys = tuple(_Z if r == "w" else name for r, name in ((ra, a), (rb, b)))
            vector = bool(sa or sb)
            (h,) = self._pass(i, values, dtype, shapes[i], keys,
                              [("xw" if _Z in keys else "full" if vector else "acc",
                                ("dd", 0, 1))])
            if h is not None:
                total += c * _broadcast.sum_to_shape(np.asarray(h), total.shape)
        return total


def _unpickle_loss(root, wrt, variables):
    return CompiledLoss(root, wrt, variables=variables)


class _TermRun:
    """One term's program for one signature, with where each result lands
    (built once, then only run).

    Sinks of the results: "acc", a sum (a number); "xw", a per-row output
    accumulated as X^T out (an n-vector); "xx", accumulated as (X * X)^T out;
    "full", written out per element. The row pass takes its outputs in that
    order, so the program is built with the outputs sorted by sink and the
    results are put back in the order asked.
    """

    def __init__(self, term, scalar_vars, dirs, outs):
        self.term = term
        order = sorted(range(len(outs)), key=lambda i: _SINK_RANK[outs[i][0]])
        built = [outs[i] for i in order]
        self.program, where, self.arrays, self.scalars = \
            _term_program(term, scalar_vars, dirs, built)
        self.order = order
        self.sinks = [sink for sink, _ in built]
        self.where = where
        kinds = [sink for (sink, _), j in zip(built, where) if sink != "acc" and j is not None]
        if term.matmul is None and any(k != "full" for k in kinds):
            raise RuntimeError("internal error: X-weighted output of a term without X @ w")
        self.full = [k == "full" for k in kinds]
        # the variables each per-element output is a derivative by (a result
        # by a variable broadcast to the term's shape is summed to its shape)
        self.full_by = [tuple(dirs[d] for d in what[1:]) for (sink, what), j in zip(built, where)
                        if sink != "acc" and j is not None]
        self.n_xw, self.n_xx = kinds.count("xw"), kinds.count("xx")
        self.z = self.arrays.index(_Z) if _Z in self.arrays else -1
        self.t = self.arrays.index(_T) if _T in self.arrays else -1

    def __call__(self, values, dtype, shape, v, scratch):
        prog, term = self.program, self.term
        svals = [values[src[1]].item() if src[0] == "var" else src[1] for src in self.scalars]
        is_double = dtype == np.float64
        size = _size(shape)
        full_outs = tuple(np.empty(size, dtype) if f else None for f in self.full)
        reduce_to = [None] * len(full_outs)
        vecs = ()
        if term.matmul is not None:
            X = values[term.matmul[0]]
            arr = tuple(None if a == _Z or a == _T else values[a] for a in self.arrays)
            res = _expr.run_rows(prog, X, values[term.matmul[1]], v, arr, self.z, self.t,
                                 svals, self.n_xw, self.n_xx, full_outs, is_double)
            n, k = X.shape[1], prog.n_acc
            sums = res[:k]
            vecs = [res[k + i * n: k + (i + 1) * n] for i in range(self.n_xw + self.n_xx)]
        else:
            # _T: the vector of a Hessian-vector product, read element-wise; a
            # result by a variable broadcast to the term's shape is summed to
            # that variable's shape in the pass (_compiled._broadcast_run)
            arr = tuple(v if a == _T else values[a] for a in self.arrays)
            for j, by in enumerate(self.full_by):
                target = max((values[name].shape for name in by), key=len, default=shape)
                if target != tuple(shape):
                    reduce_to[j] = target
            full_outs = [None if r is not None else o for o, r in zip(full_outs, reduce_to)]
            sums = _broadcast_run(prog, arr, svals, full_outs, reduce_to, tuple(shape), dtype,
                                  scratch)
        results = [None] * len(self.order)
        for i, sink, j in zip(self.order, self.sinks, self.where):
            if j is None:
                continue
            if sink == "acc":
                results[i] = float(sums[j])
            elif sink == "full":
                out = full_outs[j]
                results[i] = out if reduce_to[j] is not None else out.reshape(shape)
            else:
                results[i] = vecs[j]
        return results


_SINK_RANK = {"acc": 0, "xw": 1, "xx": 2, "full": 3}


def _size(shape):
    size = 1
    for k in shape:
        size *= k
    return size


def _mean_size(term, shape):
    """The number of elements a mean term divides by (never 0)."""
    size = _size(shape)
    if size == 0:
        raise ValueError(f"{term.reduction} is the mean of no elements (a variable "
                         f"of size 0): it is undefined")
    return size


def _refuse_weight(term, wrts):
    for w in wrts:
        if any(n == w for n, _ in term.coef_vars):
            raise NotImplementedError(
                f"differentiating by {w!r}, a weight of {term.reduction}, is not "
                f"supported; write the weight inside the sum")


def _refuse_matrix(term, role, wrt, what):
    if role == "X":
        raise NotImplementedError(
            f"{what} with respect to the matrix {wrt!r} of {term.matmul[0]} @ "
            f"{term.matmul[1]} {'is' if what == 'the Hessian' else 'are'} not supported")


def _check_axis(term, ndim):
    """sum(e, axis=...) and mean(e, axis=...) in a loss: the axes must cover e."""
    axis = term.axis
    if axis is None:
        return
    axes = axis if isinstance(axis, tuple) else (axis,)
    norm = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(f"axis {a} is out of bounds for {term.reduction.arg}, which has "
                             f"{ndim} dimension{'s' if ndim != 1 else ''} here")
        norm.append(a % ndim)
    if sorted(set(norm)) != list(range(ndim)):
        raise NotImplementedError(
            f"{term.reduction} reduces over some axes only; a loss reduces every axis of "
            f"its reductions (axis=None, or all of them)")


def _vector_like(v, like, dtype, what, wrt):
    """v as an array of like's shape and the run's dtype (copied if needed)."""
    if isinstance(v, Expr):
        raise TypeError(f"{what} must be an array, got an expression")
    arr = np.asarray(v)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{what} must be a real array, got dtype {arr.dtype}")
    check_same_shape(what, arr.shape, wrt, like.shape)
    return np.ascontiguousarray(arr, dtype=dtype)


def check_same_shape(what, shape, wrt, wrt_shape):
    """A vector (v, a tangent) has the shape of its variable, else ValueError."""
    if tuple(shape) != tuple(wrt_shape):
        raise ValueError(f"{what} has shape {tuple(shape)} but {wrt!r} has shape "
                         f"{tuple(wrt_shape)}; they must match")


def weighted(c, weights, value_of):
    """c times the loss's scalar weights [(name, 1 or -1)] (_constant_part):
    value_of(name) gives each one's value (a float, or a lazy Dask one)."""
    for name, p in weights:
        c = c * value_of(name) if p == 1 else c * (1.0 / value_of(name))
    return c


def _weighted_gram(X, h):
    """X^T diag(h) X in float64, by blocks of rows: a few large BLAS calls,
    with a temporary of at most 2^24 numbers (128 MiB) rather than N x n."""
    n = X.shape[1]
    H = np.zeros((n, n), np.float64)
    rows = max(256, (1 << 24) // max(n, 1))
    for start in range(0, X.shape[0], rows):
        Xb = X[start:start + rows].astype(np.float64, copy=False)
        H += Xb.T @ (Xb * h[start:start + rows, None])
    return H


def _deliver_array(a, dtype):
    """A float64 result in the run's dtype: an array, or a NumPy scalar for 0-d."""
    return a.astype(dtype) if a.ndim else dtype.type(a)


def _deliver_gradient(grad, wrt, denominator, fmt, out):
    if fmt == "compact":
        if out is not None:
            check_out(out, grad.shape, grad.dtype, "gradient")
            out[...] = grad
            return out
        return grad if grad.ndim else grad.dtype.type(grad)
    if grad.ndim != 1:
        raise ValueError(f"format={fmt!r} needs a vector variable; {wrt!r} has shape "
                         f"{grad.shape}: use format='compact'")
    return _layout.as_matrix(grad, "gradient", denominator, fmt, False, out)


def _deliver_hessian(diag, dense, format, dtype):
    """The Hessian from _hessian_parts, in ``format`` ("compact" or "dense")."""
    if dense is not None:
        dense[np.diag_indices(dense.shape[0])] += diag.reshape(-1)
        return dense.astype(dtype)
    if format == "dense":
        return np.diag(diag.reshape(-1)).astype(dtype)
    return _deliver_array(diag, dtype)


def _deliver_mixed(total, sa, sb, format, dtype):
    if format == "dense":                   # (size of a) x (size of b)
        return total.astype(dtype).reshape(sa[0] if sa else 1, sb[0] if sb else 1)
    return _deliver_array(total, dtype)


def _hessian_operator(loss, wrt, values, dtype):
    """A LinearOperator whose matvec is loss.hvp (values frozen by copy)."""
    _layout.operators()                     # SciPy, with fastjac's message if absent
    from scipy.sparse.linalg import LinearOperator
    shape = values[wrt].shape
    if len(shape) != 1:
        raise ValueError(f"format='operator' needs a vector variable; {wrt!r} has shape {shape}")
    frozen = {name: np.array(a, copy=True) for name, a in values.items()}
    size = shape[0]

    def matvec(v):
        v = np.asarray(v).reshape(-1)
        return loss.hvp(wrt, v.astype(dtype, copy=False), **frozen)

    return LinearOperator((size, size), matvec=matvec, rmatvec=matvec, dtype=dtype)
