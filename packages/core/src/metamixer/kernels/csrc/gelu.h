/* Exact GELU's pieces for the C kernels: Phi(x) (the normal CDF) and the normal density, branch-free so loops
 * that call them vectorize; and gelu_rational, the inference kernels' cheaper exact GELU. Phi comes from erfc by Abramowitz & Stegun's formula 7.1.26 (|error| < 1.5e-7); the
 * lower tail is used directly, so there is no cancellation in 1 + erf for x < 0. exp is a range-reduced degree-7
 * polynomial (relative error < 1e-7). Included by ffn_gelu.c and nhwc.c (native.py hashes this header into every
 * library's cache key).
 */
#ifndef METAMIXER_GELU_H
#define METAMIXER_GELU_H
#include <math.h>
#include <stdint.h>
#include <string.h>

#define RSQRT2 0.70710678118654752f
#define RSQRT2PI 0.39894228040143268f

/* exp(y) for y <= 0, clamped at -80 so the result stays a normal float (no denormal slow paths). */
static inline float exp_nonpositive(float y) {
    y = y < -80.0f ? -80.0f : y;
    float k = floorf(y * 1.44269504088896341f + 0.5f);
    float r = y - k * 0.693145751953125f - k * 1.42860682030941723e-6f; /* ln 2 split in two parts */
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t bits = ((int32_t)k + 127) << 23;
    float two_k;
    memcpy(&two_k, &bits, sizeof two_k);
    return p * two_k;
}

/* Phi(x) (the normal CDF) and the normal density phi(x). */
static inline float normal_cdf(float x, float *density) {
    float z = fabsf(x) * RSQRT2;
    float t = 1.0f / (1.0f + 0.3275911f * z);
    float poly = t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f))));
    float e = exp_nonpositive(-0.5f * x * x);
    float tail = 0.5f * poly * e; /* Phi(-|x|) */
    *density = e * RSQRT2PI;
    return x >= 0.0f ? 1.0f - tail : tail;
}

/* GELU(x) = x * Phi(x). */
static inline float gelu_exact(float x) {
    float density;
    return x * normal_cdf(x, &density);
}

/* GELU(x) = x/2 * (1 + erf(x / sqrt 2)) with erf(z) = z * P(z^2) / Q(z^2) on |z| <= 3.925 (beyond it erf rounds to
 * +-1 in float): a (6, 4) rational minimax fit to erf in double precision (|error| 5e-8 in exact arithmetic; in
 * float |erf error| < 4e-7, |GELU error| < 1e-6). Why: no exp and one division, about 40 % fewer operations than
 * gelu_exact, which made GELU a sixth of FFNetSR's CPU time; it has no density, so training kernels (which need
 * one for the backward) keep normal_cdf. Written as scalar code that GCC/Clang vectorize inside the calling loop. */
static inline float gelu_rational(float x) {
    float z = x * RSQRT2;
    z = z > 3.925f ? 3.925f : z;
    z = z < -3.925f ? -3.925f : z;
    float s = z * z;
    float p = 1.985479999855322e-08f;
    p = p * s - 1.993903981631351e-06f;
    p = p * s + 1.4960245172429684e-04f;
    p = p * s + 4.003340491228165e-03f;
    p = p * s + 5.149781772715784e-02f;
    p = p * s + 2.0685243169359757e-01f;
    p = p * s + 1.1283787982535711f;
    float q = 1.0311033394834815e-03f;
    q = q * s + 1.4952978033828222e-02f;
    q = q * s + 1.178716699442543e-01f;
    q = q * s + 5.166470774633038e-01f;
    q = q * s + 1.0f;
    float half = 0.5f * x;
    return half + half * (z * p / q);
}
#endif
