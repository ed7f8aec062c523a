/* What the weight kernels share (AVX2 + FMA). Weights live in panels of 16 output columns, stored
 * k-pair major: for each pair of input positions, the 16 columns' two weights side by side, so
 * one vpmaddwd multiplies two k of eight columns by a broadcast pair of int16 activations and adds
 * them (16 multiply-adds an instruction, twice an fp32 FMA's 8 at the same issue rate). Sums are
 * exact in int32 within a block of 32 k, then scaled by the weight scales (per column and block)
 * into fp32 sums, and those by the activation row's one scale. q8 runs on this int16 path (its
 * format only says how a panel unpacks); q5_linear.c has its own int8 tiles over the same panels.
 * Static: each kernel file gets its own copy. */
#ifndef JONGLEUR_KERNELS_COMMON_H
#define JONGLEUR_KERNELS_COMMON_H

#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>

#define QK 32     /* k per block (one scale per column per block) */
#define PANEL 16  /* output columns per panel */
#define PAIRS (QK / 2)
#ifndef PREFETCH
/* Bytes ahead of the weight being read to prefetch: one core's hardware prefetcher leaves DRAM
 * idle between streams (one-row decode of Qwen2.5-0.5B: ~105 -> ~75 ms a step with 4 KiB; 16 KiB
 * better again, 32 and 64 KiB gained nothing more). */
#define PREFETCH 16384
#endif
#ifndef ROWS_PER_PASS
#define ROWS_PER_PASS 256
#endif
#ifndef IMT
#define IMT 4 /* rows per batch tile (4 and 6 measured alike; 4 leaves registers to spare) */
#endif

/* What a kernel is handed: the panels' int weights (format-specific) and their block scales,
 * [panels][K/32][16] fp32. */
struct panel_matrix {
    const void *q;
    const float *scales;
};

/* Panel p as int16, k-pair major: out[b * 512 + pair * 32 + column * 2 + (k & 1)] for block b. */
typedef void (*unpack_panel_fn)(const void *q, long p, long K, int16_t *out);

/* One row of int16 activations against panel p: f = the 16 columns' fp32 sums, before the row's
 * scale and the bias. */
typedef void (*row_tile_fn)(const int16_t *xq, const struct panel_matrix *w, long p, long K, __m256 f[2]);

static inline float hmax(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

/* Rounds half away from zero, as (int)(v +- 0.5f) does, eight at a time. */
static inline __m256i round_away(__m256 v) {
    const __m256 half = _mm256_or_ps(_mm256_and_ps(v, _mm256_set1_ps(-0.0f)), _mm256_set1_ps(0.5f));
    return _mm256_cvttps_epi32(_mm256_add_ps(v, half));
}

/* x [K] -> int16 xq with one fp32 scale for the row (absmax / 32767), returned. One scale per row,
 * not per block, so that a block's int32 sums need only its weight scales: the per-block product of
 * the two scales cost a fifth of the batch tiles' time. The rounding (at most absmax / 65534 per
 * value) stays far below the weights' own; bench/quality.py measures the whole mode. */
static float quantize_row_i16(const float *x, long K, int16_t *xq) {
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    __m256 amax = _mm256_setzero_ps();
    for (long k = 0; k < K; k += 8) amax = _mm256_max_ps(amax, _mm256_and_ps(_mm256_loadu_ps(x + k), abs_mask));
    const float d = hmax(amax) / 32767.0f, inv = d > 0 ? 1.0f / d : 0.0f;
    const __m256 vinv = _mm256_set1_ps(inv);
    for (long k = 0; k < K; k += 16) {
        const __m256i lo = round_away(_mm256_mul_ps(_mm256_loadu_ps(x + k), vinv));
        const __m256i hi = round_away(_mm256_mul_ps(_mm256_loadu_ps(x + k + 8), vinv));
        /* packs interleaves 128-bit lanes: the permute puts the sixteen back in order */
        _mm256_storeu_si256((__m256i *)(xq + k), _mm256_permute4x64_epi64(_mm256_packs_epi32(lo, hi), 0xD8));
    }
    return d;
}

/* a0 += pair * w0, a1 += pair * w1 (eight columns each; pair = two int16 activations). In assembly
 * because GCC, given the intrinsics, hoists every row's broadcast and keeps both products live,
 * which needs more than the sixteen registers and spills the accumulators (35-45 instead of ~60
 * GMAC/s). The broadcast register is reused for the second product. */
static inline void pair_step(__m256i *a0, __m256i *a1, const int16_t *pair, __m256i w0, __m256i w1) {
    __m256i b, t;
    __asm__("vpbroadcastd %[x], %[b]\n\t"
            "vpmaddwd %[w0], %[b], %[t]\n\t"
            "vpaddd %[t], %[a0], %[a0]\n\t"
            "vpmaddwd %[w1], %[b], %[b]\n\t"
            "vpaddd %[b], %[a1], %[a1]"
            : [a0] "+x"(*a0), [a1] "+x"(*a1), [b] "=&x"(b), [t] "=&x"(t)
            : [x] "m"(*(const int32_t *)pair), [w0] "x"(w0), [w1] "x"(w1));
}

/* f += the block's int32 sums a0, a1 (columns 0-7, 8-15) times their weight scales s0, s1. */
static inline void scale_block(__m256 f[2], __m256i a0, __m256i a1, __m256 s0, __m256 s1) {
    f[0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(a0), s0, f[0]);
    f[1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(a1), s1, f[1]);
}

/* y[0..nt) = f * xscale (+ bias): a tile row's sums to outputs. */
static inline void store_row(const __m256 f[2], float xscale, const float *bias, long nt, float *y) {
    float out[PANEL];
    const __m256 xsc = _mm256_set1_ps(xscale);
    _mm256_storeu_ps(out, _mm256_mul_ps(f[0], xsc));
    _mm256_storeu_ps(out + 8, _mm256_mul_ps(f[1], xsc));
    for (long n = 0; n < nt; n++) y[n] = out[n] + (bias ? bias[n] : 0.0f);
}

#define UNROLL _Pragma("GCC unroll 8")
#define PRAGMA_STRING(x) _Pragma(#x)
#define UNROLL_BY(n) PRAGMA_STRING(GCC unroll n)
#ifndef PAIR_UNROLL
#define PAIR_UNROLL 16 /* a block's k-pairs fully unrolled: 474-token prefill 2316 -> 2116 ms */
#endif

/* MT rows (xq [MT][K], row scales xs [MT]) against a panel unpacked to int16 (wq, block scales
 * ws): y[MT][nt] (+ bias). */
#define ITILE(MT)                                                                                  \
    static void itile_##MT(const int16_t *xq, const float *xs, long K, const int16_t *wq, const float *ws, \
                           float *y, long ldy, const float *bias, long nt) {                        \
        const long nb = K / QK;                                                                    \
        __m256 f[MT][2];                                                                           \
        UNROLL for (int m = 0; m < MT; m++) f[m][0] = f[m][1] = _mm256_setzero_ps();               \
        for (long b = 0; b < nb; b++) {                                                            \
            __m256i a[MT][2];                                                                      \
            UNROLL for (int m = 0; m < MT; m++) a[m][0] = a[m][1] = _mm256_setzero_si256();        \
            const int16_t *wb = wq + b * QK * PANEL;                                               \
            UNROLL_BY(PAIR_UNROLL) for (int j = 0; j < PAIRS; j++) {                              \
                const __m256i w0 = _mm256_load_si256((const __m256i *)(wb + j * 2 * PANEL));       \
                const __m256i w1 = _mm256_load_si256((const __m256i *)(wb + j * 2 * PANEL + 16));  \
                UNROLL for (int m = 0; m < MT; m++) pair_step(&a[m][0], &a[m][1], xq + m * K + b * QK + 2 * j, w0, w1); \
            }                                                                                      \
            const __m256 s0 = _mm256_loadu_ps(ws + b * PANEL), s1 = _mm256_loadu_ps(ws + b * PANEL + 8); \
            UNROLL for (int m = 0; m < MT; m++) scale_block(f[m], a[m][0], a[m][1], s0, s1);       \
        }                                                                                          \
        for (int m = 0; m < MT; m++) store_row(f[m], xs[m], bias, nt, y + m * ldy);                \
    }

ITILE(1) ITILE(2) ITILE(3) ITILE(4) ITILE(5) ITILE(6)

typedef void (*int_tile_fn)(const int16_t *, const float *, long, const int16_t *, const float *, float *, long,
                            const float *, long);
static const int_tile_fn ITILES[6] = {itile_1, itile_2, itile_3, itile_4, itile_5, itile_6};

/* y[M, N] = x[M, K] @ w^T (+ bias). Rows are quantized to int16 once. One row (a sequence's decode)
 * reads each panel straight from memory (`row`); a batch has each thread unpack a panel to int16
 * once and run every row against it, IMT rows at a time. Threads own whole panels: no reductions. */
static void linear_panels(const float *x, long M, long K, long ldx, const struct panel_matrix *w,
                          unpack_panel_fn unpack, row_tile_fn row, long N, const float *bias, float *y, long ldy,
                          int nthreads) {
    /* Long batches go in passes: each pass unpacks every panel again and streams the weights from
     * memory again, but keeps its int16 rows in cache. Prefill of 474 rows, Q5_0 9728 x 896 and
     * 896 x 4864 (weights beyond L3), GMAC/s: passes of 64 rows 74.8 / 71.7, 128 81.8 / 78.6,
     * 256 81.5 / 80.6, one pass 80.9 / 78.7. */
    for (; M > ROWS_PER_PASS; M -= ROWS_PER_PASS, x += ROWS_PER_PASS * ldx, y += ROWS_PER_PASS * ldy)
        linear_panels(x, ROWS_PER_PASS, K, ldx, w, unpack, row, N, bias, y, ldy, nthreads);
    const long nb = K / QK, panels = (N + PANEL - 1) / PANEL;
    int16_t *xq = aligned_alloc(32, M * K * sizeof(int16_t));
    float *xs = malloc(M * sizeof(float));
#pragma omp parallel num_threads(nthreads)
    {
#pragma omp for schedule(static)
        for (long m = 0; m < M; m++) xs[m] = quantize_row_i16(x + m * ldx, K, xq + m * K);
        int16_t *wq = M > 1 ? aligned_alloc(32, K * PANEL * sizeof(int16_t)) : NULL;
#pragma omp for schedule(static)
        for (long p = 0; p < panels; p++) {
            const long n0 = p * PANEL, cols = N - n0 < PANEL ? N - n0 : PANEL;
            if (M == 1) {
                __m256 f[2];
                row(xq, w, p, K, f);
                store_row(f, xs[0], bias ? bias + n0 : 0, cols, y + n0);
                continue;
            }
            unpack(w->q, p, K, wq);
            const float *ws = w->scales + p * nb * PANEL;
            for (long m = 0; m < M; m += IMT) {
                const int mt = (M - m) < IMT ? (int)(M - m) : IMT;
                ITILES[mt - 1](xq + m * K, xs + m, K, wq, ws, y + m * ldy + n0, ldy, bias ? bias + n0 : 0, cols);
            }
        }
        free(wq);
    }
    free(xq);
    free(xs);
}

/* Panel-major weights back to fp32 rows w [N, K] (tests, and dense copies). */
static void dequantize_panels(const struct panel_matrix *w, unpack_panel_fn unpack, long N, long K, float *out) {
    const long nb = K / QK, panels = (N + PANEL - 1) / PANEL;
#pragma omp parallel
    {
        int16_t *wq = aligned_alloc(32, K * PANEL * sizeof(int16_t));
#pragma omp for schedule(static)
        for (long p = 0; p < panels; p++) {
            unpack(w->q, p, K, wq);
            for (long c = 0; c < PANEL && p * PANEL + c < N; c++)
                for (long k = 0; k < K; k++)
                    out[(p * PANEL + c) * K + k] = wq[(k / 2) * 2 * PANEL + c * 2 + (k & 1)] *
                                                   w->scales[(p * nb + k / QK) * PANEL + c];
        }
        free(wq);
    }
}

#endif
