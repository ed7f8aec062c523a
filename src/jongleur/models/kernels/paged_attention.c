/* Decode attention over the paged KV cache, fp32, AVX2 + FMA.
 *
 * One query token per sequence. Keys and values are read in place through the block table (no
 * gathered copy of the context), and each (sequence, KV head) pair is one task that serves all of
 * its grouped query heads, so every key and value is loaded once per group. Softmax in fp32 with
 * the running maximum subtracted, as PyTorch's SDPA does; positions past the sequence's length,
 * or outside its sliding window, are skipped.
 */
#include "vec_math.h"
#include <math.h>
#include <stdlib.h>

static inline float dot(const float *a, const float *b, long n) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    long i = 0;
    for (; i + 16 <= n; i += 16) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
    }
    acc0 = _mm256_add_ps(acc0, acc1);
    __m128 lo = _mm_add_ps(_mm256_castps256_ps128(acc0), _mm256_extractf128_ps(acc0, 1));
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    float s = _mm_cvtss_f32(lo);
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

static inline void axpy(float a, const float *x, float *y, long n) {
    const __m256 av = _mm256_set1_ps(a);
    long i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += a * x[i];
}

/* Keys and values are read through the block table, so the hardware prefetcher loses the stream at
 * every block boundary (a block's rows for one KV head are 256-byte pieces 512 bytes apart, in
 * blocks placed anywhere in the pool): fetch the row that comes AHEAD tokens later ourselves. */
#ifndef AHEAD
#define AHEAD 16
#endif
static inline void prefetch_row(const float *row, long hd) {
    for (long i = 0; i < hd; i += 16) _mm_prefetch((const char *)(row + i), _MM_HINT_T0);
}

/* The four sums of a0..a3, as the four lanes of one vector. */
static inline __m128 hsum4(__m256 a0, __m256 a1, __m256 a2, __m256 a3) {
    const __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
    return _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
}

/* scores[g * n + j] = scale * q_g . k_j for the G query heads of a group. Two heads against four
 * keys at a time: each load of a query or key vector feeds two or four multiply-adds (one head
 * against one key fed one per load, and the loads bounded it). Every (head, key) score is the same
 * sequence of operations wherever it falls (a missing key in the last four repeats a real one and
 * is dropped), so a row's scores do not depend on its context's length modulo 4. */
static void group_scores(const float *q, long G, long hd, const float *k_cache, const long *rows, long n,
                         float scale, float *scores) {
    if (hd % 8) {
        for (long j = 0; j < n; j++)
            for (long g = 0; g < G; g++) scores[g * n + j] = dot(q + g * hd, k_cache + rows[j], hd) * scale;
        return;
    }
    const __m128 vscale = _mm_set1_ps(scale);
    for (long j = 0; j < n; j += 4) {
        const float *k[4];
        for (int t = 0; t < 4; t++) k[t] = k_cache + rows[j + t < n ? j + t : n - 1];
        if (j + AHEAD < n)
            for (int t = 0; t < 4 && j + AHEAD + t < n; t++) prefetch_row(k_cache + rows[j + AHEAD + t], hd);
        for (long g = 0; g < G; g += 2) {
            const float *q0 = q + g * hd, *q1 = q + (g + 1 < G ? g + 1 : g) * hd;
            __m256 a0[4], a1[4];
            _Pragma("GCC unroll 4") for (int t = 0; t < 4; t++) a0[t] = a1[t] = _mm256_setzero_ps();
            for (long c = 0; c < hd; c += 8) {
                const __m256 x0 = _mm256_loadu_ps(q0 + c), x1 = _mm256_loadu_ps(q1 + c);
                _Pragma("GCC unroll 4") for (int t = 0; t < 4; t++) {
                    const __m256 kv = _mm256_loadu_ps(k[t] + c);
                    a0[t] = _mm256_fmadd_ps(x0, kv, a0[t]);
                    a1[t] = _mm256_fmadd_ps(x1, kv, a1[t]);
                }
            }
            float s0[4], s1[4];
            _mm_storeu_ps(s0, _mm_mul_ps(hsum4(a0[0], a0[1], a0[2], a0[3]), vscale));
            _mm_storeu_ps(s1, _mm_mul_ps(hsum4(a1[0], a1[1], a1[2], a1[3]), vscale));
            for (int t = 0; t < 4 && j + t < n; t++) {
                scores[g * n + j + t] = s0[t];
                if (g + 1 < G) scores[(g + 1) * n + j + t] = s1[t];
            }
        }
    }
}

/* out[g] = sum_j p[g * n + j] * v_j for the G query heads of a group (out[g] zeroed by the caller):
 * four heads and sixteen dimensions at a time, so the sums stay in registers while the values
 * stream past (two value loads and four broadcasts feed eight multiply-adds). Each output lane
 * adds its products in key order, whatever the blocking. */
static void weighted_values(const float *p, long n, long G, const float *v_cache, const long *rows, long hd,
                            float *out) {
    if (hd % 16) {
        for (long j = 0; j < n; j++)
            for (long g = 0; g < G; g++) axpy(p[g * n + j], v_cache + rows[j], out + g * hd, hd);
        return;
    }
    for (long g0 = 0; g0 < G; g0 += 4) {
        const long gn = G - g0 < 4 ? G - g0 : 4;
        const float *pg = p + g0 * n;
        for (long c = 0; c < hd; c += 16) {
            __m256 a0[4], a1[4];
            _Pragma("GCC unroll 4") for (int i = 0; i < 4; i++) a0[i] = a1[i] = _mm256_setzero_ps();
            for (long j = 0; j < n; j++) {
                if (c == 0 && g0 == 0 && j + AHEAD < n) prefetch_row(v_cache + rows[j + AHEAD], hd);
                const __m256 v0 = _mm256_loadu_ps(v_cache + rows[j] + c), v1 = _mm256_loadu_ps(v_cache + rows[j] + c + 8);
                _Pragma("GCC unroll 4") for (int i = 0; i < 4; i++) if (i < gn) {
                    const __m256 w = _mm256_broadcast_ss(pg + i * n + j);
                    a0[i] = _mm256_fmadd_ps(w, v0, a0[i]);
                    a1[i] = _mm256_fmadd_ps(w, v1, a1[i]);
                }
            }
            _Pragma("GCC unroll 4") for (int i = 0; i < 4; i++) if (i < gn) {
                _mm256_storeu_ps(out + (g0 + i) * hd + c, a0[i]);
                _mm256_storeu_ps(out + (g0 + i) * hd + c + 8, a1[i]);
            }
        }
    }
}

/* q, out: [D, H, hd]; k_cache, v_cache: [slots, KVH, hd]; block_tables: [D, max_blocks];
 * context_lens, positions: [D] (the query's position is positions[d]); window 0 = none. */
void paged_decode_attention(const float *q, const float *k_cache, const float *v_cache, const long *block_tables,
                            long max_blocks, const long *context_lens, const long *positions, long D, long H,
                            long KVH, long hd, long block_size, float scale, long window, float *out,
                            int nthreads) {
    const long G = H / KVH;
#pragma omp parallel num_threads(nthreads)
    {
        long cap = 0;
        float *scores = NULL;
        long *rows = NULL;  /* this task's context, as row offsets into the caches */
#pragma omp for schedule(dynamic, 1)
        for (long task = 0; task < D * KVH; task++) {
            const long d = task / KVH, kvh = task % KVH, len = context_lens[d];
            const long first = window > 0 && positions[d] - window + 1 > 0 ? positions[d] - window + 1 : 0;
            const long n = len - first;
            if (n * G > cap) {
                free(scores);
                free(rows);
                cap = n * G;
                scores = malloc(cap * sizeof(float));
                rows = malloc(cap * sizeof(long));
            }
            const long *table = block_tables + d * max_blocks;
            long blk = first / block_size, off = first % block_size;  /* no division per token */
            for (long j = 0; j < n; j++) {
                rows[j] = ((table[blk] * block_size + off) * KVH + kvh) * hd;
                if (++off == block_size) {
                    off = 0;
                    blk++;
                }
            }
            const float *qd = q + (d * H + kvh * G) * hd;
            float *od = out + (d * H + kvh * G) * hd;
            group_scores(qd, G, hd, k_cache, rows, n, scale, scores);
            for (long g = 0; g < G; g++) {
                float *s = scores + g * n, mx = -INFINITY, sum = 0.0f;
                for (long j = 0; j < n; j++) mx = s[j] > mx ? s[j] : mx;
                long j = 0;
                __m256 vsum = _mm256_setzero_ps();
                for (; j + 8 <= n; j += 8) {
                    const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(s + j), _mm256_set1_ps(mx)));
                    _mm256_storeu_ps(s + j, e);
                    vsum = _mm256_add_ps(vsum, e);
                }
                float lanes[8];
                _mm256_storeu_ps(lanes, vsum);
                for (int l = 0; l < 8; l++) sum += lanes[l];
                for (; j < n; j++) {
                    s[j] = expf(s[j] - mx);
                    sum += s[j];
                }
                const float inv = 1.0f / sum;
                for (long j = 0; j < n; j++) s[j] *= inv;
                for (long i = 0; i < hd; i++) od[g * hd + i] = 0.0f;
            }
            weighted_values(scores, n, G, v_cache, rows, hd, od);
        }
        free(scores);
        free(rows);
    }
}
