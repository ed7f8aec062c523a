/* What the weight kernels share (AVX2 + FMA): the one-row int16 activation quantizer, and the batch
 * path, which dequantizes each group of weight columns once per call and runs fp32 tiles over it:
 * dot products along K for small batches, outer products over k-major panels for larger ones.
 * Static: each kernel file gets its own copy. */
#ifndef JONGLEUR_KERNELS_COMMON_H
#define JONGLEUR_KERNELS_COMMON_H

#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define QK 32
#ifndef PREFETCH
/* Bytes ahead of the weight being read to prefetch: one core's hardware prefetcher leaves DRAM
 * idle between streams (measured in the engine, 1-row decode of Qwen2.5-0.5B: ~105 -> ~75 ms a step
 * with 4 KiB). 16 KiB measured better again on a one-row down projection (896 x 4864): int8 11.8 ->
 * 14.7 GB/s, Q5_0 8.4 -> 10.9 GB/s; 32 and 64 KiB gained nothing more. */
#define PREFETCH 16384
#endif

static inline float hsum(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}

/* x [K] -> int16 blocks of 32 with one fp32 scale each (absmax / 32767; |error| <= absmax / 65534,
 * far below any weight format's own rounding). */
static void quantize_row_i16(const float *x, long K, int16_t *xq, float *xs) {
    for (long b = 0; b < K / QK; b++) {
        float amax = 0.0f;
        for (int i = 0; i < QK; i++) {
            const float a = x[b * QK + i] < 0 ? -x[b * QK + i] : x[b * QK + i];
            amax = a > amax ? a : amax;
        }
        const float d = amax / 32767.0f, inv = d > 0 ? 1.0f / d : 0.0f;
        xs[b] = d;
        for (int i = 0; i < QK; i++) {
            const float v = x[b * QK + i] * inv;
            xq[b * QK + i] = (int16_t)(v < 0 ? (int)(v - 0.5f) : (int)(v + 0.5f));
        }
    }
}

/* The int32 sum of 32 int8 weights times 32 int16 activations (vpmaddwd: 16 multiply-adds an instruction). */
static inline __m256i dot_i8_i16(__m256i w32, __m256i xlo, __m256i xhi) {
    const __m256i wlo = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(w32));
    const __m256i whi = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(w32, 1));
    return _mm256_add_epi32(_mm256_madd_epi16(wlo, xlo), _mm256_madd_epi16(whi, xhi));
}

/* Blocks b0..b1-1 of weight row n (of K values) -> fp32 out[(b1 - b0) * 32]. */
typedef void (*dequant_blocks_fn)(const void *weights, long n, long K, long b0, long b1, float *out);

/* Columns n0..n0+3 of one row: int16 activation blocks (xq, scales xs) against the weights. */
typedef void (*quad_tile_fn)(const int16_t *xq, const float *xs, const void *weights, long n0, long K, float *y,
                             const float *bias);

/* y[N] = x[K] @ w^T (+ bias) for one row (one sequence's decode): x quantized once to int16 blocks,
 * columns four at a time by `quad`, the last N % 4 through fp32, dequantized one row at a time. */
static void linear_one_row(const float *x, long K, const void *w, quad_tile_fn quad, dequant_blocks_fn dequant,
                           long N, const float *bias, float *y, int nthreads) {
    const long nb = K / QK, quads = N / 4;
    int16_t *xq = aligned_alloc(32, K * sizeof(int16_t));
    float *xs = malloc(nb * sizeof(float));
    quantize_row_i16(x, K, xq, xs);
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (long p = 0; p < quads; p++) quad(xq, xs, w, 4 * p, K, y + 4 * p, bias ? bias + 4 * p : 0);
    free(xq);
    free(xs);
    if (4 * quads == N) return;
    float *row = aligned_alloc(32, K * sizeof(float));
    for (long n = 4 * quads; n < N; n++) {
        dequant(w, n, K, 0, nb, row);
        __m256 acc = _mm256_setzero_ps();
        for (long k = 0; k < K; k += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(x + k), _mm256_load_ps(row + k), acc);
        y[n] = hsum(acc) + (bias ? bias[n] : 0.0f);
    }
    free(row);
}

#define PANEL 16  /* columns per packed panel: two vectors */
#define KCHUNK 64 /* k per packing step */

static inline void transpose8(__m256 r[8]) {
    const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
    r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
    r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
    r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
    r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

/* Columns n0..n0+cols-1 (cols <= 16) of the weight, dequantized into a panel wp [K][16] (k-major,
 * missing columns zero), a chunk of k at a time through a small transposing buffer. */
static void pack_panel(const void *w, dequant_blocks_fn dequant, long n0, long cols, long K, float *wp) {
    float tmp[PANEL][KCHUNK] __attribute__((aligned(32)));
    for (long k0 = 0; k0 < K; k0 += KCHUNK) {
        const long kn = K - k0 < KCHUNK ? K - k0 : KCHUNK; /* a multiple of 32 */
        for (long c = 0; c < PANEL; c++) {
            if (c < cols)
                dequant(w, n0 + c, K, k0 / QK, (k0 + kn) / QK, tmp[c]);
            else
                for (long k = 0; k < kn; k += 8) _mm256_store_ps(tmp[c] + k, _mm256_setzero_ps());
        }
        for (long h = 0; h < 2; h++)
            for (long kk = 0; kk < kn; kk += 8) {
                __m256 r[8];
                for (int i = 0; i < 8; i++) r[i] = _mm256_load_ps(tmp[8 * h + i] + kk);
                transpose8(r);
                for (int j = 0; j < 8; j++) _mm256_store_ps(wp + (k0 + kk + j) * PANEL + 8 * h, r[j]);
            }
    }
}

/* MT rows of x against a packed panel: per k, two weight vectors and one broadcast per row feed
 * 2 * MT FMAs whose sums are the outputs themselves (outer products: no horizontal sums, and
 * one load per two FMAs; measured ~35 vs ~26 GMAC/s a core for dot products along K). */
#define UNROLL _Pragma("GCC unroll 8")
#define OTILE(MT)                                                                                  \
    static void otile_##MT(const float *x, long ldx, const float *wp, long K, float *y, long ldy,  \
                           const float *bias, long nt) {                                           \
        __m256 acc[MT][2];                                                                         \
        UNROLL for (int m = 0; m < MT; m++) acc[m][0] = acc[m][1] = _mm256_setzero_ps();           \
        for (long k = 0; k < K; k++) {                                                             \
            const __m256 w0 = _mm256_load_ps(wp + k * PANEL), w1 = _mm256_load_ps(wp + k * PANEL + 8); \
            UNROLL for (int m = 0; m < MT; m++) {                                                  \
                const __m256 xv = _mm256_broadcast_ss(x + m * ldx + k);                            \
                acc[m][0] = _mm256_fmadd_ps(xv, w0, acc[m][0]);                                    \
                acc[m][1] = _mm256_fmadd_ps(xv, w1, acc[m][1]);                                    \
            }                                                                                      \
        }                                                                                          \
        /* every loop over acc unrolled: else GCC keeps acc in memory, a store per FMA */          \
        float out[MT][PANEL];                                                                      \
        UNROLL for (int m = 0; m < MT; m++) {                                                      \
            _mm256_storeu_ps(out[m], acc[m][0]);                                                   \
            _mm256_storeu_ps(out[m] + 8, acc[m][1]);                                               \
        }                                                                                          \
        for (int m = 0; m < MT; m++)                                                               \
            for (long n = 0; n < nt; n++) y[m * ldy + n] = out[m][n] + (bias ? bias[n] : 0.0f);    \
    }

OTILE(1) OTILE(2) OTILE(3) OTILE(4) OTILE(5) OTILE(6)

typedef void (*panel_tile_fn)(const float *, long, const float *, long, float *, long, const float *, long);
static const panel_tile_fn OTILES[6] = {otile_1, otile_2, otile_3, otile_4, otile_5, otile_6};

/* Dot-product form for small batches (no transpose to pay for): MT rows x two columns of a group
 * dequantized row by row ([cols][K]), sums along K reduced at the end. */
#define DTILE(MT)                                                                                  \
    static void dtile_##MT(const float *x, long ldx, const float *w, long K, float *y, long ldy,   \
                           const float *bias, long nt) {                                           \
        __m256 acc[MT][2];                                                                         \
        UNROLL for (int m = 0; m < MT; m++) acc[m][0] = acc[m][1] = _mm256_setzero_ps();           \
        for (long k = 0; k < K; k += 8) {                                                          \
            const __m256 w0 = _mm256_load_ps(w + k), w1 = _mm256_load_ps(w + K + k);               \
            UNROLL for (int m = 0; m < MT; m++) {                                                  \
                const __m256 xv = _mm256_loadu_ps(x + m * ldx + k);                                \
                acc[m][0] = _mm256_fmadd_ps(xv, w0, acc[m][0]);                                    \
                acc[m][1] = _mm256_fmadd_ps(xv, w1, acc[m][1]);                                    \
            }                                                                                      \
        }                                                                                          \
        float out[MT][2];                                                                          \
        UNROLL for (int m = 0; m < MT; m++) out[m][0] = hsum(acc[m][0]), out[m][1] = hsum(acc[m][1]); \
        for (int m = 0; m < MT; m++)                                                               \
            for (long n = 0; n < nt; n++) y[m * ldy + n] = out[m][n] + (bias ? bias[n] : 0.0f);    \
    }

DTILE(1) DTILE(2) DTILE(3) DTILE(4) DTILE(5) DTILE(6)

static const panel_tile_fn DTILES[6] = {dtile_1, dtile_2, dtile_3, dtile_4, dtile_5, dtile_6};

/* From this many rows the outer-product panels win: below it the transpose costs more than the
 * faster tiles gain (Qwen2.5-0.5B, 16-row decode steps: dot 278 vs outer 306 ms; prefill chunks of
 * hundreds of rows: outer 60-77 vs dot 46-48 GMAC/s). */
#ifndef OUTER_MIN_ROWS
#define OUTER_MIN_ROWS 32
#endif
#define GROUP 8 /* columns per group in the dot-product form */

/* y[M, N] = x[M, K] @ w^T (+ bias) for batches: each thread takes a panel (or group) of columns,
 * dequantizes it once and runs every row of x against it, six rows at a time. */
static void linear_many_rows(const float *x, long M, long K, long ldx, const void *w, dequant_blocks_fn dequant,
                             long N, const float *bias, float *y, long ldy, int nthreads) {
    const int outer = M >= OUTER_MIN_ROWS;
    const long width = outer ? PANEL : GROUP, panels = (N + width - 1) / width;
#pragma omp parallel num_threads(nthreads)
    {
        float *buf = aligned_alloc(32, K * PANEL * sizeof(float));
#pragma omp for schedule(static)
        for (long p = 0; p < panels; p++) {
            const long n0 = p * width, cols = N - n0 < width ? N - n0 : width;
            if (outer) {
                pack_panel(w, dequant, n0, cols, K, buf);
            } else {
                for (long c = 0; c < cols; c++) dequant(w, n0 + c, K, 0, K / QK, buf + c * K);
                if (cols & 1) memset(buf + cols * K, 0, K * sizeof(float)); /* the missing column of a pair */
            }
            for (long m = 0; m < M; m += 6) {
                const int mt = (M - m) < 6 ? (int)(M - m) : 6;
                if (outer) {
                    OTILES[mt - 1](x + m * ldx, ldx, buf, K, y + m * ldy + n0, ldy, bias ? bias + n0 : 0, cols);
                    continue;
                }
                for (long c = 0; c < cols; c += 2)
                    DTILES[mt - 1](x + m * ldx, ldx, buf + c * K, K, y + m * ldy + n0 + c, ldy,
                                   bias ? bias + n0 + c : 0, cols - c < 2 ? 1 : 2);
            }
        }
        free(buf);
    }
}

#endif
