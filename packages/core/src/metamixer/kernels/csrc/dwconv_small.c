/* Depthwise 'same' 1-D convolution with a short kernel (odd, <= 15 taps) over short rows (<= 64 positions) on
 * channel-major rows, and its weight gradient.
 *
 * Why: metamixer.fastconv runs depthwise convs over short sequences (FFNet-TS: 48 patches) as per-channel L x L
 * Toeplitz products, which is right for the k=51 kernel (the band covers the whole matrix) but does L multiply-adds
 * per output for FFNet-TS's k=5 re-param branch, where 5 are needed. Here a row (up to 4 AVX-512 vectors) takes
 * one masked shifted load and one multiply-add per tap and vector: the lanes whose input would fall in the zero
 * padding are masked off, so rows need no padding copy and no scalar edge loops. Built with AVX-512 where the
 * compiler targets it; dwconv_vectorized() says whether it did (the plain C version is only a reference).
 *
 * Layout: x is [C, B, L] read through strides (row (c, b) at x + c * xs_c + b * xs_b, L contiguous values); y and
 * g (the output gradient) are contiguous [C, B, L]; w is [C, K] with odd K, padding K / 2, zeros outside [0, L).
 * The input gradient is this same forward with the kernel reversed. Each call handles channels [c_begin, c_end),
 * so a caller can split the channels across threads.
 */
#include <stdint.h>

#ifdef __AVX512F__
#include <immintrin.h>

int dwconv_vectorized(void) { return 1; }

#define MAX_CHUNKS 4 /* rows of up to 64 values: the row stays in 4 vector registers */

/* For tap k (shift = k - pad) and 16-value chunk j: which lanes read a real input, i.e. 0 <= 16 j + lane + shift
 * < length (and 16 j + lane < length). */
static void tap_masks(__mmask16 *masks, int64_t length, int64_t k_dim) {
    int64_t pad = k_dim / 2;
    for (int64_t k = 0; k < k_dim; ++k)
        for (int64_t j = 0; j < MAX_CHUNKS; ++j) {
            unsigned m = 0;
            for (int lane = 0; lane < 16; ++lane) {
                int64_t i = 16 * j + lane, src = i + k - pad;
                if (i < length && src >= 0 && src < length) m |= 1u << lane;
            }
            masks[k * MAX_CHUNKS + j] = (__mmask16)m;
        }
}

static inline __mmask16 row_mask(int64_t length, int64_t j) {
    int64_t n = length - 16 * j;
    return n >= 16 ? (__mmask16)0xFFFF : n > 0 ? (__mmask16)((1u << n) - 1) : (__mmask16)0;
}

static void conv_rows(const float *x, const float *w, float bias, float *y, int64_t batch, int64_t length,
                      int64_t k_dim, int64_t xs_b, const __mmask16 *masks) {
    int64_t pad = k_dim / 2, chunks = (length + 15) / 16;
    for (int64_t r = 0; r < batch; ++r) {
        const float *xr = x + r * xs_b;
        float *yr = y + r * length;
        for (int64_t j = 0; j < chunks; ++j) {
            __m512 acc = _mm512_set1_ps(bias);
            for (int64_t k = 0; k < k_dim; ++k) {
                /* masked lanes are not read, so the shifted address may point before or past the row */
                __m512 xv = _mm512_maskz_loadu_ps(masks[k * MAX_CHUNKS + j], xr + 16 * j + k - pad);
                acc = _mm512_fmadd_ps(_mm512_set1_ps(w[k]), xv, acc);
            }
            _mm512_mask_storeu_ps(yr + 16 * j, row_mask(length, j), acc);
        }
    }
}

static void grad_weight_rows(const float *x, const float *g, float *gw, float *gb, int64_t batch, int64_t length,
                             int64_t k_dim, int64_t xs_b, const __mmask16 *masks) {
    int64_t pad = k_dim / 2, chunks = (length + 15) / 16;
    __m512 acc[16], acc_bias = _mm512_setzero_ps();
    for (int64_t k = 0; k < k_dim; ++k) acc[k] = _mm512_setzero_ps();
    for (int64_t r = 0; r < batch; ++r) {
        const float *xr = x + r * xs_b, *gr = g + r * length;
        for (int64_t j = 0; j < chunks; ++j) {
            __m512 gv = _mm512_maskz_loadu_ps(row_mask(length, j), gr + 16 * j);
            acc_bias = _mm512_add_ps(acc_bias, gv);
            for (int64_t k = 0; k < k_dim; ++k)
                acc[k] = _mm512_fmadd_ps(gv, _mm512_maskz_loadu_ps(masks[k * MAX_CHUNKS + j], xr + 16 * j + k - pad),
                                         acc[k]);
        }
    }
    for (int64_t k = 0; k < k_dim; ++k) gw[k] = _mm512_reduce_add_ps(acc[k]);
    if (gb) *gb = _mm512_reduce_add_ps(acc_bias);
}

/* y = conv(x, w) + bias (bias NULL: none), for channels [c_begin, c_end). */
void dwconv_forward(const float *x, const float *w, const float *bias, float *y, int64_t batch, int64_t length,
                    int64_t k_dim, int64_t xs_c, int64_t xs_b, int64_t c_begin, int64_t c_end) {
    __mmask16 masks[16 * MAX_CHUNKS];
    tap_masks(masks, length, k_dim);
    for (int64_t c = c_begin; c < c_end; ++c)
        conv_rows(x + c * xs_c, w + c * k_dim, bias ? bias[c] : 0.0f, y + c * batch * length, batch, length, k_dim,
                  xs_b, masks);
}

/* gw[c, k] = sum over rows and valid i of g[c, b, i] * x[c, b, i + k - pad]; gb[c] = sum of g[c] (gb NULL: skip).
 * One 16-lane float accumulator per tap over all rows of a channel (each lane sums B * L / 16 products). */
void dwconv_grad_weight(const float *x, const float *g, float *gw, float *gb, int64_t batch, int64_t length,
                        int64_t k_dim, int64_t xs_c, int64_t xs_b, int64_t c_begin, int64_t c_end) {
    __mmask16 masks[16 * MAX_CHUNKS];
    tap_masks(masks, length, k_dim);
    for (int64_t c = c_begin; c < c_end; ++c)
        grad_weight_rows(x + c * xs_c, g + c * batch * length, gw + c * k_dim, gb ? gb + c : 0, batch, length, k_dim,
                         xs_b, masks);
}
#else
int dwconv_vectorized(void) { return 0; }

/* The plain C version: correct, not faster than the Toeplitz product, so callers only use AVX-512 builds. */
void dwconv_forward(const float *x, const float *w, const float *bias, float *y, int64_t batch, int64_t length,
                    int64_t k_dim, int64_t xs_c, int64_t xs_b, int64_t c_begin, int64_t c_end) {
    int64_t pad = k_dim / 2;
    for (int64_t c = c_begin; c < c_end; ++c)
        for (int64_t r = 0; r < batch; ++r) {
            const float *xr = x + c * xs_c + r * xs_b;
            float *yr = y + (c * batch + r) * length;
            for (int64_t i = 0; i < length; ++i) {
                float sum = bias ? bias[c] : 0.0f;
                for (int64_t k = 0; k < k_dim; ++k) {
                    int64_t src = i + k - pad;
                    if (src >= 0 && src < length) sum += w[c * k_dim + k] * xr[src];
                }
                yr[i] = sum;
            }
        }
}

void dwconv_grad_weight(const float *x, const float *g, float *gw, float *gb, int64_t batch, int64_t length,
                        int64_t k_dim, int64_t xs_c, int64_t xs_b, int64_t c_begin, int64_t c_end) {
    int64_t pad = k_dim / 2;
    for (int64_t c = c_begin; c < c_end; ++c) {
        for (int64_t k = 0; k < k_dim; ++k) gw[c * k_dim + k] = 0.0f;
        if (gb) gb[c] = 0.0f;
        for (int64_t r = 0; r < batch; ++r) {
            const float *xr = x + c * xs_c + r * xs_b, *gr = g + (c * batch + r) * length;
            for (int64_t i = 0; i < length; ++i) {
                if (gb) gb[c] += gr[i];
                for (int64_t k = 0; k < k_dim; ++k) {
                    int64_t src = i + k - pad;
                    if (src >= 0 && src < length) gw[c * k_dim + k] += gr[i] * xr[src];
                }
            }
        }
    }
}
#endif
