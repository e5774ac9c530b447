/* Batched products with a narrow right factor: Y[c] = X[c] @ T[c] (+ bias), Y[c] is M x N and T[c] is K x N;
 * X[c] is M x K read through strides (element (m, k) at x[c * xs_c + m * xs_m + k * xs_k]), so X can also be a
 * transposed view. T and Y are row-major with any row stride (element (k, n) of T at t[c * ts_c + k * ts_k + n]),
 * so both can be column slices of wider tensors. The bias of row m of product c is bias[c * bs_c + m * bs_m]
 * (bs_m = 0: one value per product). Uses: the depthwise convolution of metamixer.fastconv as a Toeplitz matmul
 * (K = N = sequence length, e.g. 48 patches, M = batch) and its two gradients (grad_x = G @ T^T; grad_T = X^T @
 * G, where M = sequence length and K = batch), and the grouped 1x1 convs of metamixer.fused_ffn on a slice of
 * positions (M = output channels, K = input channels per group, N = positions).
 *
 * Why: at these shapes (N = K = 48, B = 256-512) the BLAS behind torch.bmm runs at ~21-25 GFLOP/s on one core of
 * this project's AVX-512 machine, a quarter of the core's peak, because its kernels are tuned for large K and N.
 * Here each block of 8 rows x 48 columns stays in 24 vector registers for the whole K loop, and every loaded row of
 * T is used by 8 rows of X.
 *
 * Built with AVX-512 where the compiler targets it (-march=native on such a CPU); small_bmm_vectorized() says
 * whether it did. The plain C fallback is correct but not faster than BLAS, so callers only use this library
 * when that function returns 1.
 */
#include <stdint.h>

#ifdef __AVX512F__
#include <immintrin.h>

int small_bmm_vectorized(void) { return 1; }

#define ROWS 8

static inline __mmask16 tail_mask(int64_t width, int64_t offset) {
    int64_t n = width - offset;
    return n >= 16 ? (__mmask16)0xFFFF : n > 0 ? (__mmask16)((1u << n) - 1) : (__mmask16)0;
}

/* Accumulator registers are named variables: an array of __m512 would be kept on the stack. */
#define ROW_FMA(r) do { __m512 xv = _mm512_set1_ps(x[(r) * xs_m + k * xs_k]); \
        a##r##0 = _mm512_fmadd_ps(xv, t0, a##r##0); a##r##1 = _mm512_fmadd_ps(xv, t1, a##r##1); \
        a##r##2 = _mm512_fmadd_ps(xv, t2, a##r##2); } while (0)
#define ROW_STORE(r) do { float *yrow = y + (r) * ys_m + n0; \
        if (accumulate) { a##r##0 = _mm512_add_ps(a##r##0, _mm512_maskz_loadu_ps(m0, yrow)); \
            a##r##1 = _mm512_add_ps(a##r##1, _mm512_maskz_loadu_ps(m1, yrow + 16)); \
            a##r##2 = _mm512_add_ps(a##r##2, _mm512_maskz_loadu_ps(m2, yrow + 32)); } \
        _mm512_mask_storeu_ps(yrow, m0, a##r##0); _mm512_mask_storeu_ps(yrow + 16, m1, a##r##1); \
        _mm512_mask_storeu_ps(yrow + 32, m2, a##r##2); } while (0)
#define ROW_INIT(r) __m512 a##r##0 = _mm512_set1_ps(bias ? bias[(r) * bs_m] : 0.0f), a##r##1 = a##r##0, \
        a##r##2 = a##r##0

/* 8 rows x (up to 48 columns from n0): 24 accumulators stay in registers through the K loop. */
static inline void block8(const float *x, const float *t, float *y, int64_t k_dim, int64_t n_dim, int64_t n0,
                          int64_t xs_m, int64_t xs_k, int64_t ts_k, int64_t ys_m, const float *bias, int64_t bs_m,
                          int accumulate) {
    int64_t width = n_dim - n0 < 48 ? n_dim - n0 : 48;
    __mmask16 m0 = tail_mask(width, 0), m1 = tail_mask(width, 16), m2 = tail_mask(width, 32);
    ROW_INIT(0); ROW_INIT(1); ROW_INIT(2); ROW_INIT(3); ROW_INIT(4); ROW_INIT(5); ROW_INIT(6); ROW_INIT(7);
    for (int64_t k = 0; k < k_dim; ++k) {
        const float *trow = t + k * ts_k + n0;
        __m512 t0 = _mm512_maskz_loadu_ps(m0, trow);
        __m512 t1 = _mm512_maskz_loadu_ps(m1, trow + 16);
        __m512 t2 = _mm512_maskz_loadu_ps(m2, trow + 32);
        ROW_FMA(0); ROW_FMA(1); ROW_FMA(2); ROW_FMA(3); ROW_FMA(4); ROW_FMA(5); ROW_FMA(6); ROW_FMA(7);
    }
    ROW_STORE(0); ROW_STORE(1); ROW_STORE(2); ROW_STORE(3); ROW_STORE(4); ROW_STORE(5); ROW_STORE(6); ROW_STORE(7);
}

/* One row (the last B % 8 rows of a product). */
static inline void block1(const float *x, const float *t, float *y, int64_t k_dim, int64_t n_dim, int64_t n0,
                          int64_t xs_m, int64_t xs_k, int64_t ts_k, int64_t ys_m, const float *bias, int64_t bs_m,
                          int accumulate) {
    int64_t width = n_dim - n0 < 48 ? n_dim - n0 : 48;
    __mmask16 m0 = tail_mask(width, 0), m1 = tail_mask(width, 16), m2 = tail_mask(width, 32);
    ROW_INIT(0);
    for (int64_t k = 0; k < k_dim; ++k) {
        const float *trow = t + k * ts_k + n0;
        __m512 t0 = _mm512_maskz_loadu_ps(m0, trow);
        __m512 t1 = _mm512_maskz_loadu_ps(m1, trow + 16);
        __m512 t2 = _mm512_maskz_loadu_ps(m2, trow + 32);
        ROW_FMA(0);
    }
    ROW_STORE(0);
}

static void product(const float *x, const float *t, float *y, int64_t m_dim, int64_t k_dim, int64_t n_dim,
                    int64_t xs_m, int64_t xs_k, int64_t ts_k, int64_t ys_m, const float *bias, int64_t bs_m,
                    int accumulate) {
    for (int64_t n0 = 0; n0 < n_dim; n0 += 48) {
        int64_t m0 = 0;
        for (; m0 + ROWS <= m_dim; m0 += ROWS)
            block8(x + m0 * xs_m, t, y + m0 * ys_m, k_dim, n_dim, n0, xs_m, xs_k, ts_k, ys_m,
                   bias ? bias + m0 * bs_m : 0, bs_m, accumulate);
        for (; m0 < m_dim; ++m0)
            block1(x + m0 * xs_m, t, y + m0 * ys_m, k_dim, n_dim, n0, xs_m, xs_k, ts_k, ys_m,
                   bias ? bias + m0 * bs_m : 0, bs_m, accumulate);
    }
}
#else
int small_bmm_vectorized(void) { return 0; }

static void product(const float *x, const float *t, float *y, int64_t m_dim, int64_t k_dim, int64_t n_dim,
                    int64_t xs_m, int64_t xs_k, int64_t ts_k, int64_t ys_m, const float *bias, int64_t bs_m,
                    int accumulate) {
    for (int64_t m = 0; m < m_dim; ++m) {
        float *yrow = y + m * ys_m, b = bias ? bias[m * bs_m] : 0.0f;
        for (int64_t n = 0; n < n_dim; ++n) yrow[n] = (accumulate ? yrow[n] : 0.0f) + b;
        for (int64_t k = 0; k < k_dim; ++k) {
            float xv = x[m * xs_m + k * xs_k];
            const float *trow = t + k * ts_k;
            for (int64_t n = 0; n < n_dim; ++n) yrow[n] += xv * trow[n];
        }
    }
}
#endif

/* Products c in [c_begin, c_end) of Y = X @ T (+ bias, NULL for none; accumulate != 0: Y += X @ T (+ bias)). */
void small_bmm(const float *x, const float *t, const float *bias, float *y, int64_t m_dim, int64_t k_dim,
               int64_t n_dim, int64_t xs_c, int64_t xs_m, int64_t xs_k, int64_t ts_c, int64_t ts_k, int64_t ys_c,
               int64_t ys_m, int64_t bs_c, int64_t bs_m, int accumulate, int64_t c_begin, int64_t c_end) {
    for (int64_t c = c_begin; c < c_end; ++c)
        product(x + c * xs_c, t + c * ts_c, y + c * ys_c, m_dim, k_dim, n_dim, xs_m, xs_k, ts_k, ys_m,
                bias ? bias + c * bs_c : 0, bs_m, accumulate);
}
