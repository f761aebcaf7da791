"""The planner: an expression cut into stages, each compiled to a tangent program.

A plan is a list of *stages*, one per reduction (``sum``, ``dot``) and one
for the result. A stage is element-wise work over arrays of one shape,
optionally ending in a sum; it is compiled to a straight-line program
(_expr.pyx) that computes the value and, forward mode, the tangent with
respect to each variable asked for, block by block in one pass over the
data. A tangent seeded with ones is exactly the Jacobian here: the diagonal
for an array variable (element-wise work has a diagonal Jacobian), the
column dy/dz for a scalar z, the gradient (a row) after a final sum.

A reduction inside the expression (a dot product feeding an element-wise
op) makes the Jacobian non-diagonal. Its stage runs first; its value enters
later stages as a scalar input, which is differentiated like a scalar
variable (CompiledExpression._factor then joins the stages by the chain rule).

This module owns the walk of the DAG (_postorder), the cut into stages
(_Stage, _scalar_step_shape), the program builder with its register
allocation (_Builder, _build_stage, _finish) and the plan records (_Plan,
_StagePlan). It knows nothing of the arrays of a call: _compiled.py picks
the signature and runs the programs.
"""
import numpy as np

from . import _expr, _kernels, _ops
from ._nodes import Binary, Const, MatMul, Mean, Sum, Unary, Var


# =============================================================================
# Analysis
# =============================================================================

def _children(node):
    if isinstance(node, Unary):
        return (node.arg,)
    if isinstance(node, (Binary, MatMul)):
        return (node.a, node.b)
    if isinstance(node, (Sum, Mean)):
        return (node.arg,)
    return ()


def _postorder(roots, descend=None):
    """All nodes reachable from roots, children before parents (iterative);
    the children of a node are visited only where descend(node) is true."""
    order, seen = [], set()
    stack = [(r, False) for r in reversed(roots)]
    while stack:
        node, done = stack.pop()
        if done:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        if descend is not None and not descend(node):
            continue
        for c in reversed(_children(node)):
            if id(c) not in seen:
                stack.append((c, False))
    return order


def _topological(roots):
    """All nodes reachable from roots, children before parents."""
    return _postorder(roots)


def _stage_nodes(root):
    """Nodes of the stage ending at root: element-wise work, stopping at sums
    other than root (those are inputs of the stage)."""
    return _postorder([root], lambda node: not isinstance(node, Sum) or node is root)


class _Stage:
    """One pass: element-wise work over one shape, ending at ``root``."""

    def __init__(self, root):
        self.root = root
        self.is_sum = isinstance(root, Sum)
        self.nodes = _stage_nodes(root)
        self.vars = []            # variable names read element-wise, in order
        self.inner = []           # inner Sum nodes read as scalar inputs
        seen = set()
        for node in self.nodes:
            if isinstance(node, Var) and node.name not in seen:
                seen.add(node.name)
                self.vars.append(node.name)
            elif isinstance(node, Sum) and node is not root:
                self.inner.append(node)


def _scalar_step_shape(root):
    """(stage, reduction) when root is arithmetic on the value of one sum whose
    own stage reads no other sum -- ``sum(e) / N``, ``log(sum(e))``,
    ``sum(e) * z`` -- else None. It runs as that sum's pass plus a scalar step
    (_plan_scalar_step) when the stage's variables are scalars in a call."""
    if isinstance(root, Sum):
        return None
    stage = _Stage(root)
    if len(stage.inner) != 1 or _Stage(stage.inner[0]).inner:
        return None
    return stage, stage.inner[0]


def _affine_in(stage, red):
    """True when the stage's value is affine in the value of ``red``: its
    slope is then known before the sum is (any value of red gives it)."""
    moves = {id(red)}                   # nodes whose value depends on red's
    for node in stage.nodes:
        hit = [id(c) in moves for c in _children(node)]
        if node is red or not any(hit):
            continue
        moves.add(id(node))
        if isinstance(node, Unary):
            linear = node.op in ("identity", "negative")
        else:
            linear = (node.op in ("add", "subtract", "greater", "less")
                      or (node.op == "multiply" and not all(hit))
                      or (node.op == "divide" and not hit[1]))
        if not linear:
            return False
    return True


# =============================================================================
# Program building (one stage, one signature)
# =============================================================================

_OPCODES = _expr.OPCODES
_KINDS = _expr.REGISTER_KINDS
_CODES = _kernels.DERIVATIVE_CODES
_ONE = "one"                      # the tangent of a seed: all ones


class _Builder:
    def __init__(self):
        self.kind, self.index = [], []
        self.instr = []           # [op, dst, a, b, c]
        self.scalars = []         # sources of SCALAR registers
        self.arrays = []          # variable names of ARRAY registers
        self.n_outs = 0
        self.n_acc = 0
        self._scalar_regs = {}
        self._array_regs = {}

    def reg(self, kind, index=0):
        self.kind.append(_KINDS[kind])
        self.index.append(index)
        return len(self.kind) - 1

    def scalar(self, source):
        r = self._scalar_regs.get(source)
        if r is None:
            r = self.reg("scalar", len(self.scalars))
            self.scalars.append(source)
            self._scalar_regs[source] = r
        return r

    def array(self, name):
        r = self._array_regs.get(name)
        if r is None:
            r = self.reg("array", len(self.arrays))
            self.arrays.append(name)
            self._array_regs[name] = r
        return r

    def const(self, value):
        return self.scalar(("const", float(value)))

    def emit(self, op, a, b=None, c=None, dst=None):
        if dst is None:
            dst = self.reg("temp")
        self.instr.append([_OPCODES[op], dst, a, a if b is None else b, 0 if c is None else c])
        return dst

    def deriv(self, code_name, a, b):
        dst = self.reg("temp")
        self.instr.append([_OPCODES["deriv"], dst, a, b, _CODES[code_name]])
        return dst

    # tangent arithmetic with symbolic zero (None) and one (_ONE)
    def reg_of(self, t):
        return self.const(1.0) if t is _ONE else t

    def t_add(self, x, y):
        if x is None:
            return y
        if y is None:
            return x
        return self.emit("add", self.reg_of(x), self.reg_of(y))

    def t_sub(self, x, y):
        if y is None:
            return x
        if x is None:
            return self.t_neg(y)
        return self.emit("subtract", self.reg_of(x), self.reg_of(y))

    def t_neg(self, x):
        if x is None:
            return None
        if x is _ONE:
            return self.const(-1.0)
        return self.emit("negative", x)

    def t_scale(self, d, t):
        """d * t for a register d and a tangent t."""
        if t is None:
            return None
        if t is _ONE:
            return d
        return self.emit("multiply", d, t)

    def t_scale_add(self, d, t, acc):
        """d * t + acc."""
        if t is None:
            return acc
        if acc is None:
            return self.t_scale(d, t)
        if t is _ONE:
            return self.emit("add", d, self.reg_of(acc))
        return self.emit("muladd", d, t, self.reg_of(acc))


_TANGENT = "\x00tangent "          # array inputs of a fused jvp: _TANGENT + variable name
_COTANGENT = "\x00cotangent"       # the array input of a fused vjp


def _build_stage(stage, scalar_vars, directions, want_value, reduction_index, scale=False,
                 extra_scalars=(), products=None):
    """Compile one stage for one signature.

    scalar_vars: names of variables that are scalars in this call.
    directions: list of ("var", name) or ("red", sum_node) to differentiate by.
    scale: multiply the array tangents by the scalar input ("scale", 0) (a
    scalar step's slope, _plan_scalar_step).
    extra_scalars: sources of scalar inputs to add whether or not the
    program reads them (a scalar step reads them from the pass's inputs).
    products: None, or "jvp": each variable direction is seeded with its
    tangent (an array input _TANGENT + name, or a scalar ("tangent", name))
    instead of ones, and the one result is their sum at the root, J t;
    or "vjp": each direction's result is the cotangent (an array input
    _COTANGENT, or a scalar ("cot", 0) after a sum) times its tangent,
    summed where the variable is a scalar: u^T J, one result per direction.
    Returns (Program, recipe) where recipe says where each result lands.
    """
    B = _Builder()
    V, T = {}, {}
    nd = len(directions)
    dir_of = {}
    for k, (what, key) in enumerate(directions):
        dir_of[(what, key if what == "var" else id(key))] = k
    for node in stage.nodes:
        tang = [None] * nd
        if isinstance(node, Var):
            if node.name in scalar_vars:
                V[node] = B.scalar(("var", node.name))
            else:
                V[node] = B.array(node.name)
            k = dir_of.get(("var", node.name))
            if k is not None and products == "jvp":
                tang[k] = (B.scalar(("tangent", node.name)) if node.name in scalar_vars
                           else B.array(_TANGENT + node.name))
            elif k is not None:
                tang[k] = _ONE
        elif isinstance(node, Const):
            V[node] = B.const(node.value)
        elif isinstance(node, Sum) and node is not stage.root:
            V[node] = B.scalar(("red", reduction_index[id(node)]))
            k = dir_of.get(("red", id(node)))
            if k is not None:
                tang[k] = _ONE
        elif isinstance(node, Sum):            # the root of a sum stage
            V[node] = V[node.arg]
            tang = list(T[node.arg])
        elif isinstance(node, Unary):
            a, ta = V[node.arg], T[node.arg]
            op = node.op
            if op == "identity":
                V[node] = a
                tang = list(ta)
            elif op == "negative":
                V[node] = B.emit("negative", a)
                tang = [B.t_neg(t) for t in ta]
            elif op in ("tanh", "softplus") and any(t is not None for t in ta):
                # value and derivative from one exponential (tanh_vd, softplus_vd)
                v, d = B.reg("temp"), B.reg("temp")
                B.instr.append([_OPCODES[op + "_vd"], v, a, d, 0 if op == "tanh" else -1])
                V[node] = v
                tang = [B.t_scale(d, t) for t in ta]
            elif op == "exp":
                # d exp(x)/dx is the value itself: one exponential, not two,
                # by the derivative kernel (its short exp where that is valid,
                # the same bits as the exp op: _vecmath.h)
                V[node] = B.deriv(_ops.UNARY[op], a, a)
                tang = [B.t_scale(V[node], t) for t in ta]
            else:
                V[node] = B.emit(op, a)
                if any(t is not None for t in ta):
                    d = B.deriv(_ops.UNARY[op], a, a)
                    tang = [B.t_scale(d, t) for t in ta]
        else:                                   # Binary
            a, b = V[node.a], V[node.b]
            ta, tb = T[node.a], T[node.b]
            op = node.op
            V[node] = B.emit(op, a, b)
            if op in ("greater", "less"):
                pass                            # piecewise constant: zero tangent
            elif op == "add":
                tang = [B.t_add(x, y) for x, y in zip(ta, tb)]
            elif op == "subtract":
                tang = [B.t_sub(x, y) for x, y in zip(ta, tb)]
            elif op == "multiply":
                # t = ta * b + a * tb
                tang = [B.t_scale_add(b, x, B.t_scale(a, y)) for x, y in zip(ta, tb)]
            else:
                code_a, code_b = _ops.BINARY[op]
                da = B.deriv(code_a, a, b) if any(x is not None for x in ta) else None
                db = B.deriv(code_b, a, b) if any(y is not None for y in tb) else None
                tang = [B.t_scale_add(da, x, B.t_scale(db, y)) for x, y in zip(ta, tb)]
        T[node] = tang

    # -- sinks ----------------------------------------------------------------
    # recipe entries: ("out", j) -> outs[j]; ("acc", j) -> sums[j]; per result
    bound = set()
    produced = {r for ins in B.instr for r in _results(ins)}

    def to_out(r):
        j = B.n_outs
        B.n_outs += 1
        if r in produced and B.kind[r] == _KINDS["temp"] and r not in bound:
            B.kind[r] = _KINDS["out"]
            B.index[r] = j
            bound.add(r)
        else:
            dst = B.reg("out", j)
            B.emit("copy", r, dst=dst)
        return ("out", j)

    def to_acc(r):
        j = B.n_acc
        B.n_acc += 1
        B.instr.append([_OPCODES["sum"], j, r, r, 0])
        return ("acc", j)

    root = stage.root
    recipe_value = None
    if want_value:
        recipe_value = to_acc(V[root]) if stage.is_sum else to_out(V[root])
    recipe_tangents = []
    if products == "jvp":
        total = None
        for t in T[root]:
            total = B.t_add(total, t)
        if total is not None:
            r = B.reg_of(total)
            recipe_tangents.append(to_acc(r) if stage.is_sum else to_out(r))
        else:
            recipe_tangents.append(None)
        return _finish(B), recipe_value, recipe_tangents, list(B.arrays), list(B.scalars)
    if products == "vjp":
        cot = B.scalar(("cot", 0)) if stage.is_sum else B.array(_COTANGENT)
        for what, key in directions:
            t = T[root][dir_of[(what, key)]]
            if t is None:
                recipe_tangents.append(None)
                continue
            r = B.reg_of(B.t_scale(cot, t))
            recipe_tangents.append(to_acc(r) if key in scalar_vars else to_out(r))
        return _finish(B), recipe_value, recipe_tangents, list(B.arrays), list(B.scalars)
    for k, (what, key) in enumerate(directions):
        t = T[root][k]
        scalar_dir = what == "red" or key in scalar_vars
        if t is None:
            recipe_tangents.append(None)        # structurally zero
            continue
        r = B.reg_of(t)
        if stage.is_sum and scalar_dir:
            recipe_tangents.append(to_acc(r))
        else:
            if scale:
                r = B.emit("multiply", B.scalar(("scale", 0)), r)
                produced.add(r)
            recipe_tangents.append(to_out(r))
    for source in extra_scalars:
        B.scalar(source)

    prog = _finish(B)
    return prog, recipe_value, recipe_tangents, list(B.arrays), list(B.scalars)


def _finish(B):
    """Dead-code elimination, then scratch slots for the temporaries."""
    temp, out_k = _KINDS["temp"], _KINDS["out"]
    sum_op = _OPCODES["sum"]
    live = set()
    kept = []
    for ins in reversed(B.instr):
        op = ins[0]
        if op == sum_op or any(B.kind[d] == out_k or d in live for d in _results(ins)):
            kept.append(ins)
            live.update(_operands(ins))
    kept.reverse()
    # last use of every register
    last = {}
    for i, ins in enumerate(kept):
        for r in _operands(ins):
            last[r] = i
    n_regs = len(B.kind)
    slot = [0] * n_regs
    free, n_slots = [], 0
    for r in range(n_regs):                     # scalars: one slot each
        if B.kind[r] == _KINDS["scalar"]:
            slot[r] = n_slots
            n_slots += 1
    for i, ins in enumerate(kept):
        for r in set(_operands(ins)):
            if B.kind[r] == temp and last.get(r) == i:
                free.append(slot[r])
        for dst in _results(ins):
            if B.kind[dst] == temp:
                if free:
                    slot[dst] = free.pop()
                else:
                    slot[dst] = n_slots
                    n_slots += 1
        for dst in _results(ins):
            if B.kind[dst] == temp and dst not in last:   # written, never read
                free.append(slot[dst])
    prog = np.array(kept, dtype=np.intc).reshape(-1, 5)
    return _expr.Program(prog, B.kind, B.index, slot, n_slots, B.n_acc, len(B.arrays),
                         len(B.scalars), B.n_outs, listing=kept)


def _results(ins):
    """The registers an instruction writes."""
    op = ins[0]
    if op == _OPCODES["sum"]:
        return ()
    if op == _OPCODES["tanh_vd"]:
        return (ins[1], ins[3])
    if op == _OPCODES["softplus_vd"]:
        return (ins[1], ins[3]) if ins[4] < 0 else (ins[1], ins[3], ins[4])
    return (ins[1],)


def _operands(ins):
    op = ins[0]
    if op in (_OPCODES["sum"], _OPCODES["tanh_vd"], _OPCODES["softplus_vd"]):
        return (ins[2],)
    if op == _OPCODES["muladd"]:
        return (ins[2], ins[3], ins[4])
    return (ins[2], ins[3])


# =============================================================================
# Plans (the stages of one signature)
# =============================================================================

class _Plan:
    """Stages of one signature, with their programs and recipes."""
    __slots__ = ("stages",)


class _StagePlan:
    __slots__ = ("stage", "program", "value", "tangents", "arrays", "scalars", "directions",
                 "index", "step")

    def __init__(self):
        self.step = None            # an _expr.ScalarStep applied after the pass
