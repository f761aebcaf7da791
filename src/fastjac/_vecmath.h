/* _vecmath.h: exp, sin and cos that a C compiler vectorises.
 *
 * Design note
 * -----------
 * A loop that calls libm's exp() once per element runs one element at a
 * time: the call is opaque, so the compiler cannot vectorise the loop. The
 * functions below are branch-free `static inline` straight-line code (range
 * reduction, a polynomial, exponent arithmetic on the bit pattern, selects
 * written as `c ? x : y` or as bit masks), so gcc/clang at -O3 inline them
 * into the caller's loop and vectorise it for whatever instruction set the
 * loop is compiled for: SSE2 in a baseline x86-64 build, AVX2+FMA or
 * AVX-512 in the variants that _kernels.pyx selects at run time. Nothing
 * here depends on an instruction set, a library or a table: the same source
 * is correct everywhere, only faster where vectors are wider.
 *
 * Accuracy (tests/test_accuracy.py, against mpmath at 200 bits):
 *   fj_exp, fj_sin, fj_cos   < 1 ulp (double);
 *   fj_expf                  < 2 ulp;  fj_sinf, fj_cosf < 1 ulp (float,
 *                            computed in double and rounded once).
 * They need IEEE semantics (no -ffast-math: the NaN tests below must stay).
 *
 * Special values behave as C99 says: exp(-inf) = 0, exp(+inf) = +inf,
 * overflow gives +inf, underflow gives (correctly scaled) subnormals or 0,
 * exp(nan) = sin(nan) = cos(nan) = nan, sin(+-inf) = cos(+-inf) = nan,
 * sin(-0) = -0.
 *
 * Limits: sin and cos reduce their argument with a three-part pi/2
 * (Cody-Waite), exact for |x| < FJ_TRIG_FAST_MAX = 2**17. Beyond it (and
 * only there) a caller must use libm: fj_trig_fast(x) says whether the
 * vector result is valid, so a loop can compute everything vectorised, OR
 * the flags, and redo the (rare) other elements with sin()/cos(); see
 * apply_serial() in _kernels.pyx. Non-finite x is "fast" (the result is nan).
 *
 * Algorithms: exp as in fdlibm (k = round(x/ln2), r = x - k ln2 with a
 * two-part ln2, a degree-13 Taylor polynomial of e^r, then 2^k as two
 * factors 2^(k/2) built in the exponent field, so that results near
 * overflow and in the subnormal range need no branch); sin/cos
 * with fdlibm's __kernel_sin/__kernel_cos polynomials (Sun Microsystems,
 * 1993, freely redistributable) on r + r_lo, |r| <= pi/4, and the quadrant
 * chosen by bit masks.
 *
 * Reuse: #include "_vecmath.h" from any Cython module (cdef extern from
 * "_vecmath.h") and call fj_exp & co. inside a plain loop compiled with -O3
 * (and -fno-math-errno, which the build sets).
 */
#ifndef FASTJAC_VECMATH_H
#define FASTJAC_VECMATH_H

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stddef.h>
#include <string.h>

#define FJ_TRIG_FAST_MAX 131072.0 /* 2**17 */

/* Always inline: a loop that calls one of these out of line is not
 * vectorised, and in a large module gcc's inlining budget can run out. */
#if defined(__GNUC__)
#define FJ_INLINE static inline __attribute__((always_inline))
#else
#define FJ_INLINE static inline
#endif

/* -- bit patterns (memcpy is how C spells a reinterpretation; it compiles
 *    to nothing, or to a register move) ------------------------------------ */
FJ_INLINE uint64_t fj_bits(double x) { uint64_t u; memcpy(&u, &x, sizeof u); return u; }
FJ_INLINE double fj_from_bits(uint64_t u) { double x; memcpy(&x, &u, sizeof x); return x; }
FJ_INLINE uint32_t fj_bitsf(float x) { uint32_t u; memcpy(&u, &x, sizeof u); return u; }
FJ_INLINE float fj_from_bitsf(uint32_t u) { float x; memcpy(&x, &u, sizeof x); return x; }

/* -- exp, double ------------------------------------------------------------ */

/* e^r for |r| <= ln2/2 (+ tiny): e^r - 1 - r = r^2 (1/2 + r (1/6 + ...)),
 * Taylor to degree 13, whose truncation error is below 2^-60 there. */
FJ_INLINE double fj_exp_reduced(double r)
{
    double p = 1.0 / 6227020800.0;
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    return 1.0 + (r + (r * r) * p);
}

/* x = k ln2 + r with k an integer and |r| <= ln2/2: returns r, and in *kd
 * the double x / ln2 + 1.5 * 2^52, whose low bits hold k (k = *kd - 1.5 * 2^52). */
#define FJ_EXP_SHIFT 0x1.8p52                /* x + shift rounds x to an integer */
FJ_INLINE double fj_exp_split(double x, double* kd)
{
    const double inv_ln2 = 0x1.71547652b82fep0;
    const double ln2_hi = 0x1.62e42feep-1;  /* 32 bits: k * ln2_hi is exact */
    const double ln2_lo = 0x1.a39ef35793c76p-33;
    *kd = x * inv_ln2 + FJ_EXP_SHIFT;
    double k = *kd - FJ_EXP_SHIFT;
    return (x - k * ln2_hi) - k * ln2_lo;
}

/* e^(x + t) for a tail |t| <= 2^-40 |x| (the low part of a double-double
 * argument; see fj_pow_log). */
FJ_INLINE double fj_exp_tail(double x, double t)
{
    const double shift = FJ_EXP_SHIFT;
    /* Clamp (NaN passes through both tests): beyond these, exp is 0 or inf
     * and the clamped value still rounds to 0 or inf below. */
    double xc = x < -746.0 ? -746.0 : x;
    xc = xc > 710.0 ? 710.0 : xc;
    double kd;
    double r = fj_exp_split(xc, &kd) + t;       /* |r| <= ln2/2 (+ tiny) */
    double k = kd - shift;
    double er = fj_exp_reduced(r);              /* e^r in [0.7, 1.42] */
    /* 2^k = 2^k1 * 2^k2 with k1 = k/2 rounded, each built by writing the
     * exponent field: both stay normal for every k of the clamped range
     * (|k| <= 1076), so results near overflow and in the subnormal range
     * need no special case, and the second product is the only rounding. */
    double k1 = (k * 0.5 + shift) - shift;
    double k2 = k - k1;
    double s1 = fj_from_bits(fj_bits(1.0) + (fj_bits(k1 + shift) << 52));
    double s2 = fj_from_bits(fj_bits(1.0) + (fj_bits(k2 + shift) << 52));
    double y = (er * s1) * s2;
    return x != x ? x + x : y;                   /* NaN in, NaN out */
}

FJ_INLINE double fj_exp(double x) { return fj_exp_tail(x, 0.0); }

/* exp(x) for |x| <= FJ_EXP_NORMAL_MAX only (then 2^k and the result are
 * normal numbers): fj_exp without the clamps, the NaN test and the two-step
 * scaling that make fj_exp valid everywhere, and the same bits where it is
 * valid (e^r * 2^k is exact in both, then rounded once). About a third of
 * fj_exp's operations; for loops that send every other element to fj_exp. */
#define FJ_EXP_NORMAL_MAX 708.0
FJ_INLINE double fj_exp_normal(double x)
{
    double kd;
    double er = fj_exp_reduced(fj_exp_split(x, &kd));
    /* the low bits of kd hold k: shifted into the exponent field, 2^k */
    double scale = fj_from_bits(fj_bits(1.0) + (fj_bits(kd) << 52));
    return er * scale;
}

/* -- exp, float ---------------------------------------------------------------- */

FJ_INLINE float fj_expf(float x)
{
    const float shift = 0x1.8p23f;
    const float inv_ln2 = 0x1.715476p0f;
    const float ln2_hi = 0x1.62e4p-1f;        /* 15 bits: k * ln2_hi is exact */
    const float ln2_lo = 0x1.7f7d1cp-20f;
    float xc = x < -104.0f ? -104.0f : x;
    xc = xc > 89.0f ? 89.0f : xc;
    float kd = xc * inv_ln2 + shift;
    float k = kd - shift;
    float r = (xc - k * ln2_hi) - k * ln2_lo;
    float p = 1.0f / 5040.0f;                 /* Taylor to degree 7 */
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    float er = 1.0f + (r + (r * r) * p);
    float k1 = (k * 0.5f + shift) - shift;
    float k2 = k - k1;
    float s1 = fj_from_bitsf(fj_bitsf(1.0f) + (fj_bitsf(k1 + shift) << 23));
    float s2 = fj_from_bitsf(fj_bitsf(1.0f) + (fj_bitsf(k2 + shift) << 23));
    float y = (er * s1) * s2;
    return x != x ? x + x : y;
}

/* -- log and pow, double (double-double inside) ---------------------------------------
 *
 * a^c = e^(c ln a) needs ln a to about 2^-64 relative: an error d in
 * y = c ln a is a relative error d in a^c, and |y| reaches 709. So
 * fj_log_dd returns ln x as hi + lo (error < 2^-64 |ln x|), products are
 * exact (fj_two_prod: an FMA where there is one, Dekker's splitting
 * elsewhere), and fj_exp_tail takes the low part of y. Valid for finite
 * x > 0 and |c| < 2^20 (FJ_POW_FAST): a caller sends other arguments to libm,
 * as for sin and cos.
 */
#define FJ_POW_MAX_EXPONENT 1048576.0 /* 2**20 */

/* Without FMA the exact products cost Dekker's splitting, and the vector
 * pow is slower than libm's: FJ_FAST_POW says whether to use it. */
#if defined(__FMA__)
#define FJ_FAST_POW 1
#else
#define FJ_FAST_POW 0
#endif

FJ_INLINE double fj_two_prod(double a, double b, double *err)
{
    double p = a * b;
#if defined(__FMA__)
    *err = __builtin_fma(a, b, -p);
#else
    const double split = 134217729.0;            /* 2^27 + 1 */
    double t = split * a, ah = t - (t - a), al = a - ah;
    t = split * b;
    double bh = t - (t - b), bl = b - bh;
    *err = ((ah * bh - p) + ah * bl + al * bh) + al * bl;
#endif
    return p;
}

/* x = 2^e m with m in [sqrt(1/2), sqrt(2)), for finite x > 0; e in *ed. */
FJ_INLINE double fj_log_reduce(double x, double *ed)
{
    int sub = x < 0x1p-1022;
    double xs = sub ? x * 0x1p54 : x;
    uint64_t u = fj_bits(xs);
    double e = fj_from_bits(0x4330000000000000ULL | (u >> 52)) - (0x1p52 + 1023.0);
    double m = fj_from_bits((u & 0x000fffffffffffffULL) | 0x3ff0000000000000ULL);
    int big = m > 0x1.6a09e667f3bcdp0;
    *ed = e + (big ? 1.0 : 0.0) - (sub ? 54.0 : 0.0);
    return big ? 0.5 * m : m;
}

/* ln x (< 1 ulp: fdlibm's __ieee754_log), for finite x > 0. Enough for a
 * float32 a^c computed in double; fj_log_dd for a float64 one. */
FJ_INLINE double fj_log(double x)
{
    const double ln2_hi = 0x1.62e42feep-1, ln2_lo = 0x1.a39ef35793c76p-33;
    const double Lg1 = 6.666666666666735130e-01, Lg2 = 3.999999999940941908e-01,
                 Lg3 = 2.857142874366239149e-01, Lg4 = 2.222219843214978396e-01,
                 Lg5 = 1.818357216161805012e-01, Lg6 = 1.531383769920937332e-01,
                 Lg7 = 1.479819860511658591e-01;
    double ed, m = fj_log_reduce(x, &ed);
    double f = m - 1.0, s = f / (2.0 + f), z = s * s, w = z * z;
    double t1 = w * (Lg2 + w * (Lg4 + w * Lg6));
    double t2 = z * (Lg1 + w * (Lg3 + w * (Lg5 + w * Lg7)));
    double hfsq = 0.5 * f * f;
    return ed * ln2_hi - ((hfsq - (s * (hfsq + (t1 + t2)) + ed * ln2_lo)) - f);
}

/* ln x = hi + *lo, for finite x > 0 (subnormal included). */
FJ_INLINE double fj_log_dd(double x, double *lo)
{
    const double ln2_hi = 0x1.62e42feep-1, ln2_lo = 0x1.a39ef35793c76p-33;
    const double third_hi = 0x1.5555555555555p-1, third_lo = 0x1.5555555555555p-55;  /* 2/3 */
    double ed, m = fj_log_reduce(x, &ed);       /* x = 2^ed m */
    /* ln m = 2 atanh(s), s = f / (2 + f), f = m - 1 (exact); s as s_hi + s_lo */
    double f = m - 1.0;
    double u_hi = 2.0 + f, u_lo = (2.0 - u_hi) + f;
    double rcp = 1.0 / u_hi;                     /* one division: s_lo repairs s_hi */
    double s_hi = f * rcp, pe;
    double pr = fj_two_prod(s_hi, u_hi, &pe);
    double s_lo = (((f - pr) - pe) - s_hi * u_lo) * rcp;
    /* 2 atanh(s) = 2s + (2/3) s^3 + s^5 (2/5 + (2/7) s^2 + ...): the first
     * two terms in double-double, the rest (< 2^-12 of the total) in double. */
    double ze, z = fj_two_prod(s_hi, s_hi, &ze);
    double ce, c = fj_two_prod(z, s_hi, &ce);
    ce += ze * s_hi + 3.0 * z * s_lo;            /* s^3 = c + ce */
    double te, t = fj_two_prod(third_hi, c, &te);
    te += third_hi * ce + third_lo * c;          /* (2/3) s^3 = t + te */
    double q = 2.0 / 23.0;
    q = q * z + 2.0 / 21.0;
    q = q * z + 2.0 / 19.0;
    q = q * z + 2.0 / 17.0;
    q = q * z + 2.0 / 15.0;
    q = q * z + 2.0 / 13.0;
    q = q * z + 2.0 / 11.0;
    q = q * z + 2.0 / 9.0;
    q = q * z + 2.0 / 7.0;
    q = q * z + 2.0 / 5.0;
    double rest = (z * c) * q;                   /* s^5 q(s^2) */
    double h = 2.0 * s_hi + t;                   /* |2 s_hi| >= |t|: Fast2Sum */
    double l = (2.0 * s_hi - h) + t;
    l += 2.0 * s_lo + te + rest;
    /* + e ln 2 (e ln2_hi is exact): TwoSum, as either part may dominate */
    double eh = ed * ln2_hi;
    double sum = eh + h, bv = sum - eh;
    double err = (eh - (sum - bv)) + (h - bv);
    double low = err + l + ed * ln2_lo;
    double hi = sum + low;
    *lo = (sum - hi) + low;
    return hi;
}

/* a^c for finite a > 0 given ln a = log_hi + log_lo, and c = c_hi + c_lo. */
FJ_INLINE double fj_pow_log(double log_hi, double log_lo, double c_hi, double c_lo)
{
    double ye, y = fj_two_prod(c_hi, log_hi, &ye);
    return fj_exp_tail(y, ye + c_hi * log_lo + c_lo * log_hi);
}

/* Nonzero where fj_log_dd and fj_pow_log are valid for a^c. */
FJ_INLINE int fj_pow_fast(double a, double c)
{
    return (a > 0.0) & (a < INFINITY) & (fabs(c) < FJ_POW_MAX_EXPONENT);
}

/* -- sin and cos, double --------------------------------------------------------- */

/* fdlibm __kernel_sin(x, y) and __kernel_cos(x, y) on |x| <= pi/4, y the
 * tail of the reduced argument. */
FJ_INLINE double fj_kernel_sin(double x, double y)
{
    const double S1 = -1.66666666666666324348e-01, S2 = 8.33333333332248946124e-03,
                 S3 = -1.98412698298579493134e-04, S4 = 2.75573137070700676789e-06,
                 S5 = -2.50507602534068634195e-08, S6 = 1.58969099521155010221e-10;
    double z = x * x, v = z * x;
    double r = S2 + z * (S3 + z * (S4 + z * (S5 + z * S6)));
    return x - ((z * (0.5 * y - v * r) - y) - v * S1);
}

FJ_INLINE double fj_kernel_cos(double x, double y)
{
    const double C1 = 4.16666666666666019037e-02, C2 = -1.38888888888741095749e-03,
                 C3 = 2.48015872894767294178e-05, C4 = -2.75573143513906633035e-07,
                 C5 = 2.08757232129817482790e-09, C6 = -1.13596475577881948265e-11;
    double z = x * x;
    double r = z * (C1 + z * (C2 + z * (C3 + z * (C4 + z * (C5 + z * C6)))));
    double hz = 0.5 * z, w = 1.0 - hz;
    return w + (((1.0 - w) - hz) + (z * r - x * y));
}

/* x = q pi/2 + (r + r_lo), |r| <= pi/4; the quadrant q mod 4 in the low
 * bits of *quadrant. Exact for |x| < 2^17: q < 2^17 and each part of pi/2
 * has 33 bits, so q * part is exact. */
FJ_INLINE double fj_reduce_pio2(double x, double *r_lo, uint64_t *quadrant)
{
    const double shift = 0x1.8p52, two_over_pi = 0x1.45f306dc9c883p-1;
    const double p1 = 1.57079632673412561417e+00;   /* pi/2, bits 1-33 */
    const double p2 = 6.07710050630396597660e-11;   /* bits 34-66 */
    const double p3 = 2.02226624871116645580e-21;   /* bits 67-99 */
    const double p3t = 8.47842766036889956997e-32;  /* pi/2 - p1 - p2 - p3 */
    double kd = x * two_over_pi + shift;
    double q = kd - shift;
    double r1 = x - q * p1;                 /* exact */
    double w = q * p2;                      /* exact */
    double r2 = r1 - w;                     /* TwoSum: r2 + e2 = r1 - w exactly */
    double bv = r2 - r1;
    double e2 = (r1 - (r2 - bv)) - (w + bv);
    double lo = e2 - (q * p3 + q * p3t);
    double r = r2 + lo;
    *r_lo = (r2 - r) + lo;
    *quadrant = fj_bits(kd);
    return r;
}

/* Nonzero where fj_sin/fj_cos (and the float versions) are valid. */
FJ_INLINE int fj_trig_fast(double x)
{
    return (fabs(x) < FJ_TRIG_FAST_MAX) | (x != x) | (fabs(x) == INFINITY);
}

FJ_INLINE double fj_sincos_select(double s, double c, uint64_t n)
{
    /* n & 1 picks c over s; n & 2 flips the sign. */
    uint64_t swap = (uint64_t)0 - (n & 1);
    uint64_t bits = (fj_bits(c) & swap) | (fj_bits(s) & ~swap);
    return fj_from_bits(bits ^ ((n & 2) << 62));
}

FJ_INLINE double fj_sin(double x)
{
    double lo;
    uint64_t n;
    double r = fj_reduce_pio2(x, &lo, &n);
    double y = fj_sincos_select(fj_kernel_sin(r, lo), fj_kernel_cos(r, lo), n);
    return fabs(x) < 0x1p-27 ? x : y;       /* sin(x) = x there, and -0 stays -0 */
}

FJ_INLINE double fj_cos(double x)
{
    double lo;
    uint64_t n;
    double r = fj_reduce_pio2(x, &lo, &n);
    /* cos(x) = sin(x + pi/2): quadrant n + 1 */
    return fj_sincos_select(fj_kernel_sin(r, lo), fj_kernel_cos(r, lo), n + 1);
}

/* -- sin and cos, float: in double, rounded once ------------------------------------- */

FJ_INLINE float fj_sinf(float x) { return (float)fj_sin((double)x); }
FJ_INLINE float fj_cosf(float x) { return (float)fj_cos((double)x); }

#if defined(__SSE2__)
#include <immintrin.h>
#endif

/* -- 0.5 / sqrt(x), the derivative of sqrt ----------------------------------------------
 *
 * fj_half_rsqrt_f64/f32(a, out, n): out[i] = 0.5 / sqrt(a[i]), a whole array.
 * A square root and a division per element (both are slow, unpipelined
 * units) cost about twice the time the element takes to stream from memory
 * (measured: docs/performance.md, 'Measurements behind the code'); with
 * AVX-512 this is instead the 14-bit estimate
 * vrsqrt14 refined by Newton's iteration y <- y + y (1 - x y^2) / 2, twice
 * for double and once for float (the error squares each time: 2^-14, then
 * about 2^-27, then below 2^-53), faster per double (ibid.). Accuracy: at
 * most 1.2 ulp from the correctly rounded result, double and float (the worst
 * of tests/test_accuracy.py's inputs; it checks 4 ulp against mpmath); the result is
 * computed as (y/2) + (y/2)(r/2), whose scalings by 1/2 are exact.
 * x that is not a positive normal number (0, subnormals, negatives, inf,
 * NaN) is computed as 0.5 / sqrt(x), in the same vector, where the iteration
 * would give NaN for 0 and inf (0 * inf). The tail uses masked loads and
 * stores, so every element gets the same formula wherever it sits in the
 * array (results do not depend on alignment or on chunk boundaries).
 * Without AVX-512 the same functions compute 0.5 / sqrt(x), which the
 * compiler vectorises (the bits of derivative() in _derivatives.pxd);
 * FJ_FAST_RSQRT says which of the two a build has. */
#if defined(__AVX512F__)
#define FJ_FAST_RSQRT 1

FJ_INLINE __m512d fj_half_rsqrt_pd(__m512d x)
{
    const __m512d one = _mm512_set1_pd(1.0), half = _mm512_set1_pd(0.5);
    __m512d y = _mm512_rsqrt14_pd(x);
    __m512d r = _mm512_fnmadd_pd(_mm512_mul_pd(x, y), y, one);      /* 1 - x y^2 */
    y = _mm512_fmadd_pd(_mm512_mul_pd(y, half), r, y);
    r = _mm512_fnmadd_pd(_mm512_mul_pd(x, y), y, one);
    __m512d half_y = _mm512_mul_pd(y, half);
    __m512d result = _mm512_fmadd_pd(half_y, _mm512_mul_pd(r, half), half_y);
    __mmask8 normal = _mm512_cmp_pd_mask(x, _mm512_set1_pd(DBL_MIN), _CMP_GE_OQ)
                    & _mm512_cmp_pd_mask(x, _mm512_set1_pd(DBL_MAX), _CMP_LE_OQ);
    __mmask8 other = (__mmask8)~normal;
    if (other)
        result = _mm512_mask_div_pd(result, other, half, _mm512_mask_sqrt_pd(x, other, x));
    return result;
}

FJ_INLINE __m512 fj_half_rsqrt_ps(__m512 x)
{
    const __m512 one = _mm512_set1_ps(1.0f), half = _mm512_set1_ps(0.5f);
    __m512 y = _mm512_rsqrt14_ps(x);
    __m512 r = _mm512_fnmadd_ps(_mm512_mul_ps(x, y), y, one);
    __m512 half_y = _mm512_mul_ps(y, half);
    __m512 result = _mm512_fmadd_ps(half_y, _mm512_mul_ps(r, half), half_y);
    __mmask16 normal = _mm512_cmp_ps_mask(x, _mm512_set1_ps(FLT_MIN), _CMP_GE_OQ)
                     & _mm512_cmp_ps_mask(x, _mm512_set1_ps(FLT_MAX), _CMP_LE_OQ);
    __mmask16 other = (__mmask16)~normal;
    if (other)
        result = _mm512_mask_div_ps(result, other, half, _mm512_mask_sqrt_ps(x, other, x));
    return result;
}

FJ_INLINE void fj_half_rsqrt_f64(const double *a, double *out, ptrdiff_t n)
{
    ptrdiff_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm512_storeu_pd(out + i, fj_half_rsqrt_pd(_mm512_loadu_pd(a + i)));
    if (i < n) {
        __mmask8 m = (__mmask8)((1u << (n - i)) - 1);
        _mm512_mask_storeu_pd(out + i, m, fj_half_rsqrt_pd(_mm512_maskz_loadu_pd(m, a + i)));
    }
}

FJ_INLINE void fj_half_rsqrt_f32(const float *a, float *out, ptrdiff_t n)
{
    ptrdiff_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(out + i, fj_half_rsqrt_ps(_mm512_loadu_ps(a + i)));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(out + i, m, fj_half_rsqrt_ps(_mm512_maskz_loadu_ps(m, a + i)));
    }
}
#else
#define FJ_FAST_RSQRT 0
FJ_INLINE void fj_half_rsqrt_f64(const double *a, double *out, ptrdiff_t n)
{
    for (ptrdiff_t i = 0; i < n; i++) out[i] = 0.5 / __builtin_sqrt(a[i]);
}
FJ_INLINE void fj_half_rsqrt_f32(const float *a, float *out, ptrdiff_t n)
{
    for (ptrdiff_t i = 0; i < n; i++) out[i] = 0.5f / __builtin_sqrtf(a[i]);
}
#endif

/* -- non-temporal stores ---------------------------------------------------------------
 *
 * fj_stream_f64/f32(dst, src, n): dst[i] = src[i] with stores that bypass the
 * cache. For results far larger than the cache they save the read of each
 * destination line that an ordinary store costs first (write-allocate): a
 * kernel reading two arrays and writing one moves 24 instead of 32 bytes per
 * float64 element. dst must be aligned to 64 bytes; fj_stream_fence() must
 * follow the last one (the stores are weakly ordered). Without SSE2 these
 * are plain copies. */

FJ_INLINE void fj_stream_f64(double *dst, const double *src, ptrdiff_t n)
{
    ptrdiff_t i = 0;
#if defined(__AVX512F__)
    for (; i + 8 <= n; i += 8) _mm512_stream_pd(dst + i, _mm512_loadu_pd(src + i));
#elif defined(__AVX__)
    for (; i + 4 <= n; i += 4) _mm256_stream_pd(dst + i, _mm256_loadu_pd(src + i));
#elif defined(__SSE2__)
    for (; i + 2 <= n; i += 2) _mm_stream_pd(dst + i, _mm_loadu_pd(src + i));
#endif
    for (; i < n; i++) dst[i] = src[i];
}

FJ_INLINE void fj_stream_f32(float *dst, const float *src, ptrdiff_t n)
{
    ptrdiff_t i = 0;
#if defined(__AVX512F__)
    for (; i + 16 <= n; i += 16) _mm512_stream_ps(dst + i, _mm512_loadu_ps(src + i));
#elif defined(__AVX__)
    for (; i + 8 <= n; i += 8) _mm256_stream_ps(dst + i, _mm256_loadu_ps(src + i));
#elif defined(__SSE2__)
    for (; i + 4 <= n; i += 4) _mm_stream_ps(dst + i, _mm_loadu_ps(src + i));
#endif
    for (; i < n; i++) dst[i] = src[i];
}

FJ_INLINE void fj_stream_fence(void)
{
#if defined(__SSE2__)
    _mm_sfence();
#endif
}

#endif /* FASTJAC_VECMATH_H */
