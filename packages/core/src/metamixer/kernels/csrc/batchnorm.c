/* Training-mode BatchNorm over x = [G, C, S] (statistics per channel c over G and S), forward and backward.
 *
 * Why: FFNet-TS's training step runs five BatchNorms over 11 M values each ([7, 64, 24576] channel-major, and
 * [1, 448, 24576] in the re-param branches), and PyTorch's CPU kernel takes ~28 ms forward and ~27 ms backward for
 * one of them on an AVX-512 EPYC, where streaming the tensor once costs ~1.5 ms: a quarter of the whole step. One
 * channel's values (G * S floats: 688 KB at ETTh1 size) fit in a core's L2 cache, so a channel is done in one
 * visit: the first pass reads it from memory, the later passes (the variance around the mean, the normalised
 * output; in backward the two gradient sums, then the input gradient) find it in cache.
 *
 * Numerics: two-pass (mean, then the mean squared deviation), as exact as PyTorch's; each row of S values is
 * summed in float vector lanes (compiled by -O3 -march=native -fopenmp-simd into AVX-512, AVX2 or SSE code), rows
 * are added in double. bn_vectorized() says which ISA the build targets (1 = AVX-512, 2 = AVX2 + FMA, 0 = other).
 *
 * Layout: row (g, c) starts at x + g * xs_g + c * xs_c and holds S contiguous floats; y, dy and dx are contiguous
 * [G, C, S]. Per-channel vectors are [C]: weight, bias (either may be NULL: 1 and 0); mean, var (biased) and
 * invstd = 1 / sqrt(var + eps), written by the forward (the backward reads mean and invstd); dweight and dbias,
 * written by the backward (either may be NULL). Each call handles channels [c_begin, c_end), so a caller can split
 * the channels across threads.
 */
#include <math.h>
#include <stdint.h>

int bn_vectorized(void) {
#if defined(__AVX512F__)
    return 1;
#elif defined(__AVX2__) && defined(__FMA__)
    return 2;
#else
    return 0;
#endif
}

static float row_sum(const float *restrict r, int64_t s) {
    float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
    for (int64_t i = 0; i < s; ++i) acc += r[i];
    return acc;
}

static float row_sq_dev(const float *restrict r, int64_t s, float mean) {
    float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
    for (int64_t i = 0; i < s; ++i) {
        float d = r[i] - mean;
        acc += d * d;
    }
    return acc;
}

void bn_forward(const float *x, const float *weight, const float *bias, float eps, float *y, float *mean_out,
                float *var_out, float *invstd_out, int64_t g_dim, int64_t c_dim, int64_t s_dim, int64_t xs_g, int64_t xs_c,
                int64_t c_begin, int64_t c_end) {
    const double n = (double)g_dim * (double)s_dim;
    for (int64_t c = c_begin; c < c_end; ++c) {
        double total = 0.0;
        for (int64_t g = 0; g < g_dim; ++g) total += row_sum(x + g * xs_g + c * xs_c, s_dim);
        const float mean = (float)(total / n);
        double sq = 0.0;
        for (int64_t g = 0; g < g_dim; ++g) sq += row_sq_dev(x + g * xs_g + c * xs_c, s_dim, mean);
        const double var = sq / n;
        const float invstd = (float)(1.0 / sqrt(var + (double)eps));
        const float scale = (weight ? weight[c] : 1.0f) * invstd;
        const float shift = (bias ? bias[c] : 0.0f) - mean * scale;
        for (int64_t g = 0; g < g_dim; ++g) {
            const float *restrict r = x + g * xs_g + c * xs_c;
            float *restrict o = y + (g * c_dim + c) * s_dim;
#pragma omp simd
            for (int64_t i = 0; i < s_dim; ++i) o[i] = r[i] * scale + shift;
        }
        mean_out[c] = mean;
        var_out[c] = (float)var;
        invstd_out[c] = invstd;
    }
}

/* dx = w * invstd * (dy - mean(dy) - xhat * mean(dy * xhat)), xhat = (x - mean) * invstd; dweight = sum(dy * xhat),
 * dbias = sum(dy). dx may be NULL (only the parameter gradients). */
void bn_backward(const float *x, const float *dy, const float *weight, const float *mean, const float *invstd,
                 float *dx, float *dweight, float *dbias, int64_t g_dim, int64_t c_dim, int64_t s_dim, int64_t xs_g,
                 int64_t xs_c, int64_t c_begin, int64_t c_end) {
    const double n = (double)g_dim * (double)s_dim;
    for (int64_t c = c_begin; c < c_end; ++c) {
        const float mu = mean[c], is = invstd[c];
        double sum_dy = 0.0, sum_dy_xmu = 0.0;
        for (int64_t g = 0; g < g_dim; ++g) {
            const float *restrict r = x + g * xs_g + c * xs_c;
            const float *restrict d = dy + (g * c_dim + c) * s_dim;
            float a = 0.0f, b = 0.0f;
#pragma omp simd reduction(+ : a, b)
            for (int64_t i = 0; i < s_dim; ++i) {
                a += d[i];
                b += d[i] * (r[i] - mu);
            }
            sum_dy += a;
            sum_dy_xmu += b;
        }
        if (dweight) dweight[c] = (float)(sum_dy_xmu * is);
        if (dbias) dbias[c] = (float)sum_dy;
        if (!dx) continue;
        const float w = weight ? weight[c] : 1.0f;
        const float k = w * is;                                  /* dx = k * dy - k * mean_dy - q * (x - mu) */
        const float mean_dy = (float)(sum_dy / n);
        const float q = (float)(sum_dy_xmu / n) * is * is * k;
        const float base = -k * mean_dy + q * mu;                /* dx = k * dy - q * x + base */
        for (int64_t g = 0; g < g_dim; ++g) {
            const float *restrict r = x + g * xs_g + c * xs_c;
            const float *restrict d = dy + (g * c_dim + c) * s_dim;
            float *restrict o = dx + (g * c_dim + c) * s_dim;
#pragma omp simd
            for (int64_t i = 0; i < s_dim; ++i) o[i] = k * d[i] - q * r[i] + base;
        }
    }
}

#ifdef _OPENMP
#include <omp.h>

/* This library's OpenMP runtime: metamixer.kernels.native calls the *_parallel entries only where it is PyTorch's
 * (why: see small_bmm_parallel in small_bmm.c). */
void *bn_openmp_runtime(void) { return (void *)&omp_get_num_threads; }

/* bn_forward / bn_backward over channels [0, channels) on the calling thread's OpenMP team. */
void bn_forward_parallel(const float *x, const float *weight, const float *bias, float eps, float *y,
                         float *mean_out, float *var_out, float *invstd_out, int64_t g_dim, int64_t c_dim, int64_t s_dim,
                         int64_t xs_g, int64_t xs_c, int64_t channels, int threads) {
#pragma omp parallel num_threads(threads)
    {
        int64_t n = omp_get_num_threads(), i = omp_get_thread_num();
        bn_forward(x, weight, bias, eps, y, mean_out, var_out, invstd_out, g_dim, c_dim, s_dim, xs_g, xs_c,
                   channels * i / n, channels * (i + 1) / n);
    }
}

void bn_backward_parallel(const float *x, const float *dy, const float *weight, const float *mean,
                          const float *invstd, float *dx, float *dweight, float *dbias, int64_t g_dim, int64_t c_dim,
                          int64_t s_dim, int64_t xs_g, int64_t xs_c, int64_t channels, int threads) {
#pragma omp parallel num_threads(threads)
    {
        int64_t n = omp_get_num_threads(), i = omp_get_thread_num();
        bn_backward(x, dy, weight, mean, invstd, dx, dweight, dbias, g_dim, c_dim, s_dim, xs_g, xs_c,
                    channels * i / n, channels * (i + 1) / n);
    }
}
#endif
