/* The element-wise part of metamixer.fused_ffn.grouped_ffn, fused into one pass per slice.
 *
 * Why: in the cache-sliced FFN, everything between the two matmuls (exact GELU, the dropout keep-mask, the
 * regroup copy; backward: the same recomputed, the ungroup copy, the mask again, GELU's derivative and the bias
 * gradient's row sums) ran as 5-7 separate PyTorch ops per slice, each streaming the whole hidden block through
 * memory. Here each hidden value is read once and written once per pass.
 *
 * Layout: h is [G1, P*Q, s] (row r = g*P*Q + p*Q + q, s contiguous values per row). The regrouped tensor is
 * [P, Q*G1, s] with hidden unit (g, p, q) in row p*Q*G1 + q*G1 + g; P == 0 means no regrouping (same row).
 * keep is a 0/1 byte per hidden value (NULL: no dropout). Each call handles input rows [row_begin, row_end), so a
 * caller can split one slice across threads; rows never share outputs.
 *
 * GELU(x) = x * Phi(x), Phi from gelu.h. The loops are branch-free so the compiler vectorizes them (build with -O3
 * -fno-math-errno; -march=native for the widest vectors).
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "gelu.h"

static inline int64_t regrouped_row(int64_t r, int64_t g1, int64_t p, int64_t q) {
    if (p == 0) return r;
    int64_t pq = p * q, g = r / pq, rest = r - g * pq, pp = rest / q, qq = rest - pp * q;
    return pp * (q * g1) + qq * g1 + g;
}

static inline void forward_row(const float *restrict h, const uint8_t *restrict keep, float *restrict a, int64_t s) {
    for (int64_t j = 0; j < s; ++j) {
        float density, x = h[j];
        float value = x * normal_cdf(x, &density);
        a[j] = keep ? (keep[j] ? value : 0.0f) : value;
    }
}

/* a = regroup(keep * GELU(h)) */
void ffn_gelu_forward(const float *h, const uint8_t *keep, float *a, int64_t g1, int64_t p, int64_t q, int64_t s,
                      int64_t row_begin, int64_t row_end) {
    for (int64_t r = row_begin; r < row_end; ++r) {
        float *out = a + regrouped_row(r, g1, p, q) * s;
        if (keep) forward_row(h + r * s, keep + r * s, out, s);
        else forward_row(h + r * s, 0, out, s);
    }
}

static inline float backward_value(float x, float k, float g, float *restrict a) {
    float density;
    float cdf = normal_cdf(x, &density);
    *a = k * x * cdf;
    return k * g * (cdf + x * density);
}

static inline float backward_row(const float *restrict h, const uint8_t *restrict keep, const float *restrict grad_a,
                                 float *restrict a, float *restrict grad_h, int64_t s) {
    /* 'omp simd reduction' lets the compiler keep one partial sum per vector lane (a strict-IEEE build may not
     * reorder a float sum otherwise); with an explicit 16-lane accumulator array the byte-sized keep mask made
     * GCC pick 16-byte vectors, 2x slower than the no-mask loop. Build with -fopenmp-simd (no OpenMP runtime). */
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < s; ++j) {
        float k = keep ? (float)keep[j] : 1.0f;
        float gh = backward_value(h[j], k, grad_a[j], a + j);
        grad_h[j] = gh;
        sum += gh;
    }
    return sum;
}

/* From h and the regrouped gradient grad_a: a = regroup(keep * GELU(h)) (for the second conv's weight gradient),
 * grad_h = keep * GELU'(h) * ungroup(grad_a), and grad_bias[r] += sum over the row of grad_h. */
void ffn_gelu_backward(const float *h, const uint8_t *keep, const float *grad_a, float *a, float *grad_h,
                       float *grad_bias, int64_t g1, int64_t p, int64_t q, int64_t s, int64_t row_begin,
                       int64_t row_end) {
    for (int64_t r = row_begin; r < row_end; ++r) {
        int64_t out = regrouped_row(r, g1, p, q) * s;
        float sum = keep ? backward_row(h + r * s, keep + r * s, grad_a + out, a + out, grad_h + r * s, s)
                         : backward_row(h + r * s, 0, grad_a + out, a + out, grad_h + r * s, s);
        grad_bias[r] += sum;
    }
}

#ifdef _OPENMP
#include <omp.h>

/* This library's OpenMP runtime: metamixer.kernels.native uses the *_parallel entries only where it is PyTorch's
 * (its workers spin-wait after each op: a separate thread pool would compete with them for the cores). */
void *ffn_gelu_openmp_runtime(void) { return (void *)&omp_get_num_threads; }

/* ffn_gelu_forward / _backward over rows [0, rows) split evenly across `threads` threads of the calling thread's
 * team (rows write disjoint outputs and bias-gradient entries, so the split needs no reduction). */
void ffn_gelu_forward_parallel(const float *h, const uint8_t *keep, float *a, int64_t g1, int64_t p, int64_t q,
                               int64_t s, int64_t rows, int threads) {
#pragma omp parallel num_threads(threads)
    {
        int64_t n = omp_get_num_threads(), i = omp_get_thread_num();
        ffn_gelu_forward(h, keep, a, g1, p, q, s, rows * i / n, rows * (i + 1) / n);
    }
}

void ffn_gelu_backward_parallel(const float *h, const uint8_t *keep, const float *grad_a, float *a, float *grad_h,
                                float *grad_bias, int64_t g1, int64_t p, int64_t q, int64_t s, int64_t rows,
                                int threads) {
#pragma omp parallel num_threads(threads)
    {
        int64_t n = omp_get_num_threads(), i = omp_get_thread_num();
        ffn_gelu_backward(h, keep, grad_a, a, grad_h, grad_bias, g1, p, q, s, rows * i / n, rows * (i + 1) / n);
    }
}
#endif
