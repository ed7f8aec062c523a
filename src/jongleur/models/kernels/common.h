/* What the weight kernels share (AVX2 + FMA): the fp32 row tiles that batches run on, the one-row
 * int16 activation quantizer, and the column-pair loop that dequantizes each weight row once per
 * call into a per-thread buffer. Static: each kernel file gets its own copy. */
#ifndef JONGLEUR_KERNELS_COMMON_H
#define JONGLEUR_KERNELS_COMMON_H

#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>

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

/* Weight row n (of K values) -> fp32 out[K]. */
typedef void (*dequant_row_fn)(const void *weights, long n, long K, float *out);

/* Columns dequantized together: each tile of rows of x is then reused against all of them while
 * it is in cache (one pair at a time, x streamed from L3 for every pair, ran at ~45 GMAC/s). */
#define GROUP 8

/* y[M, N] = x[M, K] @ w^T (+ bias) for batches: each thread takes groups of columns, dequantizes
 * them once and runs every row of x against them in tiles of up to six rows by two columns. */
static void linear_many_rows(const float *x, long M, long K, long ldx, const void *w, dequant_row_fn dequant,
                             long N, const float *bias, float *y, long ldy, int nthreads) {
    const long groups = (N + GROUP - 1) / GROUP;
#pragma omp parallel num_threads(nthreads)
    {
        float *buf = aligned_alloc(32, GROUP * K * sizeof(float));
#pragma omp for schedule(static)
        for (long g = 0; g < groups; g++) {
            const long n0 = g * GROUP, cols = N - n0 < GROUP ? N - n0 : GROUP;
            for (long c = 0; c < cols; c++) dequant(w, n0 + c, K, buf + c * K);
            if (cols & 1)
                for (long k = 0; k < K; k++) buf[cols * K + k] = 0.0f; /* the missing column of an odd count */
            for (long m = 0; m < M; m += 6) {
                const int mt = (M - m) < 6 ? (int)(M - m) : 6;
                for (long c = 0; c < cols; c += 2) {
                    const long n = n0 + c;
                    FTILES[mt - 1](x + m * ldx, ldx, buf + c * K, K, y + m * ldy + n, ldy, bias ? bias + n : 0,
                                   cols - c < 2 ? 1 : 2);
                }
            }
        }
        free(buf);
    }
}

#endif
