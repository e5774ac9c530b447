/* Exact GELU's pieces for the C kernels: Phi(x) (the normal CDF) and the normal density, branch-free so loops
 * that call them vectorize. Phi comes from erfc by Abramowitz & Stegun's formula 7.1.26 (|error| < 1.5e-7); the
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
#endif
