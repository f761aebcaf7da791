/* Non-temporal (streaming) stores for the STREAM probe of _stream.pyx.
 *
 * An ordinary store first reads the line it writes (read for ownership),
 * so a copy moves 3 lines for 2 counted; a streaming store writes the line
 * without reading it. fastjac writes results of 16 MB and more this way,
 * so the probe measures both kinds and the bound uses the better.
 * Each function runs on one thread's chunk; call stream_fence() after. */
#include <stddef.h>
#include <stdint.h>
#include <immintrin.h>

#if defined(__AVX512F__)
#define NT_WIDTH 8
#define NT_VEC __m512d
#define NT_LOAD(p) _mm512_loadu_pd(p)
#define NT_STORE(p, v) _mm512_stream_pd((p), (v))
#define NT_SET1(x) _mm512_set1_pd(x)
#define NT_FMA(a, b, c) _mm512_fmadd_pd((a), (b), (c))
#elif defined(__AVX__)
#define NT_WIDTH 4
#define NT_VEC __m256d
#define NT_LOAD(p) _mm256_loadu_pd(p)
#define NT_STORE(p, v) _mm256_stream_pd((p), (v))
#define NT_SET1(x) _mm256_set1_pd(x)
#define NT_FMA(a, b, c) _mm256_add_pd(_mm256_mul_pd((a), (b)), (c))
#else
#define NT_WIDTH 2
#define NT_VEC __m128d
#define NT_LOAD(p) _mm_loadu_pd(p)
#define NT_STORE(p, v) _mm_stream_pd((p), (v))
#define NT_SET1(x) _mm_set1_pd(x)
#define NT_FMA(a, b, c) _mm_add_pd(_mm_mul_pd((a), (b)), (c))
#endif

/* elements to store one by one until out is aligned for NT_STORE */
static inline ptrdiff_t nt_head(const double *out, ptrdiff_t n) {
    ptrdiff_t head = (ptrdiff_t)((NT_WIDTH * 8 - ((uintptr_t)out % (NT_WIDTH * 8))) % (NT_WIDTH * 8)) / 8;
    return head < n ? head : n;
}

static inline void stream_copy_nt(const double *a, double *c, ptrdiff_t n) {
    ptrdiff_t i = 0, h = nt_head(c, n);
    for (; i < h; i++) c[i] = a[i];
    for (; i + NT_WIDTH <= n; i += NT_WIDTH) NT_STORE(c + i, NT_LOAD(a + i));
    for (; i < n; i++) c[i] = a[i];
}

static inline void stream_triad_nt(const double *b, const double *c, double *a, double s,
                                   ptrdiff_t n) {
    ptrdiff_t i = 0, h = nt_head(a, n);
    NT_VEC vs = NT_SET1(s);
    for (; i < h; i++) a[i] = b[i] + s * c[i];
    for (; i + NT_WIDTH <= n; i += NT_WIDTH)
        NT_STORE(a + i, NT_FMA(vs, NT_LOAD(c + i), NT_LOAD(b + i)));
    for (; i < n; i++) a[i] = b[i] + s * c[i];
}

/* Two inputs, two outputs: c = a + s*b and d = b + s*a in one pass. c and d
 * may differ in alignment (np.empty gives 0 or 16 mod 64), so each output
 * has its own head and the loop stores c[i..] and d[j..] with j - i fixed:
 * both are streamed whatever their offsets. */
static inline void stream_triad2_nt(const double *a, const double *b, double *c, double *d,
                                    double s, ptrdiff_t n) {
    ptrdiff_t i, j, hc = nt_head(c, n), hd = nt_head(d, n);
    NT_VEC vs = NT_SET1(s);
    for (i = 0; i < hc; i++) c[i] = a[i] + s * b[i];
    for (j = 0; j < hd; j++) d[j] = b[j] + s * a[j];
    for (i = hc, j = hd; i + NT_WIDTH <= n && j + NT_WIDTH <= n; i += NT_WIDTH, j += NT_WIDTH) {
        NT_STORE(c + i, NT_FMA(vs, NT_LOAD(b + i), NT_LOAD(a + i)));
        NT_STORE(d + j, NT_FMA(vs, NT_LOAD(a + j), NT_LOAD(b + j)));
    }
    for (; i < n; i++) c[i] = a[i] + s * b[i];
    for (; j < n; j++) d[j] = b[j] + s * a[j];
}

static inline void stream_fill_nt(double *a, double value, ptrdiff_t n) {
    ptrdiff_t i = 0, h = nt_head(a, n);
    NT_VEC v = NT_SET1(value);
    for (; i < h; i++) a[i] = value;
    for (; i + NT_WIDTH <= n; i += NT_WIDTH) NT_STORE(a + i, v);
    for (; i < n; i++) a[i] = value;
}

static inline void stream_fence(void) { _mm_sfence(); }
