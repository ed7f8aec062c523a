/* y[M,N] = x[M,K] @ dequant(w)^T (+ bias): weight-only int8, fp32 activations, AVX2 + FMA.
 *
 * The weight is Q8_0-like: int8 [N, K] row-major with one fp32 scale per 32 weights along K
 * ([N, K/32]), so a decode step reads ~1.13 bytes per weight instead of 4 (fp32). Each thread
 * owns whole output columns (no reductions across threads); columns are taken two at a time and
 * rows up to four at a time, so 8 accumulators stay in registers and each dequantized weight
 * vector is reused by every row of the tile. Threads come from OpenMP: the process's libgomp,
 * which is torch's own once torch is loaded, so there is one thread pool, not two.
 */
#include "common.h"

/* The int8 weight layout for the shared row loops (common.h): qweight [N, K] then scales [N, K/32]. */
struct q8_matrix {
    const int8_t *q;
    const float *scales;
};

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
        UNROLL for (int a = 0; a < NA; a++)                                                          \
            UNROLL for (int m = 0; m < MT; m++)                                                      \
                UNROLL for (int n = 0; n < NT; n++) acc[a][m][n] = _mm256_setzero_ps();              \
        const long nb = K / QK;                                                               \
        for (long b = 0; b < nb; b++) {                                                       \
            __m256 sc[NT];                                                                    \
            UNROLL for (int n = 0; n < NT; n++) sc[n] = _mm256_broadcast_ss(s + n * nb + b);         \
            UNROLL for (int j = 0; j < QK / 8; j++) {                                                \
                const long k = b * QK + 8 * j;                                                \
                const int a = j % NA;                                                         \
                __m256 wv[NT];                                                                \
                if (j == 0)                                                                   \
                    UNROLL for (int n = 0; n < NT; n++) _mm_prefetch((const char *)(w + n * K + k + PREFETCH), _MM_HINT_T0); \
                UNROLL for (int n = 0; n < NT; n++) wv[n] = dequant8(w + n * K + k, sc[n]);          \
                UNROLL for (int m = 0; m < MT; m++) {                                                \
                    __m256 xv = _mm256_loadu_ps(x + m * ldx + k);                             \
                    UNROLL for (int n = 0; n < NT; n++)                                              \
                        acc[a][m][n] = _mm256_fmadd_ps(xv, wv[n], acc[a][m][n]);              \
                }                                                                             \
            }                                                                                 \
        }                                                                                     \
        UNROLL for (int m = 0; m < MT; m++)                                                          \
            UNROLL for (int n = 0; n < NT; n++) {                                                    \
                __m256 t = acc[0][m][n];                                                      \
                UNROLL for (int a = 1; a < NA; a++) t = _mm256_add_ps(t, acc[a][m][n]);              \
                y[m * ldy + n] = hsum(t) + (bias ? bias[n] : 0.0f);                           \
            }                                                                                 \
    }

/* One row as int16 blocks (xq, one scale per 32 in xs; |error| <= absmax / 65534, far below the
 * weights' own rounding), four columns: int8 x int16 products summed exactly in int32 by
 * vpmaddwd (16 multiply-adds per instruction), then one fp32 FMA per block. About half the
 * instructions of converting every weight to fp32, which is what bounds one-row decode here. */
static void tile_1_4_i16(const int16_t *xq, const float *xs, const void *weights, long n0, long K, float *y,
                         const float *bias) {
    const struct q8_matrix *wm = weights;
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    const long nb = K / QK;
    const int8_t *w = wm->q + n0 * K;
    const float *s = wm->scales + n0 * nb;
    for (long b = 0; b < nb; b++) {
        const __m256i xlo = _mm256_loadu_si256((const __m256i *)(xq + b * QK));
        const __m256i xhi = _mm256_loadu_si256((const __m256i *)(xq + b * QK + 16));
        for (int n = 0; n < 4; n++) {
            if (!(b & 1)) _mm_prefetch((const char *)(w + n * K + b * QK + PREFETCH), _MM_HINT_T0);
            const __m256i dot = dot_i8_i16(_mm256_loadu_si256((const __m256i *)(w + n * K + b * QK)), xlo, xhi);
            acc[n] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(s[n * nb + b] * xs[b]), acc[n]);
        }
    }
    for (int n = 0; n < 4; n++) y[n] = hsum(acc[n]) + (bias ? bias[n] : 0.0f);
}

TILE(2, 2, 2) TILE(3, 2, 1) TILE(4, 2, 1) TILE(2, 1, 2)
TILE(3, 1, 2) TILE(4, 1, 2)

typedef void (*tile_fn)(const float *, long, const int8_t *, const float *, long, float *, long, const float *);
static const tile_fn PAIR_TILES[2][3] = { /* [columns - 1][rows - 2]: two to four rows */
    {tile_2_1, tile_3_1, tile_4_1},
    {tile_2_2, tile_3_2, tile_4_2},
};

static void q8_dequant_blocks(const void *weights, long n, long K, long b0, long b1, float *out) {
    const struct q8_matrix *w = weights;
    const int8_t *q = w->q + n * K;
    const float *s = w->scales + n * (K / QK);
    for (long b = b0; b < b1; b++) {
        if (!(b & 1)) _mm_prefetch((const char *)(q + b * QK + PREFETCH), _MM_HINT_T0);
        const __m256 sc = _mm256_broadcast_ss(s + b);
        for (int j = 0; j < QK; j += 8) _mm256_storeu_ps(out + (b - b0) * QK + j, dequant8(q + b * QK + j, sc));
    }
}

/* x [M, K] (row stride ldx), w [N, K] int8, scales [N, K/32], bias [N] or NULL, y [M, N] (row stride ldy).
 * K must be a multiple of 32; nthreads as torch's (the caller's) setting. One row (decode of one sequence) takes columns four at a time. */
void q8_linear(const float *x, long M, long K, long ldx, const int8_t *w, const float *scales, long N,
               const float *bias, float *y, long ldy, int nthreads) {
    const long nb = K / QK;
    const struct q8_matrix wm = {w, scales};
    if (M == 1) {
        linear_one_row(x, K, &wm, tile_1_4_i16, q8_dequant_blocks, N, bias, y, nthreads);
        return;
    }
    if (M > 4) {
        linear_many_rows(x, M, K, ldx, &wm, q8_dequant_blocks, N, bias, y, ldy, nthreads);
        return;
    }
    const long pairs = (N + 1) / 2;
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (long p = 0; p < pairs; p++) {
        const long n = 2 * p;
        const int nt = (n + 1 < N) ? 2 : 1;
        PAIR_TILES[nt - 1][M - 2](x, ldx, w + n * K, scales + n * nb, K, y + n, ldy, bias ? bias + n : 0);
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
