/* Inference kernels for 2-D FFNet blocks on channels-last (NHWC) float32 tensors: the 1x1 convolutions as
 * register-blocked matrix products with bias / GELU / residual in the same pass, the whole ConvFFN
 * (1x1 -> GELU -> 1x1 + residual) with its hidden activations kept in cache, depthwise k x k convolutions with
 * the same epilogues, and two row-streaming fusions of 3x3 depthwise convs (nhwc_dw_gelu_dw, nhwc_dw_mlp) that
 * bring a whole FFNet block down to three passes over memory.
 *
 * Why: in an FFNet block at inference the two FFN 1x1 convs are ~95 % of the arithmetic, yet PyTorch runs them as
 * oneDNN convolutions at about a third of the core's peak on CPU and then streams the 2x wide hidden tensor
 * through memory three more times (bias, exact GELU, the second conv's read); the exact GELU alone took a quarter
 * of FFNetSR's CPU time. Here a block of MR pixels x NV vectors of output channels stays in registers for the
 * whole reduction, the hidden block of MR pixels never leaves L1, and GELU (gelu.h) runs on it while it is there.
 *
 * Written with GCC/Clang vector extensions, so one source gives 16-lane (AVX-512), 8-lane (AVX/AVX2) or 4-lane
 * (SSE, NEON) code with -march=native; nhwc_vector_width() says which. MR x NV accumulators are sized to the
 * register file: 8 x 3 of 32 zmm registers, 4 x 3 of 16 ymm/xmm ones.
 *
 * Layout: x is [P, K] row-major (P pixels = B*H*W of an NHWC tensor, K channels), weights of a 1x1 conv are
 * [K, N] row-major (the transposed conv weight), y is [P, N]; depthwise weights are [KH*KW, C] (tap-major).
 * Every call handles pixels (or image rows, for depthwise) [begin, end), so a caller splits work across threads;
 * calls never share outputs.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gelu.h"

#if defined(__AVX512F__)
#define VW 16
#define DEFAULT_MR 8
#elif defined(__AVX__)
#define VW 8
#define DEFAULT_MR 4
#else
#define VW 4
#define DEFAULT_MR 4
#endif
#ifndef MR
#define MR DEFAULT_MR
#endif
#ifndef NV
#define NV 3
#endif
#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* aligned(4): loads and stores through this type may be unaligned */
typedef float vf __attribute__((vector_size(VW * sizeof(float)), aligned(4)));

int nhwc_vector_width(void) { return VW; }

/* c[r, n0 : n0 + nv * VW] = a[r, :] @ b[:, n0 : ...] + bias, for MR rows (a: lda, b: ldb, c: ldc strides). */
ALWAYS_INLINE void tile(const float *a, int64_t lda, const float *b, int64_t ldb, const float *bias, float *c,
                        int64_t ldc, int64_t k_dim, int64_t n0, const int nv) {
    vf acc[MR][NV];
#pragma GCC unroll 3
    for (int j = 0; j < nv; ++j) {
        vf bv = *(const vf *)(bias + n0 + j * VW);
#pragma GCC unroll 8
        for (int r = 0; r < MR; ++r) acc[r][j] = bv;
    }
    for (int64_t k = 0; k < k_dim; ++k) {
        const float *brow = b + k * ldb + n0;
        vf bk[NV];
#pragma GCC unroll 3
        for (int j = 0; j < nv; ++j) bk[j] = *(const vf *)(brow + j * VW);
#pragma GCC unroll 8
        for (int r = 0; r < MR; ++r) {
            /* a broadcast load; `+ -0.0` (not `+ 0.0`, which turns -0 into +0) lets the compiler drop the add,
             * which otherwise costs a scalar add and a register shuffle per broadcast (12 % of the product) */
            vf av = a[r * lda + k] + (vf){0} * -0.0f;
#pragma GCC unroll 3
            for (int j = 0; j < nv; ++j) acc[r][j] += av * bk[j];
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 3
        for (int j = 0; j < nv; ++j) *(vf *)(c + r * ldc + n0 + j * VW) = acc[r][j];
}

/* MR rows of c = a @ w + bias over all N columns; w is packed in column panels (see nhwc_pointwise). */
ALWAYS_INLINE void rows_panel(const float *a, int64_t lda, const float *w, const float *bias, float *c, int64_t ldc,
                              int64_t k_dim, int64_t n_dim, int64_t n0) {
    int64_t width = n_dim - n0 < NV * VW ? n_dim - n0 : NV * VW;
    const float *panel = w + n0 * k_dim - n0; /* tile() adds n0 back to the column index */
    if (width == NV * VW) tile(a, lda, panel, width, bias, c, ldc, k_dim, n0, NV);
    else if (width == 2 * VW) tile(a, lda, panel, width, bias, c, ldc, k_dim, n0, 2);
    else tile(a, lda, panel, width, bias, c, ldc, k_dim, n0, 1);
}

/* c = a @ w + bias for `rows` (a multiple of MR) rows: panel by panel, so one panel of w (k_dim x NV*VW values)
 * stays in L1 while every row block of the chunk uses it. */
static void chunk_product(const float *a, int64_t lda, const float *w, const float *bias, float *c, int64_t ldc,
                          int64_t rows, int64_t k_dim, int64_t n_dim) {
    for (int64_t n0 = 0; n0 < n_dim; n0 += NV * VW)
        for (int64_t r = 0; r < rows; r += MR) rows_panel(a + r * lda, lda, w, bias, c + r * ldc, ldc, k_dim, n_dim, n0);
}

/* act (0: none, 1: exact GELU, gelu_rational) then + residual (NULL: none), over `count` values. */
static void epilogue(float *restrict y, const float *restrict residual, int64_t count, int act) {
    if (act == 1)
        for (int64_t j = 0; j < count; ++j) y[j] = gelu_rational(y[j]);
    if (residual)
        for (int64_t j = 0; j < count; ++j) y[j] += residual[j];
}

#define CHUNK (8 * MR) /* pixels per chunk: a chunk's inputs, outputs and hidden block stay in L1/L2 */

/* The chunk's input rows as they are, or (a last chunk of `rows` < `padded` rows) copied into scratch and
 * zero-padded to a whole number of MR-row blocks. */
static const float *padded_rows(const float *a, int64_t rows, int64_t padded, int64_t k_dim, float *scratch) {
    if (padded == rows) return a;
    memset(scratch, 0, sizeof(float) * padded * k_dim);
    memcpy(scratch, a, sizeof(float) * rows * k_dim);
    return scratch;
}

/* y = act(x @ w + bias) (+ residual) for pixels [p_begin, p_end); x: [P, K], y / residual: [P, N]; w is the
 * [K, N] weight packed in column panels of NV*VW columns (the last one narrower): the panel of columns
 * [n0, n0 + width) is stored at w + n0 * K as [K][width]. N must be a multiple of VW. The last partial chunk runs
 * through zero-padded scratch rows. Returns 0, or -1 when scratch memory could not be allocated. */
int nhwc_pointwise(const float *x, const float *w, const float *bias, const float *residual, float *y, int64_t k_dim,
                   int64_t n_dim, int act, int64_t p_begin, int64_t p_end) {
    if (n_dim % VW) return -2;
    float *scratch = malloc(sizeof(float) * CHUNK * (k_dim + n_dim));
    if (!scratch) return -1;
    float *sa = scratch, *sc = scratch + CHUNK * k_dim;
    for (int64_t p = p_begin; p < p_end; p += CHUNK) {
        int64_t rows = p_end - p < CHUNK ? p_end - p : CHUNK, padded = (rows + MR - 1) / MR * MR;
        const float *a = padded_rows(x + p * k_dim, rows, padded, k_dim, sa);
        float *c = padded == rows ? y + p * n_dim : sc;
        chunk_product(a, k_dim, w, bias, c, n_dim, padded, k_dim, n_dim);
        epilogue(c, residual ? residual + p * n_dim : 0, rows * n_dim, act);
        if (c != y + p * n_dim) memcpy(y + p * n_dim, c, sizeof(float) * rows * n_dim);
    }
    free(scratch);
    return 0;
}

/* The FFN of a ConvFFN: y = GELU(x @ w1 + b1) @ w2 + b2 (+ residual); x / y / residual: [P, C]; w1 ([C, H]) and
 * w2 ([H, C]) packed as in nhwc_pointwise; C and H multiples of VW. A chunk's [CHUNK, H] hidden block lives in
 * scratch memory and never goes back to RAM. Returns 0, or -1 (no scratch memory). */
int nhwc_mlp(const float *x, const float *w1, const float *b1, const float *w2, const float *b2,
             const float *residual, float *y, int64_t c_dim, int64_t h_dim, int64_t p_begin, int64_t p_end) {
    if (c_dim % VW || h_dim % VW) return -2;
    float *scratch = malloc(sizeof(float) * CHUNK * (h_dim + 2 * c_dim));
    if (!scratch) return -1;
    float *hidden = scratch, *sa = scratch + CHUNK * h_dim, *sc = sa + CHUNK * c_dim;
    for (int64_t p = p_begin; p < p_end; p += CHUNK) {
        int64_t rows = p_end - p < CHUNK ? p_end - p : CHUNK, padded = (rows + MR - 1) / MR * MR;
        const float *a = padded_rows(x + p * c_dim, rows, padded, c_dim, sa);
        float *c = padded == rows ? y + p * c_dim : sc;
        chunk_product(a, c_dim, w1, b1, hidden, h_dim, padded, c_dim, h_dim);
        epilogue(hidden, 0, padded * h_dim, 1);
        chunk_product(hidden, h_dim, w2, b2, c, c_dim, padded, h_dim, c_dim);
        epilogue(c, residual ? residual + p * c_dim : 0, rows * c_dim, 0);
        if (c != y + p * c_dim) memcpy(y + p * c_dim, c, sizeof(float) * rows * c_dim);
    }
    free(scratch);
    return 0;
}

/* One output image row of a depthwise conv ('same' zero padding, stride 1), channels [c0, c0 + VW). */
ALWAYS_INLINE void dw_row_vector(const float *x, const float *w, const float *bias, float *yrow, int64_t h,
                                 int64_t img_h, int64_t img_w, int64_t c_dim, int64_t c0, const int kh, const int kw) {
    const int ph = kh / 2, pw = kw / 2;
    vf bv = *(const vf *)(bias + c0);
    for (int64_t col = 0; col < img_w; ++col) {
        vf acc = bv;
        for (int dy = 0; dy < kh; ++dy) {
            int64_t ih = h + dy - ph;
            if (ih < 0 || ih >= img_h) continue;
            const float *xrow = x + ih * img_w * c_dim + c0;
            const float *wrow = w + (int64_t)dy * kw * c_dim + c0;
            for (int dx = 0; dx < kw; ++dx) {
                int64_t iw = col + dx - pw;
                if (iw < 0 || iw >= img_w) continue;
                acc += *(const vf *)(wrow + dx * c_dim) * *(const vf *)(xrow + iw * c_dim);
            }
        }
        *(vf *)(yrow + col * c_dim + c0) = acc;
    }
}

/* The nine taps of channels [c0, c0 + VW), with zero taps for a row outside the image (`inside[dy]` == 0). */
ALWAYS_INLINE void taps3x3(const float *w, int64_t c_dim, int64_t c0, const int inside[3], vf wt[9]) {
    for (int dy = 0; dy < 3; ++dy)
        for (int dx = 0; dx < 3; ++dx)
            wt[dy * 3 + dx] = inside[dy] ? *(const vf *)(w + (dy * 3 + dx) * c_dim + c0) : (vf){0};
}

/* Output pixel `col` of a 3x3 depthwise conv for channels [c0, c0 + VW) (taps left / right of the image skipped). */
ALWAYS_INLINE void pixel3x3(const float *const rows[3], const vf wt[9], const float *bias, float *yrow,
                            int64_t img_w, int64_t c_dim, int64_t c0, int64_t col) {
    vf acc = *(const vf *)(bias + c0);
    for (int dy = 0; dy < 3; ++dy)
        for (int dx = 0; dx < 3; ++dx) {
            int64_t iw = col + dx - 1;
            if (iw >= 0 && iw < img_w) acc += wt[dy * 3 + dx] * *(const vf *)(rows[dy] + iw * c_dim + c0);
        }
    *(vf *)(yrow + col * c_dim + c0) = acc;
}

/* Output pixels [col_begin, col_end) of one row of a 3x3 depthwise conv over the channels [0, c_vec) (a multiple
 * of VW), from the three input rows `rows` (`inside[dy]` == 0: a row outside the image, whose taps count as zero;
 * its pointer must still be a readable row); pixel `col` goes to ybase + col * c_dim. Four output pixels per step
 * with every input vector loaded once per step (18 loads for 36 multiply-adds where a pixel-by-pixel loop needs
 * 36), and the channels innermost, so each input cache line is used whole while it is in L1; the interior has no
 * branches. */
static void dw3x3_span(const float *const rows[3], const int inside[3], const float *w, const float *bias,
                       float *ybase, int64_t col_begin, int64_t col_end, int64_t img_w, int64_t c_dim, int64_t c_vec) {
    vf wt[9];
    int64_t col = col_begin;
    for (; col < col_end && col < 1; ++col) /* column 0: its left neighbour is outside */
        for (int64_t c0 = 0; c0 < c_vec; c0 += VW) {
            taps3x3(w, c_dim, c0, inside, wt);
            pixel3x3(rows, wt, bias, ybase, img_w, c_dim, c0, col);
        }
    for (; col + 4 <= col_end && col + 4 <= img_w - 1; col += 4) /* blocks whose neighbours are all inside */
        for (int64_t c0 = 0; c0 < c_vec; c0 += VW) {
            taps3x3(w, c_dim, c0, inside, wt);
            vf b = *(const vf *)(bias + c0), a0 = b, a1 = b, a2 = b, a3 = b;
#pragma GCC unroll 3
            for (int dy = 0; dy < 3; ++dy) {
                const float *r = rows[dy] + (col - 1) * c_dim + c0;
                const vf w0 = wt[dy * 3], w1 = wt[dy * 3 + 1], w2 = wt[dy * 3 + 2];
                vf v = *(const vf *)r;
                a0 += w0 * v;
                v = *(const vf *)(r + c_dim);
                a0 += w1 * v; a1 += w0 * v;
                v = *(const vf *)(r + 2 * c_dim);
                a0 += w2 * v; a1 += w1 * v; a2 += w0 * v;
                v = *(const vf *)(r + 3 * c_dim);
                a1 += w2 * v; a2 += w1 * v; a3 += w0 * v;
                v = *(const vf *)(r + 4 * c_dim);
                a2 += w2 * v; a3 += w1 * v;
                v = *(const vf *)(r + 5 * c_dim);
                a3 += w2 * v;
            }
            float *out = ybase + col * c_dim + c0;
            *(vf *)out = a0;
            *(vf *)(out + c_dim) = a1;
            *(vf *)(out + 2 * c_dim) = a2;
            *(vf *)(out + 3 * c_dim) = a3;
        }
    for (; col < col_end; ++col) /* the last columns (every column of a narrow image) */
        for (int64_t c0 = 0; c0 < c_vec; c0 += VW) {
            taps3x3(w, c_dim, c0, inside, wt);
            pixel3x3(rows, wt, bias, ybase, img_w, c_dim, c0, col);
        }
}

/* The input rows of output row h of a 3x3 conv on an image (rows of img_w * c_dim values): a row above or below
 * the image is replaced by row h with zero taps (row h is in every window, so that changes nothing). */
static void rows3x3(const float *image, int64_t h, int64_t img_h, int64_t row_values, const float *rows[3],
                    int inside[3]) {
    for (int dy = 0; dy < 3; ++dy) {
        int64_t ih = h + dy - 1;
        inside[dy] = ih >= 0 && ih < img_h;
        rows[dy] = image + (inside[dy] ? ih : h) * row_values;
    }
}

static void dw3x3_row(const float *x, const float *w, const float *bias, float *yrow, int64_t h, int64_t img_h,
                      int64_t img_w, int64_t c_dim, int64_t c_vec) {
    const float *rows[3];
    int inside[3];
    rows3x3(x, h, img_h, img_w * c_dim, rows, inside);
    dw3x3_span(rows, inside, w, bias, yrow, 0, img_w, img_w, c_dim, c_vec);
}

static void dw_row(const float *x, const float *w, const float *bias, float *yrow, int64_t h, int64_t img_h,
                   int64_t img_w, int64_t c_dim, int kh, int kw) {
    int64_t c0 = 0;
    if (kh == 3 && kw == 3) {
        c0 = c_dim / VW * VW;
        dw3x3_row(x, w, bias, yrow, h, img_h, img_w, c_dim, c0);
    }
    for (; c0 + VW <= c_dim; c0 += VW) {
        if (kh == 7 && kw == 7) dw_row_vector(x, w, bias, yrow, h, img_h, img_w, c_dim, c0, 7, 7);
        else dw_row_vector(x, w, bias, yrow, h, img_h, img_w, c_dim, c0, kh, kw);
    }
    for (; c0 < c_dim; ++c0) /* channels past the last full vector */
        for (int64_t col = 0; col < img_w; ++col) {
            float sum = bias[c0];
            for (int dy = 0; dy < kh; ++dy) {
                int64_t ih = h + dy - kh / 2;
                if (ih < 0 || ih >= img_h) continue;
                for (int dx = 0; dx < kw; ++dx) {
                    int64_t iw = col + dx - kw / 2;
                    if (iw >= 0 && iw < img_w)
                        sum += w[((int64_t)dy * kw + dx) * c_dim + c0] * x[(ih * img_w + iw) * c_dim + c0];
                }
            }
            yrow[col * c_dim + c0] = sum;
        }
}

/* y = act(dwconv(x, w) + bias) (+ residual) on [B, H, W, C] (x, y, residual contiguous NHWC; w: [KH*KW, C],
 * odd KH and KW), for image rows [row_begin, row_end) of the B*H rows. */
void nhwc_depthwise(const float *x, const float *w, const float *bias, const float *residual, float *y,
                    int64_t img_h, int64_t img_w, int64_t c_dim, int kh, int kw, int act, int64_t row_begin,
                    int64_t row_end) {
    int64_t row_values = img_w * c_dim;
    for (int64_t row = row_begin; row < row_end; ++row) {
        int64_t b = row / img_h, h = row - b * img_h;
        const float *image = x + b * img_h * row_values;
        dw_row(image, w, bias, y + row * row_values, h, img_h, img_w, c_dim, kh, kw);
        epilogue(y + row * row_values, residual ? residual + row * row_values : 0, row_values, act);
    }
}

/* The token mixer's depthwise pair, t = residual + dw2(GELU(dw1(u))) (3x3 convs, 'same' zero padding, biases),
 * for image rows [row_begin, row_end) of the B*H rows of [B, H, W, C] tensors (C a multiple of VW). The GELU'd
 * dw1 rows live in a ring of three rows in scratch memory, so the intermediate never goes to RAM; a band's first
 * row recomputes up to two dw1 rows its neighbour band also computes. t must overlap neither u (rows of u are
 * read after rows of t are written) nor residual. Returns 0, -1 (no scratch memory) or -2 (C not a multiple). */
int nhwc_dw_gelu_dw(const float *u, const float *w1, const float *b1, const float *w2, const float *b2,
                    const float *residual, float *t, int64_t img_h, int64_t img_w, int64_t c_dim, int64_t row_begin,
                    int64_t row_end) {
    if (c_dim % VW) return -2;
    int64_t row_values = img_w * c_dim;
    float *ring = malloc(sizeof(float) * 3 * row_values);
    if (!ring) return -1;
    int64_t held[3] = {-1, -1, -1}; /* which global row (b * H + h) each ring slot holds */
    for (int64_t row = row_begin; row < row_end; ++row) {
        int64_t b = row / img_h, h = row - b * img_h;
        const float *image = u + b * img_h * row_values;
        const float *rows[3];
        int inside[3];
        for (int dy = 0; dy < 3; ++dy) {
            int64_t ih = h + dy - 1;
            inside[dy] = ih >= 0 && ih < img_h;
            int64_t src = inside[dy] ? ih : h, slot = src % 3;
            if (held[slot] != b * img_h + src) {
                const float *in_rows[3];
                int in_inside[3];
                rows3x3(image, src, img_h, row_values, in_rows, in_inside);
                dw3x3_span(in_rows, in_inside, w1, b1, ring + slot * row_values, 0, img_w, img_w, c_dim, c_dim);
                epilogue(ring + slot * row_values, 0, row_values, 1);
                held[slot] = b * img_h + src;
            }
            rows[dy] = ring + slot * row_values;
        }
        float *trow = t + row * row_values;
        dw3x3_span(rows, inside, w2, b2, trow, 0, img_w, img_w, c_dim, c_dim);
        epilogue(trow, residual ? residual + row * row_values : 0, row_values, 0);
    }
    free(ring);
    return 0;
}

/* The ConvFFN, y = t + FFN(dw(t)) with FFN(w) = GELU(w @ w1 + b1) @ w2 + b2 (dw: 3x3 depthwise, 'same' zero
 * padding), for image rows [row_begin, row_end) of [B, H, W, C] tensors (C and the hidden width H a multiple of
 * VW; weights packed as in nhwc_pointwise). The depthwise result of a chunk of a row's pixels goes straight into
 * the product's input block, so it never goes to RAM either. y must not overlap t. Returns 0, -1 or -2. */
int nhwc_dw_mlp(const float *t, const float *wd, const float *bd, const float *w1, const float *b1,
                const float *w2, const float *b2, float *y, int64_t img_h, int64_t img_w, int64_t c_dim,
                int64_t h_dim, int64_t row_begin, int64_t row_end) {
    if (c_dim % VW || h_dim % VW) return -2;
    float *scratch = malloc(sizeof(float) * CHUNK * (h_dim + 2 * c_dim));
    if (!scratch) return -1;
    float *hidden = scratch, *sa = scratch + CHUNK * h_dim, *sc = sa + CHUNK * c_dim;
    int64_t row_values = img_w * c_dim;
    for (int64_t row = row_begin; row < row_end; ++row) {
        int64_t b = row / img_h, h = row - b * img_h;
        const float *rows[3];
        int inside[3];
        rows3x3(t + b * img_h * row_values, h, img_h, row_values, rows, inside);
        for (int64_t col = 0; col < img_w; col += CHUNK) {
            int64_t n = img_w - col < CHUNK ? img_w - col : CHUNK, padded = (n + MR - 1) / MR * MR;
            dw3x3_span(rows, inside, wd, bd, sa - col * c_dim, col, col + n, img_w, c_dim, c_dim);
            if (padded > n) memset(sa + n * c_dim, 0, sizeof(float) * (padded - n) * c_dim);
            float *out = y + row * row_values + col * c_dim, *c = padded == n ? out : sc;
            chunk_product(sa, c_dim, w1, b1, hidden, h_dim, padded, c_dim, h_dim);
            epilogue(hidden, 0, padded * h_dim, 1);
            chunk_product(hidden, h_dim, w2, b2, c, c_dim, padded, h_dim, c_dim);
            epilogue(c, t + row * row_values + col * c_dim, n * c_dim, 0);
            if (c != out) memcpy(out, c, sizeof(float) * n * c_dim);
        }
    }
    free(scratch);
    return 0;
}

#ifdef _OPENMP
#include <omp.h>

/* This library's OpenMP runtime: metamixer.kernels.nhwc uses the *_parallel entries only where it is PyTorch's
 * (whose workers spin-wait after each of its ops; a separate thread pool would compete with them for the cores). */
void *nhwc_openmp_runtime(void) { return (void *)&omp_get_num_threads; }

/* The entries below split [0, units) evenly across `threads` threads of the calling thread's OpenMP team; the
 * 1x1 ones return -1 / -2 when any thread's call did. */
int nhwc_pointwise_parallel(const float *x, const float *w, const float *bias, const float *residual, float *y,
                            int64_t k_dim, int64_t n_dim, int act, int64_t pixels, int threads) {
    int status = 0;
#pragma omp parallel num_threads(threads) reduction(min : status)
    {
        int64_t n = omp_get_num_threads(), i = omp_get_thread_num();
        status = nhwc_pointwise(x, w, bias, residual, y, k_dim, n_dim, act, pixels * i / n, pixels * (i + 1) / n);
    }
    return status;
}

int nhwc_mlp_parallel(const float *x, const float *w1, const float *b1, const float *w2, const float *b2,
                      const float *residual, float *y, int64_t c_dim, int64_t h_dim, int64_t pixels, int threads) {
    int status = 0;
#pragma omp parallel num_threads(threads) reduction(min : status)
    {
        int64_t n = omp_get_num_threads(), i = omp_get_thread_num();
        status = nhwc_mlp(x, w1, b1, w2, b2, residual, y, c_dim, h_dim, pixels * i / n, pixels * (i + 1) / n);
    }
    return status;
}

int nhwc_dw_gelu_dw_parallel(const float *u, const float *w1, const float *b1, const float *w2, const float *b2,
                             const float *residual, float *t, int64_t img_h, int64_t img_w, int64_t c_dim,
                             int64_t rows, int threads) {
    int status = 0;
#pragma omp parallel num_threads(threads) reduction(min : status)
    {
        int64_t n = omp_get_num_threads(), i = omp_get_thread_num();
        status = nhwc_dw_gelu_dw(u, w1, b1, w2, b2, residual, t, img_h, img_w, c_dim, rows * i / n,
                                 rows * (i + 1) / n);
    }
    return status;
}

int nhwc_dw_mlp_parallel(const float *t, const float *wd, const float *bd, const float *w1, const float *b1,
                         const float *w2, const float *b2, float *y, int64_t img_h, int64_t img_w, int64_t c_dim,
                         int64_t h_dim, int64_t rows, int threads) {
    int status = 0;
#pragma omp parallel num_threads(threads) reduction(min : status)
    {
        int64_t n = omp_get_num_threads(), i = omp_get_thread_num();
        status = nhwc_dw_mlp(t, wd, bd, w1, b1, w2, b2, y, img_h, img_w, c_dim, h_dim, rows * i / n,
                             rows * (i + 1) / n);
    }
    return status;
}

void nhwc_depthwise_parallel(const float *x, const float *w, const float *bias, const float *residual, float *y,
                             int64_t img_h, int64_t img_w, int64_t c_dim, int kh, int kw, int act, int64_t rows,
                             int threads) {
#pragma omp parallel num_threads(threads)
    {
        int64_t n = omp_get_num_threads(), i = omp_get_thread_num();
        nhwc_depthwise(x, w, bias, residual, y, img_h, img_w, c_dim, kh, kw, act, rows * i / n, rows * (i + 1) / n);
    }
}
#endif
