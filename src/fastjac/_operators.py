"""The derivative records: one line per derivative the kernels compute.

Each record names a derivative (``code``, the name Python uses), its
compile-time tag in the Cython loops (``tag``), the function of
_formulas.h that computes it (``formula``: fj_d_<formula>_f64/_f32), what
bounds its speed (``cost``) and whether its vectorised formula has
exceptions (``exceptional``: fj_e_<formula> says where, fj_x_<formula>
computes those elements on libm).

The build (_codegen.py, called by setup.py) turns this list into the
Cython glue: the tag structs, the DerivativeCode enum, the fused type
``Derivative``, ``derivative()`` and the tag properties in _derivatives.pxd,
and the code-to-tag switches of _loops.pxd and _rows.pxd.
tests/test_codegen.py fails when a generated file is stale.

``cost``:
    "memory"   memory-bound: threads only from a large n;
    "compute"  transcendental or a division per element: threads from a
               smaller n (``costly``);
    "power"    a**b's: a double-double logarithm and an exponential per
               element, threads from about 500 elements (``very_costly``);
    "rsqrt"    0.5 / sqrt(a): compute-bound except on AVX-512, where
               _vecmath.h's Newton iteration makes it memory-bound.

This module is plain data (no import of fastjac): setup.py reads it before
anything is built. The order of the records is the order of the enum.
"""
from collections import namedtuple

Derivative = namedtuple("Derivative", "code tag formula cost exceptional binary")

_B, _U = True, False    # a derivative of a binary operator, or of a unary function

DERIVATIVES = (
    # -- first derivatives of the binary operators (a: first operand, b: second)
    Derivative("add_da", "AddDa", "one", "memory", False, _B),
    Derivative("add_db", "AddDb", "one", "memory", False, _B),
    Derivative("subtract_da", "SubtractDa", "one", "memory", False, _B),
    Derivative("subtract_db", "SubtractDb", "minus_one", "memory", False, _B),
    Derivative("multiply_da", "MultiplyDa", "multiply_da", "memory", False, _B),
    Derivative("multiply_db", "MultiplyDb", "multiply_db", "memory", False, _B),
    Derivative("divide_da", "DivideDa", "divide_da", "memory", False, _B),
    Derivative("divide_db", "DivideDb", "divide_db", "memory", True, _B),
    Derivative("maximum_da", "MaximumDa", "maximum_da", "memory", False, _B),
    Derivative("maximum_db", "MaximumDb", "maximum_db", "memory", False, _B),
    Derivative("minimum_da", "MinimumDa", "minimum_da", "memory", False, _B),
    Derivative("minimum_db", "MinimumDb", "minimum_db", "memory", False, _B),
    Derivative("power_da", "PowerDa", "power_da", "power", True, _B),
    Derivative("power_db", "PowerDb", "power_db", "power", True, _B),
    Derivative("zero", "Zero", "zero", "memory", False, _B),        # greater, less
    # -- first derivatives of the unary functions (of a)
    Derivative("one", "One", "one", "memory", False, _U),           # identity
    Derivative("negative", "NegativeD", "minus_one", "memory", False, _U),
    Derivative("square", "SquareD", "square", "memory", False, _U),
    Derivative("sqrt", "SqrtD", "sqrt", "rsqrt", False, _U),
    Derivative("exp", "ExpD", "exp", "compute", True, _U),
    Derivative("log", "LogD", "log", "memory", False, _U),
    Derivative("sin", "SinD", "sin", "compute", True, _U),
    Derivative("cos", "CosD", "cos", "compute", True, _U),
    Derivative("tanh", "TanhD", "tanh", "compute", False, _U),
    Derivative("sigmoid", "SigmoidD", "sigmoid", "compute", False, _U),
    Derivative("relu", "ReluD", "relu", "memory", False, _U),
    Derivative("abs", "AbsD", "abs", "memory", False, _U),
    # -- second derivatives (sum_hessian) without a first-derivative twin
    Derivative("two", "Two", "two", "memory", False, _U),
    Derivative("divide_dab", "DivideDab", "divide_dab", "memory", False, _B),
    Derivative("divide_dbb", "DivideDbb", "divide_dbb", "compute", False, _B),
    Derivative("power_daa", "PowerDaa", "power_daa", "power", False, _B),
    Derivative("power_dab", "PowerDab", "power_dab", "power", False, _B),
    Derivative("power_dbb", "PowerDbb", "power_dbb", "power", False, _B),
    Derivative("sqrt_dd", "SqrtDD", "sqrt_dd", "compute", False, _U),
    Derivative("log_dd", "LogDD", "log_dd", "memory", False, _U),
    Derivative("cos_dd", "CosDD", "cos_dd", "compute", False, _U),
    Derivative("tanh_dd", "TanhDD", "tanh_dd", "compute", False, _U),
    Derivative("sigmoid_dd", "SigmoidDD", "sigmoid_dd", "compute", False, _U),
    # -- the functions added later, first and second derivatives
    Derivative("softplus", "SoftplusD", "softplus", "compute", False, _U),
    Derivative("log_sigmoid", "LogSigmoidD", "log_sigmoid", "compute", False, _U),
    Derivative("log_sigmoid_dd", "LogSigmoidDD", "log_sigmoid_dd", "compute", False, _U),
    Derivative("logaddexp_da", "LogaddexpDa", "logaddexp_da", "compute", False, _B),
    Derivative("logaddexp_db", "LogaddexpDb", "logaddexp_db", "compute", False, _B),
    Derivative("logaddexp_daa", "LogaddexpDaa", "logaddexp_daa", "compute", False, _B),
    Derivative("logaddexp_dab", "LogaddexpDab", "logaddexp_dab", "compute", False, _B),
    Derivative("log1p", "Log1pD", "log1p", "memory", False, _U),
    Derivative("log1p_dd", "Log1pDD", "log1p_dd", "memory", False, _U),
    Derivative("log2", "Log2D", "log2", "memory", False, _U),
    Derivative("log2_dd", "Log2DD", "log2_dd", "memory", False, _U),
)


def summed_over_rows(d):
    """True for the derivatives that the broadcast sums (_rows.pxd) add
    straight into their accumulators: those of the binary operators, but
    the mixed second derivatives d2/da db, which no sum over rows needs."""
    return d.binary and not d.code.endswith("_dab")


def enum_name(d):
    """The C enum constant of a derivative: its tag in upper snake case
    (AddDa -> ADD_DA, Log1pD -> LOG1P_D, SqrtDD -> SQRT_DD)."""
    out = []
    for i, ch in enumerate(d.tag):
        if ch.isupper() and i and (d.tag[i - 1].islower() or d.tag[i - 1].isdigit()):
            out.append("_")
        out.append(ch.upper())
    return "".join(out)


# -- the operators ------------------------------------------------------------------
#
# One record per operator of ``jacobian``, ``sum_gradient``, ``sum_hessian``
# and of expressions:
#   name         the operator's name (fastjac.jacobian("exp", ...), fastjac.exp);
#   derivatives  the code of each first derivative: (d/da, d/db), or (d/da,);
#   second       the second derivatives: (d2/da2, d2/db2, d2/da db), or
#                (d2/da2,). "zero" is exact for the linear operators, and
#                the convention for the piecewise ones: 0 everywhere, kinks
#                included;
#   value        the function of _formulas.h that computes the value in the
#                expression interpreter and in _jit.py's C (fj_<value>_f64/
#                _f32); None where the interpreter has a loop of its own
#                (sin and cos: vectorised with a libm fallback) or no
#                instruction at all (identity);
#   jit          True if _jit.py compiles the value into its loop (a libm
#                call or plain arithmetic); False for the vectorised functions
#                of _vecmath.h, which its code hands to the interpreter's
#                exec_block (_jit.py says why);
#   numpy        the NumPy ufuncs with the same meaning, by name: accepted
#                as aliases of the operator (np.multiply for "multiply");
#   real_above   for a function real only on part of the line, the x above
#                which it is (sqrt, log: 0; log1p: -1), else None: where the
#                tests draw their operands.
Operator = namedtuple("Operator", "name derivatives second value jit numpy real_above",
                      defaults=(None,))

OPERATORS = (
    # -- binary operators ------------------------------------------------------------
    Operator("add", ("add_da", "add_db"), ("zero", "zero", "zero"), "v_add", True, ("add",)),
    Operator("subtract", ("subtract_da", "subtract_db"), ("zero", "zero", "zero"),
             "v_subtract", True, ("subtract",)),
    Operator("multiply", ("multiply_da", "multiply_db"), ("zero", "zero", "one"),
             "v_multiply", True, ("multiply",)),
    Operator("divide", ("divide_da", "divide_db"), ("zero", "divide_dbb", "divide_dab"),
             "v_divide", True, ("divide", "true_divide")),
    Operator("maximum", ("maximum_da", "maximum_db"), ("zero", "zero", "zero"),
             "v_maximum", True, ("maximum",)),
    Operator("minimum", ("minimum_da", "minimum_db"), ("zero", "zero", "zero"),
             "v_minimum", True, ("minimum",)),
    Operator("greater", ("zero", "zero"), ("zero", "zero", "zero"), "v_greater", True,
             ("greater",)),
    Operator("less", ("zero", "zero"), ("zero", "zero", "zero"), "v_less", True, ("less",)),
    Operator("power", ("power_da", "power_db"), ("power_daa", "power_dbb", "power_dab"),
             "m_pow", False, ("power",)),
    # log(e**a + e**b)
    Operator("logaddexp", ("logaddexp_da", "logaddexp_db"),
             ("logaddexp_daa", "logaddexp_daa", "logaddexp_dab"), "v_logaddexp", False,
             ("logaddexp",)),
    # -- unary functions ---------------------------------------------------------------
    Operator("identity", ("one",), ("zero",), None, False, ("positive",)),
    Operator("negative", ("negative",), ("zero",), "v_negative", True, ("negative",)),
    Operator("square", ("square",), ("two",), "v_square", True, ("square",)),
    Operator("sqrt", ("sqrt",), ("sqrt_dd",), "m_sqrt", True, ("sqrt",), 0.0),
    Operator("exp", ("exp",), ("exp",), "m_exp", False, ("exp",)),      # exp'' = exp
    Operator("log", ("log",), ("log_dd",), "m_log", True, ("log",), 0.0),
    Operator("sin", ("sin",), ("cos",), None, False, ("sin",)),         # sin'' = cos'
    Operator("cos", ("cos",), ("cos_dd",), None, False, ("cos",)),
    Operator("tanh", ("tanh",), ("tanh_dd",), "v_tanh", False, ("tanh",)),
    Operator("sigmoid", ("sigmoid",), ("sigmoid_dd",), "logistic", False, ()),
    Operator("relu", ("relu",), ("zero",), "v_relu", True, ()),
    Operator("abs", ("abs",), ("zero",), "m_abs", True, ("absolute",)),
    # log(1 + e**a); softplus' = sigmoid, softplus'' = sigmoid'
    Operator("softplus", ("softplus",), ("sigmoid",), "v_softplus", False, ()),
    # -softplus(-a); its derivative is sigmoid(-a)
    Operator("log_sigmoid", ("log_sigmoid",), ("log_sigmoid_dd",), "v_log_sigmoid", False, ()),
    Operator("log1p", ("log1p",), ("log1p_dd",), "m_log1p", True, ("log1p",), -1.0),
    Operator("expm1", ("exp",), ("exp",), "m_expm1", True, ("expm1",)),  # expm1' = exp
    Operator("log2", ("log2",), ("log2_dd",), "m_log2", True, ("log2",), 0.0),
)

# Instructions of the expression interpreter that are not an operator's
# value; with the operators that have one, they make the opcodes
# (_expr_loops.pxd's Opcode enum, _expr.OPCODES), in this order.
INSTRUCTIONS = (
    "copy",
    "muladd",       # d = a * b + c
    "deriv",        # d = derivative(code c, a, b)
    "sum",          # acc[d] += sum(a)
    "tanh_vd",      # d = tanh(a) and b = tanh'(a), from one exponential
    "softplus_vd",  # d = softplus(a), b = its derivative, c (if >= 0) the second: one exp
)


def opcode_names():
    """Every instruction of the interpreter, in the order of its opcodes."""
    return INSTRUCTIONS + tuple(op.name for op in OPERATORS if op.name != "identity")
