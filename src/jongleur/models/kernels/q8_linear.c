/* y[M,N] = x[M,K] @ dequant(w)^T (+ bias): weight-only int8 (Q8_0-like), AVX2 + FMA.
 *
 * One fp32 scale per 32 weights along K, so a decode step reads ~1.13 bytes per weight instead of
 * 4 (fp32). The int8 weights are stored in common.h's panel order, [N/16][K/2][16][2] (columns
 * padded to a multiple of 16 with zeros), scales [N/16][K/32][16]: a row of activations meets
 * sixteen columns per load, and a batch's panel is ready after one sign extension. Threads come
 * from OpenMP: the process's libgomp, which is torch's own once torch is loaded, so there is one
 * thread pool, not two.
 */
#include "common.h"

static inline const int8_t *q8_block(const void *q, long p, long K, long b) {
    return (const int8_t *)q + p * K * PANEL + b * QK * PANEL;
}

static void q8_unpack_panel(const void *q, long p, long K, int16_t *out) {
    const int8_t *src = q8_block(q, p, K, 0);
    for (long i = 0; i < K * PANEL; i += 32) {
        const __m256i v = _mm256_loadu_si256((const __m256i *)(src + i));
        _mm256_store_si256((__m256i *)(out + i), _mm256_cvtepi8_epi16(_mm256_castsi256_si128(v)));
        _mm256_store_si256((__m256i *)(out + i + 16), _mm256_cvtepi8_epi16(_mm256_extracti128_si256(v, 1)));
    }
}

static void q8_row_tile(const int16_t *xq, const struct panel_matrix *w, long p, long K, __m256 f[2]) {
    const long nb = K / QK;
    const float *ws = w->scales + p * nb * PANEL;
    f[0] = f[1] = _mm256_setzero_ps();
    for (long b = 0; b < nb; b++) {
        const int8_t *src = q8_block(w->q, p, K, b);
        __m256i a0 = _mm256_setzero_si256(), a1 = _mm256_setzero_si256();
        UNROLL for (int j = 0; j < PAIRS; j++) {
            if (!(j & 1)) _mm_prefetch((const char *)(src + j * 32 + PREFETCH), _MM_HINT_T0);
            const __m256i w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(src + j * 32)));
            const __m256i w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(src + j * 32 + 16)));
            pair_step(&a0, &a1, xq + b * QK + 2 * j, w0, w1);
        }
        scale_block(f, a0, a1, _mm256_loadu_ps(ws + b * PANEL), _mm256_loadu_ps(ws + b * PANEL + 8));
    }
}

/* x [M, K] (row stride ldx), q and scales in panel order (above), bias [N] or NULL, y [M, N] (row
 * stride ldy). K must be a multiple of 32; nthreads as torch's (the caller's) setting. */
void q8_linear(const float *x, long M, long K, long ldx, const int8_t *q, const float *scales, long N,
               const float *bias, float *y, long ldy, int nthreads) {
    const struct panel_matrix w = {q, scales};
    linear_panels(x, M, K, ldx, &w, q8_unpack_panel, q8_row_tile, N, bias, y, ldy, nthreads);
}

/* Symmetric per-block quantization of fp32 rows w [N, K] into panel order; q and scales must come
 * zeroed (the padding columns stay zero). */
void q8_quantize(const float *w, long N, long K, int8_t *q, float *scales) {
    const long nb = K / QK;
#pragma omp parallel for schedule(static)
    for (long n = 0; n < N; n++) {
        const long p = n / PANEL, c = n % PANEL;
        for (long b = 0; b < nb; b++) {
            const float *src = w + n * K + b * QK;
            float amax = 0.0f;
            for (int i = 0; i < QK; i++) {
                float a = src[i] < 0 ? -src[i] : src[i];
                amax = a > amax ? a : amax;
            }
            const float d = amax / 127.0f, inv = d > 0 ? 1.0f / d : 0.0f;
            scales[(p * nb + b) * PANEL + c] = d;
            int8_t *dst = (int8_t *)q8_block(q, p, K, b);
            for (int i = 0; i < QK; i++) {
                float v = src[i] * inv;
                dst[(i / 2) * 2 * PANEL + c * 2 + (i & 1)] = (int8_t)(v < 0 ? (int)(v - 0.5f) : (int)(v + 0.5f));
            }
        }
    }
}

/* Panel order back to fp32 rows [N, K]. */
void q8_dequantize(const int8_t *q, const float *scales, long N, long K, float *out) {
    const struct panel_matrix w = {q, scales};
    dequantize_panels(&w, q8_unpack_panel, N, K, out);
}
