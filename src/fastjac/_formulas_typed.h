/* The formulas of one float type T: included twice by _formulas.h (see
 * there), with FJ(name) naming fj_<name>_f64 or fj_<name>_f32 and FJ_F32
 * set for float. No include guard: that is the point. The conventions at
 * points where a derivative is not defined are the project's (docs/
 * mathematics.md): 0.5 to each operand of max/min at a tie, relu'(0) = 0,
 * abs'(0) = 0, d(a**b)/da = 0 at b == 0, d(a**b)/db = 0 at a == 0 <= b, and
 * NaN in, NaN out for the piecewise ones. */

/* -- libm and _vecmath.h in the float type: float never round-trips through
   double unless the formula says so ------------------------------------------ */

/* FJ_LIBM(f) is f for double and ff for float: libm's names, and those of
   _vecmath.h (fj_exp, fj_expf) */
static inline T FJ(m_exp)(T x) { return FJ_LIBM(fj_exp)(x); }
static inline T FJ(m_log)(T x) { return FJ_LIBM(log)(x); }
static inline T FJ(m_log1p)(T x) { return FJ_LIBM(log1p)(x); }
static inline T FJ(m_log2)(T x) { return FJ_LIBM(log2)(x); }
static inline T FJ(m_expm1)(T x) { return FJ_LIBM(expm1)(x); }
static inline T FJ(m_sqrt)(T x) { return FJ_LIBM(sqrt)(x); }
static inline T FJ(m_abs)(T x) { return FJ_LIBM(fabs)(x); }
static inline T FJ(m_pow)(T x, T y) { return FJ_LIBM(pow)(x, y); }

/* vectorisable sin and cos, valid where fj_trig_fast(x) (|x| < 2**17, or
   not finite) */
static inline T FJ(m_vsin)(T x) { return FJ_LIBM(fj_sin)(x); }
static inline T FJ(m_vcos)(T x) { return FJ_LIBM(fj_cos)(x); }

/* sin and cos valid for every argument (libm beyond the vectorised range) */
static inline T FJ(m_sin)(T x) { return fj_trig_fast(x) ? FJ(m_vsin)(x) : FJ_LIBM(sin)(x); }
static inline T FJ(m_cos)(T x) { return fj_trig_fast(x) ? FJ(m_vcos)(x) : FJ_LIBM(cos)(x); }

/* -- pieces shared by several formulas ---------------------------------------- */

/* b * b is a normal finite number (0 for 0, inf, NaN and beyond): where
   d(a/b)/db may take its one-division form -a/(b*b) */
static inline int FJ(square_is_normal)(T b) {
    T q = b * b;
#if FJ_F32
    return FLT_MIN <= q && q <= FLT_MAX;
#else
    return DBL_MIN <= q && q <= DBL_MAX;
#endif
}

/* d max(u, v) / du: 1 if u > v, 0 if u < v, 0.5 at a tie, NaN if unordered */
static inline T FJ(step_up)(T u, T v) {
    if (u > v) return 1.0;
    if (u < v) return 0.0;
    if (u == v) return 0.5;
    return (T)NAN;
}

/* sigmoid'(x) = e / (1 + e)**2 with e = exp(-|x|): symmetric and free of
   cancellation (s(1 - s) loses all relative accuracy once s rounds to 1) */
static inline T FJ(logistic_slope)(T x) {
    T e = FJ(m_exp)(-FJ(m_abs)(x));
    T d = 1.0 + e;
    return e / (d * d);
}

/* sigmoid(x), as 1 / (1 + e) for x >= 0 and e / (1 + e) below, e =
   exp(-|x|): never the exponential of a large positive number, so no
   overflow and no cancellation; a select, not a branch, so a loop of it
   vectorises. NaN gives NaN, +-inf gives 1 and 0. */
static inline T FJ(logistic)(T x) {
    T e = FJ(m_exp)(-FJ(m_abs)(x));
    T s = 1.0 / (1.0 + e);
    return x >= 0.0 ? s : e * s;
}

/* d logaddexp(a, b)/da = sigmoid(a - b): 0.5 at a tie, NaN if a or b is
   NaN; in double, with a - b exact, rounded once */
static inline T FJ(logaddexp_slope)(T a, T b) {
    double t;
    double d = fj_two_difference(a, b, &t);
    return (T)fj_logistic_tail(d, t);
}

/* d2 logaddexp(a, b)/da2 = sigmoid'(a - b), the same way */
static inline T FJ(logaddexp_curvature)(T a, T b) {
    double t;
    double d = fj_two_difference(a, b, &t);
    return (T)fj_logistic_slope_tail(d, t);
}

/* b * a**(b - 1), vectorised (_vecmath.h), for a in (0, inf), |b| < 2**20.
   b - 1 is not exact in general (b = 0.3), and a**(b - 1) magnifies the
   rounding error of the exponent by |ln a|: in float64 b - 1 is carried as
   s + e exactly (TwoSum) into a double-double a**(s + e); float32 is
   computed in double, where b - 1 is exact, and rounded once. */
static inline T FJ(power_slope)(T a, T b) {
#if FJ_F32
    double ln_a = fj_log(a);
    return (T)(((double)b) * fj_exp((((double)b) - 1.0) * ln_a));
#else
    double s = b - 1.0;
    double bb = s - b;
    double e = (b - (s - bb)) + (-1.0 - bb);
    double lo;
    double ln_a = fj_log_dd(a, &lo);
    return b * fj_pow_log(ln_a, lo, s, e);
#endif
}

/* a**b ln a, vectorised, for a in (0, inf), |b| < 2**20: ln a once, for
   both factors (float32 in double, rounded once) */
static inline T FJ(power_log)(T a, T b) {
#if FJ_F32
    double ln_a = fj_log(a);
    return (T)(fj_exp(((double)b) * ln_a) * ln_a);
#else
    double lo;
    double ln_a = fj_log_dd(a, &lo);
    return fj_pow_log(ln_a, lo, b, 0.0) * ln_a;
#endif
}

/* power_slope for every argument (libm's pow: negative and zero bases,
   infinities, NaN, huge exponents), with the same care for b - 1 */
static inline T FJ(power_slope_libm)(T a, T b) {
#if FJ_F32
    return (T)(((double)b) * pow((double)a, ((double)b) - 1.0));
#else
    return b * fj_pow_shifted(a, b, 1.0);
#endif
}

/* power_log for every argument, on libm */
static inline T FJ(power_log_libm)(T a, T b) {
#if FJ_F32
    return (T)(pow((double)a, (double)b) * log((double)a));
#else
    return pow(a, b) * log(a);
#endif
}

/* -- first derivatives: binary operators (a is the first operand) -------------- */

static inline T FJ(d_one)(T a, T b) { return 1.0; }          /* add, subtract by a, identity */
static inline T FJ(d_minus_one)(T a, T b) { return -1.0; }   /* subtract by b, negative */
static inline T FJ(d_zero)(T a, T b) { return 0.0; }         /* greater, less */
static inline T FJ(d_multiply_da)(T a, T b) { return b; }
static inline T FJ(d_multiply_db)(T a, T b) { return a; }
static inline T FJ(d_divide_da)(T a, T b) { return 1.0 / b; }

/* -a / (b * b): one division, two roundings like -(a / b) / b and as
   accurate, at half the cost. Where b * b overflows or leaves the normal
   range it is wrong: there fj_x_divide_db. (Not -(a * r) * r with r = 1/b:
   three roundings, 3 ulp off at 2/5.) */
static inline T FJ(d_divide_db)(T a, T b) { return (-a) / (b * b); }
static inline T FJ(x_divide_db)(T a, T b) { return (-(a / b)) / b; }

/* both in one, for code that does not split off the rare elements (the C
   of _jit.py): one division with picked operands, not two and a blend */
static inline T FJ(d_divide_db_any)(T a, T b) {
    int normal = FJ(square_is_normal)(b);
    return (-(normal ? a : a / b)) / (normal ? b * b : b);
}

static inline T FJ(d_maximum_da)(T a, T b) { return FJ(step_up)(a, b); }
static inline T FJ(d_maximum_db)(T a, T b) { return FJ(step_up)(b, a); }
static inline T FJ(d_minimum_da)(T a, T b) { return FJ(step_up)(b, a); }
static inline T FJ(d_minimum_db)(T a, T b) { return FJ(step_up)(a, b); }

/* the vectorised forms need 0 < a < inf and |b| < 2**20 (fj_pow_fast) on
   an FMA build (FJ_FAST_POW); elsewhere, and for the other elements, libm */
static inline T FJ(x_power_da)(T a, T b) {
    if (b == 0.0) return 0.0;
    return FJ(power_slope_libm)(a, b);
}

static inline T FJ(d_power_da)(T a, T b) {
    if (b == 0.0) return 0.0;
    if (FJ_FAST_POW) return FJ(power_slope)(a, b);
    return FJ(power_slope_libm)(a, b);
}

static inline T FJ(x_power_db)(T a, T b) {
    if (a == 0.0 && b >= 0.0) return 0.0;
    return FJ(power_log_libm)(a, b);
}

static inline T FJ(d_power_db)(T a, T b) {
    if (a == 0.0 && b >= 0.0) return 0.0;
    if (FJ_FAST_POW) return FJ(power_log)(a, b);
    return FJ(power_log_libm)(a, b);
}

static inline T FJ(d_logaddexp_da)(T a, T b) { return FJ(logaddexp_slope)(a, b); }
static inline T FJ(d_logaddexp_db)(T a, T b) { return FJ(logaddexp_slope)(b, a); }

/* -- first derivatives: unary functions (of a) --------------------------------- */

static inline T FJ(d_square)(T a, T b) { return 2.0 * a; }
static inline T FJ(d_sqrt)(T a, T b) { return ((T)0.5) / FJ(m_sqrt)(a); }

/* float64: the short exp, valid for |a| <= 708 (beyond: fj_x_exp) */
static inline T FJ(d_exp)(T a, T b) {
#if FJ_F32
    return FJ(m_exp)(a);
#else
    return fj_exp_normal(a);
#endif
}
static inline T FJ(x_exp)(T a, T b) { return FJ(m_exp)(a); }

static inline T FJ(d_log)(T a, T b) { return 1.0 / a; }

/* in double (1.0 is a double): float32 is computed in double, where 1 + a
   is exact, and rounded once; float64 rounds 1 + a (exact near the pole,
   for a in [-2, -0.5]) and the quotient, about 1 ulp */
static inline T FJ(d_log1p)(T a, T b) { return 1.0 / (1.0 + a); }

/* log2' = 1 / (a ln 2), as (1 / ln 2) / a in double: float32 rounded once,
   float64 the constant's rounding and the quotient's, about 1 ulp; log2''
   = -1 / (a**2 ln 2), one division at a time (a**2 would overflow first) */
static inline T FJ(d_log2)(T a, T b) { return 1.4426950408889634 / a; }
static inline T FJ(d_log2_dd)(T a, T b) { return -((1.4426950408889634 / a) / a); }

/* valid where fj_trig_fast(a); fj_x_sin and fj_x_cos elsewhere */
static inline T FJ(d_sin)(T a, T b) { return FJ(m_vcos)(a); }
static inline T FJ(x_sin)(T a, T b) { return FJ(m_cos)(a); }
static inline T FJ(d_cos)(T a, T b) { return -FJ(m_vsin)(a); }
static inline T FJ(x_cos)(T a, T b) { return -FJ(m_sin)(a); }

/* tanh'(x) = 1 - tanh(x)**2 = 4 sigmoid'(2x): one exp, and no cancellation
   where tanh(x) rounds to +-1 */
static inline T FJ(d_tanh)(T a, T b) { return 4.0 * FJ(logistic_slope)(2.0 * a); }
static inline T FJ(d_sigmoid)(T a, T b) { return FJ(logistic_slope)(a); }

/* softplus' = sigmoid, log_sigmoid' = sigmoid(-a): in double, float32
   rounded once (< 1 ulp) */
static inline T FJ(d_softplus)(T a, T b) { return (T)fj_logistic_f64(a); }
static inline T FJ(d_log_sigmoid)(T a, T b) { return (T)fj_logistic_f64(-((double)a)); }

static inline T FJ(d_relu)(T a, T b) {
    if (a > 0.0) return 1.0;
    if (a <= 0.0) return 0.0;
    return a;               /* NaN */
}

/* sign(a), 0 at 0, a itself where it is NaN: (a > 0) - (a < 0) and one
   select, not an if-chain, which gcc vectorises into five compares and
   three blends */
static inline T FJ(d_abs)(T a, T b) {
    return a != a ? a : ((T)(a > 0.0)) - ((T)(a < 0.0));
}

/* -- second derivatives (sum_hessian); exp'' is d_exp, sin'' is d_cos,
   softplus'' is d_sigmoid, d2(a*b)/da db is d_one ------------------------------ */

static inline T FJ(d_two)(T a, T b) { return 2.0; }

/* d2(a/b)/da db = -1/b**2, as (1/b)**2: no overflow of b*b before the
   division, and correctly 0 or inf where the result is */
static inline T FJ(d_divide_dab)(T a, T b) { return -((1.0 / b) * (1.0 / b)); }

/* 2a/b**3, one division at a time for the same reason */
static inline T FJ(d_divide_dbb)(T a, T b) { return 2.0 * (((a / b) / b) / b); }

/* d2(a**b)/da2 = b (b - 1) a**(b - 2); 0 where b is 0 or 1 (a**b is
   constant or linear in a there, as the first derivative's convention) */
static inline T FJ(d_power_daa)(T a, T b) {
    if (b == 0.0 || b == 1.0) return 0.0;
#if FJ_F32
    return (T)((((double)b) * (((double)b) - 1.0)) * pow((double)a, ((double)b) - 2.0));
#else
    return (b * (b - 1.0)) * fj_pow_shifted(a, b, 2.0);
#endif
}

/* d2(a**b)/da db = a**(b - 1) (1 + b ln a); 0 at a == 0 for b > 1 (the
   limit; the formula would give 0 * inf) */
static inline T FJ(d_power_dab)(T a, T b) {
    if (a == 0.0 && b > 1.0) return 0.0;
#if FJ_F32
    return (T)(pow((double)a, ((double)b) - 1.0) * (1.0 + (((double)b) * log((double)a))));
#else
    return fj_pow_shifted(a, b, 1.0) * (1.0 + (b * log(a)));
#endif
}

/* d2(a**b)/db2 = a**b (ln a)**2; 0 at a == 0 for b >= 0, where the first
   derivative is 0 by convention */
static inline T FJ(d_power_dbb)(T a, T b) {
    double ln_a;
    if (a == 0.0 && b >= 0.0) return 0.0;
    ln_a = log((double)a);
#if FJ_F32
    return (T)((pow((double)a, (double)b) * ln_a) * ln_a);
#else
    return (pow(a, b) * ln_a) * ln_a;
#endif
}

static inline T FJ(d_sqrt_dd)(T a, T b) {
    return (((T)0.5) / FJ(m_sqrt)(a)) * (((T)-0.5) / a);
}
static inline T FJ(d_log_dd)(T a, T b) { return -((1.0 / a) * (1.0 / a)); }
static inline T FJ(d_cos_dd)(T a, T b) { return -FJ(m_cos)(a); }

/* -2 tanh(a) tanh'(a) = -8 tanh(a) e / (1 + e)^2, e = exp(-2|a|): both
   factors from one exponential, no cancellation anywhere; in double,
   float32 rounded once */
static inline T FJ(d_tanh_dd)(T a, T b) {
    double ax = fabs((double)a);
    double e = fj_exp(-2.0 * ax);
    return (T)(-copysign((8.0 * fj_tanh_given_exp(ax, e)) * (e / ((1.0 + e) * (1.0 + e))),
                         (double)a));
}

/* s'(1 - 2s) with 1 - 2s(a) = -tanh(a/2), free of cancellation: s' = e /
   (1 + e)^2 and tanh(|a|/2) from one e = exp(-|a|) */
static inline T FJ(d_sigmoid_dd)(T a, T b) {
    double ax = fabs((double)a);
    double e = fj_exp(-ax);
    return (T)(-copysign((e / ((1.0 + e) * (1.0 + e))) * fj_tanh_given_exp(ax / 2.0, e),
                         (double)a));
}

static inline T FJ(d_log_sigmoid_dd)(T a, T b) { return -FJ(logistic_slope)(a); }
static inline T FJ(d_log1p_dd)(T a, T b) { return -((1.0 / (1.0 + a)) * (1.0 / (1.0 + a))); }
static inline T FJ(d_logaddexp_daa)(T a, T b) { return FJ(logaddexp_curvature)(a, b); }
static inline T FJ(d_logaddexp_dab)(T a, T b) { return -FJ(logaddexp_curvature)(a, b); }

/* -- where a vectorised formula above is not valid (fj_e_<formula>), so that
   the loops compute those elements with fj_x_<formula> instead: sin and
   cos of |a| >= 2**17, beyond the vectorised argument reduction; a**b
   unless 0 < a < inf and |b| < 2**20 (the conventions at b == 0 and a == 0
   hold on either path); float64 exp beyond |a| <= 708 (NaN, inf, overflow
   and subnormal results); d(a/b)/db where b*b is not a normal number ----- */

static inline int FJ(e_exp)(T a, T b) {
#if FJ_F32
    return 0;
#else
    return !(fabs(a) <= FJ_EXP_NORMAL_MAX);
#endif
}
static inline int FJ(e_sin)(T a, T b) { return !fj_trig_fast(a); }
static inline int FJ(e_cos)(T a, T b) { return !fj_trig_fast(a); }
static inline int FJ(e_power_da)(T a, T b) { return FJ_FAST_POW && !fj_pow_fast(a, b); }
static inline int FJ(e_power_db)(T a, T b) { return FJ_FAST_POW && !fj_pow_fast(a, b); }
static inline int FJ(e_divide_db)(T a, T b) { return !FJ(square_is_normal)(b); }

/* -- values (the expression interpreter and _jit.py's C) ----------------------- */

static inline T FJ(v_add)(T a, T b) { return a + b; }
static inline T FJ(v_subtract)(T a, T b) { return a - b; }
static inline T FJ(v_multiply)(T a, T b) { return a * b; }
static inline T FJ(v_divide)(T a, T b) { return a / b; }
static inline T FJ(v_negative)(T a) { return -a; }
static inline T FJ(v_square)(T a) { return a * a; }
static inline T FJ(v_relu)(T a) { return a <= 0.0 ? (T)0.0 : a; }   /* NaN stays NaN */

/* NaN in either operand gives NaN, as np.maximum; two selects (no
   branch), so a loop of it vectorises */
static inline T FJ(v_maximum)(T a, T b) {
    T u = b > a ? b : a;        /* a NaN a stays */
    return b != b ? b : u;      /* a NaN b wins */
}

static inline T FJ(v_minimum)(T a, T b) {
    T u = b < a ? b : a;
    return b != b ? b : u;
}

static inline T FJ(v_greater)(T a, T b) { return a > b ? (T)1.0 : (T)0.0; }
static inline T FJ(v_less)(T a, T b) { return a < b ? (T)1.0 : (T)0.0; }

/* Vectorisable tanh (libm's is a call per element, ten times slower):
     |x| <  0.55: x * P(x^2) (fj_tanh_series), no cancellation near 0;
     |x| >= 0.55: 1 - 2 / (exp(2|x|) + 1), where the result is >= 0.5 and
                  the subtraction loses nothing;
   both computed, one selected, the sign copied back. Under 1.5 ulp in
   float64 (against mpmath); float32 is computed in double and rounded
   once. tanh(+-inf) = +-1, tanh(nan) = nan, -0 -> -0. */
static inline T FJ(v_tanh)(T x) {
    double ax = fabs((double)x);
    double p = fj_tanh_series(ax * ax);
    double big = 1.0 - (2.0 / (fj_exp(2.0 * ax) + 1.0));
    double t = ax < 0.55 ? ax * p : big;
    return (T)copysign(t, (double)x);
}

/* tanh and its derivative together, from one exponential e = exp(-2|x|):
     |x| <  0.55: v = x P(x^2) (as v_tanh), v' = 1 - v^2 (v^2 < 0.3: no
                  cancellation);
     |x| >= 0.55: v = (1 - e) / (1 + e), v' = 4 e / (1 + e)^2 (e < 0.34: no
                  cancellation either, and v' keeps its relative accuracy
                  where v rounds to +-1). */
static inline void FJ(v_tanh_vd)(T x, T* v, T* dv) {
    double ax = fabs((double)x);
    double p = fj_tanh_series(ax * ax);
    double small = ax * p;
    double e = fj_exp(-2.0 * ax);
    double q = 1.0 / (1.0 + e);
    double t = ax < 0.55 ? small : (1.0 - e) * q;
    double d = ax < 0.55 ? 1.0 - (small * small) : ((4.0 * e) * q) * q;
    *v = (T)copysign(t, (double)x);
    *dv = (T)d;
}

/* log(1 + e**x) = max(x, 0) + log(1 + e**-|x|): no overflow for large x,
   no cancellation (both terms >= 0); in double, float32 rounded once. NaN
   gives NaN, inf gives inf, -inf gives 0. */
static inline T FJ(v_softplus)(T x) {
    double xd = x;
    double m = xd > 0.0 ? xd : 0.0;
    return (T)(m + fj_log1p_exp(fabs(xd), 0.0));
}

/* softplus, sigmoid (its derivative) and sigmoid' (its second), from one
   exponential e = exp(-|x|), each with the bits of its own formula
   (v_softplus, d_softplus, logistic_slope in double); ddv may be NULL */
static inline void FJ(v_softplus_vd)(T x, T* v, T* dv, T* ddv) {
    double xd = x;
    double e = fj_exp(-fabs(xd));
    double u = 1.0 + e;
    double c = e - (u - 1.0);
    double s = 1.0 / u;
    *v = (T)((xd > 0.0 ? xd : 0.0) + (fj_log(u) + (c / u)));
    *dv = (T)(xd >= 0.0 ? s : e * s);
    if (ddv != NULL) *ddv = (T)(e / (u * u));
}

/* log(sigmoid(x)) = -softplus(-x): the same care, the same bits negated */
static inline T FJ(v_log_sigmoid)(T x) { return -FJ(v_softplus)(-x); }

/* log(e**a + e**b) = max(a, b) + log(1 + e**-|a - b|), with a - b carried
   exactly (TwoSum) into the logarithm; as np.logaddexp at the edges: a tie
   gives a + log 2 (equal infinities: that infinity), NaN gives NaN. In
   double, float32 rounded once. */
static inline T FJ(v_logaddexp)(T a, T b) {
    double t;
    double d = fj_two_difference(a, b, &t);
    T m = a > b ? a : b;
    return (T)(m + fj_log1p_exp(fabs(d), d >= 0.0 ? t : -t));
}
