/* y[M,N] = x[M,K] @ dequant(w)^T (+ bias) for 5-bit weights in GGUF's Q5_0 scheme, AVX2 + FMA.
 *
 * A block of 32 weights (along K, one column) is d * (q - 16), q in 0..31. GGUF files store most of a
 * model's tensors this way; keeping them (instead of widening to int8) reads 0.625 bytes a weight
 * per decode step, and keeps the file's exact values.
 *
 * The activations meet them as int8 with one scale per block of 32 (llama.cpp's Q8_0 rounding), on
 * vpmaddubsw: unsigned q times signed x, 32 multiply-adds an instruction, twice vpmaddwd's 16 (one
 * core, from L1: ~105 G multiply-adds/s against the int16 tiles' ~60). The sums of (q - 16) * x stay
 * in int16 for a whole block: a lane adds 16 products of at most 16 * 127, so starting it at
 * -16 * (the sum of its x) and adding q * x keeps every lane's result within 32512, and vpaddw's
 * wrap-around in between cancels. One vpmaddwd by ones then gives each column's int32 sum.
 *
 * Layout: panels of 16 columns (common.h), per block of 32 k a vector of 8 columns x 4 k bytes for
 * each k-quad j and half h (cols 8h..8h+7) once unpacked. Stored as 320 bytes per panel and block:
 * two groups, each a 32-byte vector of fifth bits (bit t of byte i: byte i of the group's t-th
 * vector, t = (j % 4) * 2 + h) then four 32-byte vectors of nibbles (quad j: half 0 low, half 1
 * high). The scales d are fp32, [N/16][K/32][16].
 */
#include "common.h"

#define BLOCK_BYTES 320 /* one panel's block: 512 weights at 5 bits */
#define GROUP_STRIDE 160
#define UNPACKED_BLOCK (QK * PANEL) /* bytes of a panel's block as u8 */

static inline const uint8_t *q5_block(const void *q, long p, long nb, long b) {
    return (const uint8_t *)q + (p * nb + b) * BLOCK_BYTES;
}

/* Vector t (0..7) of a group: its nibbles (t even: low, odd: high) with bit t of the bit vector h
 * as their fifth bit, so bytes q in 0..31. */
static inline __m256i q5_vector(__m256i nibbles, __m256i h, int t) {
    const __m256i low4 = _mm256_set1_epi8(0x0F), bit4 = _mm256_set1_epi8(0x10);
    const __m256i q = t & 1 ? _mm256_and_si256(_mm256_srli_epi16(nibbles, 4), low4) : _mm256_and_si256(nibbles, low4);
    /* 16-bit shifts: the bit read stays inside its byte for every t in 0..7 */
    const __m256i top = t <= 4 ? _mm256_slli_epi16(h, 4 - t) : _mm256_srli_epi16(h, t - 4);
    return _mm256_or_si256(q, _mm256_and_si256(top, bit4));
}

/* a0 (columns 0-7), a1 (8-15): += the quad's four x (int8, broadcast) times the columns' four q. In
 * assembly for the reason common.h's pair_step is. vpmaddubsw takes the unsigned operand (q) first. */
static inline void quad_step(__m256i *a0, __m256i *a1, const int8_t *quad, __m256i w0, __m256i w1) {
    __m256i b, t;
    __asm__("vpbroadcastd %[x], %[b]\n\t"
            "vpmaddubsw %[b], %[w0], %[t]\n\t"
            "vpaddw %[t], %[a0], %[a0]\n\t"
            "vpmaddubsw %[b], %[w1], %[b]\n\t"
            "vpaddw %[b], %[a1], %[a1]"
            : [a0] "+x"(*a0), [a1] "+x"(*a1), [b] "=&x"(b), [t] "=&x"(t)
            : [x] "m"(*(const int32_t *)quad), [w0] "x"(w0), [w1] "x"(w1));
}

/* f += the block's int16 lane sums a0, a1 as int32 column sums, times weight scales s0, s1 and the
 * activation block's scale xs. */
static inline void flush_block(__m256 f[2], __m256i a0, __m256i a1, __m256 s0, __m256 s1, float xs) {
    const __m256i ones = _mm256_set1_epi16(1);
    const __m256 x = _mm256_set1_ps(xs);
    f[0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(a0, ones)), _mm256_mul_ps(s0, x), f[0]);
    f[1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(a1, ones)), _mm256_mul_ps(s1, x), f[1]);
}

/* A row of activations as int8 blocks: xq [K], per block b its scale xs[b] and the lanes' starting
 * values init[b] (low 16 bits: -16 * the sum of x at k % 4 in {0, 1}, high: k % 4 in {2, 3}). */
static void quantize_row_i8(const float *x, long K, int8_t *xq, float *xs, int32_t *init) {
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    for (long b = 0; b < K / QK; b++) {
        const float *src = x + b * QK;
        __m256 v[4], amax = _mm256_setzero_ps();
        for (int i = 0; i < 4; i++) amax = _mm256_max_ps(amax, _mm256_and_ps(v[i] = _mm256_loadu_ps(src + 8 * i), abs_mask));
        const float d = hmax(amax) / 127.0f, inv = d > 0 ? 1.0f / d : 0.0f;
        __m256i q[4];
        for (int i = 0; i < 4; i++) q[i] = round_away(_mm256_mul_ps(v[i], _mm256_set1_ps(inv)));
        /* packs interleave 128-bit lanes; the permute puts the 32 bytes back in k order */
        const __m256i bytes = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        _mm256_storeu_si256((__m256i *)(xq + b * QK), _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
        int32_t s[8];
        _mm256_storeu_si256((__m256i *)s, _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3])));
        const int lo = s[0] + s[1] + s[4] + s[5], hi = s[2] + s[3] + s[6] + s[7];
        xs[b] = d;
        init[b] = (int32_t)((uint32_t)(uint16_t)(-16 * lo) | (uint32_t)(uint16_t)(-16 * hi) << 16);
    }
}

/* Panel p's blocks as bytes q (0..31): out[b * 512 + j * 64 + h * 32 + c * 4 + t] is column 8h + c
 * at k = 32b + 4j + t. */
static void q5_unpack_panel(const void *q, long p, long K, uint8_t *out) {
    const long nb = K / QK;
    for (long b = 0; b < nb; b++) {
        const uint8_t *src = q5_block(q, p, nb, b);
        _mm_prefetch((const char *)src + PREFETCH, _MM_HINT_T0);
        _mm_prefetch((const char *)src + PREFETCH + 128, _MM_HINT_T0);
        _mm_prefetch((const char *)src + PREFETCH + 256, _MM_HINT_T0);
        UNROLL for (int g = 0; g < 2; g++) {
            const __m256i h = _mm256_loadu_si256((const __m256i *)(src + g * GROUP_STRIDE));
            UNROLL for (int t = 0; t < 8; t++) {
                const __m256i n = _mm256_loadu_si256((const __m256i *)(src + g * GROUP_STRIDE + 32 + (t / 2) * 32));
                _mm256_store_si256((__m256i *)(out + b * UNPACKED_BLOCK + g * 256 + t * 32), q5_vector(n, h, t));
            }
        }
    }
}

/* One row (xq, xs, init) against panel p read straight from memory: y[0..cols) (+ bias). */
static void q5_row(const int8_t *xq, const float *xs, const int32_t *init, const void *q, const float *scales,
                   long p, long K, const float *bias, long cols, float *y) {
    const long nb = K / QK;
    const float *ws = scales + p * nb * PANEL;
    __m256 f[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    for (long b = 0; b < nb; b++) {
        const uint8_t *src = q5_block(q, p, nb, b);
        for (int i = 0; i < BLOCK_BYTES; i += 64) _mm_prefetch((const char *)src + i + PREFETCH, _MM_HINT_T0);
        __m256i a0 = _mm256_set1_epi32(init[b]), a1 = a0;
        UNROLL for (int g = 0; g < 2; g++) {
            const __m256i h = _mm256_loadu_si256((const __m256i *)(src + g * GROUP_STRIDE));
            UNROLL for (int j = 0; j < 4; j++) {
                const __m256i n = _mm256_loadu_si256((const __m256i *)(src + g * GROUP_STRIDE + 32 + j * 32));
                quad_step(&a0, &a1, xq + b * QK + (4 * g + j) * 4, q5_vector(n, h, 2 * j), q5_vector(n, h, 2 * j + 1));
            }
        }
        flush_block(f, a0, a1, _mm256_loadu_ps(ws + b * PANEL), _mm256_loadu_ps(ws + b * PANEL + 8), xs[b]);
    }
    store_row(f, 1.0f, bias, cols, y); /* the activation scales are in f already */
}

/* MT rows against an unpacked panel (wq, block scales ws): y[MT][cols] (+ bias). */
#define Q5_TILE(MT)                                                                                 \
    static void q5_tile_##MT(const int8_t *xq, const float *xs, const int32_t *init, long K, const uint8_t *wq, \
                             const float *ws, float *y, long ldy, const float *bias, long cols) {    \
        const long nb = K / QK;                                                                     \
        __m256 f[MT][2];                                                                            \
        UNROLL for (int m = 0; m < MT; m++) f[m][0] = f[m][1] = _mm256_setzero_ps();                \
        for (long b = 0; b < nb; b++) {                                                             \
            __m256i a[MT][2];                                                                       \
            UNROLL for (int m = 0; m < MT; m++) a[m][0] = a[m][1] = _mm256_set1_epi32(init[m * nb + b]); \
            const uint8_t *wb = wq + b * UNPACKED_BLOCK;                                            \
            UNROLL for (int j = 0; j < QK / 4; j++) {                                               \
                const __m256i w0 = _mm256_load_si256((const __m256i *)(wb + j * 64));               \
                const __m256i w1 = _mm256_load_si256((const __m256i *)(wb + j * 64 + 32));          \
                UNROLL for (int m = 0; m < MT; m++) quad_step(&a[m][0], &a[m][1], xq + m * K + b * QK + 4 * j, w0, w1); \
            }                                                                                       \
            const __m256 s0 = _mm256_loadu_ps(ws + b * PANEL), s1 = _mm256_loadu_ps(ws + b * PANEL + 8); \
            UNROLL for (int m = 0; m < MT; m++) flush_block(f[m], a[m][0], a[m][1], s0, s1, xs[m * nb + b]); \
        }                                                                                           \
        for (int m = 0; m < MT; m++) store_row(f[m], 1.0f, bias, cols, y + m * ldy);                \
    }

Q5_TILE(1) Q5_TILE(2) Q5_TILE(3) Q5_TILE(4)
#define Q5_IMT 4 /* rows a tile: 2 and 4 measured alike (~105 G multiply-adds/s a core), 3 lower */

typedef void (*q5_tile_fn)(const int8_t *, const float *, const int32_t *, long, const uint8_t *, const float *,
                           float *, long, const float *, long);
static const q5_tile_fn Q5_TILES[Q5_IMT] = {q5_tile_1, q5_tile_2, q5_tile_3, q5_tile_4};

/* x [M, K] (row stride ldx), q and scales in panel order (above), bias [N] or NULL, y [M, N] (row
 * stride ldy); K a multiple of 32. As common.h's linear_panels: one row reads the panels straight
 * from memory, a batch unpacks each panel once and runs every row against it, in passes. */
void q5_linear(const float *x, long M, long K, long ldx, const void *q, const float *scales, long N,
               const float *bias, float *y, long ldy, int nthreads) {
    for (; M > ROWS_PER_PASS; M -= ROWS_PER_PASS, x += ROWS_PER_PASS * ldx, y += ROWS_PER_PASS * ldy)
        q5_linear(x, ROWS_PER_PASS, K, ldx, q, scales, N, bias, y, ldy, nthreads);
    const long nb = K / QK, panels = (N + PANEL - 1) / PANEL;
    int8_t *xq = aligned_alloc(32, M * K);
    float *xs = malloc(M * nb * sizeof(float));
    int32_t *init = malloc(M * nb * sizeof(int32_t));
#pragma omp parallel num_threads(nthreads)
    {
#pragma omp for schedule(static)
        for (long m = 0; m < M; m++) quantize_row_i8(x + m * ldx, K, xq + m * K, xs + m * nb, init + m * nb);
        uint8_t *wq = M > 1 ? aligned_alloc(32, K * PANEL) : NULL;
#pragma omp for schedule(static)
        for (long p = 0; p < panels; p++) {
            const long n0 = p * PANEL, cols = N - n0 < PANEL ? N - n0 : PANEL;
            const float *pb = bias ? bias + n0 : NULL;
            if (M == 1) {
                q5_row(xq, xs, init, q, scales, p, K, pb, cols, y + n0);
                continue;
            }
            q5_unpack_panel(q, p, K, wq);
            for (long m = 0; m < M; m += Q5_IMT) {
                const int mt = (M - m) < Q5_IMT ? (int)(M - m) : Q5_IMT;
                Q5_TILES[mt - 1](xq + m * K, xs + m * nb, init + m * nb, K, wq, scales + p * nb * PANEL,
                                 y + m * ldy + n0, ldy, pb, cols);
            }
        }
        free(wq);
    }
    free(xq);
    free(xs);
    free(init);
}

/* Where weight i (0..31) of column c (0..15) sits in a stored block: its nibble's byte and shift,
 * and its fifth bit's byte and bit. */
static inline void q5_position(int c, int i, int *nibble_byte, int *shift, int *bit_byte, int *bit) {
    const int j = i / 4, h = c / 8, g = j / 4, t = (j % 4) * 2 + h, byte = (c % 8) * 4 + i % 4;
    *nibble_byte = g * GROUP_STRIDE + 32 + (j % 4) * 32 + byte;
    *shift = h * 4;
    *bit_byte = g * GROUP_STRIDE + byte;
    *bit = t;
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
            const int c = (int)(n % PANEL);
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
                uint8_t *dst = (uint8_t *)q5_block(q, p, nb, b);
                for (int i = 0; i < QK; i++) {
                    int v = (int)(src[i] * inv + 16.5f);
                    v = v < 0 ? 0 : (v > 31 ? 31 : v);
                    inexact += d * (float)(v - 16) != src[i];
                    int nibble_byte, shift, bit_byte, bit;
                    q5_position(c, i, &nibble_byte, &shift, &bit_byte, &bit);
                    dst[nibble_byte] |= (uint8_t)((v & 0x0F) << shift);
                    dst[bit_byte] |= (uint8_t)((v >> 4) << bit);
                }
            }
        }
        if (inexact) give_up = 1;
    }
    return inexact;
}

/* Panel order back to fp32 rows [N, K] (tests, dense copies). */
void q5_dequantize(const void *q, const float *scales, long N, long K, float *out) {
    const long nb = K / QK;
#pragma omp parallel for schedule(static)
    for (long n = 0; n < N; n++) {
        const long p = n / PANEL;
        const int c = (int)(n % PANEL);
        for (long b = 0; b < nb; b++) {
            const uint8_t *src = q5_block(q, p, nb, b);
            for (int i = 0; i < QK; i++) {
                int nibble_byte, shift, bit_byte, bit;
                q5_position(c, i, &nibble_byte, &shift, &bit_byte, &bit);
                const int v = ((src[nibble_byte] >> shift) & 0x0F) | (((src[bit_byte] >> bit) & 1) << 4);
                out[n * K + b * QK + i] = scales[(p * nb + b) * PANEL + c] * (float)(v - 16);
            }
        }
    }
}
