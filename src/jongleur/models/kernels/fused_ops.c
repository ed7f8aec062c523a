/* The small per-layer operations of the int8 CPU path, fused: fp32, AVX2 + FMA.
 *
 * In a one-row decode step each of these is microseconds of arithmetic but, as a chain of
 * PyTorch ops (RMSNorm alone is seven), tens of microseconds of dispatch; over 24 layers that
 * was about a fifth of the step. Numerics follow the PyTorch code they replace (fp32 norms,
 * neox RoPE, SiLU / tanh-GELU) up to rounding.
 */
#include <math.h>

#include "vec_math.h"

/* Rows worth splitting across threads: below this much work a parallel region costs more than it saves. */
#define PARALLEL_MIN 32768

/* out[t] = norm(x[t]) * w (or * (1 + w) with unit_offset), norm(v) = v * rsqrt(mean(v^2) + eps).
 * With add != NULL, x[t] += add[t] first, in place (the residual stream), and the sum is normed. */
void rmsnorm(float *x, long ldx, const float *add, long ldadd, const float *w, float *out, long ldo, long T, long D,
             float eps, int unit_offset, int nthreads) {
#pragma omp parallel for schedule(static) num_threads(nthreads) if (T * D >= PARALLEL_MIN)
    for (long t = 0; t < T; t++) {
        float *xr = x + t * ldx, *o = out + t * ldo;
        if (add) {
            const float *a = add + t * ldadd;
            for (long i = 0; i < D; i++) xr[i] += a[i];
        }
        __m256 acc = _mm256_setzero_ps();
        long i = 0;
        for (; i + 8 <= D; i += 8) {
            const __m256 v = _mm256_loadu_ps(xr + i);
            acc = _mm256_fmadd_ps(v, v, acc);
        }
        float buf[8], ss = 0.0f;
        _mm256_storeu_ps(buf, acc);
        for (int j = 0; j < 8; j++) ss += buf[j];
        for (; i < D; i++) ss += xr[i] * xr[i];
        const float r = 1.0f / sqrtf(ss / (float)D + eps);
        if (unit_offset)
            for (i = 0; i < D; i++) o[i] = (xr[i] * r) * (1.0f + w[i]);
        else
            for (i = 0; i < D; i++) o[i] = w[i] * (xr[i] * r);
    }
}

/* Neox (rotate-half) RoPE in place: row t of x (stride ld) holds `heads` heads of hd floats;
 * cos, sin: [T, hd] (each half repeated, as `RotaryEmbedding.cos_sin` builds them). */
void rope_neox(float *x, long ld, long T, long heads, long hd, const float *cos, const float *sin, int nthreads) {
    const long half = hd / 2;
#pragma omp parallel for schedule(static) num_threads(nthreads) if (T * heads * hd >= PARALLEL_MIN)
    for (long t = 0; t < T; t++) {
        const float *c = cos + t * hd, *s = sin + t * hd;
        for (long h = 0; h < heads; h++) {
            float *v = x + t * ld + h * hd;
            for (long i = 0; i < half; i++) {
                const float a = v[i], b = v[i + half];
                v[i] = a * c[i] - b * s[i];
                v[i + half] = b * c[i + half] + a * s[i + half];
            }
        }
    }
}

/* out[t, i] = act(gate_up[t, i]) * gate_up[t, I + i]; act 0: SiLU, 1: tanh-approximated GELU. */
void gated_activation(const float *gate_up, long ld, long T, long I, float *out, long ldo, int act, int nthreads) {
#pragma omp parallel for schedule(static) num_threads(nthreads) if (T * I >= PARALLEL_MIN)
    for (long t = 0; t < T; t++) {
        const float *g = gate_up + t * ld, *u = g + I;
        float *o = out + t * ldo;
        long i = 0;
        const __m256 one = _mm256_set1_ps(1.0f);
        for (; i + 8 <= I; i += 8) {
            const __m256 gv = _mm256_loadu_ps(g + i);
            __m256 a;
            if (act == 0) {
                a = _mm256_div_ps(gv, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), gv))));
            } else { /* 0.5 g (1 + tanh(z)) = g * (1 - 1 / (1 + e^(2z))), z = sqrt(2/pi) (g + 0.044715 g^3) */
                const __m256 g3 = _mm256_mul_ps(_mm256_mul_ps(gv, gv), gv);
                const __m256 z = _mm256_mul_ps(_mm256_set1_ps(0.7978845608028654f),
                                               _mm256_fmadd_ps(_mm256_set1_ps(0.044715f), g3, gv));
                const __m256 e = exp8(_mm256_add_ps(z, z));
                a = _mm256_mul_ps(gv, _mm256_sub_ps(one, _mm256_div_ps(one, _mm256_add_ps(one, e))));
            }
            _mm256_storeu_ps(o + i, _mm256_mul_ps(a, _mm256_loadu_ps(u + i)));
        }
        for (; i < I; i++) {
            const float gv = g[i];
            float a;
            if (act == 0)
                a = gv / (1.0f + expf(-gv));
            else
                a = 0.5f * gv * (1.0f + tanhf(0.7978845608028654f * (gv + 0.044715f * gv * gv * gv)));
            o[i] = a * u[i];
        }
    }
}
