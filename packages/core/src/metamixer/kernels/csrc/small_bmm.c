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
 * Three code paths, chosen by the preprocessor for the CPU it targets (-march=native on the machine that loads
 * the library); small_bmm_vectorized() says which: 1 = AVX-512 (the 8 x 48 blocks above, T read in place with
 * masked tails), 2 = AVX2 + FMA (4 x 24 blocks in the 16 ymm registers; T packed where its rows lie pages apart
 * and K chunked, see product() there; 1.8-2x torch.bmm on the Toeplitz forward of an AVX2 EPYC, 1.0-1.6x on the
 * FFN products), 0 = plain C: correct but not faster than BLAS, so metamixer.kernels.native only offers the
 * first two (plain_builds() offers it for tests).
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
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

int small_bmm_vectorized(void) { return 2; }

/* A block is (up to) 4 rows x 24 columns: 12 accumulators + 3 vectors of the current row of T + 1 broadcast = all
 * 16 ymm registers. Each loaded row of T (3 vectors) feeds 4 rows and each broadcast 3 vectors: 7 loads per 12
 * FMAs, within the two loads per cycle of an AVX2 core. (6 x 16 is the other fit, 12 + 2 + 1 registers: 8 loads
 * per 12 FMAs, and a 48-wide Toeplitz matrix takes 3 column blocks instead of 2.) */
#define ROWS 4
#define COLS 24
/* Blocking (each a -D override for tuning runs; the library is always built with these values). */
#ifndef PANEL_FLOATS
#define PANEL_FLOATS 4096 /* 16 KiB: a 24-wide micro-panel of T, half of a 32 KiB L1d (the rest: X and Y) */
#endif
#ifndef MAX_KC
#define MAX_KC (PANEL_FLOATS / COLS) /* rows per K chunk of a packed T: 170 */
#endif
#ifndef INPLACE_KC
/* rows per K chunk of a T read in place: 64 keep a chunk of both operands of the Toeplitz weight gradient
 * (x^T: 48 x 64, T: 64 x 48) in L1 together (vs 170 rows: 31 vs 28 GFLOP/s at [448, 48, 512] @ [512, 48]) */
#define INPLACE_KC 64
#endif
#ifndef TLB_PAGES
#define TLB_PAGES 32 /* a chunk of T whose rows span more pages than this is packed (L1 DTLBs: 64 entries) */
#endif
#ifndef NC
#define NC 192 /* columns per packed panel: 768 contiguous bytes read from each row of T */
#endif

/* The first n lanes set (n clamped to 0..8): the masks of _mm256_maskload_ps / _mm256_maskstore_ps. */
static inline __m256i lane_mask(int64_t n) {
    static const int32_t ramp[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
    n = n < 0 ? 0 : n > 8 ? 8 : n;
    return _mm256_loadu_si256((const __m256i *)(ramp + 8 - n));
}

/* Accumulator registers are named variables: an array of __m256 would be kept on the stack. */
#define ROW_INIT(r) __m256 a##r##0 = _mm256_set1_ps(bias && (r) < rows ? bias[(r) * bs_m] : 0.0f), \
        a##r##1 = a##r##0, a##r##2 = a##r##0
#define ROW_FMA(r) do { if ((r) < rows) { __m256 xv = _mm256_broadcast_ss(x + (r) * xs_m + k * xs_k); \
        a##r##0 = _mm256_fmadd_ps(xv, t0, a##r##0); a##r##1 = _mm256_fmadd_ps(xv, t1, a##r##1); \
        a##r##2 = _mm256_fmadd_ps(xv, t2, a##r##2); } } while (0)
#define ROW_STORE(r) do { if ((r) < rows) { float *yrow = y + (r) * ys_m; \
        if (masked) { \
            if (accumulate) { a##r##0 = _mm256_add_ps(a##r##0, _mm256_maskload_ps(yrow, m0)); \
                a##r##1 = _mm256_add_ps(a##r##1, _mm256_maskload_ps(yrow + 8, m1)); \
                a##r##2 = _mm256_add_ps(a##r##2, _mm256_maskload_ps(yrow + 16, m2)); } \
            _mm256_maskstore_ps(yrow, m0, a##r##0); _mm256_maskstore_ps(yrow + 8, m1, a##r##1); \
            _mm256_maskstore_ps(yrow + 16, m2, a##r##2); \
        } else { \
            if (accumulate) { a##r##0 = _mm256_add_ps(a##r##0, _mm256_loadu_ps(yrow)); \
                a##r##1 = _mm256_add_ps(a##r##1, _mm256_loadu_ps(yrow + 8)); \
                a##r##2 = _mm256_add_ps(a##r##2, _mm256_loadu_ps(yrow + 16)); } \
            _mm256_storeu_ps(yrow, a##r##0); _mm256_storeu_ps(yrow + 8, a##r##1); _mm256_storeu_ps(yrow + 16, a##r##2); \
        } } } while (0)

/* `rows` (1-4) x 24 columns of Y; `masked`: only the first `width` < 24 columns are read and written. T's panel
 * (row stride ts_k) always has 24 readable columns (zero-padded when packed), so its loads are never masked.
 * `rows` and `masked` are constants at every call, so each combination compiles to its own branch-free loop. */
static inline __attribute__((always_inline)) void block(
        const float *x, const float *t, float *y, int64_t k_dim, int64_t width, int64_t xs_m, int64_t xs_k,
        int64_t ts_k, int64_t ys_m, const float *bias, int64_t bs_m, int accumulate, const int rows,
        const int masked) {
    ROW_INIT(0); ROW_INIT(1); ROW_INIT(2); ROW_INIT(3);
    for (int64_t k = 0; k < k_dim; ++k) {
        const float *trow = t + k * ts_k;
        __m256 t0 = _mm256_loadu_ps(trow), t1 = _mm256_loadu_ps(trow + 8), t2 = _mm256_loadu_ps(trow + 16);
        ROW_FMA(0); ROW_FMA(1); ROW_FMA(2); ROW_FMA(3);
    }
    __m256i m0 = lane_mask(width), m1 = lane_mask(width - 8), m2 = lane_mask(width - 16);
    (void)m0; (void)m1; (void)m2;
    ROW_STORE(0); ROW_STORE(1); ROW_STORE(2); ROW_STORE(3);
}

#define BLOCK_CALL(rows, masked) block(xb, t + n0, yb + n0, k_dim, width, xs_m, xs_k, ts_k, ys_m, bb, bs_m, \
                                       accumulate, rows, masked)

/* Rows [0, m_dim) x columns [0, width) of Y from T's columns [0, width) (row stride ts_k, readable up to the next
 * multiple of 24). Each row block covers all of these columns before the next, so its rows of X are read from L1. */
static void panel_product(const float *x, const float *t, float *y, int64_t m_dim, int64_t k_dim, int64_t panel,
                          int64_t xs_m, int64_t xs_k, int64_t ts_k, int64_t ys_m, const float *bias, int64_t bs_m,
                          int accumulate) {
    for (int64_t m0 = 0; m0 < m_dim; m0 += ROWS) {
        const float *xb = x + m0 * xs_m, *bb = bias ? bias + m0 * bs_m : 0;
        float *yb = y + m0 * ys_m;
        int64_t rows = m_dim - m0 < ROWS ? m_dim - m0 : ROWS;
        for (int64_t n0 = 0; n0 < panel; n0 += COLS) {
            int64_t width = panel - n0;
            if (width >= COLS) {
                switch (rows) {
                    case 4: BLOCK_CALL(4, 0); break;
                    case 3: BLOCK_CALL(3, 0); break;
                    case 2: BLOCK_CALL(2, 0); break;
                    default: BLOCK_CALL(1, 0);
                }
            } else {
                switch (rows) {
                    case 4: BLOCK_CALL(4, 1); break;
                    case 3: BLOCK_CALL(3, 1); break;
                    case 2: BLOCK_CALL(2, 1); break;
                    default: BLOCK_CALL(1, 1);
                }
            }
        }
    }
}

/* Copy T's rows [0, kn) x columns [0, width) into micro-panels of 24 columns, each kn x 24 contiguous (zero-padded
 * past `width`): the source is read row by row over `width` contiguous values (whole cache lines, one page visit
 * per row), the kernel then reads each micro-panel sequentially. */
static void pack_panel(const float *t, int64_t ts_k, int64_t kn, int64_t width, float *pack) {
    int64_t full = width / 8 * 8;
    for (int64_t k = 0; k < kn; ++k) {
        const float *src = t + k * ts_k;
        int64_t n = 0;
        for (; n < full; n += 8)
            _mm256_storeu_ps(pack + (n / COLS) * kn * COLS + k * COLS + n % COLS, _mm256_loadu_ps(src + n));
        for (; n < (width + COLS - 1) / COLS * COLS; ++n)
            pack[(n / COLS) * kn * COLS + k * COLS + n % COLS] = n < width ? src[n] : 0.0f;
    }
}

/* The product, blocked as in GotoBLAS: N in panels of NC columns, K in chunks of at most MAX_KC rows; every row
 * block of X passes over each 24-wide micro-panel of a chunk x panel of T (at most 16 KiB: L1). A chunk of T whose
 * rows span more than TLB_PAGES pages is first packed (into 24-wide micro-panels, each contiguous, 128 KiB at
 * most: L2): the FFN products read T as a column slice of a [C, S] activation whose rows lie pages apart, and
 * unpacked, every K step of every row block would touch another page (TLB misses, no prefetch). Other chunks (the
 * 48 x 48 Toeplitz matrix, the short-K FFN products, the batch-long K of the Toeplitz weight gradient) are read in
 * place, and only a column tail narrower than 24 is copied (zero-padded). K chunks after the first accumulate. */
static void product(const float *x, const float *t, float *y, int64_t m_dim, int64_t k_dim, int64_t n_dim,
                    int64_t xs_m, int64_t xs_k, int64_t ts_k, int64_t ys_m, const float *bias, int64_t bs_m,
                    int accumulate, float *pack) {
    if (k_dim == 0) { /* Y = bias (or Y += bias) */
        for (int64_t m = 0; m < m_dim; ++m)
            for (int64_t n = 0; n < n_dim; ++n)
                y[m * ys_m + n] = (accumulate ? y[m * ys_m + n] : 0.0f) + (bias ? bias[m * bs_m] : 0.0f);
        return;
    }
    int64_t kc = k_dim < MAX_KC ? k_dim : MAX_KC;
    int packed = (ts_k >= 1024 ? kc : (kc * ts_k + 1023) / 1024) > TLB_PAGES;
    kc = packed ? MAX_KC : INPLACE_KC;
    for (int64_t p0 = 0; p0 < n_dim; p0 += NC) {
        int64_t width = n_dim - p0 < NC ? n_dim - p0 : NC;
        for (int64_t k0 = 0; k0 < k_dim; k0 += kc) {
            int64_t kn = k_dim - k0 < kc ? k_dim - k0 : kc;
            const float *xk = x + k0 * xs_k, *tk = t + k0 * ts_k + p0, *bk = k0 == 0 ? bias : 0;
            int acc = accumulate || k0 > 0;
            if (packed) {
                pack_panel(tk, ts_k, kn, width, pack);
                for (int64_t j = 0; j * COLS < width; ++j) {
                    int64_t w = width - j * COLS < COLS ? width - j * COLS : COLS;
                    panel_product(xk, pack + j * kn * COLS, y + p0 + j * COLS, m_dim, kn, w, xs_m, xs_k, COLS, ys_m,
                                  bk, bs_m, acc);
                }
            } else {
                int64_t full = width / COLS * COLS;
                if (full)
                    panel_product(xk, tk, y + p0, m_dim, kn, full, xs_m, xs_k, ts_k, ys_m, bk, bs_m, acc);
                if (width > full) {
                    pack_panel(tk + full, ts_k, kn, width - full, pack);
                    panel_product(xk, pack, y + p0 + full, m_dim, kn, width - full, xs_m, xs_k, COLS, ys_m, bk, bs_m,
                                  acc);
                }
            }
        }
    }
}
#define PACKED 1
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
#ifdef PACKED
    float *pack = (float *)aligned_alloc(64, MAX_KC * NC * sizeof(float));
    if (!pack) abort(); /* 128 KiB; no caller could handle a failure here */
#endif
    for (int64_t c = c_begin; c < c_end; ++c)
        product(x + c * xs_c, t + c * ts_c, y + c * ys_c, m_dim, k_dim, n_dim, xs_m, xs_k, ts_k, ys_m,
                bias ? bias + c * bs_c : 0, bs_m, accumulate
#ifdef PACKED
                , pack
#endif
                );
#ifdef PACKED
    free(pack);
#endif
}

#ifdef _OPENMP
#include <omp.h>

/* This library's OpenMP runtime: metamixer.kernels.native calls small_bmm_parallel only where it is PyTorch's. */
void *small_bmm_openmp_runtime(void) { return (void *)&omp_get_num_threads; }

/* small_bmm over products [0, channels) on the calling thread's OpenMP team. Why the team: in PyTorch's own runtime
 * it is the one PyTorch's parallel ops use, whose workers spin-wait for ~10 ms after each op; a separate thread pool
 * competes with them for the cores (measured: a 2-thread Toeplitz product right after a PyTorch op 22.5 ms in a
 * Python thread pool, 15.0 ms here, 15.1 ms either way in isolation). Where there are fewer than 4 products per
 * thread (an FFN's 7 groups on 2 threads would leave one thread 4 of the 7), each product's columns are split too,
 * in pieces of at least 192 (a packed panel), at multiples of 24 (a register block). */
void small_bmm_parallel(const float *x, const float *t, const float *bias, float *y, int64_t m_dim, int64_t k_dim,
                        int64_t n_dim, int64_t xs_c, int64_t xs_m, int64_t xs_k, int64_t ts_c, int64_t ts_k,
                        int64_t ys_c, int64_t ys_m, int64_t bs_c, int64_t bs_m, int accumulate, int64_t channels,
                        int threads) {
    int64_t splits = 1;
    if (channels > 0 && channels < 4 * (int64_t)threads) {
        splits = (4 * (int64_t)threads + channels - 1) / channels;
        if (splits > n_dim / 192) splits = n_dim / 192;
        if (splits < 1) splits = 1;
    }
    int64_t units = channels * splits;
#pragma omp parallel num_threads(threads)
    {
        int64_t n = omp_get_num_threads(), i = omp_get_thread_num();
        for (int64_t u = units * i / n; u < units * (i + 1) / n; ++u) {
            int64_t c = u / splits, s = u % splits;
            int64_t n0 = (n_dim * s / splits) / 24 * 24;
            int64_t n1 = s + 1 == splits ? n_dim : (n_dim * (s + 1) / splits) / 24 * 24;
            small_bmm(x, t + n0, bias, y + n0, m_dim, k_dim, n1 - n0, xs_c, xs_m, xs_k, ts_c, ts_k, ys_c, ys_m, bs_c,
                      bs_m, accumulate, c, c + 1);
        }
    }
}
#endif
