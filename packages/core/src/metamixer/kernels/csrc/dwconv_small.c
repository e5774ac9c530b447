/* Depthwise 'same' 1-D convolution with a short kernel (odd, <= 15 taps) over short rows (<= 64 positions) on
 * channel-major rows, and its weight gradient.
 *
 * Why: metamixer.fastconv runs depthwise convs over short sequences (FFNet-TS: 48 patches) as per-channel L x L
 * Toeplitz products, which is right for the k=51 kernel (the band covers the whole matrix) but does L multiply-adds
 * per output for FFNet-TS's k=5 re-param branch, where 5 are needed. Here a row (up to 4 AVX-512 vectors) takes
 * one masked shifted load and one multiply-add per tap and vector: the lanes whose input would fall in the zero
 * padding are masked off, so rows need no padding copy and no scalar edge loops.
 *
 * Three code paths, chosen by the preprocessor for the CPU it targets (-march=native on the machine that loads
 * the library); dwconv_vectorized() says which: 1 = AVX-512 (a row in up to 4 zmm vectors, every load masked),
 * 2 = AVX2 + FMA (a row in up to 8 ymm vectors of 8; only the chunks at a row's two ends take masked loads and
 * stores, _mm256_maskload_ps with all-bits lane masks, the interior ones plain loads; the kernel size is a
 * compile-time constant of each of 8 instantiations, so the K broadcast weights, or the K per-tap gradient
 * accumulators, stay in registers: K + 2, resp. K + 4, of the 16), 0 = plain C, a reference that is not faster
 * than the Toeplitz product. On an AVX2 EPYC the AVX2 path runs the k=5 conv forward + backward at [448, 512, 48]
 * 2.6x faster than the Toeplitz product (49 vs 129 ms, one thread).
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
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

int dwconv_vectorized(void) { return 2; }

#define MAX_CHUNKS 8 /* rows of up to 64 values: 8 ymm vectors of 8 */
#define MAX_TAPS 15

/* For tap k (shift = k - pad) and 8-value chunk j: the lanes that read a real input, 0 <= 8 j + lane + shift <
 * length and 8 j + lane < length (the masks of _mm256_maskload_ps: all bits of a lane set or clear). */
static void tap_masks(__m256i *masks, int64_t length, int64_t k_dim) {
    int64_t pad = k_dim / 2;
    for (int64_t k = 0; k < k_dim; ++k)
        for (int64_t j = 0; j < MAX_CHUNKS; ++j) {
            int32_t lanes[8];
            for (int lane = 0; lane < 8; ++lane) {
                int64_t i = 8 * j + lane, src = i + k - pad;
                lanes[lane] = i < length && src >= 0 && src < length ? -1 : 0;
            }
            masks[k * MAX_CHUNKS + j] = _mm256_loadu_si256((const __m256i *)lanes);
        }
}

/* Chunk j is interior when every tap reads 8 real inputs and all 8 outputs exist: plain loads and stores. Only
 * the chunks at the two ends of a row (for L = 48, k = 5: 2 of 6) take masked loads. */
static inline int interior(int64_t j, int64_t length, int64_t pad) {
    return 8 * j - pad >= 0 && 8 * j + 8 + pad <= length;
}

static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

/* One channel's rows, for a kernel of K taps: K is a constant at each call (see the dispatch below), so the tap
 * loops unroll and the K broadcast weights stay in registers (K + 2 of the 16 ymm registers). */
static inline __attribute__((always_inline)) void conv_rows(
        const float *x, const float *w, float bias, float *y, int64_t batch, int64_t length, int64_t xs_b,
        const __m256i *masks, const int K) {
    const int64_t pad = K / 2, chunks = (length + 7) / 8;
    __m256 wv[MAX_TAPS];
    for (int k = 0; k < K; ++k) wv[k] = _mm256_set1_ps(w[k]);
    for (int64_t r = 0; r < batch; ++r) {
        const float *xr = x + r * xs_b;
        float *yr = y + r * length;
        for (int64_t j = 0; j < chunks; ++j) {
            __m256 acc = _mm256_set1_ps(bias);
            const float *xs = xr + 8 * j - pad;
            if (interior(j, length, pad)) {
                for (int k = 0; k < K; ++k) acc = _mm256_fmadd_ps(wv[k], _mm256_loadu_ps(xs + k), acc);
                _mm256_storeu_ps(yr + 8 * j, acc);
            } else {
                /* masked lanes are not read, so the shifted address may point before or past the row */
                for (int k = 0; k < K; ++k)
                    acc = _mm256_fmadd_ps(wv[k], _mm256_maskload_ps(xs + k, masks[k * MAX_CHUNKS + j]), acc);
                _mm256_maskstore_ps(yr + 8 * j, masks[pad * MAX_CHUNKS + j], acc); /* the centre tap: i < length */
            }
        }
    }
}

/* gw[k] = sum over rows and valid i of g[i] * x[i + k - pad], one 8-lane accumulator per tap (K + 4 registers). */
static inline __attribute__((always_inline)) void grad_weight_rows(
        const float *x, const float *g, float *gw, float *gb, int64_t batch, int64_t length, int64_t xs_b,
        const __m256i *masks, const int K) {
    const int64_t pad = K / 2, chunks = (length + 7) / 8;
    __m256 acc[MAX_TAPS], acc_bias = _mm256_setzero_ps();
    for (int k = 0; k < K; ++k) acc[k] = _mm256_setzero_ps();
    for (int64_t r = 0; r < batch; ++r) {
        const float *xr = x + r * xs_b, *gr = g + r * length;
        for (int64_t j = 0; j < chunks; ++j) {
            const float *xs = xr + 8 * j - pad;
            if (interior(j, length, pad)) {
                __m256 gv = _mm256_loadu_ps(gr + 8 * j);
                acc_bias = _mm256_add_ps(acc_bias, gv);
                for (int k = 0; k < K; ++k) acc[k] = _mm256_fmadd_ps(gv, _mm256_loadu_ps(xs + k), acc[k]);
            } else {
                __m256 gv = _mm256_maskload_ps(gr + 8 * j, masks[pad * MAX_CHUNKS + j]);
                acc_bias = _mm256_add_ps(acc_bias, gv);
                for (int k = 0; k < K; ++k)
                    acc[k] = _mm256_fmadd_ps(gv, _mm256_maskload_ps(xs + k, masks[k * MAX_CHUNKS + j]), acc[k]);
            }
        }
    }
    for (int k = 0; k < K; ++k) gw[k] = hsum(acc[k]);
    if (gb) *gb = hsum(acc_bias);
}

#define DISPATCH(call) switch (k_dim) { \
        case 1: call(1); break; case 3: call(3); break; case 5: call(5); break; case 7: call(7); break; \
        case 9: call(9); break; case 11: call(11); break; case 13: call(13); break; default: call(15); }

/* y = conv(x, w) + bias (bias NULL: none), for channels [c_begin, c_end). */
void dwconv_forward(const float *x, const float *w, const float *bias, float *y, int64_t batch, int64_t length,
                    int64_t k_dim, int64_t xs_c, int64_t xs_b, int64_t c_begin, int64_t c_end) {
    __m256i masks[MAX_TAPS * MAX_CHUNKS];
    tap_masks(masks, length, k_dim);
    for (int64_t c = c_begin; c < c_end; ++c) {
#define CONV(K) conv_rows(x + c * xs_c, w + c * k_dim, bias ? bias[c] : 0.0f, y + c * batch * length, batch, length, \
                          xs_b, masks, K)
        DISPATCH(CONV)
#undef CONV
    }
}

/* gw[c, k] = sum over rows and valid i of g[c, b, i] * x[c, b, i + k - pad]; gb[c] = sum of g[c] (gb NULL: skip). */
void dwconv_grad_weight(const float *x, const float *g, float *gw, float *gb, int64_t batch, int64_t length,
                        int64_t k_dim, int64_t xs_c, int64_t xs_b, int64_t c_begin, int64_t c_end) {
    __m256i masks[MAX_TAPS * MAX_CHUNKS];
    tap_masks(masks, length, k_dim);
    for (int64_t c = c_begin; c < c_end; ++c) {
#define GRAD(K) grad_weight_rows(x + c * xs_c, g + c * batch * length, gw + c * k_dim, gb ? gb + c : 0, batch, \
                                 length, xs_b, masks, K)
        DISPATCH(GRAD)
#undef GRAD
    }
}
#else
int dwconv_vectorized(void) { return 0; }

/* The plain C version: correct, but not faster than the Toeplitz product (a reference, and the path of
 * native.plain_builds() tests). */
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

#ifdef _OPENMP
#include <omp.h>

/* This library's OpenMP runtime: metamixer.kernels.native calls the *_parallel entries only where it is PyTorch's
 * (why: see small_bmm_parallel in small_bmm.c). */
void *dwconv_openmp_runtime(void) { return (void *)&omp_get_num_threads; }

/* dwconv_forward / dwconv_grad_weight over channels [0, channels) on the calling thread's OpenMP team. */
void dwconv_forward_parallel(const float *x, const float *w, const float *bias, float *y, int64_t batch,
                             int64_t length, int64_t k_dim, int64_t xs_c, int64_t xs_b, int64_t channels,
                             int threads) {
#pragma omp parallel num_threads(threads)
    {
        int64_t n = omp_get_num_threads(), i = omp_get_thread_num();
        dwconv_forward(x, w, bias, y, batch, length, k_dim, xs_c, xs_b, channels * i / n, channels * (i + 1) / n);
    }
}

void dwconv_grad_weight_parallel(const float *x, const float *g, float *gw, float *gb, int64_t batch,
                                 int64_t length, int64_t k_dim, int64_t xs_c, int64_t xs_b, int64_t channels,
                                 int threads) {
#pragma omp parallel num_threads(threads)
    {
        int64_t n = omp_get_num_threads(), i = omp_get_thread_num();
        dwconv_grad_weight(x, g, gw, gb, batch, length, k_dim, xs_c, xs_b, channels * i / n, channels * (i + 1) / n);
    }
}
#endif
