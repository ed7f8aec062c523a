/* y[M,N] = x[M,K] @ dequant(w)^T (+ bias) for 5-bit weights in GGUF's Q5_0 scheme, AVX2 + FMA.
 *
 * A block of 32 weights (along K, one column) is d * (q - 16), q in 0..31. GGUF files store most of a
 * model's tensors this way; keeping them (instead of widening to int8) reads 0.75 bytes a weight per
 * decode step instead of 1.125, and keeps the file's exact values. Here the weights are laid out in
 * common.h's panels of 16 columns: per panel and block, for each half of eight columns, eight groups
 * of two k-pairs (32 weights: k-pair 2g then 2g + 1, each as the eight columns' two weights), a group
 * being 16 bytes of nibbles and a 32-bit word of fifth bits (20 bytes). The scales d are fp32 (GGUF
 * has fp16: no conversion on the hot path), [N/16][K/32][16] like every panel format's.
 */
#include "common.h"

struct q5_group {
    uint32_t qh;     /* the fifth bits, at the positions `fifth_bit` gives (not GGUF's order) */
    uint8_t qs[16];  /* weight i (< 16) in the low nibble of qs[i], weight i + 16 in its high nibble (as GGUF) */
};

#define GROUPS (QK / 4) /* per block and half panel */

/* Group g of half h of block b of panel p. */
static inline const struct q5_group *q5_group_at(const void *q, long p, long nb, long b, int h, int g) {
    return (const struct q5_group *)q + ((p * nb + b) * 2 + h) * GROUPS + g;
}

/* Where weight i's fifth bit sits in qh. After a 32-bit broadcast of qh, 16-bit lane l holds the
 * low half of qh when l is even and the high half when l is odd; weight i lands in lane i % 16. So
 * each lane takes its bits from the half it holds, and one multiply per vector moves every lane's
 * bit to its top (see q5_unpack): no shuffles, which bound the kernel. */
static inline int fifth_bit(int i) {
    const int lane = i % 16, second = i / 16;
    return (lane & 1) * 16 + second * 8 + lane / 2;
}

/* The 32 weights of a group as int16 (q - 16): lo holds weights 0-15, hi weights 16-31. */
static inline void q5_unpack(const struct q5_group *b, __m256i *lo, __m256i *hi) {
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

static void q5_unpack_panel(const void *q, long p, long K, int16_t *out) {
    const long nb = K / QK;
    for (long b = 0; b < nb; b++) {
        int16_t *dst = out + b * QK * PANEL;
        _mm_prefetch((const char *)q5_group_at(q, p, nb, b, 0, 0) + PREFETCH, _MM_HINT_T0);
        _mm_prefetch((const char *)q5_group_at(q, p, nb, b, 1, 0) + PREFETCH, _MM_HINT_T0);
        for (int h = 0; h < 2; h++)
            for (int g = 0; g < GROUPS; g++) {
                __m256i lo, hi;
                q5_unpack(q5_group_at(q, p, nb, b, h, g), &lo, &hi);
                _mm256_store_si256((__m256i *)(dst + (2 * g) * 2 * PANEL + 16 * h), lo);
                _mm256_store_si256((__m256i *)(dst + (2 * g + 1) * 2 * PANEL + 16 * h), hi);
            }
    }
}

static void q5_row_tile(const int16_t *xq, const struct panel_matrix *w, long p, long K, __m256 f[2]) {
    const long nb = K / QK;
    const float *ws = w->scales + p * nb * PANEL;
    f[0] = f[1] = _mm256_setzero_ps();
    for (long b = 0; b < nb; b++) {
        const char *block = (const char *)q5_group_at(w->q, p, nb, b, 0, 0);
        for (int i = 0; i < 2 * GROUPS * (int)sizeof(struct q5_group); i += 64)
            _mm_prefetch(block + i + PREFETCH, _MM_HINT_T0);
        __m256i a0 = _mm256_setzero_si256(), a1 = _mm256_setzero_si256();
        UNROLL for (int g = 0; g < GROUPS; g++) {
            __m256i lo0, hi0, lo1, hi1;
            q5_unpack(q5_group_at(w->q, p, nb, b, 0, g), &lo0, &hi0);
            q5_unpack(q5_group_at(w->q, p, nb, b, 1, g), &lo1, &hi1);
            pair_step(&a0, &a1, xq + b * QK + 4 * g, lo0, lo1);
            pair_step(&a0, &a1, xq + b * QK + 4 * g + 2, hi0, hi1);
        }
        scale_block(f, a0, a1, _mm256_loadu_ps(ws + b * PANEL), _mm256_loadu_ps(ws + b * PANEL + 8));
    }
}

/* x [M, K] (row stride ldx), groups and scales in panel order (above), bias [N] or NULL, y [M, N]
 * (row stride ldy); K a multiple of 32. */
void q5_linear(const float *x, long M, long K, long ldx, const void *q, const float *scales, long N,
               const float *bias, float *y, long ldy, int nthreads) {
    const struct panel_matrix w = {q, scales};
    linear_panels(x, M, K, ldx, &w, q5_unpack_panel, q5_row_tile, N, bias, y, ldy, nthreads);
}

/* fp32 w [N, K] -> Q5_0 blocks by llama.cpp's rounding (d = the block's largest-magnitude value / -16),
 * in panel order; q and scales must come zeroed (padding columns stay zero). Returns 0 if the blocks
 * reproduce every weight exactly, as they do for a tensor that came from a Q5_0 GGUF tensor (its
 * largest value is d * -16 exactly, so d and every q are recovered); else a positive count (not all
 * panels are tried once one is inexact). */
long q5_quantize(const float *w, long N, long K, void *q, float *scales) {
    const long nb = K / QK, panels = (N + PANEL - 1) / PANEL;
    long inexact = 0;
    volatile int give_up = 0; /* one inexact panel decides: the rest need not be tried */
#pragma omp parallel for schedule(static) reduction(+ : inexact)
    for (long p = 0; p < panels; p++) {
        if (give_up) continue;
        for (long n = p * PANEL; n < N && n < (p + 1) * PANEL; n++) {
            const int c = (int)(n % PANEL), h = c / 8;
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
                scales[(p * nb + b) * PANEL + c] = d;
                for (int i = 0; i < QK; i++) {
                    int v = (int)(src[i] * inv + 16.5f);
                    v = v < 0 ? 0 : (v > 31 ? 31 : v);
                    inexact += d * (float)(v - 16) != src[i];
                    /* k-pair i / 2 is vector (i / 2) % 2 of group i / 4; lane (column in half, k parity) */
                    const int g = i / 4, idx = ((i / 2) % 2) * 16 + (c % 8) * 2 + (i & 1);
                    struct q5_group *grp = (struct q5_group *)q5_group_at(q, p, nb, b, h, g);
                    grp->qs[idx % 16] |= (uint8_t)((v & 0x0F) << (idx < 16 ? 0 : 4));
                    grp->qh |= (uint32_t)(v >> 4) << fifth_bit(idx);
                }
            }
        }
        if (inexact) give_up = 1;
    }
    return inexact;
}

/* Panel order back to fp32 rows [N, K] (tests, dense copies). */
void q5_dequantize(const void *q, const float *scales, long N, long K, float *out) {
    const struct panel_matrix w = {q, scales};
    dequantize_panels(&w, q5_unpack_panel, N, K, out);
}
