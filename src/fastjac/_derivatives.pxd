# Design note
# -----------
# One formula, one place: the derivative of every element-wise operation of
# the mathematics (docs/mathematics.md, sections 2 and 3).
#
# Each derivative is named by a *tag*: an empty struct type. The loops in
# _kernels.pyx are written once, over the fused type ``Derivative`` of all
# tags; Cython compiles one copy of a loop per tag and per float type, and
# inside each copy ``derivative(tag, a, b)`` collapses, at compile time, to
# the single formula of that tag. The C compiler therefore sees a plain loop
# with an inlined body that it can vectorise: no function pointer and no
# switch inside the loop. The tag argument is always NULL; only its type
# matters.
#
# ``a`` is the first operand (w in the spec), ``b`` the second (x). Unary
# functions read ``a`` only. "Da" names the derivative with respect to a,
# "Db" with respect to b.
#
# Conventions at the points where a derivative is not defined (documented in
# the README and tested):
# * maximum/minimum at a tie: 0.5 to each operand (as JAX, PyTorch, autograd);
# * relu'(0) = 0, abs'(0) = sign(0) = 0;
# * d(a**b)/da = 0 where b == 0 (a**0 is the constant 1), and
#   d(a**b)/db = 0 where a == 0 and b >= 0 (as PyTorch);
# * a NaN argument of a piecewise function (relu, abs, maximum, minimum)
#   gives a NaN derivative; every other formula is plain IEEE arithmetic.
#
# Vector math: exp, sin and cos come from _vecmath.h, branch-free C that the
# compiler inlines and vectorises inside the loops (a libm call per element
# cannot be vectorised). exp is valid everywhere; the vectorised sin and cos
# (v_sin, v_cos) only for |x| < 2**17, and the vectorised a**b (power_slope,
# power_log) only for 0 < a < inf, |b| < 2**20, so the loops flag the
# elements outside (``exceptional``) and recompute those with
# ``derivative_exceptional``: the same formulas on libm. f_sin and f_cos
# (for other modules) are complete on their own and not vectorised. The same
# mechanism gives d(a/b)/db its one-division formula -a/(b*b): the elements
# where b*b leaves the normal range take -(a/b)/b instead.
#
# Kind: ``costly(tag)`` is True, at compile time, for the formulas that cost
# more than the memory traffic of their loop (transcendental functions, and
# 0.5/sqrt(a) except in the AVX-512 build, where _vecmath.h's Newton
# iteration makes it memory-bound); the loops start threads for them at a
# smaller n.

from cython cimport floating
from libc.float cimport DBL_MAX, DBL_MIN, FLT_MAX, FLT_MIN
from libc.math cimport (cos, cosf, fabs, fabsf, log, logf, pow,
                        powf, sin, sinf, sqrt, sqrtf, copysign, NAN, INFINITY)

cdef extern from "_vecmath.h" nogil:
    double fj_exp(double x)
    double fj_exp_normal(double x)
    double FJ_EXP_NORMAL_MAX
    float fj_expf(float x)
    double fj_sin(double x)
    float fj_sinf(float x)
    double fj_cos(double x)
    float fj_cosf(float x)
    bint fj_trig_fast(double x)
    double fj_log_dd(double x, double* lo)
    double fj_log(double x)
    double fj_pow_log(double log_hi, double log_lo, double c_hi, double c_lo)
    double fj_exp_tail(double x, double t)
    bint fj_pow_fast(double a, double c)
    const bint FJ_FAST_POW
    void fj_half_rsqrt_f64(const double* a, double* out, Py_ssize_t n)
    void fj_half_rsqrt_f32(const float* a, float* out, Py_ssize_t n)
    const bint FJ_FAST_RSQRT

cdef struct AddDa:
    char _
cdef struct AddDb:
    char _
cdef struct SubtractDa:
    char _
cdef struct SubtractDb:
    char _
cdef struct MultiplyDa:
    char _
cdef struct MultiplyDb:
    char _
cdef struct DivideDa:
    char _
cdef struct DivideDb:
    char _
cdef struct MaximumDa:
    char _
cdef struct MaximumDb:
    char _
cdef struct MinimumDa:
    char _
cdef struct MinimumDb:
    char _
cdef struct PowerDa:
    char _
cdef struct PowerDb:
    char _
cdef struct Zero:          # greater, less: piecewise constant
    char _
cdef struct One:           # identity
    char _
cdef struct NegativeD:
    char _
cdef struct SquareD:
    char _
cdef struct SqrtD:
    char _
cdef struct ExpD:
    char _
cdef struct LogD:
    char _
cdef struct SinD:
    char _
cdef struct CosD:
    char _
cdef struct TanhD:
    char _
cdef struct SigmoidD:
    char _
cdef struct ReluD:
    char _
cdef struct AbsD:
    char _

# Second derivatives (sum_hessian), where no first derivative has the same
# formula: d2(a*a)/da2 = 2, ...; the others reuse a tag above (exp'' = exp,
# sin'' = cos' = -sin, d2(a*b)/dadb = 1, and Zero).
cdef struct Two:
    char _
cdef struct DivideDab:
    char _
cdef struct DivideDbb:
    char _
cdef struct PowerDaa:
    char _
cdef struct PowerDab:
    char _
cdef struct PowerDbb:
    char _
cdef struct SqrtDD:
    char _
cdef struct LogDD:
    char _
cdef struct CosDD:
    char _
cdef struct TanhDD:
    char _
cdef struct SigmoidDD:
    char _

# softplus' = sigmoid; softplus'' is sigmoid' (SigmoidD)
cdef struct SoftplusD:
    char _
# log_sigmoid' = sigmoid(-a), log_sigmoid'' = -sigmoid'(a)
cdef struct LogSigmoidD:
    char _
cdef struct LogSigmoidDD:
    char _
# logaddexp: d/da = sigmoid(a - b), d/db = sigmoid(b - a); d2/da2 = d2/db2 =
# sigmoid'(a - b) (Daa), d2/da db = -sigmoid'(a - b) (Dab)
cdef struct LogaddexpDa:
    char _
cdef struct LogaddexpDb:
    char _
cdef struct LogaddexpDaa:
    char _
cdef struct LogaddexpDab:
    char _
# log1p' = 1 / (1 + a), log1p'' = -1 / (1 + a)**2
cdef struct Log1pD:
    char _
cdef struct Log1pDD:
    char _

# One code per tag, so that Python can name a derivative
# by an integer and the kernels turn it back into a compile-time tag.
cdef enum DerivativeCode:
    ADD_DA
    ADD_DB
    SUBTRACT_DA
    SUBTRACT_DB
    MULTIPLY_DA
    MULTIPLY_DB
    DIVIDE_DA
    DIVIDE_DB
    MAXIMUM_DA
    MAXIMUM_DB
    MINIMUM_DA
    MINIMUM_DB
    POWER_DA
    POWER_DB
    ZERO
    ONE
    NEGATIVE_D
    SQUARE_D
    SQRT_D
    EXP_D
    LOG_D
    SIN_D
    COS_D
    TANH_D
    SIGMOID_D
    RELU_D
    ABS_D
    TWO
    DIVIDE_DAB
    DIVIDE_DBB
    POWER_DAA
    POWER_DAB
    POWER_DBB
    SQRT_DD
    LOG_DD
    COS_DD
    TANH_DD
    SIGMOID_DD
    SOFTPLUS_D
    LOG_SIGMOID_D
    LOG_SIGMOID_DD
    LOGADDEXP_DA
    LOGADDEXP_DB
    LOGADDEXP_DAA
    LOGADDEXP_DAB
    LOG1P_D
    LOG1P_DD
    N_DERIVATIVE_CODES

ctypedef fused Derivative:
    AddDa
    AddDb
    SubtractDa
    SubtractDb
    MultiplyDa
    MultiplyDb
    DivideDa
    DivideDb
    MaximumDa
    MaximumDb
    MinimumDa
    MinimumDb
    PowerDa
    PowerDb
    Zero
    One
    NegativeD
    SquareD
    SqrtD
    ExpD
    LogD
    SinD
    CosD
    TanhD
    SigmoidD
    ReluD
    AbsD
    Two
    DivideDab
    DivideDbb
    PowerDaa
    PowerDab
    PowerDbb
    SqrtDD
    LogDD
    CosDD
    TanhDD
    SigmoidDD
    SoftplusD
    LogSigmoidD
    LogSigmoidDD
    LogaddexpDa
    LogaddexpDb
    LogaddexpDaa
    LogaddexpDab
    Log1pD
    Log1pDD


# Precision-preserving math wrappers: float32 calls the *f variant, so a
# float32 kernel never round-trips through double (_vecmath.h's sinf/cosf do,
# internally, and round once). Each f_* is valid for every argument.
cdef inline floating f_exp(floating x) noexcept nogil:
    if floating is float:
        return fj_expf(x)
    else:
        return fj_exp(x)

cdef inline floating f_log(floating x) noexcept nogil:
    if floating is float:
        return logf(x)
    else:
        return log(x)

cdef inline floating f_sqrt(floating x) noexcept nogil:
    if floating is float:
        return sqrtf(x)
    else:
        return sqrt(x)

cdef inline floating f_sin(floating x) noexcept nogil:
    if fj_trig_fast(x):
        return v_sin(x)
    if floating is float:
        return sinf(x)
    else:
        return sin(x)

cdef inline floating f_cos(floating x) noexcept nogil:
    if fj_trig_fast(x):
        return v_cos(x)
    if floating is float:
        return cosf(x)
    else:
        return cos(x)

# Vectorisable sin and cos, valid where fj_trig_fast(x) (|x| < 2**17, or
# not finite): see ``exceptional`` below.
cdef inline floating v_sin(floating x) noexcept nogil:
    if floating is float:
        return fj_sinf(x)
    else:
        return fj_sin(x)

cdef inline floating v_cos(floating x) noexcept nogil:
    if floating is float:
        return fj_cosf(x)
    else:
        return fj_cos(x)

cdef inline floating f_pow(floating x, floating y) noexcept nogil:
    if floating is float:
        return powf(x, y)
    else:
        return pow(x, y)

cdef inline floating f_abs(floating x) noexcept nogil:
    if floating is float:
        return fabsf(x)
    else:
        return fabs(x)


cdef inline bint square_is_normal(floating b) noexcept nogil:
    """b * b is a normal finite number (False for 0, inf, NaN and beyond)."""
    cdef floating q = b * b
    if floating is float:
        return FLT_MIN <= q <= FLT_MAX
    else:
        return DBL_MIN <= q <= DBL_MAX


cdef inline floating step_up(floating u, floating v) noexcept nogil:
    """d max(u, v) / du: 1 if u > v, 0 if u < v, 0.5 at a tie, NaN if unordered."""
    if u > v:
        return 1
    if u < v:
        return 0
    if u == v:
        return 0.5
    return <floating>NAN


cdef inline floating logistic_slope(floating x) noexcept nogil:
    """sigmoid'(x) = e / (1 + e)**2 with e = exp(-|x|).

    Symmetric and free of cancellation: s(1 - s) loses all relative accuracy
    once s rounds to 1, this form keeps a few-ulp error for every x.
    """
    cdef floating e = f_exp(-f_abs(x))
    cdef floating d = 1 + e
    return e / (d * d)


cdef inline floating logistic(floating x) noexcept nogil:
    """sigmoid(x) = 1 / (1 + exp(-x)), as 1 / (1 + e) for x >= 0 and
    e / (1 + e) below, e = exp(-|x|): never the exponential of a large
    positive number, so no overflow and no cancellation; a select, not a
    branch, so a loop of it vectorises. NaN gives NaN, +-inf gives 1 and 0."""
    cdef floating e = f_exp(-f_abs(x))
    cdef floating s = 1 / (1 + e)
    return s if x >= 0 else e * s


cdef inline double two_difference(double a, double b, double* tail) noexcept nogil:
    """a - b as d + tail[0] exactly (Knuth's TwoSum), returning d; d = 0 at
    a tie (equal infinities included: the limit along a = b), tail 0 where d
    is not finite."""
    cdef double d = a - b
    cdef double bb = d - a
    cdef double t = (a - (d - bb)) + (-b - bb)
    tail[0] = t if fabs(d) < INFINITY else 0
    return 0 if a == b else d


cdef inline double logistic_tail(double d, double t) noexcept nogil:
    """sigmoid(d + t) for a tail |t| <= ulp(d), as sigmoid(d) + sigmoid'(d) t:
    where sigmoid(d) is small, its relative error is |d| times that of d, so
    the rounding of a difference d = a - b would cost |d| / 2 ulps."""
    cdef double e = fj_exp(-fabs(d))
    cdef double q = 1 / (1 + e)
    cdef double s = q if d >= 0 else e * q
    return s + (e * q) * (q * t)


cdef inline double logistic_slope_tail(double d, double t) noexcept nogil:
    """sigmoid'(d + t), as p (1 + (1 - 2 sigmoid(d)) t) with p = sigmoid'(d)
    = e / (1 + e)**2 and |1 - 2 sigmoid(d)| = (1 - e) / (1 + e), e = exp(-|d|)."""
    cdef double e = fj_exp(-fabs(d))
    cdef double u = 1 + e
    cdef double p = e / (u * u)
    cdef double r = (1 - e) / u
    return p - p * (r * t if d >= 0 else -(r * t))


cdef inline floating logaddexp_slope(floating a, floating b) noexcept nogil:
    """d logaddexp(a, b)/da = sigmoid(a - b): 0.5 at a tie, NaN if a or b is
    NaN; in double, with a - b exact (two_difference), rounded once."""
    cdef double t
    cdef double d = two_difference(a, b, &t)
    return <floating>logistic_tail(d, t)


cdef inline floating logaddexp_curvature(floating a, floating b) noexcept nogil:
    """d2 logaddexp(a, b)/da2 = sigmoid'(a - b), the same way."""
    cdef double t
    cdef double d = two_difference(a, b, &t)
    return <floating>logistic_slope_tail(d, t)


cdef inline floating power_slope(floating a, floating b) noexcept nogil:
    """b * a**(b - 1), vectorised (_vecmath.h), for a in (0, inf), |b| < 2**20.

    b - 1 is not exact in general (b = 0.3), and a**(b - 1) magnifies the
    rounding error of the exponent by |ln a| (several ulps at a = 1000): in
    float64 b - 1 is carried as s + e exactly (TwoSum) into a double-double
    a**(s + e); float32 is computed in double, where b - 1 is exact, and
    rounded once. Other arguments: ``exceptional``, power_slope_libm.
    """
    cdef double s, bb, e, lo, ln_a
    if floating is float:
        ln_a = fj_log(a)
        return <float>(<double>b * fj_exp((<double>b - 1) * ln_a))
    else:
        s = b - 1
        bb = s - b
        e = (b - (s - bb)) + (-1 - bb)
        ln_a = fj_log_dd(a, &lo)
        return b * fj_pow_log(ln_a, lo, s, e)


cdef inline floating power_log(floating a, floating b) noexcept nogil:
    """a**b ln a, vectorised, for a in (0, inf), |b| < 2**20: ln a once,
    for both factors (float32 in double, rounded once)."""
    cdef double lo, ln_a
    if floating is float:
        ln_a = fj_log(a)
        return <float>(fj_exp(<double>b * ln_a) * ln_a)
    else:
        ln_a = fj_log_dd(a, &lo)
        return fj_pow_log(ln_a, lo, b, 0) * ln_a


cdef inline floating power_slope_libm(floating a, floating b) noexcept nogil:
    """power_slope for every argument (libm's pow: negative and zero bases,
    infinities, NaN, huge exponents), with the same care for b - 1."""
    cdef double s, bb, e, p
    if floating is float:
        return <float>(<double>b * pow(<double>a, <double>b - 1))
    else:
        s = b - 1
        bb = s - b
        e = (b - (s - bb)) + (-1 - bb)
        p = pow(a, s)
        # (only where it is a correction: a > 0, b finite, p finite, nonzero)
        if e != 0 and a > 0 and fabs(b) < INFINITY and p != 0 and fabs(p) < INFINITY:
            p += p * (e * log(a))
        return b * p


cdef inline floating power_log_libm(floating a, floating b) noexcept nogil:
    """power_log for every argument, on libm."""
    if floating is float:
        return <float>(pow(<double>a, <double>b) * log(<double>a))
    else:
        return pow(a, b) * log(a)



# -- second derivatives (sum_hessian) -------------------------------------------
# Each is a product of pieces that are accurate on their own (a few ulp in
# all), on libm where no vectorised piece exists; float32 powers and
# logarithms are computed in double and rounded once.

cdef inline double tanh_series(double x2) noexcept nogil:
    """P(x^2) with tanh(x) = x P(x^2) for |x| < 0.55: the Taylor series of tanh to
    x^39 (shared by the second derivatives below and _expr_loops.pxd's f_tanh
    and tanh_vd)."""
    cdef double p
    p = -2.859136662305254e-08
    p = p * x2 + 7.054636946400968e-08
    p = p * x2 + -1.7406618963571648e-07
    p = p * x2 + 4.294911078273806e-07
    p = p * x2 + -1.0597268320104654e-06
    p = p * x2 + 2.6147711512907546e-06
    p = p * x2 + -6.451689215655431e-06
    p = p * x2 + 1.5918905069328964e-05
    p = p * x2 + -3.927832388331683e-05
    p = p * x2 + 9.691537956929451e-05
    p = p * x2 + -0.00023912911424355248
    p = p * x2 + 0.000590027440945586
    p = p * x2 + -0.0014558343870513183
    p = p * x2 + 0.003592128036572481
    p = p * x2 + -0.008863235529902197
    p = p * x2 + 0.021869488536155203
    p = p * x2 + -0.05396825396825397
    p = p * x2 + 0.13333333333333333
    p = p * x2 + -0.3333333333333333
    p = p * x2 + 1.0
    return p


cdef inline double tanh_given_exp(double ax, double e) noexcept nogil:
    """tanh(ax) for ax >= 0 (or NaN), given e = exp(-2 ax): the series below
    0.55, (1 - e) / (1 + e) above (>= 0.5 there: no cancellation). Both
    computed, one selected: a loop of it vectorises."""
    return ax * tanh_series(ax * ax) if ax < 0.55 else (1 - e) / (1 + e)


cdef inline double pow_shifted(double a, double b, double shift) noexcept nogil:
    """a**(b - shift), with b - shift carried exactly as s + e (TwoSum) and
    e folded in as a first-order correction (as power_slope_libm does)."""
    cdef double s = b - shift
    cdef double bb = s - b
    cdef double e = (b - (s - bb)) + (-shift - bb)
    cdef double p = pow(a, s)
    if e != 0 and a > 0 and fabs(b) < INFINITY and p != 0 and fabs(p) < INFINITY:
        p += p * (e * log(a))
    return p


cdef inline floating power_daa(floating a, floating b) noexcept nogil:
    """d2(a**b)/da2 = b (b - 1) a**(b - 2); 0 where b is 0 or 1 (a**b is
    constant or linear in a there, as the first derivative's convention)."""
    if b == 0 or b == 1:
        return 0
    if floating is float:
        return <float>(<double>b * (<double>b - 1) * pow(<double>a, <double>b - 2))
    else:
        return b * (b - 1) * pow_shifted(a, b, 2)


cdef inline floating power_dab(floating a, floating b) noexcept nogil:
    """d2(a**b)/da db = a**(b - 1) (1 + b ln a); 0 at a == 0 for b > 1 (the
    limit; the formula would give 0 * inf)."""
    if a == 0 and b > 1:
        return 0
    if floating is float:
        return <float>(pow(<double>a, <double>b - 1) * (1 + <double>b * log(<double>a)))
    else:
        return pow_shifted(a, b, 1) * (1 + b * log(a))


cdef inline floating power_dbb(floating a, floating b) noexcept nogil:
    """d2(a**b)/db2 = a**b (ln a)**2; 0 at a == 0 for b >= 0, where the first
    derivative is 0 by convention."""
    cdef double ln_a
    if a == 0 and b >= 0:
        return 0
    ln_a = log(<double>a)
    if floating is float:
        return <float>(pow(<double>a, <double>b) * ln_a * ln_a)
    else:
        return pow(a, b) * ln_a * ln_a


cdef inline floating derivative(Derivative* tag, floating a, floating b) noexcept nogil:
    cdef double ax, e           # (the second derivatives of tanh and sigmoid)
    # -- section 2: binary operators ---------------------------------------
    if Derivative is AddDa or Derivative is AddDb or Derivative is SubtractDa:
        return 1
    elif Derivative is SubtractDb:
        return -1
    elif Derivative is MultiplyDa:
        return b
    elif Derivative is MultiplyDb:
        return a
    elif Derivative is DivideDa:
        return 1 / b
    elif Derivative is DivideDb:
        # One division: -a / (b * b), two roundings like -(a / b) / b and as
        # accurate, at half the cost. Where b * b overflows or leaves the
        # normal range (a = b = 1e30 in float32) it is wrong, and
        # ``exceptional`` sends those elements to -(a / b) / b. (Not
        # -(a * r) * r with r = 1/b: three roundings, 3 ulp off at 2/5.)
        return -a / (b * b)
    elif Derivative is MaximumDa:
        return step_up(a, b)
    elif Derivative is MaximumDb:
        return step_up(b, a)
    elif Derivative is MinimumDa:
        return step_up(b, a)
    elif Derivative is MinimumDb:
        return step_up(a, b)
    elif Derivative is PowerDa:     # where exceptional(): see below
        if b == 0:
            return 0
        if FJ_FAST_POW:             # a compile-time constant (_vecmath.h)
            return power_slope(a, b)
        return power_slope_libm(a, b)
    elif Derivative is PowerDb:
        if a == 0 and b >= 0:
            return 0
        if FJ_FAST_POW:
            return power_log(a, b)
        return power_log_libm(a, b)
    elif Derivative is LogaddexpDa:
        return logaddexp_slope(a, b)
    elif Derivative is LogaddexpDb:
        return logaddexp_slope(b, a)
    elif Derivative is Zero:
        return 0
    # -- section 3: unary functions (argument a) ---------------------------
    elif Derivative is One:
        return 1
    elif Derivative is NegativeD:
        return -1
    elif Derivative is SquareD:
        return 2 * a
    elif Derivative is SqrtD:
        return <floating>0.5 / f_sqrt(a)
    elif Derivative is ExpD:
        # float64: the short exp, valid for |a| <= 708 (see exceptional)
        if floating is double:
            return fj_exp_normal(a)
        return f_exp(a)
    elif Derivative is LogD:
        return 1 / a
    elif Derivative is Log1pD:
        # Cython writes the literals as 1.0: float32 is computed in double,
        # where 1 + a is exact, and rounded once; float64 rounds 1 + a (exact
        # near the pole, for a in [-2, -0.5]) and the quotient, about 1 ulp.
        # _jit.py writes the same C.
        return 1 / (1 + a)
    elif Derivative is SinD:
        return v_cos(a)             # where exceptional(): see below
    elif Derivative is CosD:
        return -v_sin(a)
    elif Derivative is TanhD:
        # tanh'(x) = 1 - tanh(x)**2 = 4 sigmoid'(2x): one exp, and no
        # cancellation where tanh(x) rounds to +-1.
        return 4 * logistic_slope(2 * a)
    elif Derivative is SigmoidD:
        return logistic_slope(a)
    elif Derivative is SoftplusD:
        # sigmoid(a); float32 in double, rounded once (< 1 ulp)
        if floating is float:
            return <float>logistic(<double>a)
        return logistic(a)
    elif Derivative is LogSigmoidD:
        # sigmoid(-a), as softplus' of -a
        if floating is float:
            return <float>logistic(-<double>a)
        return logistic(-a)
    elif Derivative is ReluD:
        if a > 0:
            return 1
        if a <= 0:
            return 0
        return a            # NaN
    elif Derivative is AbsD:
        # sign(a), 0 at 0, a itself where it is NaN. Written as (a > 0) - (a < 0)
        # and one select, not an if-chain: gcc vectorises the chain into five
        # compares and three blends (1 000 elements: 204 ns against 155 ns).
        return a if a != a else <floating>(a > 0) - <floating>(a < 0)
    # -- second derivatives (sum_hessian); exp'' is ExpD, sin'' is CosD -----
    elif Derivative is Two:
        return 2
    elif Derivative is DivideDab:
        # d2(a/b)/da db = -1/b**2, as (1/b)**2: no overflow of b*b before
        # the division, and correctly 0 or inf where the result is.
        return -((1 / b) * (1 / b))
    elif Derivative is DivideDbb:
        # 2a/b**3, one division at a time for the same reason
        return 2 * (((a / b) / b) / b)
    elif Derivative is PowerDaa:
        return power_daa(a, b)
    elif Derivative is PowerDab:
        return power_dab(a, b)
    elif Derivative is PowerDbb:
        return power_dbb(a, b)
    elif Derivative is SqrtDD:
        return (<floating>0.5 / f_sqrt(a)) * (<floating>-0.5 / a)
    elif Derivative is LogDD:
        return -((1 / a) * (1 / a))
    elif Derivative is CosDD:
        return -f_cos(a)
    elif Derivative is TanhDD:
        # -2 tanh(a) tanh'(a) = -8 tanh(a) e / (1 + e)^2, e = exp(-2|a|):
        # both factors from one exponential, no cancellation anywhere; in
        # double, float32 rounded once
        ax = fabs(<double>a)
        e = fj_exp(-2 * ax)
        return <floating>-copysign(8 * tanh_given_exp(ax, e) * (e / ((1 + e) * (1 + e))),
                                   <double>a)
    elif Derivative is SigmoidDD:
        # s'(1 - 2s) with 1 - 2s(a) = -tanh(a/2), free of cancellation:
        # s' = e / (1 + e)^2 and tanh(|a|/2) from one e = exp(-|a|)
        ax = fabs(<double>a)
        e = fj_exp(-ax)
        return <floating>-copysign((e / ((1 + e) * (1 + e))) * tanh_given_exp(ax / 2, e),
                                   <double>a)
    elif Derivative is LogSigmoidDD:
        return -logistic_slope(a)
    elif Derivative is Log1pDD:
        return -((1 / (1 + a)) * (1 / (1 + a)))
    elif Derivative is LogaddexpDaa:
        return logaddexp_curvature(a, b)
    elif Derivative is LogaddexpDab:
        return -logaddexp_curvature(a, b)


# -- compile-time properties of a tag ------------------------------------------

cdef inline bint costly(Derivative* tag) noexcept nogil:
    """True for compute-bound formulas (a transcendental function, a square
    root and a division): worth threads at a smaller n than a memory-bound one."""
    return (Derivative is PowerDa or Derivative is PowerDb
            or (Derivative is SqrtD and not FJ_FAST_RSQRT)
            or Derivative is ExpD or Derivative is SinD or Derivative is CosD
            or Derivative is TanhD or Derivative is SigmoidD
            or Derivative is DivideDbb or Derivative is SqrtDD or Derivative is CosDD
            or Derivative is TanhDD or Derivative is SigmoidDD or Derivative is SoftplusD
            or Derivative is LogSigmoidD or Derivative is LogSigmoidDD
            or Derivative is LogaddexpDa or Derivative is LogaddexpDb
            or Derivative is LogaddexpDaa or Derivative is LogaddexpDab
            or Derivative is PowerDaa or Derivative is PowerDab or Derivative is PowerDbb)


cdef inline bint very_costly(Derivative* tag) noexcept nogil:
    """True for a**b's derivatives (a double-double logarithm and an
    exponential per element, about 5 ns on one core): worth two threads
    from about 500 elements."""
    return (Derivative is PowerDa or Derivative is PowerDb or Derivative is PowerDaa
            or Derivative is PowerDab or Derivative is PowerDbb)


cdef inline bint has_exceptions(Derivative* tag) noexcept nogil:
    """True for the tags whose derivative() is not valid everywhere."""
    return (Derivative is SinD or Derivative is CosD or Derivative is DivideDb
            or Derivative is PowerDa or Derivative is PowerDb or Derivative is ExpD)


cdef inline bint exceptional(Derivative* tag, floating a, floating b) noexcept nogil:
    """True where derivative(tag, a, b) is not valid: sin and cos of
    |a| >= 2**17, beyond the vectorised argument reduction; a**b unless
    0 < a < inf and |b| < 2**20 (the conventions at b == 0 and a == 0 hold
    on either path); float64 exp beyond |a| <= 708 (NaN, inf, overflow and
    subnormal results)."""
    if Derivative is ExpD:
        if floating is double:
            return not fabs(a) <= FJ_EXP_NORMAL_MAX
        return False
    if Derivative is SinD or Derivative is CosD:
        return not fj_trig_fast(a)
    if Derivative is PowerDa or Derivative is PowerDb:
        return FJ_FAST_POW and not fj_pow_fast(a, b)
    if Derivative is DivideDb:
        return not square_is_normal(b)
    return False


cdef inline floating derivative_exceptional(Derivative* tag, floating a,
                                            floating b) noexcept nogil:
    """derivative() where exceptional(): the same formulas, on libm."""
    if Derivative is SinD:
        return f_cos(a)
    elif Derivative is CosD:
        return -f_sin(a)
    elif Derivative is PowerDa:
        if b == 0:
            return 0
        return power_slope_libm(a, b)
    elif Derivative is PowerDb:
        if a == 0 and b >= 0:
            return 0
        return power_log_libm(a, b)
    elif Derivative is DivideDb:
        return -(a / b) / b
    elif Derivative is ExpD:
        return f_exp(a)
    else:
        return derivative(tag, a, b)
