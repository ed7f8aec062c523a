/* y[M,N] = x[M,K] @ dequant(w)^T (+ bias) for 5-bit weights in GGUF's Q5_0 scheme, AVX2 + FMA.
 *
 * A block of 32 weights is d * (q - 16), q in 0..31: the low four bits of q packed two to a byte,
 * the fifth bits in one 32-bit word. GGUF files store most of a model's tensors this way; keeping
 * them as they are (instead of widening to int8) reads 0.75 bytes a weight per decode step instead
 * of 1.125, and keeps the file's exact values. Here a block also carries its scale as fp32 (GGUF
 * has fp16) so that no conversion is needed on the hot path: 24 bytes per 32 weights.
 */
#include <string.h>

#include "common.h"

struct q5_block {
    float d;
    uint32_t qh;     /* bit i: fifth bit of weight i */
    uint8_t qs[16];  /* weight i (< 16) in the low nibble of qs[i], weight i + 16 in its high nibble */
};

/* The 32 weights of a block as int8 (q - 16), in order (llama.cpp's bytes_from_bits_32 for the fifth bits). */
static inline __m256i q5_unpack(const struct q5_block *b) {
    const __m128i packed = _mm_loadu_si128((const __m128i *)b->qs);
    const __m256i low = _mm256_and_si256(_mm256_set1_epi8(0x0F), _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed));
    const __m256i spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32((int)b->qh),
        _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0x0000000000000000));
    /* byte i is all ones where bit i of qh is set */
    const __m256i high = _mm256_cmpeq_epi8(_mm256_or_si256(spread, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe)),
                                           _mm256_set1_epi64x(-1));
    /* q - 16 in int8: the nibble itself when the fifth bit is set, the nibble - 16 (0xF0 | nibble) when not */
    return _mm256_or_si256(low, _mm256_andnot_si256(high, _mm256_set1_epi8((char)0xF0)));
}

/* One row of int16 activations against four columns. */
static void q5_tile_1_4(const int16_t *xq, const float *xs, const struct q5_block *w, long nb, float *y,
                        const float *bias) {
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (long b = 0; b < nb; b++) {
        const __m256i xlo = _mm256_loadu_si256((const __m256i *)(xq + b * QK));
        const __m256i xhi = _mm256_loadu_si256((const __m256i *)(xq + b * QK + 16));
        for (int n = 0; n < 4; n++) {
            const struct q5_block *blk = w + n * nb + b;
            if (!(b & 1)) _mm_prefetch((const char *)blk + PREFETCH, _MM_HINT_T0);
            const __m256i dot = dot_i8_i16(q5_unpack(blk), xlo, xhi);
            acc[n] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(blk->d * xs[b]), acc[n]);
        }
    }
    for (int n = 0; n < 4; n++) y[n] = hsum(acc[n]) + (bias ? bias[n] : 0.0f);
}

static void q5_dequant_row(const void *weights, long n, long K, float *out) {
    const long nb = K / QK;
    const struct q5_block *row = (const struct q5_block *)weights + n * nb;
    for (long b = 0; b < nb; b++) {
        if (!(b & 1)) _mm_prefetch((const char *)(row + b) + PREFETCH, _MM_HINT_T0);
        const __m256i q = q5_unpack(row + b);
        const __m256 d = _mm256_set1_ps(row[b].d);
        const __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
        float *o = out + b * QK;
        _mm256_storeu_ps(o, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)), d));
        _mm256_storeu_ps(o + 8, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8))), d));
        _mm256_storeu_ps(o + 16, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)), d));
        _mm256_storeu_ps(o + 24, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8))), d));
    }
}

/* x [M, K] (row stride ldx), w [N, K/32] blocks, bias [N] or NULL, y [M, N] (row stride ldy); K a multiple of 32. */
void q5_linear(const float *x, long M, long K, long ldx, const void *w, long N, const float *bias, float *y,
               long ldy, int nthreads) {
    const long nb = K / QK;
    const struct q5_block *blocks = w;
    if (M > 1) {
        linear_many_rows(x, M, K, ldx, w, q5_dequant_row, N, bias, y, ldy, nthreads);
        return;
    }
    int16_t *xq = aligned_alloc(32, K * sizeof(int16_t));
    float *xs = malloc(nb * sizeof(float));
    quantize_row_i16(x, K, xq, xs);
    const long quads = N / 4;
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (long p = 0; p < quads; p++)
        q5_tile_1_4(xq, xs, blocks + 4 * p * nb, nb, y + 4 * p, bias ? bias + 4 * p : 0);
    free(xq);
    free(xs);
    if (4 * quads < N) { /* the last columns: through fp32, one at a time */
        float *row = aligned_alloc(32, K * sizeof(float));
        for (long n = 4 * quads; n < N; n++) {
            q5_dequant_row(w, n, K, row);
            __m256 acc = _mm256_setzero_ps();
            for (long k = 0; k < K; k += 8)
                acc = _mm256_fmadd_ps(_mm256_loadu_ps(x + k), _mm256_load_ps(row + k), acc);
            y[n] = hsum(acc) + (bias ? bias[n] : 0.0f);
        }
        free(row);
    }
}

/* fp32 w [N, K] -> Q5_0 blocks by llama.cpp's rounding (d = the block's largest-magnitude value / -16).
 * Returns 0 if the blocks reproduce every weight exactly, as they do for a tensor that came from a
 * Q5_0 GGUF tensor (its largest value is d * -16 exactly, so d and every q are recovered); else
 * a positive count (not all rows are tried once one is inexact). */
long q5_quantize(const float *w, long N, long K, void *out) {
    const long nb = K / QK;
    struct q5_block *blocks = out;
    long inexact = 0;
    volatile int give_up = 0; /* one inexact row decides: the rest need not be tried */
#pragma omp parallel for schedule(static) reduction(+ : inexact)
    for (long n = 0; n < N; n++) {
        if (give_up) continue;
        for (long b = 0; b < nb; b++) {
            const float *src = w + n * K + b * QK;
            float amax = 0.0f, max = 0.0f;
            for (int i = 0; i < QK; i++) {
                const float a = src[i] < 0 ? -src[i] : src[i];
                if (a > amax) {
                    amax = a;
                    max = src[i];
                }
            }
            const float d = max / -16.0f, inv = d != 0.0f ? 1.0f / d : 0.0f;
            struct q5_block *blk = blocks + n * nb + b;
            uint32_t qh = 0;
            memset(blk->qs, 0, sizeof blk->qs);
            for (int i = 0; i < QK; i++) {
                int q = (int)(src[i] * inv + 16.5f);
                q = q < 0 ? 0 : (q > 31 ? 31 : q);
                blk->qs[i % 16] |= (uint8_t)((q & 0x0F) << (i < 16 ? 0 : 4));
                qh |= (uint32_t)(q >> 4) << i;
                inexact += d * (float)(q - 16) != src[i];
            }
            blk->d = d;
            blk->qh = qh;
        }
        if (inexact) give_up = 1;
    }
    return inexact;
}

/* Q5_0 blocks -> fp32 [N, K] (for tests and for turning a tensor back into dense form). */
void q5_dequantize(const void *w, long N, long K, float *out) {
#pragma omp parallel for schedule(static)
    for (long n = 0; n < N; n++) q5_dequant_row(w, n, K, out + n * K);
}
