/* y[M,N] = x[M,K] @ dequant(w)^T (+ bias): weight-only int8, fp32 activations, AVX2 + FMA.
 *
 * The weight is Q8_0-like: int8 [N, K] row-major with one fp32 scale per 32 weights along K
 * ([N, K/32]), so a decode step reads ~1.13 bytes per weight instead of 4 (fp32). Each thread
 * owns whole output columns (no reductions across threads); columns are taken two at a time and
 * rows up to four at a time, so 8 accumulators stay in registers and each dequantized weight
 * vector is reused by every row of the tile. Threads come from OpenMP: the process's libgomp,
 * which is torch's own once torch is loaded, so there is one thread pool, not two.
 */
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>

#define QK 32
#ifndef PREFETCH
#define PREFETCH 0 /* bytes ahead in each weight row to prefetch (0: leave it to the hardware) */
#endif

static inline float hsum(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}

static inline __m256 dequant8(const int8_t *q, __m256 scale) {
    __m128i b = _mm_loadl_epi64((const __m128i *)q);
    return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b)), scale);
}

/* MT rows x NT columns, whole K. NA independent accumulator sets: with few rows one set is a
 * chain of dependent FMAs (latency-bound), so small tiles alternate between two. */
#define TILE(MT, NT, NA)                                                                      \
    static void tile_##MT##_##NT(const float *x, long ldx, const int8_t *w, const float *s,   \
                                 long K, float *y, long ldy, const float *bias) {              \
        __m256 acc[NA][MT][NT];                                                               \
        for (int a = 0; a < NA; a++)                                                          \
            for (int m = 0; m < MT; m++)                                                      \
                for (int n = 0; n < NT; n++) acc[a][m][n] = _mm256_setzero_ps();              \
        const long nb = K / QK;                                                               \
        for (long b = 0; b < nb; b++) {                                                       \
            __m256 sc[NT];                                                                    \
            for (int n = 0; n < NT; n++) sc[n] = _mm256_broadcast_ss(s + n * nb + b);         \
            for (int j = 0; j < QK / 8; j++) {                                                \
                const long k = b * QK + 8 * j;                                                \
                const int a = j % NA;                                                         \
                __m256 wv[NT];                                                                \
                for (int n = 0; n < NT; n++) wv[n] = dequant8(w + n * K + k, sc[n]);          \
                for (int m = 0; m < MT; m++) {                                                \
                    __m256 xv = _mm256_loadu_ps(x + m * ldx + k);                             \
                    for (int n = 0; n < NT; n++)                                              \
                        acc[a][m][n] = _mm256_fmadd_ps(xv, wv[n], acc[a][m][n]);              \
                }                                                                             \
            }                                                                                 \
        }                                                                                     \
        for (int m = 0; m < MT; m++)                                                          \
            for (int n = 0; n < NT; n++) {                                                    \
                __m256 t = acc[0][m][n];                                                      \
                for (int a = 1; a < NA; a++) t = _mm256_add_ps(t, acc[a][m][n]);              \
                y[m * ldy + n] = hsum(t) + (bias ? bias[n] : 0.0f);                           \
            }                                                                                 \
    }

/* One row, four columns: products of raw int8 values are summed per block, then scaled once. */
static void tile_1_4(const float *x, long ldx, const int8_t *w, const float *s, long K, float *y, long ldy,
                     const float *bias) {
    (void)ldx;
    (void)ldy;
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    const long nb = K / QK;
    for (long b = 0; b < nb; b++) {
        const float *xb = x + b * QK;
        const __m256 x0 = _mm256_loadu_ps(xb), x1 = _mm256_loadu_ps(xb + 8);
        const __m256 x2 = _mm256_loadu_ps(xb + 16), x3 = _mm256_loadu_ps(xb + 24);
        for (int n = 0; n < 4; n++) {
            const int8_t *q = w + n * K + b * QK;
            if (PREFETCH && !(b & 1)) _mm_prefetch((const char *)(q + PREFETCH), _MM_HINT_T0);  /* a line per 2 blocks */
            __m256 p0 = _mm256_mul_ps(x0, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)q))));
            __m256 p1 = _mm256_mul_ps(x1, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(q + 8)))));
            p0 = _mm256_fmadd_ps(x2, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(q + 16)))), p0);
            p1 = _mm256_fmadd_ps(x3, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(q + 24)))), p1);
            acc[n] = _mm256_fmadd_ps(_mm256_add_ps(p0, p1), _mm256_broadcast_ss(s + n * nb + b), acc[n]);
        }
    }
    for (int n = 0; n < 4; n++) y[n] = hsum(acc[n]) + (bias ? bias[n] : 0.0f);
}

TILE(1, 1, 2) TILE(1, 2, 2) TILE(2, 2, 2) TILE(3, 2, 1) TILE(4, 2, 1) TILE(2, 1, 2)
TILE(3, 1, 2) TILE(4, 1, 2)

typedef void (*tile_fn)(const float *, long, const int8_t *, const float *, long, float *, long, const float *);
static const tile_fn PAIR_TILES[2][4] = {
    {tile_1_1, tile_2_1, tile_3_1, tile_4_1},
    {tile_1_2, tile_2_2, tile_3_2, tile_4_2},
};

/* Two columns of fp32 weights (dequantized once into a per-thread buffer, [2][K]) x MT rows:
 * with five or more rows this beats dequantizing inside every row tile. */
#define FTILE(MT)                                                                             \
    static void ftile_##MT(const float *x, long ldx, const float *w, long K, float *y, long ldy, \
                           const float *bias, int nt) {                                       \
        __m256 acc[MT][2];                                                                    \
        for (int m = 0; m < MT; m++) acc[m][0] = acc[m][1] = _mm256_setzero_ps();             \
        for (long k = 0; k < K; k += 8) {                                                     \
            const __m256 w0 = _mm256_load_ps(w + k), w1 = _mm256_load_ps(w + K + k);          \
            for (int m = 0; m < MT; m++) {                                                    \
                const __m256 xv = _mm256_loadu_ps(x + m * ldx + k);                           \
                acc[m][0] = _mm256_fmadd_ps(xv, w0, acc[m][0]);                               \
                acc[m][1] = _mm256_fmadd_ps(xv, w1, acc[m][1]);                               \
            }                                                                                 \
        }                                                                                     \
        for (int m = 0; m < MT; m++)                                                          \
            for (int n = 0; n < nt; n++) y[m * ldy + n] = hsum(acc[m][n]) + (bias ? bias[n] : 0.0f); \
    }

FTILE(1) FTILE(2) FTILE(3) FTILE(4) FTILE(5) FTILE(6)

typedef void (*ftile_fn)(const float *, long, const float *, long, float *, long, const float *, int);
static const ftile_fn FTILES[6] = {ftile_1, ftile_2, ftile_3, ftile_4, ftile_5, ftile_6};

static void dequant_row(const int8_t *q, const float *s, long K, float *out) {
    for (long b = 0; b < K / QK; b++) {
        const __m256 sc = _mm256_broadcast_ss(s + b);
        for (int j = 0; j < QK; j += 8) _mm256_store_ps(out + b * QK + j, dequant8(q + b * QK + j, sc));
    }
}

static void q8_linear_many_rows(const float *x, long M, long K, long ldx, const int8_t *w, const float *scales,
                                long N, const float *bias, float *y, long ldy, int nthreads) {
    const long nb = K / QK, pairs = (N + 1) / 2;
#pragma omp parallel num_threads(nthreads)
    {
        float *buf = aligned_alloc(32, 2 * K * sizeof(float));
        for (long k = 0; k < K; k++) buf[K + k] = 0.0f;  /* the missing column of an odd N */
#pragma omp for schedule(static)
        for (long p = 0; p < pairs; p++) {
            const long n = 2 * p;
            const int nt = (n + 1 < N) ? 2 : 1;
            for (int c = 0; c < nt; c++) dequant_row(w + (n + c) * K, scales + (n + c) * nb, K, buf + c * K);
            for (long m = 0; m < M; m += 6) {
                const int mt = (M - m) < 6 ? (int)(M - m) : 6;
                FTILES[mt - 1](x + m * ldx, ldx, buf, K, y + m * ldy + n, ldy, bias ? bias + n : 0, nt);
            }
        }
        free(buf);
    }
}

/* x [M, K] (row stride ldx), w [N, K] int8, scales [N, K/32], bias [N] or NULL, y [M, N] (row stride ldy).
 * K must be a multiple of 32; nthreads as torch's (the caller's) setting. One row (decode of one sequence) takes columns four at a time. */
void q8_linear(const float *x, long M, long K, long ldx, const int8_t *w, const float *scales, long N,
               const float *bias, float *y, long ldy, int nthreads) {
    const long nb = K / QK;
    if (M == 1) {
        const long quads = N / 4;
#pragma omp parallel for schedule(static) num_threads(nthreads)
        for (long p = 0; p < quads; p++)
            tile_1_4(x, ldx, w + 4 * p * K, scales + 4 * p * nb, K, y + 4 * p, ldy, bias ? bias + 4 * p : 0);
        for (long n = 4 * quads; n < N; n++)
            tile_1_1(x, ldx, w + n * K, scales + n * nb, K, y + n, ldy, bias ? bias + n : 0);
        return;
    }
    if (M > 4) {
        q8_linear_many_rows(x, M, K, ldx, w, scales, N, bias, y, ldy, nthreads);
        return;
    }
    const long pairs = (N + 1) / 2;
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (long p = 0; p < pairs; p++) {
        const long n = 2 * p;
        const int nt = (n + 1 < N) ? 2 : 1;
        for (long m = 0; m < M; m += 4) {
            const int mt = (M - m) < 4 ? (int)(M - m) : 4;
            PAIR_TILES[nt - 1][mt - 1](x + m * ldx, ldx, w + n * K, scales + n * nb, K, y + m * ldy + n, ldy,
                                       bias ? bias + n : 0);
        }
    }
}

/* Symmetric per-block quantization of fp32 rows: w [N, K] -> q [N, K] int8, scales [N, K/32]. */
void q8_quantize(const float *w, long N, long K, int8_t *q, float *scales) {
    const long nb = K / QK;
#pragma omp parallel for schedule(static)
    for (long n = 0; n < N; n++) {
        for (long b = 0; b < nb; b++) {
            const float *src = w + n * K + b * QK;
            float amax = 0.0f;
            for (int i = 0; i < QK; i++) {
                float a = src[i] < 0 ? -src[i] : src[i];
                amax = a > amax ? a : amax;
            }
            const float d = amax / 127.0f, inv = d > 0 ? 1.0f / d : 0.0f;
            scales[n * nb + b] = d;
            for (int i = 0; i < QK; i++) {
                float v = src[i] * inv;
                q[n * K + b * QK + i] = (int8_t)(v < 0 ? (int)(v - 0.5f) : (int)(v + 0.5f));
            }
        }
    }
}
