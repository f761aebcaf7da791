"""The compiled expression: an expression checked once, then evaluated and
differentiated many times.

``compile`` checks the expression once. The first call with a given
*signature* (which variables are scalars, which derivatives are asked for)
builds a plan (_planner.py), cached on the compiled object; later calls only
check the arrays and run it. Where a reduction feeds element-wise work, the
chain rule joins the stages on structured factors (expr_factors.py): a
column times a row is a rank-1 term, never a silently wrong diagonal, and
never an n x n matrix unless format="dense" asks.

This module owns CompiledExpression (planning per signature, running the
programs, the chain rule between stages, the products jvp/vjp), compile, and
the small helpers they use (shapes, tangents, delivering a result).
"""
import math
import sys
import threading

import numpy as np

from . import _broadcast, _expr, _layout, _ops
from ._checks import check_format, check_layout, check_no_out, check_out, coerce_named
from ._nodes import Binary, Expr, Sum, Unary, Var, _wrap
from ._planner import (_COTANGENT, _TANGENT, _Plan, _Stage, _StagePlan, _affine_in,
                       _build_stage, _scalar_step_shape, _topological)
from .expr_factors import Factor


# =============================================================================
# The compiled expression
# =============================================================================

def _check_variable_order(order, names):
    """compile's ``variables=``: every variable of the expression exactly once."""
    if isinstance(order, str) or not isinstance(order, (list, tuple)):
        raise ValueError(f"variables must be a list or tuple of variable names, got {order!r}")
    order = tuple(order)
    known = ", ".join(names) or "(none)"
    for name in order:
        if name not in names:
            raise ValueError(f"variables names {name!r}, which is not a variable of the "
                             f"expression; its variables are: {known}")
    repeated = [name for i, name in enumerate(order) if name in order[:i]]
    if repeated:
        raise ValueError(f"variables names {repeated[0]!r} twice; name each variable of the "
                         f"expression once: {known}")
    missing = [name for name in names if name not in order]
    if missing:
        raise ValueError(f"variables must name every variable of the expression once; "
                         f"missing: {', '.join(missing)}")
    return order


class CompiledExpression:
    """An expression (or a list of them) analysed once, to evaluate and
    differentiate many times. Obtain it with :func:`fastjac.compile`.

    Variables are passed as keyword arguments: arrays whose shapes NumPy
    broadcasts together (the element-wise operands of one pass; see
    docs/expressions.md, "Broadcast variables"), or scalars (Python numbers
    or 0-d arrays, expanded to that shape). dtypes follow ``fastjac.jacobian``:
    float32 stays float32, integers and bool become float64.
    ``variables`` is their order (first appearance in the expression, or
    compile's ``variables=``): the positional order of :meth:`kernel`'s
    kernels and the default order of ``wrt``.
    """

    def __init__(self, outputs, wrt=None, *, variables=None):
        single = isinstance(outputs, Expr)
        if single:
            outputs = [outputs]
        elif isinstance(outputs, (list, tuple)) and outputs:
            outputs = [_wrap(o, "output") if not isinstance(o, Expr) else o for o in outputs]
        else:
            raise TypeError("compile takes an expression or a non-empty list of expressions, "
                            f"got {type(outputs).__name__}")
        self._single = single
        self._outputs = outputs
        from . import _batch
        for o in outputs:
            if _batch.is_loss(o):
                raise NotImplementedError(
                    f"{o} uses @, mean or sum(axis=...): compile it alone with "
                    f"fastjac.compile(expression), which returns a loss; a list of "
                    f"expressions cannot hold one")
        nodes = _topological(outputs)
        self._set_variables(nodes, variables, wrt)
        # stages: every Sum node (inner ones first), then each output root
        self._sums = [n for n in nodes if isinstance(n, Sum)]
        self._has_inner = any(s not in outputs for s in self._sums)
        # arithmetic on one sum's value (sum(e) / N): one pass and a scalar step
        # when the variables it reads after the sum are scalars
        self._step = _scalar_step_shape(outputs[0]) if single and self._has_inner else None
        self._fast_ok = self._single and (not self._has_inner or self._step is not None)
        # wrt=None means this one name when only one was compiled (fast path)
        self._default_wrt = self.wrt[0] if len(self.wrt) == 1 else None
        self._fast_kernels = {}
        self._plans = {}
        self._product_plans = {}        # fused jvp / vjp programs, by signature
        self._product_calls = {}        # (mode, wrt): the last signature's _ProductCall

    def _set_variables(self, nodes, variables, wrt):
        """.variables (in order of appearance, or compile's ``variables=``) and
        .wrt, checked; nodes: every node of the expression."""
        names = []
        for node in nodes:
            if isinstance(node, Unary) and node.op not in _ops.UNARY:
                raise ValueError(f"unsupported operation {node.op!r}")
            if isinstance(node, Binary) and node.op not in _ops.BINARY:
                raise ValueError(f"unsupported operation {node.op!r}")
            if isinstance(node, Var) and node.name not in names:
                names.append(node.name)
        self.variables = tuple(names) if variables is None else \
            _check_variable_order(variables, names)
        if wrt is None:
            wrt = self.variables
        elif isinstance(wrt, str):
            wrt = (wrt,)
        elif isinstance(wrt, (list, tuple)):
            wrt = tuple(wrt)
        else:
            raise ValueError(f"wrt must be a variable name or a list of names, got {wrt!r}")
        for name in wrt:
            self._check_name(name)
        if len(set(wrt)) != len(wrt):
            raise ValueError(f"wrt names a variable twice: {list(wrt)}")
        self.wrt = wrt

    def __repr__(self):
        outs = ", ".join(str(o) for o in self._outputs)
        return f"<fastjac compiled [{outs}] wrt {list(self.wrt)}>"

    def __reduce__(self):
        # Rebuilt from the expression where it is unpickled: plans, kernels
        # and the JIT's code (addresses in this process) are never shipped.
        outputs = self._outputs[0] if self._single else list(self._outputs)
        return _unpickle_compiled, (outputs, self.wrt, self.variables)

    def _check_name(self, name):
        if not isinstance(name, str) or name not in self.variables:
            known = ", ".join(self.variables) or "(none)"
            raise ValueError(f"unknown variable {name!r}; the expression's variables "
                             f"are: {known}")

    # -- call-time checks ---------------------------------------------------------
    def _check_names(self, kwargs):
        """Every variable given once, no other name (also for _dask.py)."""
        for name in kwargs:
            if name not in self.variables:
                self._check_name(name)
        missing = [n for n in self.variables if n not in kwargs]
        if missing:
            raise ValueError(f"missing value for variable{'s' if len(missing) > 1 else ''} "
                             f"{', '.join(repr(m) for m in missing)}")

    def _values(self, kwargs):
        self._check_names(kwargs)
        return coerce_named(kwargs)

    def _wrt_list(self, wrt):
        if not (wrt is None or isinstance(wrt, (str, list, tuple))):
            raise ValueError(f"wrt must be a variable name or a list of names, got {wrt!r}")
        if wrt is None:
            wrt = self.wrt
            return (wrt[0],) if len(wrt) == 1 else tuple(wrt), len(wrt) != 1
        if isinstance(wrt, str):
            if wrt not in self.wrt:
                self._check_name(wrt)
                raise ValueError(f"variable {wrt!r} was not compiled for differentiation; "
                                 f"compile with wrt={list(self.wrt) + [wrt]}")
            return (wrt,), False
        wrt = tuple(wrt)
        for name in wrt:
            self._wrt_list(name)
        return wrt, True

    # -- planning (once per signature) ---------------------------------------------
    def _plan(self, scalar_vars, wrt, want_value):
        key = (scalar_vars, wrt, want_value)
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        scalar_set = frozenset(n for n, s in zip(self.variables, scalar_vars) if s)
        if self._step is not None and scalar_set.issuperset(self._step[0].vars):
            plan = self._plan_scalar_step(scalar_set, wrt, want_value)
            if plan is not None:
                self._plans[key] = plan
                return plan
        stages = [_Stage(s) for s in self._sums]
        out_stages = []
        for o in self._outputs:
            st = next((s for s in stages if s.root is o), None)
            if st is None:
                st = _Stage(o)
                stages.append(st)
            out_stages.append(st)
        # which variables each stage depends on, transitively
        depends = {}
        for st in stages:                   # inner sums come first (topological)
            d = set(st.vars)
            for inner in st.inner:
                d |= depends[id(inner)]
            depends[id(st.root)] = d
        reduction_index = {}
        plans = []
        for i, st in enumerate(stages):
            is_output = any(st is s for s in out_stages)
            dirs = [("var", v) for v in wrt if v in st.vars]
            dirs += [("red", inner) for inner in st.inner if depends[id(inner)] & set(wrt)]
            prog, rv, rt, arrays, scalars = _build_stage(
                st, scalar_set, dirs, want_value or not is_output, reduction_index)
            sp = _StagePlan()
            sp.stage, sp.program, sp.value, sp.tangents = st, prog, rv, rt
            sp.arrays, sp.scalars, sp.directions, sp.index = arrays, scalars, dirs, i
            reduction_index[id(st.root)] = i
            plans.append(sp)
        plan = _Plan()
        plan.stages = (plans, [stages.index(s) for s in out_stages], depends)
        self._plans[key] = plan
        return plan

    def _plan_scalar_step(self, scalar_set, wrt, want_value):
        """The plan of arithmetic on one sum's value (see _scalar_step_shape):
        the sum's pass, then a ScalarStep on the numbers -- no second pass and
        no factors. None when the step is too large to fold."""
        stage, red = self._step
        inner = _Stage(red)
        dirs = [("var", v) for v in wrt if v in inner.vars or v in stage.vars]
        # the step: y, dy/ds, and dy/dz for the scalar variables z it reads
        step_dirs = [("red", red)] + [d for d in dirs if d[1] in stage.vars]
        step_prog, step_value, step_tans, _, step_scalars = _build_stage(
            stage, scalar_set, step_dirs, True, {id(red): 0})
        if step_prog.n_regs > _expr.STEP_MAX_REGS:
            return None                     # too large to run on the stack: two stages
        slope = step_tans[0]
        affine = slope is not None and _affine_in(stage, red)
        # the sum itself is needed for the value, a slope that depends on it,
        # and the direct derivatives (d(s z)/dz = s)
        need_sum = want_value or not affine or len(step_dirs) > 1
        pass_dirs = [d for d in dirs if d[1] in inner.vars]
        prog, value, tans, arrays, scalars = _build_stage(
            inner, scalar_set, pass_dirs, need_sum, {}, scale=affine,
            extra_scalars=[src for src in step_scalars if src[0] != "red"])
        where = {src: i for i, src in enumerate(scalars)}
        tangents, direct_out, tan_acc, tan_out = [], [], [], []
        for d in dirs:
            rec = tans[pass_dirs.index(d)] if d in pass_dirs else None
            direct = step_tans[step_dirs.index(d)] if d in step_dirs else None
            tangents.append(rec)
            direct_out.append(direct[1] if direct is not None else -1)
            tan_acc.append(rec[1] if rec is not None and rec[0] == "acc" else -1)
            tan_out.append(rec[1] if rec is not None and rec[0] == "out" else -1)
        sp = _StagePlan()
        sp.stage, sp.program, sp.value, sp.tangents = inner, prog, value, tangents
        sp.arrays, sp.scalars, sp.directions, sp.index = arrays, scalars, dirs, 0
        sp.step = _expr.ScalarStep(
            step_prog, [-1 if src[0] == "red" else where[src] for src in step_scalars],
            sum_acc=value[1] if need_sum else -1, value_out=step_value[1],
            slope_out=slope[1] if slope is not None else -1,
            scale_scalar=where.get(("scale", 0), -1),     # present when an array is scaled
            direct_out=direct_out, tan_acc=tan_acc, tan_out=tan_out)
        plan = _Plan()
        plan.stages = ([sp], [0], {})
        return plan

    # -- running -------------------------------------------------------------------------
    def _run(self, values, dtype, wrt, want_value, value_out=None, tangent_out=None):
        scalar_vars = tuple(values[n].ndim == 0 for n in self.variables)
        plan = self._plan(scalar_vars, wrt, want_value)
        plans, out_idx, depends = plan.stages
        results = []
        last = len(plans) - 1
        for sp in plans:
            shape = _common_shape(sp.arrays, values)
            n = math.prod(shape)
            # a variable broadcast to the stage's shape: a sum's tangent by it
            # is computed per element, then summed over the broadcast axes
            widened = [sp.stage.is_sum and d[0] == "var" and _widened(values[d[1]], shape)
                       for d in sp.directions]
            y_shape = () if sp.stage.is_sum else shape
            outs = [None] * sp.program.n_outs
            # values[] of this stage's outputs; the final stage may write into user arrays
            value_slot = sp.value
            if value_slot is not None and value_slot[0] == "out":
                if value_out is not None and sp.index == last and len(out_idx) == 1:
                    outs[value_slot[1]] = _out_target(value_out, y_shape, dtype, "value")
                else:
                    outs[value_slot[1]] = np.empty(y_shape, dtype)
            step = sp.step
            # a sum's tangent by a widened variable: summed over the broadcast
            # axes slab by slab (_broadcast_run); after a scalar step, per
            # element (the step scales it in place), then summed (_summed_widened)
            reduce_to = [None] * sp.program.n_outs
            for k, rec in enumerate(sp.tangents):
                if rec is not None and rec[0] == "out":
                    if widened[k] and step is None:
                        reduce_to[rec[1]] = values[sp.directions[k][1]].shape
                        continue
                    target = None
                    t_shape = (values[sp.directions[k][1]].shape
                               if sp.stage.is_sum and not widened[k] else shape)
                    if tangent_out is not None and last == 0 and len(out_idx) == 1 \
                            and not widened[k]:
                        target = tangent_out.get(k)     # one pass: its tangent is the result
                    outs[rec[1]] = (_out_target(target, t_shape, dtype, "result")
                                    if target is not None else np.empty(t_shape, dtype))
            arrays = tuple(values[name] if step is None else _expanded(values[name], shape)
                           for name in sp.arrays)
            for o in outs:
                for a in arrays:
                    if o is not None and _expr.overlaps(o, a):
                        raise ValueError("out overlaps an input variable; use a separate array")
            scalars = []
            for kind, key in sp.scalars:
                if kind == "const":
                    scalars.append(key)
                elif kind == "var":
                    scalars.append(float(values[key]))
                elif kind == "red":
                    scalars.append(float(results[key][0]))
                else:                               # "scale": set by the step below
                    scalars.append(0.0)
            is_double = dtype == np.float64
            if step is not None and step.scale_scalar >= 0:
                scalars[step.scale_scalar] = step.slope(scalars, is_double)
            sums = _broadcast_run(sp.program, arrays, scalars, outs, reduce_to, shape, dtype,
                                  self._scratch())
            if step is not None:
                results.append(_summed_widened(
                    self._step_results(sp, scalars, sums, outs, n, dtype), sp, widened,
                    values, dtype))
                continue

            def fetch(rec):
                if rec is None:
                    return None
                if rec[0] == "out":
                    return outs[rec[1]]
                return dtype.type(sums[rec[1]])
            value = fetch(sp.value)
            tangents = [fetch(r) for r in sp.tangents]
            results.append((value, tangents, y_shape))
        return plans, out_idx, results

    @staticmethod
    def _step_results(sp, scalars, sums, outs, n, dtype):
        """(value, tangents, ()) of a pass followed by its scalar step."""
        y, derivs = sp.step.finish(scalars, sums, tuple(outs), n, dtype == np.float64)
        tangents = []
        for k, rec in enumerate(sp.tangents):
            if rec is not None and rec[0] == "out":
                tangents.append(outs[rec[1]])       # scaled in place by the step
            elif rec is not None or sp.step.direct_out[k] >= 0:
                tangents.append(dtype.type(derivs[k]))
            else:
                tangents.append(None)               # structurally zero
        return (dtype.type(y) if sp.step.sum_acc >= 0 else None), tangents, ()

    def _factor(self, plans, results, stage_i, name, values, dtype, memo):
        """The structured total derivative of stage stage_i by variable name."""
        key = (stage_i, name)
        if key in memo:
            return memo[key]
        sp = plans[stage_i]
        value, tangents, y_shape = results[stage_i]
        x_shape = values[name].shape
        total = None
        for k, (what, d_key) in enumerate(sp.directions):
            t = tangents[k]
            if what == "var" and d_key == name:
                if t is None:
                    f = Factor.zero(y_shape, x_shape, dtype)
                elif sp.stage.is_sum:
                    f = Factor.row(np.asarray(t, dtype), x_shape) if x_shape != () else \
                        Factor.scalar(t, dtype)
                elif x_shape == ():
                    f = Factor.column(t, y_shape) if y_shape != () else Factor.scalar(t, dtype)
                elif x_shape != y_shape:
                    raise NotImplementedError(
                        f"{name!r} of shape {x_shape} is broadcast to {y_shape} in "
                        f"{sp.stage.root}, an element-wise result that reads a reduction: its "
                        f"Jacobian by a broadcast variable (neither diagonal nor a row) is "
                        f"not provided. It is for an expression without an inner "
                        f"reduction, and gradients of scalar results are always provided")
                else:
                    f = Factor.diagonal(t, y_shape)
            elif what == "red":
                j = next(i for i, p in enumerate(plans) if p.stage.root is d_key)
                if name not in [v for v in plans[j].stage.vars] and \
                        not self._depends(plans, j, name):
                    continue
                inner = self._factor(plans, results, j, name, values, dtype, memo)
                if t is None:
                    continue
                partial = Factor.column(t, y_shape) if y_shape != () else \
                    Factor.scalar(t, dtype)
                f = partial @ inner
            else:
                continue
            total = f if total is None else total + f
        if total is None:
            total = Factor.zero(y_shape, x_shape, dtype)
        memo[key] = total
        return total

    def _depends(self, plans, j, name):
        st = plans[j].stage
        if name in st.vars:
            return True
        for inner in st.inner:
            i = next(i for i, p in enumerate(plans) if p.stage.root is inner)
            if self._depends(plans, i, name):
                return True
        return False

    def _scratch(self):
        """This thread's buffers for passes over broadcast variables: a
        slab's expanded inputs and per-element partials, kept between calls
        (fresh pages cost more than the work at these sizes) and never
        shared between threads."""
        local = self.__dict__.get("_local")
        if local is None:
            local = self.__dict__.setdefault("_local", threading.local())
        buffers = getattr(local, "buffers", None)
        if buffers is None:
            buffers = local.buffers = {}
        return buffers

    # -- hot-loop kernels ---------------------------------------------------------------
    def kernel(self, wrt=None, *, value=False):
        """Resolve one derivative once; return an :class:`ExprKernel` for hot loops.

        ``k = f.kernel("w")`` takes one ndarray per variable and ``out``,
        best by name: ``k(w=w0, x=x0, out=out)`` (or, with ``value=True``,
        ``k(w=w0, x=x0, value_out=v, out=out)``), at the cost of a
        positional call. Positionally, the variables come in the order of
        ``f.variables`` (their first appearance in the expression, or
        compile's ``variables=``), then ``value_out``, then ``out``:
        ``k.arguments`` and ``repr(k)`` show it. Its arrays must have one
        shape (scalars aside): broadcasting is for the methods. It writes the compact
        Jacobian (and the value) in place with one fused pass and returns
        ``out``. For a single expression without an inner reduction (a sum
        or dot product feeding element-wise work); arithmetic on the value
        of one sum, such as the mean ``sum(e) / N`` or ``log(sum(e))``, is
        allowed, with the variables it reads after the sum given as scalars.

        Examples
        --------
        >>> import numpy as np, fastjac
        >>> y, z = fastjac.var("y"), fastjac.var("z")
        >>> k = fastjac.compile(fastjac.tanh(y) * 2 + z).kernel("y")
        >>> k
        <fastjac expression kernel d/dy: k(y, z, out)>
        >>> k(y=np.zeros(2), z=np.ones(2), out=np.empty(2))
        array([2., 2.])
        """
        names, stacked = self._wrt_list(wrt)
        if stacked:
            raise ValueError("a kernel differentiates by one variable; pass its name")
        if not self._single or (self._has_inner and self._step is None):
            raise ValueError("kernel() needs a single expression without an inner reduction "
                             "(a sum or dot feeding element-wise work; arithmetic on one "
                             "sum's value, such as sum(e) / N, is fine); use jacobian()")
        return _expr.ExprKernel(self, names[0], bool(value))

    def _fast_plan(self, name, mask, with_value):
        scalar_vars = tuple(bool(mask >> i & 1) for i in range(len(self.variables)))
        plan = self._plan(scalar_vars, (name,), with_value)
        plans, out_idx, _ = plan.stages
        if len(plans) != 1:
            arrays = [v for v, s in zip(self.variables, scalar_vars)
                      if v in self._step[0].vars and not s]
            if not arrays:
                raise ValueError("the arithmetic after the sum is too large for a kernel; "
                                 "use jacobian()")
            raise ValueError(
                f"{', '.join(arrays)} {'is' if len(arrays) == 1 else 'are'} used after the sum, "
                f"which a kernel computes on the sum's value: pass a scalar (a 0-d array) "
                f"there, or use jacobian()")
        sp = plans[out_idx[0]]
        pos = {n: i for i, n in enumerate(self.variables)}
        where = {"out": [-1, -1], "acc": [-1, -1]}   # [value, tangent] per kind of sink
        if sp.value is not None:
            where[sp.value[0]][0] = sp.value[1]
        rec = sp.tangents[0] if sp.tangents else None
        if rec is not None:
            where[rec[0]][1] = rec[1]
        return _expr.FastPlan(
            sp.program,
            [pos[a] for a in sp.arrays],
            [pos[key] if kind == "var" else -1 for kind, key in sp.scalars],
            [key if kind == "const" else 0.0 for kind, key in sp.scalars],
            sp.stage.is_sum,
            value_out=where["out"][0], value_acc=where["acc"][0],
            tan_out=where["out"][1], tan_acc=where["acc"][1],
            tan_scalar=sp.stage.is_sum and scalar_vars[pos[name]], step=sp.step)

    # -- public methods ---------------------------------------------------------------
    def value(self, *, out=None, **variables):
        """The value of the expression(s): an array, a NumPy scalar (after a
        sum), or a tuple of them for a list of expressions."""
        if _dask_in(variables):
            from . import _dask
            return _dask.expression(self, None, "numerator", "compact", out, None, True, False,
                                    variables)
        values_dtype, values = self._values(variables)
        plans, out_idx, results = self._run(values, values_dtype, (), True, value_out=out)
        vals = tuple(_present(results[i][0]) for i in out_idx)
        return vals[0] if self._single else vals

    def jacobian(self, wrt=None, *, layout="numerator", format="compact", out=None,
                 **variables):
        """The Jacobian (or gradient) with respect to one variable, or the
        stacked Jacobian with respect to a list of them.

        Parameters
        ----------
        wrt : str or list of str, optional
            The variable; default: the ``wrt`` given to compile (stacked if
            it names several). For a list of several (scalar-valued)
            expressions, a single name gives their stacked Jacobian by that
            variable: the numbers of ``wrt=[name]``, shaped in compact
            format as (number of expressions,) + the variable's shape (so
            ``(2,)`` for two expressions and a scalar variable).
        layout : {"numerator", "denominator"}
            Applies to "dense" and the sparse formats only; the compact
            result is the same in both layouts (``layout`` is still checked).
        format : {"compact", "dense", "csr", "csc", "coo", "dia", "sparse", "operator"}
            "compact": the diagonal (element-wise result by an array), the
            vector dy/dz (by a scalar z), the gradient shaped like x (scalar
            result), a NumPy scalar, or, for a Jacobian that is none of those
            (a reduction feeding element-wise work), a :class:`Factor`
            ``diag(d) + U V^T``. Stacked Jacobians are 2-D (functions x
            variables' elements, i.e. numerator layout) in compact format.
            "operator": a ``scipy.sparse.linalg.LinearOperator`` keeping the
            structure (diagonal, row, column, or ``LowRankOperator`` for
            diag + U V^T and for stacked Jacobians), transposed in
            denominator layout; needs SciPy.
        out : ndarray, optional
            For "compact" or "dense", where to write the result.
        **variables
            The value of every variable of the expression.

        Examples
        --------
        >>> import fastjac
        >>> x, y = fastjac.var("x"), fastjac.var("y")
        >>> fg = fastjac.compile([3 * x**2 * y, 2 * x + y**8])
        >>> fg.jacobian(["x", "y"], x=2.0, y=1.0)     # [[6xy, 3x^2], [2, 8y^7]]
        array([[12., 12.],
               [ 2.,  8.]])
        >>> fg.jacobian("x", x=2.0, y=1.0)            # [d f/dx, d g/dx]
        array([12.,  2.])
        """
        r = self._fast(wrt, layout, format, out, None, False, variables)
        if r is not None:
            return r[1]
        return self.value_and_jacobian(wrt, layout=layout, format=format, out=out,
                                       _want_value=False, **variables)[1]

    gradient = jacobian

    def _fast(self, wrt, layout, format, out, value_out, want_value, variables):
        """(value, jacobian) through a cached ExprKernel for a single-stage
        expression, one variable (wrt=None: the one compiled), the compact
        format and arrays already as the kernels want them
        (ExprKernel._call_kw); else None, and the general path runs."""
        if wrt is None:
            wrt = self._default_wrt
        if not (self._fast_ok and type(wrt) is str and type(format) is str
                and format == "compact" and type(layout) is str
                and (layout == "numerator" or layout == "denominator")):
            return None
        if self._step is not None:
            for name in self._step[0].vars:         # read after the sum: scalars only
                v = variables.get(name)
                if type(v) is not np.ndarray or v.ndim != 0:
                    return None
        k = self._fast_kernels.get((wrt, want_value))
        if k is None:
            if wrt not in self.wrt:
                return None
            k = self._fast_kernels[(wrt, want_value)] = _expr.ExprKernel(self, wrt, want_value)
        r = k._call_kw(variables, out, value_out)
        if r is None:
            return None
        return _present(r[0]), (_present(r[1]) if out is None else r[1])

    def value_and_jacobian(self, wrt=None, *, layout="numerator", format="compact", out=None,
                           value_out=None, _want_value=True, **variables):
        """``(value, jacobian)`` from one pass over the data (see :meth:`jacobian`).

        ``value_out`` receives the value when it is an array."""
        r = self._fast(wrt, layout, format, out, value_out, _want_value, variables)
        if r is not None:
            return r
        if _dask_in(variables):     # Dask arrays in: lazy Dask arrays out (_dask.py)
            from . import _dask
            return _dask.expression(self, wrt, layout, format, out, value_out, _want_value,
                                    True, variables)
        denominator = check_layout(layout)
        fmt = check_format(format)
        names, stacked = self._wrt_list(wrt)
        dtype, values = self._values(variables)
        if stacked or len(self._outputs) > 1:
            return self._stacked(names, values, dtype, denominator, fmt, out, value_out,
                                 _want_value, one_variable=not stacked)
        name = names[0]
        tangent_out = None
        if out is not None and fmt == "compact" and \
                isinstance(out, np.ndarray) and out.flags.c_contiguous and out.flags.aligned:
            tangent_out = {0: out}      # written in place by the pass, no copy
        plans, out_idx, results = self._run(values, dtype, (name,), _want_value,
                                            value_out=value_out, tangent_out=tangent_out)
        x_shape, y_shape = values[name].shape, results[out_idx[0]][2]
        if len(plans) == 1 and x_shape not in ((), y_shape) and y_shape != () \
                and name in plans[0].arrays:
            # one element-wise stage by a variable broadcast to its shape
            return self._broadcast_jacobian(plans[0], results[0], x_shape, dtype, denominator,
                                            fmt, out)
        if fmt == "compact" and len(plans) == 1:
            # one stage: its tangent is the compact Jacobian already
            sp = plans[-1]
            t = results[-1][1][0] if sp.directions else None
            if t is not None:
                value = _present(results[-1][0])
                if out is None or t is out:
                    return value, _present(t)
                t = np.asarray(t)
                check_out(out, t.shape, dtype)
                out[...] = t
                return value, out
        memo = {}
        factor = self._factor(plans, results, out_idx[0], name, values, dtype, memo)
        value = _present(results[out_idx[0]][0])
        return value, _deliver(factor, denominator, fmt, out)

    @staticmethod
    def _broadcast_jacobian(sp, result, x_shape, dtype, denominator, fmt, out):
        """(value, Jacobian) of an element-wise result y of shape S by a
        variable of ``x_shape`` broadcast to S: one entry per element of y,
        the partial computed there (compact: an array of S), the structure
        of fastjac.jacobian's broadcast operands."""
        value, tangents, y_shape = result
        st = _broadcast.structure_of(y_shape, x_shape, False)
        _broadcast.check_result(st, False, dtype, denominator, fmt, out)
        t = tangents[0] if sp.directions else None
        partials = np.zeros(y_shape, dtype) if t is None else t
        return _present(value), _broadcast.deliver(st, partials, False, denominator, fmt,
                                                   t is None, out)

    # -- products with the Jacobian ------------------------------------------------------
    # -- second derivatives of a scalar loss (fastjac._batch) -------------------------
    def _as_loss(self):
        if self.__dict__.get("_loss") is None:
            if not self._single:
                raise ValueError("second derivatives are for one scalar expression; this "
                                 "compiled expression has several outputs")
            from ._batch import CompiledLoss
            self._loss = CompiledLoss(self._outputs[0], self.wrt, variables=self.variables)
        return self._loss

    def hessian(self, wrt=None, *, format="compact", **variables):
        """The Hessian of a scalar expression (a weighted sum of sums): see
        :meth:`fastjac._batch.CompiledLoss.hessian`. Element-wise work then a
        sum has a diagonal Hessian: "compact" returns that diagonal."""
        return self._as_loss().hessian(wrt, format=format, **variables)

    def hessian_diagonal(self, wrt=None, **variables):
        """The diagonal of the Hessian: see :meth:`fastjac._batch.CompiledLoss.hessian_diagonal`."""
        return self._as_loss().hessian_diagonal(wrt, **variables)

    def hvp(self, wrt, v, **variables):
        """A Hessian-vector product: see :meth:`fastjac._batch.CompiledLoss.hvp`."""
        return self._as_loss().hvp(wrt, v, **variables)

    def jvp(self, wrt, tangent, **variables):
        """``(value, J @ tangent)``: the Jacobian-vector product.

        Parameters
        ----------
        wrt : str or list of str
            The variable (or variables) the tangent moves.
        tangent : array_like, or a list of them for a list ``wrt``
            Shaped like its variable (a number for a scalar variable); with
            several variables the products add up: J_1 t_1 + J_2 t_2 + ...
        **variables
            The value of every variable of the expression.

        Returns
        -------
        (value, product)
            The value of the expression and J @ tangent, shaped like it (a
            NumPy scalar after a sum), in the expression's dtype.

        Notes
        -----
        An expression without an inner reduction (no sum or dot feeding
        element-wise work) runs one fused pass: the tangents are inputs of
        the program, seeded where the variables are read, and no Jacobian
        is stored (the same interpreter, and compiled C loop from 65 536
        elements, as :meth:`jacobian`). With an inner reduction, one pass
        computes the value and the structured Jacobians (as :meth:`jacobian`
        does) and the products are then taken on them in O(n) with NumPy.

        Examples
        --------
        >>> import numpy as np, fastjac
        >>> w, x = fastjac.var("w"), fastjac.var("x")
        >>> f = fastjac.compile(w * x)
        >>> f.jvp(["w", "x"], [np.ones(2), np.zeros(2)], w=np.array([1.0, 2.0]),
        ...       x=np.array([3.0, 4.0]))
        (array([3., 8.]), array([3., 4.]))
        """
        call = self._product_calls.get(("jvp", wrt)) if type(wrt) is str else None
        if call is not None:
            result = call(variables, tangent)
            if result is not None:
                return result
        names, seeds, dtype, values = self._product_args(wrt, tangent, variables)
        if names is None:           # Dask variables: seeds is the lazy result
            return seeds
        fused = self._fused("jvp", names, seeds, None, values, dtype)
        if fused is not None:
            return fused[0], fused[1][0]
        plans, out_idx, results = self._run(values, dtype, tuple(names), True)
        i = out_idx[0]
        memo = {}
        total = None
        y_shape = results[i][2]
        for name, t in zip(names, seeds):
            f = self._factor(plans, results, i, name, values, dtype, memo)
            r = f._times(t.reshape(-1), "jvp")
            total = r if total is None else total + r
        product = np.asarray(total, dtype).reshape(y_shape)
        return _present(results[i][0]), _present(product)

    def vjp(self, wrt, cotangent, **variables):
        """``(value, cotangent^T J)``: the vector-Jacobian product.

        ``cotangent`` is shaped like the expression's value (a number after
        a sum). The result is shaped like the variable -- for a scalar
        variable, the sum over the elements it was expanded to -- or, for a
        list ``wrt``, a tuple of one such result per variable. The other
        parameters and the cost are those of :meth:`jvp`.

        Examples
        --------
        >>> import numpy as np, fastjac
        >>> w, z = fastjac.var("w"), fastjac.var("z")
        >>> f = fastjac.compile(w * z)
        >>> f.vjp(["w", "z"], np.ones(2), w=np.array([1.0, 2.0]), z=3.0)
        (array([3., 6.]), (array([3., 3.]), np.float64(3.0)))
        """
        call = self._product_calls.get(("vjp", wrt)) if type(wrt) is str else None
        if call is not None:
            result = call(variables, cotangent)
            if result is not None:
                return result
        names, lazy, dtype, values = self._product_args(wrt, None, variables, "vjp", cotangent)
        if names is None:           # Dask variables: the lazy result
            return lazy
        stacked = not isinstance(wrt, str)
        fused = self._fused("vjp", names, None, cotangent, values, dtype)
        if fused is not None:
            value, grads = fused
            return value, (tuple(grads) if stacked else grads[0])
        plans, out_idx, results = self._run(values, dtype, tuple(names), True)
        i = out_idx[0]
        y_shape = results[i][2]
        u = _product_operand(cotangent, y_shape, dtype, "cotangent", "the expression's value")
        memo = {}
        grads = []
        for name in names:
            f = self._factor(plans, results, i, name, values, dtype, memo)
            g = np.asarray(f.T._times(u.reshape(-1), "vjp"), dtype)
            grads.append(_present(g.reshape(values[name].shape)))
        return _present(results[i][0]), (tuple(grads) if stacked else grads[0])

    def _fused(self, mode, names, seeds, cotangent, values, dtype):
        """(value, [results]) of jvp or vjp from one fused pass (the tangents
        or the cotangent are inputs of the program), or None for an
        expression with an inner reduction (those go through factors)."""
        if self._has_inner:
            return None
        key = (mode, names) + tuple(values[n].ndim == 0 for n in self.variables)
        plan = self._product_plans.get(key)
        if plan is None:
            plan = self._product_plans[key] = self._product_plan(mode, names, values)
        stage, prog, value_rec, recs, variables, array_src, scalar_src = plan
        shape = _common_shape(variables, values)
        y_shape = () if stage.is_sum else shape
        u = None
        if mode == "vjp":
            u = np.ascontiguousarray(_product_operand(cotangent, y_shape, dtype, "cotangent",
                                                      "the expression's value"))
        seeds = [] if seeds is None else [np.ascontiguousarray(t) for t in seeds]
        # where each input comes from: a variable (by name), tangent i, or the cotangent
        inputs = [values[src] if type(src) is str else (u if src < 0 else seeds[src])
                  for src in array_src]
        numbers = [values[src].item() if type(src) is str else
                   (src[0] if type(src) is tuple else (u.item() if src < 0 else
                                                       seeds[src].item()))
                   for src in scalar_src]
        outs = [None] * prog.n_outs
        reduce_to = [None] * prog.n_outs
        if value_rec[0] == "out":
            outs[value_rec[1]] = np.empty(y_shape, dtype)
        shapes = [y_shape] if mode == "jvp" else [values[n].shape for n in names]
        for rec, t_shape in zip(recs, shapes):
            if rec is not None and rec[0] == "out":
                if t_shape != shape:        # the VJP by a broadcast variable: summed
                    reduce_to[rec[1]] = t_shape
                else:
                    outs[rec[1]] = np.empty(t_shape, dtype)
        sums = _broadcast_run(prog, tuple(inputs), numbers, outs, reduce_to, shape, dtype,
                              self._scratch())
        if len(names) == 1 and recs[0] is not None and \
                all(values[v].shape == shape for v in variables):
            # later calls of this signature: _ProductCall, checks and run only
            self._product_calls[(mode, names[0])] = _ProductCall(
                self.variables, values, dtype, mode, names[0], plan, stage.is_sum)

        def fetch(rec, t_shape):
            if rec is None:                         # structurally zero
                return _present(np.zeros(t_shape, dtype))
            if rec[0] != "out":
                return dtype.type(sums[rec[1]])
            return _present(outs[rec[1]])
        return fetch(value_rec, y_shape), [fetch(r, t) for r, t in zip(recs, shapes)]

    def _product_plan(self, mode, names, values):
        """The fused program of jvp or vjp for this signature, and the
        sources of its inputs: a variable's name, i for tangent i, -1 for
        the cotangent, (value,) for a constant."""
        scalar_set = frozenset(n for n in self.variables if values[n].ndim == 0)
        stage = _Stage(self._outputs[0])
        prog, value_rec, recs, arrays, scalars = _build_stage(
            stage, scalar_set, [("var", n) for n in names], True, {}, products=mode)
        array_src = [-1 if a == _COTANGENT else
                     names.index(a[len(_TANGENT):]) if a.startswith(_TANGENT) else a
                     for a in arrays]
        scalar_src = [(source,) if kind == "const" else source if kind == "var" else
                      names.index(source) if kind == "tangent" else -1
                      for kind, source in scalars]
        variables = [a for a in arrays if not a.startswith("\x00")]
        return stage, prog, value_rec, recs, variables, array_src, scalar_src

    def _product_args(self, wrt, tangent, variables, mode="jvp", cotangent=None):
        """The checks of jvp (tangent given) and vjp: (names, tangents, dtype,
        values); with Dask variables, (None, the lazy result, None, None)."""
        if not self._single:
            raise ValueError("jvp and vjp take a single expression; compile each output "
                             "of a list on its own")
        if wrt is None or not isinstance(wrt, (str, list, tuple)):
            raise ValueError(f"wrt must be a variable name or a list of names, got {wrt!r}")
        names, stacked = self._wrt_list(wrt)
        if len(set(names)) != len(names):
            raise ValueError(f"wrt names a variable twice: {list(names)}")
        seed = tangent if mode == "jvp" else cotangent
        if _dask_in(variables, seed):
            from . import _dask         # Dask arrays in: lazy Dask arrays out (_dask.py)
            return None, _dask.products(self, mode, names, stacked, seed, variables), None, None
        dtype, values = self._values(variables)
        seeds = None
        if tangent is not None:
            tangent = _tangent_list(tangent, names, stacked)
            seeds = [_product_operand(t, values[n].shape, dtype, f"the tangent of {n!r}",
                                      f"variable {n!r}") for n, t in zip(names, tangent)]
        return tuple(names), seeds, dtype, values

    def _stacked(self, names, values, dtype, denominator, fmt, out, value_out, want_value,
                 one_variable=False):
        """The functions x elements matrix of the outputs' gradients; with
        one_variable (wrt a single name), compact results are shaped
        (number of outputs,) + that variable's shape."""
        plans, out_idx, results = self._run(values, dtype, tuple(names), True)
        rows = []
        for i in out_idx:
            if results[i][2] != ():
                raise ValueError(
                    "the stacked Jacobian of a list of expressions (or of wrt given as a "
                    "list) needs scalar-valued expressions (use fastjac.sum, fastjac.dot, "
                    "or scalar variables); for the Jacobian of an element-wise expression, "
                    "compile it on its own and ask for one variable at a time")
            memo = {}
            parts = []
            for name in names:
                f = self._factor(plans, results, i, name, values, dtype, memo)
                parts.append(f._full().reshape(-1))
            rows.append(np.concatenate(parts))
        M = np.array(rows, dtype=dtype).reshape(len(out_idx), -1)
        vals = tuple(_present(results[i][0]) for i in out_idx)
        value = vals[0] if self._single else vals
        if fmt == "compact":
            if one_variable:
                M = M.reshape((len(out_idx),) + values[names[0]].shape)
            if out is not None:
                check_out(out, M.shape, dtype)
                out[...] = M
                return value, out
            return value, M
        if fmt == "operator":
            check_no_out(fmt, out)
            return value, _layout.operators().from_matrix(M, denominator)
        return value, _layout.as_matrix(M, "by_scalar", denominator, fmt, False, out)


class _ProductCall:
    """jvp or vjp by one variable for the signature of a call the full path
    made (which variables are scalars, the dtype), without broadcasting:
    the checks of that case, done with a few attribute reads, then the
    fused program. Returns None for any other call (the full path takes
    it, with every check and its messages)."""

    def __init__(self, order, values, dtype, mode, wrt, plan, is_sum):
        _, self.prog, value_rec, (rec,), _, array_src, scalar_src = plan
        self.order, self.dtype, self.is_double = order, dtype, dtype == np.float64
        self.scalar = tuple(values[n].ndim == 0 for n in order)
        self.wrt_index, self.mode, self.is_sum = order.index(wrt), mode, is_sum
        self.value_out = value_rec[1] if value_rec[0] == "out" else -1
        self.value_acc = value_rec[1] if value_rec[0] == "acc" else -1
        self.product_out = rec[1] if rec[0] == "out" else -1
        self.product_acc = rec[1] if rec[0] == "acc" else -1
        # inputs: >= 0 a variable's place in order, -1 the tangent or cotangent
        self.array_src = [order.index(a) if type(a) is str else -1 for a in array_src]
        self.scalar_src = [(order.index(a), None) if type(a) is str else
                           (-1, a[0]) if type(a) is tuple else (-2, None)
                           for a in scalar_src]

    def __call__(self, variables, seed):
        dtype, scalar = self.dtype, self.scalar
        if len(variables) != len(scalar):
            return None
        xs, shape = [], None
        for name, is_scalar in zip(self.order, scalar):
            x = variables.get(name)
            if type(x) is not np.ndarray or x.dtype is not dtype or (x.ndim == 0) != is_scalar:
                return None
            if not is_scalar:
                if shape is None:
                    shape = x.shape
                if x.shape != shape or not x.flags.carray:
                    return None
            xs.append(x)
        shape = () if shape is None else shape
        # the seed: the tangent, of the variable's shape; the cotangent, of the value's
        if self.mode == "jvp":
            seed_shape = () if scalar[self.wrt_index] else shape
        else:
            seed_shape = () if self.is_sum else shape
        if seed_shape == () and (type(seed) is float or type(seed) is dtype.type):
            seed = np.array(seed, dtype)            # a number (NumPy's of the dtype too)
        if type(seed) is not np.ndarray or seed.dtype is not dtype or seed.shape != seed_shape \
                or not seed.flags.carray:
            return None
        inputs = tuple(xs[i] if i >= 0 else seed for i in self.array_src)
        numbers = [float(xs[i]) if i >= 0 else (c if i == -1 else float(seed))
                   for i, c in self.scalar_src]
        y_shape = () if self.is_sum else shape
        outs = [None] * self.prog.n_outs
        if self.value_out >= 0:
            outs[self.value_out] = np.empty(y_shape, dtype)
        if self.product_out >= 0:
            outs[self.product_out] = np.empty(y_shape if self.mode == "jvp" else shape, dtype)
        sums = self.prog.run(inputs, numbers, tuple(outs), math.prod(shape), self.is_double)
        value = (outs[self.value_out] if self.value_out >= 0 else
                 dtype.type(sums[self.value_acc]))
        product = (outs[self.product_out] if self.product_out >= 0 else
                   dtype.type(sums[self.product_acc]))
        return _present(value), _present(product)


def _common_shape(names, values):
    """The shape the array variables ``names`` broadcast to (() if there are
    none), else ValueError naming their shapes."""
    shape = None
    for name in names:
        s = values[name].shape
        if shape is None:
            shape = s
        elif s != shape:
            return _broadcast.broadcast_named({name: values[name].shape for name in names},
                                              "the variables of an element-wise expression")
    return () if shape is None else shape


def _widened(x, shape):
    """x is an array variable of another shape than ``shape`` (broadcast to it)."""
    return x.ndim != 0 and x.shape != shape


def _expanded(x, shape):
    """x as the program reads it: itself, or a C-contiguous copy broadcast to
    ``shape`` (|shape| elements) when it is an array of another shape."""
    if not _widened(x, shape):
        return x
    return np.ascontiguousarray(np.broadcast_to(x, shape))


# Elements per slab of a pass over broadcast variables: large enough for the
# pass's threads and compiled code (from 65 536), small enough that a slab's
# expanded inputs and per-element partials stay in the L2/L3 caches.
SLAB = 1 << 18


def _broadcast_run(program, arrays, scalars, outs, reduce_to, shape, dtype, scratch):
    """program.run over the elements of ``shape`` (S); the sums.

    When every array has the shape S, one run. Otherwise slab by slab along
    S's first axis: a slab of an input is a view of it, or a copy broadcast
    to the slab (made once for an input constant along that axis); outs[j]
    (of S, or None where reduce_to[j] is a shape) is written slab by slab,
    and an output with reduce_to[j] is a slab's temporary summed over the
    broadcast axes into a float64 total of that shape, which replaces
    outs[j] (in the run's dtype). The slabs' sums are added in order.
    Slab-sized buffers come from ``scratch`` (CompiledExpression._scratch).
    """
    is_double = dtype == np.float64
    for x in arrays:
        if x.ndim and x.shape != shape and shape:       # (shape (): one element)
            break
    else:
        return program.run(arrays, scalars, tuple(outs), math.prod(shape), is_double)
    ndim = len(shape)
    aligned = [x.reshape((1,) * (ndim - x.ndim) + x.shape) for x in arrays]
    rows, width = shape[0], math.prod(shape[1:])
    step = max(1, SLAB // max(width, 1))
    totals = {j: np.zeros((1,) * (ndim - len(k)) + tuple(k), np.float64)
              for j, k in enumerate(reduce_to) if k is not None}
    filled = set()

    def buffer(key, slab):
        b = scratch.get(key)
        if b is None or b.shape != slab or b.dtype != dtype:
            b = scratch[key] = np.empty(slab, dtype)
        return b

    sums = [0.0] * program.n_acc
    for r0 in range(0, rows, step):
        m = min(step, rows - r0)
        slab = (m,) + shape[1:]
        ins = []
        for i, x in enumerate(aligned):
            if x.shape[0] == 1 and rows != 1:
                part = x                        # the same block for every slab
            else:
                part = x[r0:r0 + m]
            if part.shape == slab:
                ins.append(part)
                continue
            block = buffer(("in", i, m), slab)
            if part is not x or (i, m) not in filled:
                np.copyto(block, part)              # broadcast to the slab
                filled.add((i, m))
            ins.append(block)
        slab_outs = []
        for j, o in enumerate(outs):
            if j in totals:
                o = buffer(("out", j, m), slab)
            elif o is not None:
                o = o.reshape(shape)[r0:r0 + m]
            slab_outs.append(o)
        part = program.run(tuple(ins), scalars, tuple(slab_outs), m * width, is_double)
        sums = [a + b for a, b in zip(sums, part)]
        for j, total in totals.items():
            if total.shape[0] == 1:
                total += _broadcast.sum_to_shape(slab_outs[j], (1,) + total.shape[1:])
            else:
                total[r0:r0 + m] = _broadcast.sum_to_shape(slab_outs[j], (m,) + total.shape[1:])
    for j, total in totals.items():
        outs[j] = total.astype(dtype).reshape(reduce_to[j])
    return sums


def _summed_widened(result, sp, widened, values, dtype):
    """A scalar step's (value, tangents, shape) with the tangents by widened
    variables summed to their variables' shapes."""
    if not any(widened):
        return result
    value, tangents, y_shape = result
    tangents = [np.asarray(_broadcast.sum_to_shape(t, values[d[1]].shape), dtype)
                if w and t is not None else t
                for t, w, d in zip(tangents, widened, sp.directions)]
    return value, tangents, y_shape


def _tangent_list(tangent, names, stacked):
    """jvp's tangents as a list, one per name of wrt (checked)."""
    if not stacked:
        return [tangent]
    if not isinstance(tangent, (list, tuple)) or len(tangent) != len(names):
        raise ValueError(f"tangent must be a list of {len(names)} arrays, one "
                         f"per variable of wrt={list(names)}")
    return tangent


def _product_operand(v, shape, dtype, what, of):
    """A tangent or cotangent as an array of ``shape`` in ``dtype``."""
    arr = np.asarray(v)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{what} has dtype {arr.dtype}; it must be real numbers")
    if arr.shape != tuple(shape):
        raise ValueError(f"{what} has shape {arr.shape} but {of} has shape {tuple(shape)}; "
                         f"they must match")
    return arr.astype(dtype, copy=False)


def _dask_in(variables, seed=None):
    """Some variable, or the tangent(s) or cotangent ``seed``, is a Dask
    array (never imports Dask: without dask.array loaded there is none)."""
    module = sys.modules.get("dask.array")
    if module is None:
        return False
    seeds = seed if isinstance(seed, (list, tuple)) else (seed,)
    return any(isinstance(v, module.Array) for v in variables.values()) or \
        any(isinstance(t, module.Array) for t in seeds)


def _out_target(out, shape, dtype, what):
    check_out(out, shape, dtype, what)
    if not (out.flags.c_contiguous and out.flags.aligned):
        raise ValueError(f"out for the {what} must be C-contiguous")
    return out


def _present(v):
    if isinstance(v, np.ndarray) and v.ndim == 0:
        return v[()]
    return v


def _deliver(factor, denominator, fmt, out):
    if fmt == "compact":
        c = factor.compact()
        if out is None:
            return c
        if isinstance(c, Factor):
            raise ValueError("this Jacobian is not diagonal (a reduction feeds element-wise "
                             "work), so it has no compact array form for out=; use "
                             "format='dense' with out=")
        if c is out:
            return out
        c = np.asarray(c)
        check_out(out, c.shape, c.dtype)
        out[...] = c
        return out
    return factor.to_matrix(denominator, fmt, out)


def _unpickle_compiled(outputs, wrt, variables):
    return CompiledExpression(outputs, wrt, variables=variables)


def compile(expr, wrt=None, *, variables=None):
    """Analyse an expression (or a list of them) once, for fast repeated calls.

    Parameters
    ----------
    expr : Expr or list of Expr
        Built from :func:`var`, numbers, ``+ - * / **``, ``>``, ``<`` and the
        functions of fastjac (``tanh``, ``maximum``, ``sum``, ``dot``, ...).
    wrt : str or list of str, optional
        The variables to differentiate by (default: all, in the order of
        ``variables``).
    variables : list or tuple of str, optional
        The order of the variables: ``.variables`` of the result, and the
        positional order of its kernels (``k(z, y, out)`` for
        ``variables=("z", "y")``). Every variable of the expression exactly
        once, else ValueError. Default: the order in which the variables
        first appear in the expression, which is easy to misjudge: for
        ``sum(log(1 + exp(-y * z)))`` it is ("y", "z").

    Returns
    -------
    CompiledExpression, or CompiledLoss
        A :class:`CompiledLoss` for a scalar loss over a batch: an
        expression with ``X @ w`` (:func:`matmul`), :func:`mean` or
        ``sum(..., axis=...)``, a weighted sum of such reductions; it adds
        ``hessian``, ``hessian_diagonal`` and ``hvp``, each in one pass over X.

    Examples
    --------
    >>> import numpy as np, fastjac
    >>> w, x = fastjac.var("w"), fastjac.var("x")
    >>> f = fastjac.compile(fastjac.sum(fastjac.tanh(w * x) + 3), wrt="w")
    >>> f.jacobian(w=np.zeros(3), x=np.array([1.0, 2.0, 3.0]))
    array([1., 2., 3.])
    """
    from . import _batch
    if isinstance(expr, Expr) and _batch.is_loss(expr):
        return _batch.CompiledLoss(expr, wrt, variables=variables)
    return CompiledExpression(expr, wrt, variables=variables)
