/* y[M,N] = x[M,K] @ dequant(w)^T (+ bias) for 5-bit weights in GGUF's Q5_0 scheme, AVX2 + FMA.
 *
 * A block of 32 weights is d * (q - 16), q in 0..31: the low four bits of q packed two to a byte,
 * the fifth bits in one 32-bit word (in an order of our own, chosen for the unpacking). GGUF files store most of a model's tensors this way; keeping
 * them as they are (instead of widening to int8) reads 0.75 bytes a weight per decode step instead
 * of 1.125, and keeps the file's exact values. Here a block also carries its scale as fp32 (GGUF
 * has fp16) so that no conversion is needed on the hot path: 24 bytes per 32 weights.
 */
#include <string.h>

#include "common.h"

struct q5_block {
    float d;
    uint32_t qh;     /* the fifth bits, at the positions `fifth_bit` gives (not GGUF's order) */
    uint8_t qs[16];  /* weight i (< 16) in the low nibble of qs[i], weight i + 16 in its high nibble (as GGUF) */
};

/* Where weight i's fifth bit sits in qh. After a 32-bit broadcast of qh, 16-bit lane l holds the
 * low half of qh when l is even and the high half when l is odd; weight i lands in lane i % 16. So
 * each lane takes its bits from the half it holds, and one multiply per vector moves every lane's
 * bit to its top (see q5_unpack): no shuffles, which bound the kernel. */
static inline int fifth_bit(int i) {
    const int lane = i % 16, second = i / 16;
    return (lane & 1) * 16 + second * 8 + lane / 2;
}

/* The 32 weights of a block as int16 (q - 16): lo holds weights 0-15, hi weights 16-31. */
static inline void q5_unpack(const struct q5_block *b, __m256i *lo, __m256i *hi) {
    const __m256i bytes = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)b->qs));
    const __m256i low = _mm256_and_si256(bytes, _mm256_set1_epi16(0x0F)), high = _mm256_srli_epi16(bytes, 4);
    const __m256i qh = _mm256_set1_epi32((int)b->qh);
    /* lane l's bit (l / 2, or 8 + l / 2 for the second sixteen) to bit 15 */
    const __m256i to_top_lo = _mm256_setr_epi16(1 << 15, 1 << 15, 1 << 14, 1 << 14, 1 << 13, 1 << 13, 1 << 12,
                                                1 << 12, 1 << 11, 1 << 11, 1 << 10, 1 << 10, 1 << 9, 1 << 9,
                                                1 << 8, 1 << 8);
    const __m256i to_top_hi = _mm256_setr_epi16(1 << 7, 1 << 7, 1 << 6, 1 << 6, 1 << 5, 1 << 5, 1 << 4, 1 << 4,
                                                1 << 3, 1 << 3, 1 << 2, 1 << 2, 1 << 1, 1 << 1, 1, 1);
    const __m256i minus16 = _mm256_set1_epi16((short)0xFFF0);
    /* q - 16 = the nibble when the fifth bit is set, else the nibble - 16 (0xFFF0 | nibble) */
    const __m256i set_lo = _mm256_srai_epi16(_mm256_mullo_epi16(qh, to_top_lo), 15);
    const __m256i set_hi = _mm256_srai_epi16(_mm256_mullo_epi16(qh, to_top_hi), 15);
    *lo = _mm256_or_si256(low, _mm256_andnot_si256(set_lo, minus16));
    *hi = _mm256_or_si256(high, _mm256_andnot_si256(set_hi, minus16));
}

/* One row of int16 activations against four columns (a `quad_tile_fn`). */
static void q5_tile_1_4(const int16_t *xq, const float *xs, const void *weights, long n0, long K, float *y,
                        const float *bias) {
    const long nb = K / QK;
    const struct q5_block *w = (const struct q5_block *)weights + n0 * nb;
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (long b = 0; b < nb; b++) {
        const __m256i xlo = _mm256_loadu_si256((const __m256i *)(xq + b * QK));
        const __m256i xhi = _mm256_loadu_si256((const __m256i *)(xq + b * QK + 16));
        const __m256 xscale = _mm256_broadcast_ss(xs + b);
        for (int n = 0; n < 4; n++) {
            const struct q5_block *blk = w + n * nb + b;
            if (!(b & 1)) _mm_prefetch((const char *)blk + PREFETCH, _MM_HINT_T0);
            __m256i lo, hi;
            q5_unpack(blk, &lo, &hi);
            const __m256i dot = _mm256_add_epi32(_mm256_madd_epi16(lo, xlo), _mm256_madd_epi16(hi, xhi));
            const __m256 scale = _mm256_mul_ps(_mm256_broadcast_ss(&blk->d), xscale);
            acc[n] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), scale, acc[n]);
        }
    }
    for (int n = 0; n < 4; n++) y[n] = hsum(acc[n]) + (bias ? bias[n] : 0.0f);
}

static inline void store_i16_as_f32(float *out, __m256i v, __m256 d) {
    _mm256_storeu_ps(out, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(_mm256_castsi256_si128(v))), d));
    _mm256_storeu_ps(out + 8, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(_mm256_extracti128_si256(v, 1))), d));
}

static void q5_dequant_blocks(const void *weights, long n, long K, long b0, long b1, float *out) {
    const struct q5_block *row = (const struct q5_block *)weights + n * (K / QK);
    for (long b = b0; b < b1; b++) {
        if (!(b & 1)) _mm_prefetch((const char *)(row + b) + PREFETCH, _MM_HINT_T0);
        __m256i lo, hi;
        q5_unpack(row + b, &lo, &hi);
        const __m256 d = _mm256_set1_ps(row[b].d);
        store_i16_as_f32(out + (b - b0) * QK, lo, d);
        store_i16_as_f32(out + (b - b0) * QK + 16, hi, d);
    }
}

/* x [M, K] (row stride ldx), w [N, K/32] blocks, bias [N] or NULL, y [M, N] (row stride ldy); K a multiple of 32. */
void q5_linear(const float *x, long M, long K, long ldx, const void *w, long N, const float *bias, float *y,
               long ldy, int nthreads) {
    if (M > 1) {
        linear_many_rows(x, M, K, ldx, w, q5_dequant_blocks, N, bias, y, ldy, nthreads);
        return;
    }
    linear_one_row(x, K, w, q5_tile_1_4, q5_dequant_blocks, N, bias, y, nthreads);
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
                qh |= (uint32_t)(q >> 4) << fifth_bit(i);
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
    for (long n = 0; n < N; n++) q5_dequant_blocks(w, n, K, 0, K / QK, out + n * K);
}
