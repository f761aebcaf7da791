/* The row arithmetic of a batch loss's pass (row_pass in _expr_loops.pxd):
 * for a block of m rows of X (m <= 256, so the block stays in L2 between
 * its two uses),
 *
 *     fj_rows_dot:     z[k]  = x_k . w                 (before the loss)
 *     fj_rows_axpy:    g[j] += sum_k d[k] x_kj         (X^T d, after it)
 *     fj_rows_axpy_sq: g[j] += sum_k d[k] x_kj^2       (the Hessian diagonal)
 *
 * Four rows at a time. The dot products keep four independent vector
 * chains (one per row), so they are not bound by the latency of one chain
 * of multiply-adds; the accumulations update g once per four rows. GCC and
 * clang vector types are lowered to the instruction set of the module that
 * includes this file (SSE2, AVX2, AVX-512); every sum is in double, float32
 * rows are converted as they are loaded. Plain C elsewhere.
 */
#ifndef FASTJAC_BATCH_ROWS_H
#define FASTJAC_BATCH_ROWS_H

#include <Python.h>          /* Py_ssize_t */
#include <string.h>

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
static void fj_rows_dot_##T(const T* X, Py_ssize_t n, const T* w, Py_ssize_t m, T* z) {   \
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
static void fj_rows_axpy_##T(const T* X, Py_ssize_t n, const T* d, Py_ssize_t m,          \
                             double* restrict g, int squared) {                            \
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

#endif  /* FASTJAC_BATCH_ROWS_H */
