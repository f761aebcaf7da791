/* The row arithmetic of a batch loss's pass (row_pass in _expr_loops.pxd):
 * for a block of m rows of X (m <= 256, so the block stays in L2 between
 * its two uses),
 *
 *     fj_rows_dot:     z[k]  = x_k . w                 (before the loss)
 *     fj_rows_axpy:    g[j] += sum_k d[k] x_kj         (X^T d, after it)
 *     fj_rows_axpy_sq: g[j] += sum_k d[k] x_kj^2       (the Hessian diagonal)
 *
 * 8 to 64 features: eight rows at a time on 8-lane vectors (FJ_ROWS8).
 * Other widths: four rows at a time; the dot products keep four independent
 * vector chains (one per row), so they are not bound by the latency of one
 * chain of multiply-adds; the accumulations update g once per four rows. GCC and
 * clang vector types are lowered to the instruction set of the module that
 * includes this file (SSE2, AVX2, AVX-512); every sum is in double, float32
 * rows are converted as they are loaded. Plain C elsewhere.
 */
#ifndef FASTJAC_BATCH_ROWS_H
#define FASTJAC_BATCH_ROWS_H

#include <Python.h>          /* Py_ssize_t */
#include <string.h>

#include "_neuron_rows.h"    /* fj_v8d, fj_load8_*, fj_reduce8, fj_splat */

#if defined(__GNUC__) && (defined(__clang__) || __GNUC__ >= 9)
#define FJ_ROWS_VECTOR 1
typedef double fj_r4d __attribute__((vector_size(32)));
typedef float fj_r4f __attribute__((vector_size(16)));

#define FJ_R_INLINE static inline __attribute__((always_inline))

FJ_R_INLINE fj_r4d fj_r_load_double(const double* p) {
    fj_r4d v;
    memcpy(&v, p, sizeof v);
    return v;
}

FJ_R_INLINE fj_r4d fj_r_load_float(const float* p) {
    fj_r4f v;
    memcpy(&v, p, sizeof v);
    return __builtin_convertvector(v, fj_r4d);
}

FJ_R_INLINE double fj_r_hsum(fj_r4d v) {
    return (v[0] + v[1]) + (v[2] + v[3]);
}

FJ_R_INLINE void fj_r_store(double* p, fj_r4d v) {
    memcpy(p, &v, sizeof v);
}
#else
#define FJ_ROWS_VECTOR 0
#endif

#if FJ_ROWS_VECTOR
#define FJ_ROWS_FUNCTIONS(T)                                                               \
static void fj_rows_dot_any_##T(const T* X, Py_ssize_t n, const T* w, Py_ssize_t m, T* z) { \
    Py_ssize_t k = 0, j, n4 = n - n % 4;                                                   \
    for (; k + 4 <= m; k += 4) {                                                           \
        const T* x0 = X + k * n;                                                           \
        const T* x1 = x0 + n;                                                              \
        const T* x2 = x1 + n;                                                              \
        const T* x3 = x2 + n;                                                              \
        fj_r4d a0 = {0, 0, 0, 0}, a1 = a0, a2 = a0, a3 = a0;                               \
        double s0, s1, s2, s3;                                                             \
        for (j = 0; j < n4; j += 4) {                                                      \
            fj_r4d wv = fj_r_load_##T(w + j);                                              \
            a0 += fj_r_load_##T(x0 + j) * wv;                                              \
            a1 += fj_r_load_##T(x1 + j) * wv;                                              \
            a2 += fj_r_load_##T(x2 + j) * wv;                                              \
            a3 += fj_r_load_##T(x3 + j) * wv;                                              \
        }                                                                                  \
        s0 = fj_r_hsum(a0); s1 = fj_r_hsum(a1); s2 = fj_r_hsum(a2); s3 = fj_r_hsum(a3);    \
        for (j = n4; j < n; j++) {                                                         \
            double wj = (double)w[j];                                                      \
            s0 += (double)x0[j] * wj; s1 += (double)x1[j] * wj;                            \
            s2 += (double)x2[j] * wj; s3 += (double)x3[j] * wj;                            \
        }                                                                                  \
        z[k] = (T)s0; z[k + 1] = (T)s1; z[k + 2] = (T)s2; z[k + 3] = (T)s3;                \
    }                                                                                      \
    for (; k < m; k++) {                                                                   \
        const T* x0 = X + k * n;                                                           \
        fj_r4d a0 = {0, 0, 0, 0};                                                          \
        double s0;                                                                         \
        for (j = 0; j < n4; j += 4)                                                        \
            a0 += fj_r_load_##T(x0 + j) * fj_r_load_##T(w + j);                            \
        s0 = fj_r_hsum(a0);                                                                \
        for (j = n4; j < n; j++)                                                           \
            s0 += (double)x0[j] * (double)w[j];                                            \
        z[k] = (T)s0;                                                                      \
    }                                                                                      \
}                                                                                          \
                                                                                           \
static void fj_rows_axpy_any_##T(const T* X, Py_ssize_t n, const T* d, Py_ssize_t m,      \
                                 double* restrict g, int squared) {                        \
    Py_ssize_t k = 0, j, n4 = n - n % 4;                                                   \
    for (; k + 4 <= m; k += 4) {                                                           \
        const T* x0 = X + k * n;                                                           \
        const T* x1 = x0 + n;                                                              \
        const T* x2 = x1 + n;                                                              \
        const T* x3 = x2 + n;                                                              \
        double d0 = (double)d[k], d1 = (double)d[k + 1];                                   \
        double d2 = (double)d[k + 2], d3 = (double)d[k + 3];                               \
        fj_r4d v0 = {d0, d0, d0, d0}, v1 = {d1, d1, d1, d1};                               \
        fj_r4d v2 = {d2, d2, d2, d2}, v3 = {d3, d3, d3, d3};                               \
        if (squared) {                                                                     \
            for (j = 0; j < n4; j += 4) {                                                  \
                fj_r4d y0 = fj_r_load_##T(x0 + j), y1 = fj_r_load_##T(x1 + j);             \
                fj_r4d y2 = fj_r_load_##T(x2 + j), y3 = fj_r_load_##T(x3 + j);             \
                fj_r_store(g + j, fj_r_load_double(g + j) + ((v0 * y0 * y0 + v1 * y1 * y1) \
                                                       + (v2 * y2 * y2 + v3 * y3 * y3)));  \
            }                                                                              \
            for (j = n4; j < n; j++) {                                                     \
                double y0 = x0[j], y1 = x1[j], y2 = x2[j], y3 = x3[j];                     \
                g[j] += (d0 * y0 * y0 + d1 * y1 * y1) + (d2 * y2 * y2 + d3 * y3 * y3);     \
            }                                                                              \
        } else {                                                                           \
            for (j = 0; j < n4; j += 4)                                                    \
                fj_r_store(g + j, fj_r_load_double(g + j)                                  \
                           + ((v0 * fj_r_load_##T(x0 + j) + v1 * fj_r_load_##T(x1 + j))    \
                              + (v2 * fj_r_load_##T(x2 + j) + v3 * fj_r_load_##T(x3 + j)))); \
            for (j = n4; j < n; j++)                                                       \
                g[j] += (d0 * x0[j] + d1 * x1[j]) + (d2 * x2[j] + d3 * x3[j]);             \
        }                                                                                  \
    }                                                                                      \
    for (; k < m; k++) {                                                                   \
        const T* x0 = X + k * n;                                                           \
        double d0 = (double)d[k];                                                          \
        for (j = 0; j < n; j++)                                                            \
            g[j] += squared ? d0 * x0[j] * x0[j] : d0 * x0[j];                             \
    }                                                                                      \
}
#else
#define FJ_ROWS_FUNCTIONS(T)                                                               \
static void fj_rows_dot_##T(const T* X, Py_ssize_t n, const T* w, Py_ssize_t m, T* z) {   \
    Py_ssize_t k, j;                                                                       \
    for (k = 0; k < m; k++) {                                                              \
        double s = 0;                                                                      \
        for (j = 0; j < n; j++)                                                            \
            s += (double)X[k * n + j] * (double)w[j];                                      \
        z[k] = (T)s;                                                                       \
    }                                                                                      \
}                                                                                          \
static void fj_rows_axpy_##T(const T* X, Py_ssize_t n, const T* d, Py_ssize_t m,          \
                             double* g, int squared) {                                     \
    Py_ssize_t k, j;                                                                       \
    for (k = 0; k < m; k++)                                                                \
        for (j = 0; j < n; j++) {                                                          \
            double x = X[k * n + j];                                                       \
            g[j] += squared ? (double)d[k] * x * x : (double)d[k] * x;                     \
        }                                                                                  \
}
#endif

FJ_ROWS_FUNCTIONS(double)
FJ_ROWS_FUNCTIONS(float)

#if FJ_ROWS_VECTOR && FJ_NEURON_VECTOR
/* 8 <= n <= 64 features: 8-lane vectors (_neuron_rows.h's types and
 * reduction). A row is NV vectors of 8 features and, with TAIL, the last 8
 * features (a window overlapping the vectors before it: its weights are
 * zero in the overlap, and its sums there are dropped). The dot products of
 * eight rows are reduced together (fj_reduce8); the accumulation keeps g in
 * NV (+ 1) vector registers for the whole block. NV and TAIL are constants
 * in each function made by the macro. */
#define FJ_ROWS8(NAME, T, LOAD8, NV, TAIL)                                                \
static void NAME##_dot(const T* X, Py_ssize_t n, const T* w, Py_ssize_t m, T* z) {      \
    enum { NVEC = NV + TAIL };                                                           \
    fj_v8d wv[NVEC], dots[8], zz;                                                        \
    const Py_ssize_t tail = n - 8;           /* first feature of the tail window */      \
    Py_ssize_t i, j;                                                                     \
    int k, r;                                                                            \
    for (k = 0; k < NV; k++)                                                             \
        wv[k] = LOAD8(w + 8 * k);                                                        \
    if (TAIL) {                                                                          \
        double wt[8];                                                                    \
        for (j = 0; j < 8; j++)                                                          \
            wt[j] = tail + j < 8 * NV ? 0.0 : (double)w[tail + j];                       \
        memcpy(&wv[NV], wt, sizeof wt);                                                  \
    }                                                                                    \
    for (i = 0; i + 8 <= m; i += 8) {                                                    \
        for (r = 0; r < 8; r++) {                                                        \
            const T* x = X + (i + r) * n;                                                \
            fj_v8d d = LOAD8(x) * wv[0];                                                 \
            for (k = 1; k < NV; k++)                                                     \
                d += LOAD8(x + 8 * k) * wv[k];                                           \
            if (TAIL)                                                                    \
                d += LOAD8(x + tail) * wv[NV];                                           \
            dots[r] = d;                                                                 \
        }                                                                                \
        zz = fj_reduce8(dots);                                                           \
        for (r = 0; r < 8; r++)                                                          \
            z[i + r] = (T)zz[r];                                                         \
    }                                                                                    \
    for (; i < m; i++) {                                                                 \
        const T* x = X + i * n;                                                          \
        double s = 0;                                                                    \
        for (j = 0; j < n; j++)                                                          \
            s += (double)x[j] * (double)w[j];                                            \
        z[i] = (T)s;                                                                     \
    }                                                                                    \
}                                                                                        \
                                                                                         \
static void NAME##_axpy(const T* X, Py_ssize_t n, const T* d, Py_ssize_t m, double* g,  \
                        int squared) {                                                   \
    enum { NVEC = NV + TAIL };                                                           \
    fj_v8d acc[NVEC];                                                                    \
    const Py_ssize_t tail = n - 8;                                                       \
    Py_ssize_t i, j;                                                                     \
    int k;                                                                               \
    for (k = 0; k < NV; k++)                                                             \
        memcpy(&acc[k], g + 8 * k, sizeof acc[k]);                                       \
    if (TAIL)                                                                            \
        acc[NV] = fj_splat(0);                                                           \
    if (squared) {                                                                       \
        for (i = 0; i < m; i++) {                                                        \
            const T* x = X + i * n;                                                      \
            fj_v8d dd = fj_splat((double)d[i]), v;                                       \
            for (k = 0; k < NV; k++) {                                                   \
                v = LOAD8(x + 8 * k);                                                    \
                acc[k] += dd * v * v;                                                    \
            }                                                                            \
            if (TAIL) {                                                                  \
                v = LOAD8(x + tail);                                                     \
                acc[NV] += dd * v * v;                                                   \
            }                                                                            \
        }                                                                                \
    } else {                                                                             \
        for (i = 0; i < m; i++) {                                                        \
            const T* x = X + i * n;                                                      \
            fj_v8d dd = fj_splat((double)d[i]);                                          \
            for (k = 0; k < NV; k++)                                                     \
                acc[k] += dd * LOAD8(x + 8 * k);                                         \
            if (TAIL)                                                                    \
                acc[NV] += dd * LOAD8(x + tail);                                         \
        }                                                                                \
    }                                                                                    \
    for (k = 0; k < NV; k++)                                                             \
        memcpy(g + 8 * k, &acc[k], sizeof acc[k]);                                       \
    if (TAIL) {                                                                          \
        double last[8];                                                                  \
        memcpy(last, &acc[NV], sizeof last);                                             \
        for (j = 8 * NV; j < n; j++)                                                     \
            g[j] += last[j - tail];                                                      \
    }                                                                                    \
}

#define FJ_ROWS8_WIDTHS(T, LOAD8)                                                        \
    FJ_ROWS8(fj_rows8_##T##_1_0, T, LOAD8, 1, 0) FJ_ROWS8(fj_rows8_##T##_1_1, T, LOAD8, 1, 1) \
    FJ_ROWS8(fj_rows8_##T##_2_0, T, LOAD8, 2, 0) FJ_ROWS8(fj_rows8_##T##_2_1, T, LOAD8, 2, 1) \
    FJ_ROWS8(fj_rows8_##T##_3_0, T, LOAD8, 3, 0) FJ_ROWS8(fj_rows8_##T##_3_1, T, LOAD8, 3, 1) \
    FJ_ROWS8(fj_rows8_##T##_4_0, T, LOAD8, 4, 0) FJ_ROWS8(fj_rows8_##T##_4_1, T, LOAD8, 4, 1) \
    FJ_ROWS8(fj_rows8_##T##_5_0, T, LOAD8, 5, 0) FJ_ROWS8(fj_rows8_##T##_5_1, T, LOAD8, 5, 1) \
    FJ_ROWS8(fj_rows8_##T##_6_0, T, LOAD8, 6, 0) FJ_ROWS8(fj_rows8_##T##_6_1, T, LOAD8, 6, 1) \
    FJ_ROWS8(fj_rows8_##T##_7_0, T, LOAD8, 7, 0) FJ_ROWS8(fj_rows8_##T##_7_1, T, LOAD8, 7, 1) \
    FJ_ROWS8(fj_rows8_##T##_8_0, T, LOAD8, 8, 0)                                         \
    typedef void (*fj_rows8_dot_##T##_fn)(const T*, Py_ssize_t, const T*, Py_ssize_t, T*); \
    typedef void (*fj_rows8_axpy_##T##_fn)(const T*, Py_ssize_t, const T*, Py_ssize_t,    \
                                           double*, int);                                 \
    static const fj_rows8_dot_##T##_fn fj_rows8_dot_##T[8][2] = {                         \
        {fj_rows8_##T##_1_0_dot, fj_rows8_##T##_1_1_dot}, {fj_rows8_##T##_2_0_dot, fj_rows8_##T##_2_1_dot}, \
        {fj_rows8_##T##_3_0_dot, fj_rows8_##T##_3_1_dot}, {fj_rows8_##T##_4_0_dot, fj_rows8_##T##_4_1_dot}, \
        {fj_rows8_##T##_5_0_dot, fj_rows8_##T##_5_1_dot}, {fj_rows8_##T##_6_0_dot, fj_rows8_##T##_6_1_dot}, \
        {fj_rows8_##T##_7_0_dot, fj_rows8_##T##_7_1_dot}, {fj_rows8_##T##_8_0_dot, NULL}};    \
    static const fj_rows8_axpy_##T##_fn fj_rows8_axpy_##T[8][2] = {                       \
        {fj_rows8_##T##_1_0_axpy, fj_rows8_##T##_1_1_axpy}, {fj_rows8_##T##_2_0_axpy, fj_rows8_##T##_2_1_axpy}, \
        {fj_rows8_##T##_3_0_axpy, fj_rows8_##T##_3_1_axpy}, {fj_rows8_##T##_4_0_axpy, fj_rows8_##T##_4_1_axpy}, \
        {fj_rows8_##T##_5_0_axpy, fj_rows8_##T##_5_1_axpy}, {fj_rows8_##T##_6_0_axpy, fj_rows8_##T##_6_1_axpy}, \
        {fj_rows8_##T##_7_0_axpy, fj_rows8_##T##_7_1_axpy}, {fj_rows8_##T##_8_0_axpy, NULL}};  \
    static void fj_rows_dot_##T(const T* X, Py_ssize_t n, const T* w, Py_ssize_t m, T* z) { \
        if (n >= 8 && n <= 64)                                                           \
            fj_rows8_dot_##T[n / 8 - 1][n % 8 != 0](X, n, w, m, z);                      \
        else                                                                             \
            fj_rows_dot_any_##T(X, n, w, m, z);                                          \
    }                                                                                    \
    static void fj_rows_axpy_##T(const T* X, Py_ssize_t n, const T* d, Py_ssize_t m,     \
                                 double* g, int squared) {                               \
        if (n >= 8 && n <= 64)                                                           \
            fj_rows8_axpy_##T[n / 8 - 1][n % 8 != 0](X, n, d, m, g, squared);            \
        else                                                                             \
            fj_rows_axpy_any_##T(X, n, d, m, g, squared);                                \
    }

FJ_ROWS8_WIDTHS(double, fj_load8_f64)
FJ_ROWS8_WIDTHS(float, fj_load8_f32)
#elif FJ_ROWS_VECTOR
static void fj_rows_dot_double(const double* X, Py_ssize_t n, const double* w, Py_ssize_t m,
                               double* z) { fj_rows_dot_any_double(X, n, w, m, z); }
static void fj_rows_dot_float(const float* X, Py_ssize_t n, const float* w, Py_ssize_t m,
                              float* z) { fj_rows_dot_any_float(X, n, w, m, z); }
static void fj_rows_axpy_double(const double* X, Py_ssize_t n, const double* d, Py_ssize_t m,
                                double* g, int squared) {
    fj_rows_axpy_any_double(X, n, d, m, g, squared);
}
static void fj_rows_axpy_float(const float* X, Py_ssize_t n, const float* d, Py_ssize_t m,
                               double* g, int squared) {
    fj_rows_axpy_any_float(X, n, d, m, g, squared);
}
#endif

#endif  /* FASTJAC_BATCH_ROWS_H */
