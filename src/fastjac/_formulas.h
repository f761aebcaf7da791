/* Every scalar formula of fastjac, once: the value and the derivatives of
 * each operator, in float64 and float32.
 *
 * Who calls it: the derivative kernels and broadcast sums (through
 * _derivatives.pxd's ``derivative``), the expression interpreter
 * (_expr_loops.pxd) and the C that _jit.py generates, which #includes this
 * file. So the interpreter and the compiled loop call the same function for
 * a formula; what still separates their bits is the compiler's freedom to
 * fuse a multiply and an add, which _jit.py explains.
 *
 * Layout: the helpers computed in double whatever the operands' type (a
 * difference carried exactly, series, tails) are defined here once; the
 * formulas of one float type are in _formulas_typed.h, included twice
 * below, as ``T``: fj_<name>_f64 for double, fj_<name>_f32 for float;
 * FJ_LIBM(f) names libm's function of the type (f, or ff for float).
 *
 * Names: fj_d_<code> is a derivative (<code> as _kernels.DERIVATIVE_CODES
 * names it), fj_x_<code> the same derivative where the vectorised formula
 * is not valid (``exceptional`` in _derivatives.pxd, on libm), fj_v_<op>
 * an operator's value, fj_m_<f> a libm function of the float type.
 *
 * Precision: integer-valued literals are written as doubles (1.0, 2.0), so
 * float32 formulas with such a constant are computed in double and
 * rounded once, as Cython's code for the same formulas did; this keeps
 * every result of the kernels bit for bit what it was before the formulas
 * moved here (tests/bitguard.py checks that).
 */
#ifndef FASTJAC_FORMULAS_H
#define FASTJAC_FORMULAS_H

#include <float.h>
#include <math.h>
#include "_vecmath.h"

/* a - b as d + *tail exactly (Knuth's TwoSum), returning d; d = 0 at a tie
   (equal infinities included: the limit along a = b), tail 0 where d is not
   finite */
static inline double fj_two_difference(double a, double b, double* tail) {
    double d = a - b;
    double bb = d - a;
    double t = (a - (d - bb)) + ((-b) - bb);
    *tail = fabs(d) < INFINITY ? t : 0.0;
    return a == b ? 0.0 : d;
}

/* sigmoid(d + t) for a tail |t| <= ulp(d), as sigmoid(d) + sigmoid'(d) t:
   where sigmoid(d) is small, its relative error is |d| times that of d, so
   the rounding of a difference d = a - b would cost |d| / 2 ulps */
static inline double fj_logistic_tail(double d, double t) {
    double e = fj_exp(-fabs(d));
    double q = 1.0 / (1.0 + e);
    double s = d >= 0.0 ? q : e * q;
    return s + ((e * q) * (q * t));
}

/* sigmoid'(d + t), as p (1 + (1 - 2 sigmoid(d)) t) with p = sigmoid'(d) =
   e / (1 + e)**2 and |1 - 2 sigmoid(d)| = (1 - e) / (1 + e), e = exp(-|d|) */
static inline double fj_logistic_slope_tail(double d, double t) {
    double e = fj_exp(-fabs(d));
    double u = 1.0 + e;
    double p = e / (u * u);
    double r = (1.0 - e) / u;
    return p - p * (d >= 0.0 ? r * t : -(r * t));
}

/* P(x^2) with tanh(x) = x P(x^2) for |x| < 0.55: the Taylor series of tanh
   to x^39 (terms 2^2n (2^2n - 1) B_2n / (2n)!; the next is below 1e-17 of
   the first there) */
static inline double fj_tanh_series(double x2) {
    double p = -2.859136662305254e-08;
    p = (p * x2) + 7.054636946400968e-08;
    p = (p * x2) + -1.7406618963571648e-07;
    p = (p * x2) + 4.294911078273806e-07;
    p = (p * x2) + -1.0597268320104654e-06;
    p = (p * x2) + 2.6147711512907546e-06;
    p = (p * x2) + -6.451689215655431e-06;
    p = (p * x2) + 1.5918905069328964e-05;
    p = (p * x2) + -3.927832388331683e-05;
    p = (p * x2) + 9.691537956929451e-05;
    p = (p * x2) + -0.00023912911424355248;
    p = (p * x2) + 0.000590027440945586;
    p = (p * x2) + -0.0014558343870513183;
    p = (p * x2) + 0.003592128036572481;
    p = (p * x2) + -0.008863235529902197;
    p = (p * x2) + 0.021869488536155203;
    p = (p * x2) + -0.05396825396825397;
    p = (p * x2) + 0.13333333333333333;
    p = (p * x2) + -0.3333333333333333;
    p = (p * x2) + 1.0;
    return p;
}

/* tanh(ax) for ax >= 0 (or NaN), given e = exp(-2 ax): the series below
   0.55, (1 - e) / (1 + e) above (>= 0.5 there: no cancellation). Both
   computed, one selected: a loop of it vectorises. */
static inline double fj_tanh_given_exp(double ax, double e) {
    return ax < 0.55 ? ax * fj_tanh_series(ax * ax) : (1.0 - e) / (1.0 + e);
}

/* a**(b - shift), with b - shift carried exactly as s + e (TwoSum) and e
   folded in as a first-order correction, where it is one (a > 0, b finite,
   the power finite and nonzero) */
static inline double fj_pow_shifted(double a, double b, double shift) {
    double s = b - shift;
    double bb = s - b;
    double e = (b - (s - bb)) + ((-shift) - bb);
    double p = pow(a, s);
    if (e != 0.0 && a > 0.0 && fabs(b) < INFINITY && p != 0.0 && fabs(p) < INFINITY)
        p = p + p * (e * log(a));
    return p;
}

/* log(1 + exp(-(d + tail))) for d >= 0 (or NaN) and a tail |tail| <= ulp(d)
   (the rounding error of a difference d; 0 when there is none). Vectorised:
   e = exp(-d) <= 1 and u = 1 + e rounded, so 1 + e = u + c exactly with
   c = e - (u - 1); then log(1 + e) = log(u) + c / u to well below an ulp
   (_vecmath.h's fj_log, where libm's log1p is a call per element), and the
   tail moves the result by -tail e / (1 + e). */
static inline double fj_log1p_exp(double d, double tail) {
    double e = fj_exp(-d);
    double u = 1.0 + e;
    double c = e - (u - 1.0);
    return fj_log(u) + ((c - (e * tail)) / u);
}

#define T double
#define FJ_F32 0
#define FJ(name) fj_##name##_f64
#define FJ_LIBM(name) name
#include "_formulas_typed.h"
#undef T
#undef FJ_F32
#undef FJ
#undef FJ_LIBM

#define T float
#define FJ_F32 1
#define FJ(name) fj_##name##_f32
#define FJ_LIBM(name) name##f
#include "_formulas_typed.h"
#undef T
#undef FJ_F32
#undef FJ
#undef FJ_LIBM

#endif
