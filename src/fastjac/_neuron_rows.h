/* The neuron's pass over rows of X for 8 <= n <= 64 features, with GCC/clang
 * vector types (8 doubles), which the compiler lowers to the instruction set
 * of the module it is compiled in (SSE2, AVX2, AVX-512; see setup.py).
 *
 * Why: the scalar loop of _expr_loops.pxd (rows_serial) computes each row's
 * dot product as a chain of scalar multiply-adds, slow at n = 16 (measured:
 * docs/performance.md, 'Measurements behind the code'). Here a row is a few
 * 8-lane vectors: its products are summed lane-wise (one vector per row),
 * eight rows' vectors are reduced together by a transpose-and-add tree (14
 * shuffles and 7 additions for 8 rows), and the residuals, the loss and
 * dC/db of eight rows are one vector each.
 *
 * The same results as rows_serial up to the order of the additions:
 * relu'(0) = 0 (a row's residual is 0 unless z > 0), a NaN z gives NaN. The
 * gradient update has no branch on the residual (whether a row is active is
 * random in training data, and a mispredicted branch costs more than the
 * multiply-adds it would skip).
 * float32 inputs are converted to double as they are loaded; every sum is in
 * double.
 */
#ifndef FASTJAC_NEURON_ROWS_H
#define FASTJAC_NEURON_ROWS_H

#include <Python.h>          /* Py_ssize_t */
#include <string.h>

#if defined(__GNUC__) && (defined(__clang__) || __GNUC__ >= 9)
#define FJ_NEURON_VECTOR 1

typedef double fj_v8d __attribute__((vector_size(64)));
typedef long long fj_v8i __attribute__((vector_size(64)));
typedef float fj_v8f __attribute__((vector_size(32)));

#define FJ_NEURON_MAX_VECTORS 8         /* n <= 64 */

#if defined(__clang__)
#define FJ_SHUFFLE2(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define FJ_SHUFFLE2(a, b, ...) __builtin_shuffle(a, b, (fj_v8i){__VA_ARGS__})
#endif

static inline fj_v8d fj_load8_f64(const double* p) {
    fj_v8d v;
    memcpy(&v, p, sizeof v);            /* an unaligned load */
    return v;
}

static inline fj_v8d fj_load8_f32(const float* p) {
    fj_v8f v;
    memcpy(&v, p, sizeof v);
    return __builtin_convertvector(v, fj_v8d);
}

/* Lane r of the result is the sum of the 8 lanes of v[r]. */
static inline fj_v8d fj_reduce8(const fj_v8d v[8]) {
    fj_v8d t01 = FJ_SHUFFLE2(v[0], v[1], 0, 8, 2, 10, 4, 12, 6, 14)
               + FJ_SHUFFLE2(v[0], v[1], 1, 9, 3, 11, 5, 13, 7, 15);
    fj_v8d t23 = FJ_SHUFFLE2(v[2], v[3], 0, 8, 2, 10, 4, 12, 6, 14)
               + FJ_SHUFFLE2(v[2], v[3], 1, 9, 3, 11, 5, 13, 7, 15);
    fj_v8d t45 = FJ_SHUFFLE2(v[4], v[5], 0, 8, 2, 10, 4, 12, 6, 14)
               + FJ_SHUFFLE2(v[4], v[5], 1, 9, 3, 11, 5, 13, 7, 15);
    fj_v8d t67 = FJ_SHUFFLE2(v[6], v[7], 0, 8, 2, 10, 4, 12, 6, 14)
               + FJ_SHUFFLE2(v[6], v[7], 1, 9, 3, 11, 5, 13, 7, 15);
    fj_v8d q0 = FJ_SHUFFLE2(t01, t23, 0, 1, 8, 9, 4, 5, 12, 13)
              + FJ_SHUFFLE2(t01, t23, 2, 3, 10, 11, 6, 7, 14, 15);
    fj_v8d q1 = FJ_SHUFFLE2(t45, t67, 0, 1, 8, 9, 4, 5, 12, 13)
              + FJ_SHUFFLE2(t45, t67, 2, 3, 10, 11, 6, 7, 14, 15);
    return FJ_SHUFFLE2(q0, q1, 0, 1, 2, 3, 8, 9, 10, 11)
         + FJ_SHUFFLE2(q0, q1, 4, 5, 6, 7, 12, 13, 14, 15);
}

static inline fj_v8d fj_splat(double v) {
    return (fj_v8d){v, v, v, v, v, v, v, v};
}

/* x where mask is 0, 0 where it is all ones */
static inline fj_v8d fj_clear(fj_v8d x, fj_v8i mask) {
    return (fj_v8d)((fj_v8i)x & ~mask);
}

/* Rows start..stop: gw[0:n] = sum of r_i x_i, out[0] = sum of r_i (dC/db),
 * out[1] = sum of (y_i - relu(z_i))^2, with r_i = z_i - y_i unless z_i <= 0
 * (so NaN where z_i is NaN), else 0.
 *
 * A row is NV vectors of 8 features and, with TAIL, one more: the last 8
 * features of the row (a window that overlaps the vectors before it), whose
 * weights are zero in the overlap. NV and TAIL are constants in each
 * function made by the macro, so the accumulators stay in registers. */
#define FJ_NEURON_ROWS(NAME, T, LOAD8, NV, TAIL)                                         \
static void NAME(const T* X, const T* y, const T* w, double b, Py_ssize_t start,         \
                 Py_ssize_t stop, Py_ssize_t n, double* gw, double* out) {              \
    enum { NVEC = NV + TAIL };                                                           \
    fj_v8d wv[NVEC], g[NVEC], dots[8];                                                   \
    fj_v8d gbv = fj_splat(0), lossv = fj_splat(0), bv = fj_splat(b);                     \
    const Py_ssize_t tail = n - 8;           /* first feature of the tail window */      \
    double gb = 0, loss = 0, last[8];                                                    \
    Py_ssize_t i, j, full = start + (stop - start) / 8 * 8;                              \
    int k, r;                                                                            \
    for (k = 0; k < NV; k++)                                                             \
        wv[k] = LOAD8(w + 8 * k);                                                        \
    if (TAIL) {                                                                          \
        double wt[8];                                                                    \
        for (j = 0; j < 8; j++)                                                          \
            wt[j] = tail + j < 8 * NV ? 0.0 : (double)w[tail + j];                       \
        memcpy(&wv[NV], wt, sizeof wt);                                                  \
    }                                                                                    \
    for (k = 0; k < NVEC; k++)                                                           \
        g[k] = fj_splat(0);                                                              \
    for (i = start; i < full; i += 8) {                                                  \
        fj_v8d z, yv, rv, av;                                                            \
        fj_v8i inactive;                                                                 \
        for (r = 0; r < 8; r++) {                                                        \
            const T* x = X + (i + r) * n;                                                \
            fj_v8d d = LOAD8(x) * wv[0];                                                 \
            for (k = 1; k < NV; k++)                                                     \
                d += LOAD8(x + 8 * k) * wv[k];                                           \
            if (TAIL)                                                                    \
                d += LOAD8(x + tail) * wv[NV];                                           \
            dots[r] = d;                                                                 \
        }                                                                                \
        z = fj_reduce8(dots) + bv;                                                       \
        yv = LOAD8(y + i);                                                               \
        inactive = (fj_v8i)(z <= 0);         /* false for NaN: NaN propagates */        \
        rv = fj_clear(z - yv, inactive);                                                 \
        av = fj_clear(z, inactive);                                                      \
        gbv += rv;                                                                       \
        lossv += (yv - av) * (yv - av);                                                  \
        for (r = 0; r < 8; r++) {            /* no branch: activity is random */        \
            const T* x = X + (i + r) * n;                                                \
            fj_v8d rr = fj_splat(rv[r]);                                                 \
            for (k = 0; k < NV; k++)                                                     \
                g[k] += rr * LOAD8(x + 8 * k);                                           \
            if (TAIL)                                                                    \
                g[NV] += rr * LOAD8(x + tail);                                           \
        }                                                                                \
    }                                                                                    \
    for (k = 0; k < NV; k++)                                                             \
        memcpy(gw + 8 * k, &g[k], sizeof g[k]);                                          \
    if (TAIL) {                                                                          \
        memcpy(last, &g[NV], sizeof last);                                               \
        for (j = 8 * NV; j < n; j++)                                                     \
            gw[j] = last[j - tail];                                                      \
    }                                                                                    \
    for (r = 0; r < 8; r++) {                                                            \
        gb += gbv[r];                                                                    \
        loss += lossv[r];                                                                \
    }                                                                                    \
    for (i = full; i < stop; i++) {          /* the last stop - start % 8 rows */       \
        const T* x = X + i * n;                                                          \
        double zr = b, yr = (double)y[i], rr, ar;                                        \
        for (j = 0; j < n; j++)                                                          \
            zr += (double)x[j] * (double)w[j];                                           \
        rr = zr <= 0 ? 0 : zr - yr;                                                      \
        ar = zr <= 0 ? 0 : zr;                                                           \
        gb += rr;                                                                        \
        loss += (yr - ar) * (yr - ar);                                                   \
        for (j = 0; j < n; j++)                                                          \
            gw[j] += rr * (double)x[j];                                                  \
    }                                                                                    \
    out[0] = gb;                                                                         \
    out[1] = loss;                                                                       \
}

#define FJ_NEURON_WIDTHS(T, LOAD8)                                                       \
    FJ_NEURON_ROWS(fj_neuron_##T##_1_0, T, LOAD8, 1, 0)                                  \
    FJ_NEURON_ROWS(fj_neuron_##T##_1_1, T, LOAD8, 1, 1)                                  \
    FJ_NEURON_ROWS(fj_neuron_##T##_2_0, T, LOAD8, 2, 0)                                  \
    FJ_NEURON_ROWS(fj_neuron_##T##_2_1, T, LOAD8, 2, 1)                                  \
    FJ_NEURON_ROWS(fj_neuron_##T##_3_0, T, LOAD8, 3, 0)                                  \
    FJ_NEURON_ROWS(fj_neuron_##T##_3_1, T, LOAD8, 3, 1)                                  \
    FJ_NEURON_ROWS(fj_neuron_##T##_4_0, T, LOAD8, 4, 0)                                  \
    FJ_NEURON_ROWS(fj_neuron_##T##_4_1, T, LOAD8, 4, 1)                                  \
    FJ_NEURON_ROWS(fj_neuron_##T##_5_0, T, LOAD8, 5, 0)                                  \
    FJ_NEURON_ROWS(fj_neuron_##T##_5_1, T, LOAD8, 5, 1)                                  \
    FJ_NEURON_ROWS(fj_neuron_##T##_6_0, T, LOAD8, 6, 0)                                  \
    FJ_NEURON_ROWS(fj_neuron_##T##_6_1, T, LOAD8, 6, 1)                                  \
    FJ_NEURON_ROWS(fj_neuron_##T##_7_0, T, LOAD8, 7, 0)                                  \
    FJ_NEURON_ROWS(fj_neuron_##T##_7_1, T, LOAD8, 7, 1)                                  \
    FJ_NEURON_ROWS(fj_neuron_##T##_8_0, T, LOAD8, 8, 0)                                  \
    typedef void (*fj_neuron_##T##_fn)(const T*, const T*, const T*, double, Py_ssize_t, \
                                        Py_ssize_t, Py_ssize_t, double*, double*);       \
    static const fj_neuron_##T##_fn fj_neuron_##T##_by_width[8][2] = {                   \
        {fj_neuron_##T##_1_0, fj_neuron_##T##_1_1}, {fj_neuron_##T##_2_0, fj_neuron_##T##_2_1}, \
        {fj_neuron_##T##_3_0, fj_neuron_##T##_3_1}, {fj_neuron_##T##_4_0, fj_neuron_##T##_4_1}, \
        {fj_neuron_##T##_5_0, fj_neuron_##T##_5_1}, {fj_neuron_##T##_6_0, fj_neuron_##T##_6_1}, \
        {fj_neuron_##T##_7_0, fj_neuron_##T##_7_1}, {fj_neuron_##T##_8_0, NULL}};         \
    static void fj_neuron_rows_##T(const T* X, const T* y, const T* w, double b,         \
                                   Py_ssize_t start, Py_ssize_t stop, Py_ssize_t n,      \
                                   double* gw, double* out) {                            \
        fj_neuron_##T##_by_width[n / 8 - 1][n % 8 != 0](X, y, w, b, start, stop, n, gw, out); \
    }

FJ_NEURON_WIDTHS(double, fj_load8_f64)
FJ_NEURON_WIDTHS(float, fj_load8_f32)

#else
#define FJ_NEURON_VECTOR 0
static void fj_neuron_rows_double(const double* X, const double* y, const double* w, double b,
                               Py_ssize_t start, Py_ssize_t stop, Py_ssize_t n,
                               double* gw, double* out) {}
static void fj_neuron_rows_float(const float* X, const float* y, const float* w, double b,
                               Py_ssize_t start, Py_ssize_t stop, Py_ssize_t n,
                               double* gw, double* out) {}
#endif

#endif  /* FASTJAC_NEURON_ROWS_H */
