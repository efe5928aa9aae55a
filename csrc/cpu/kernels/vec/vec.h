// SIMD register traits: one struct per (element type, instruction set) with the same static
// functions, so kernels and vector math are written once as templates over a trait V.
//
// Include this file only from a translation unit that selects its instruction set with
// `#pragma GCC target(...)` AFTER all standard headers, and that defines FUSEDOPS_ISA_NS: every
// template instantiated there lands in that namespace, so code compiled for AVX-512 can never
// be picked by the linker for a caller on a CPU without it. The unit defines
// FUSEDOPS_WITH_AVX2 or FUSEDOPS_WITH_AVX512 to get the matching traits.
#pragma once

#ifndef FUSEDOPS_ISA_NS
#error "define FUSEDOPS_ISA_NS before including vec.h"
#endif

namespace fusedops::cpu::FUSEDOPS_ISA_NS {

// Portable fallback: a "vector" of one element. Also the reference for the SIMD traits.
template <typename T_>
struct VecScalar {
  using T = T_;
  using R = T_;
  using M = bool;
  static constexpr int W = 1;
  static constexpr bool fast_math = false;  // no SIMD exp/erf: activations use <cmath>
  static R zero() { return T(0); }
  static R set1(T x) { return x; }
  static R load(const T* p) { return *p; }
  static R loadu(const T* p) { return *p; }
  static void store(T* p, R r) { *p = r; }
  static void storeu(T* p, R r) { *p = r; }
  static R bcast(const T* p) { return *p; }
  static R add(R a, R b) { return a + b; }
  static R sub(R a, R b) { return a - b; }
  static R mul(R a, R b) { return a * b; }
  static R div(R a, R b) { return a / b; }
  static R fmadd(R a, R b, R c) { return a * b + c; }
  static R max(R a, R b) { return a > b ? a : b; }
  static R min(R a, R b) { return a < b ? a : b; }
  static M gt(R a, R b) { return a > b; }
  static R select(M m, R a, R b) { return m ? a : b; }
  static T hsum(R a) { return a; }
  static T hmax(R a) { return a; }
  static R sqrt(R a) { return std::sqrt(a); }
  // The first n (< W) elements; the rest of the register is zero / memory is left alone.
  static R load_partial(const T* p, int n) { return n > 0 ? *p : T(0); }
  static void store_partial(T* p, R r, int n) { if (n > 0) *p = r; }
  // bf16 storage (fp32 traits only; see vec/storage.h)
  static R load_bf16(const uint16_t* p) { return bf16_to_float(*p); }
  static R load_bf16_partial(const uint16_t* p, int n) { return n > 0 ? bf16_to_float(*p) : T(0); }
  static void store_bf16(uint16_t* p, R r) { *p = float_to_bf16(r); }
  static void store_bf16_partial(uint16_t* p, R r, int n) { if (n > 0) *p = float_to_bf16(r); }
};

}  // namespace fusedops::cpu::FUSEDOPS_ISA_NS

#if defined(FUSEDOPS_WITH_AVX2) || defined(FUSEDOPS_WITH_AVX512)
#include <immintrin.h>

namespace fusedops::cpu::FUSEDOPS_ISA_NS {

struct VecF32Avx2 {
  using T = float;
  using R = __m256;
  using M = __m256;
  static constexpr int W = 8;
  static constexpr bool fast_math = true;
  static R zero() { return _mm256_setzero_ps(); }
  static R set1(T x) { return _mm256_set1_ps(x); }
  static R load(const T* p) { return _mm256_load_ps(p); }
  static R loadu(const T* p) { return _mm256_loadu_ps(p); }
  static void store(T* p, R r) { _mm256_store_ps(p, r); }
  static void storeu(T* p, R r) { _mm256_storeu_ps(p, r); }
  static R bcast(const T* p) { return _mm256_broadcast_ss(p); }
  static R add(R a, R b) { return _mm256_add_ps(a, b); }
  static R sub(R a, R b) { return _mm256_sub_ps(a, b); }
  static R mul(R a, R b) { return _mm256_mul_ps(a, b); }
  static R div(R a, R b) { return _mm256_div_ps(a, b); }
  static R fmadd(R a, R b, R c) { return _mm256_fmadd_ps(a, b, c); }
  static R max(R a, R b) { return _mm256_max_ps(a, b); }
  static R min(R a, R b) { return _mm256_min_ps(a, b); }
  static M gt(R a, R b) { return _mm256_cmp_ps(a, b, _CMP_GT_OQ); }
  static R select(M m, R a, R b) { return _mm256_blendv_ps(b, a, m); }
  static T hsum(R a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  // 2^n for integer-valued n in [-126, 127].
  static R pow2i(R n) {
    __m256i i = _mm256_cvtps_epi32(n);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(i, _mm256_set1_epi32(127)), 23));
  }
  static R round(R x) { return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static R abs(R x) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x); }
  static R sqrt(R a) { return _mm256_sqrt_ps(a); }
  static T hmax(R a) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
  }
  static __m256i tail_mask(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static R load_partial(const T* p, int n) { return _mm256_maskload_ps(p, tail_mask(n)); }
  static void store_partial(T* p, R r, int n) { _mm256_maskstore_ps(p, tail_mask(n), r); }
  static R copysign(R mag, R sgn) {
    const R s = _mm256_set1_ps(-0.0f);
    return _mm256_or_ps(_mm256_andnot_ps(s, mag), _mm256_and_ps(s, sgn));
  }
  // bf16 storage: widening is exact (a shift); narrowing rounds to nearest even in integer
  // arithmetic (a NaN stays a quiet NaN), as bf16.h's scalar float_to_bf16.
  static R load_bf16(const uint16_t* p) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
  static R load_bf16_partial(const uint16_t* p, int n) {
    alignas(16) uint16_t b[8] = {};
    std::memcpy(b, p, sizeof(uint16_t) * size_t(n));
    return load_bf16(b);
  }
  static __m128i to_bf16(R r) {
    const __m256i u = _mm256_castps_si256(r);
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    __m256i v = _mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff)));
    const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(r, r, _CMP_UNORD_Q));
    v = _mm256_blendv_epi8(v, _mm256_or_si256(u, _mm256_set1_epi32(0x400000)), nan);
    v = _mm256_srli_epi32(v, 16);
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(v, v), 0x08);
    return _mm256_castsi256_si128(packed);
  }
  static void store_bf16(uint16_t* p, R r) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), to_bf16(r));
  }
  static void store_bf16_partial(uint16_t* p, R r, int n) {
    alignas(16) uint16_t b[8];
    _mm_store_si128(reinterpret_cast<__m128i*>(b), to_bf16(r));
    std::memcpy(p, b, sizeof(uint16_t) * size_t(n));
  }
};

struct VecF64Avx2 {
  using T = double;
  using R = __m256d;
  using M = __m256d;
  static constexpr int W = 4;
  static constexpr bool fast_math = false;
  static R zero() { return _mm256_setzero_pd(); }
  static R set1(T x) { return _mm256_set1_pd(x); }
  static R load(const T* p) { return _mm256_load_pd(p); }
  static R loadu(const T* p) { return _mm256_loadu_pd(p); }
  static void store(T* p, R r) { _mm256_store_pd(p, r); }
  static void storeu(T* p, R r) { _mm256_storeu_pd(p, r); }
  static R bcast(const T* p) { return _mm256_broadcast_sd(p); }
  static R add(R a, R b) { return _mm256_add_pd(a, b); }
  static R sub(R a, R b) { return _mm256_sub_pd(a, b); }
  static R mul(R a, R b) { return _mm256_mul_pd(a, b); }
  static R div(R a, R b) { return _mm256_div_pd(a, b); }
  static R fmadd(R a, R b, R c) { return _mm256_fmadd_pd(a, b, c); }
  static R max(R a, R b) { return _mm256_max_pd(a, b); }
  static R min(R a, R b) { return _mm256_min_pd(a, b); }
  static M gt(R a, R b) { return _mm256_cmp_pd(a, b, _CMP_GT_OQ); }
  static R select(M m, R a, R b) { return _mm256_blendv_pd(b, a, m); }
  static T hsum(R a) {
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(a), _mm256_extractf128_pd(a, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
  }  static R sqrt(R a) { return _mm256_sqrt_pd(a); }
  static T hmax(R a) {
    __m128d m = _mm_max_pd(_mm256_castpd256_pd128(a), _mm256_extractf128_pd(a, 1));
    return _mm_cvtsd_f64(_mm_max_sd(m, _mm_unpackhi_pd(m, m)));
  }
  static __m256i tail_mask(int n) {
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
  }
  static R load_partial(const T* p, int n) { return _mm256_maskload_pd(p, tail_mask(n)); }
  static void store_partial(T* p, R r, int n) { _mm256_maskstore_pd(p, tail_mask(n), r); }
};

#if defined(FUSEDOPS_WITH_AVX512)
struct VecF32Avx512 {
  using T = float;
  using R = __m512;
  using M = __mmask16;
  static constexpr int W = 16;
  static constexpr bool fast_math = true;
  static R zero() { return _mm512_setzero_ps(); }
  static R set1(T x) { return _mm512_set1_ps(x); }
  static R load(const T* p) { return _mm512_load_ps(p); }
  static R loadu(const T* p) { return _mm512_loadu_ps(p); }
  static void store(T* p, R r) { _mm512_store_ps(p, r); }
  static void storeu(T* p, R r) { _mm512_storeu_ps(p, r); }
  static R bcast(const T* p) { return _mm512_set1_ps(*p); }
  static R add(R a, R b) { return _mm512_add_ps(a, b); }
  static R sub(R a, R b) { return _mm512_sub_ps(a, b); }
  static R mul(R a, R b) { return _mm512_mul_ps(a, b); }
  static R div(R a, R b) { return _mm512_div_ps(a, b); }
  static R fmadd(R a, R b, R c) { return _mm512_fmadd_ps(a, b, c); }
  static R max(R a, R b) { return _mm512_max_ps(a, b); }
  static R min(R a, R b) { return _mm512_min_ps(a, b); }
  static M gt(R a, R b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
  static R select(M m, R a, R b) { return _mm512_mask_blend_ps(m, b, a); }
  static T hsum(R a) {
    alignas(64) T t[W];
    _mm512_store_ps(t, a);
    T s = 0;
    for (int i = 0; i < W; ++i) s += t[i];
    return s;
  }
  static R pow2i(R n) {
    __m512i i = _mm512_cvtps_epi32(n);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(i, _mm512_set1_epi32(127)), 23));
  }
  static R round(R x) { return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static R abs(R x) { return _mm512_abs_ps(x); }
  static R sqrt(R a) { return _mm512_sqrt_ps(a); }
  static T hmax(R a) { return _mm512_reduce_max_ps(a); }
  static __mmask16 tail_mask(int n) { return __mmask16((1u << n) - 1u); }
  static R load_partial(const T* p, int n) { return _mm512_maskz_loadu_ps(tail_mask(n), p); }
  static void store_partial(T* p, R r, int n) { _mm512_mask_storeu_ps(p, tail_mask(n), r); }
  static R copysign(R mag, R sgn) {
    const __m512i s = _mm512_set1_epi32(static_cast<int>(0x80000000u));
    __m512i m = _mm512_andnot_si512(s, _mm512_castps_si512(mag));
    return _mm512_castsi512_ps(_mm512_or_si512(m, _mm512_and_si512(s, _mm512_castps_si512(sgn))));
  }
  // bf16 storage, as VecF32Avx2's (AVX-512BW masked 16-bit moves for the tails).
  static R widen_bf16(__m256i h) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
  static R load_bf16(const uint16_t* p) {
    return widen_bf16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static R load_bf16_partial(const uint16_t* p, int n) {
    return widen_bf16(_mm256_maskz_loadu_epi16(tail_mask(n), p));
  }
  static __m256i to_bf16(R r) {
    const __m512i u = _mm512_castps_si512(r);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i v = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
    const __mmask16 nan = _mm512_cmp_ps_mask(r, r, _CMP_UNORD_Q);
    v = _mm512_mask_or_epi32(v, nan, u, _mm512_set1_epi32(0x400000));
    return _mm512_cvtepi32_epi16(_mm512_srli_epi32(v, 16));
  }
  static void store_bf16(uint16_t* p, R r) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), to_bf16(r));
  }
  static void store_bf16_partial(uint16_t* p, R r, int n) {
    _mm256_mask_storeu_epi16(p, tail_mask(n), to_bf16(r));
  }
};

struct VecF64Avx512 {
  using T = double;
  using R = __m512d;
  using M = __mmask8;
  static constexpr int W = 8;
  static constexpr bool fast_math = false;
  static R zero() { return _mm512_setzero_pd(); }
  static R set1(T x) { return _mm512_set1_pd(x); }
  static R load(const T* p) { return _mm512_load_pd(p); }
  static R loadu(const T* p) { return _mm512_loadu_pd(p); }
  static void store(T* p, R r) { _mm512_store_pd(p, r); }
  static void storeu(T* p, R r) { _mm512_storeu_pd(p, r); }
  static R bcast(const T* p) { return _mm512_set1_pd(*p); }
  static R add(R a, R b) { return _mm512_add_pd(a, b); }
  static R sub(R a, R b) { return _mm512_sub_pd(a, b); }
  static R mul(R a, R b) { return _mm512_mul_pd(a, b); }
  static R div(R a, R b) { return _mm512_div_pd(a, b); }
  static R fmadd(R a, R b, R c) { return _mm512_fmadd_pd(a, b, c); }
  static R max(R a, R b) { return _mm512_max_pd(a, b); }
  static R min(R a, R b) { return _mm512_min_pd(a, b); }
  static M gt(R a, R b) { return _mm512_cmp_pd_mask(a, b, _CMP_GT_OQ); }
  static R select(M m, R a, R b) { return _mm512_mask_blend_pd(m, b, a); }
  static T hsum(R a) {
    alignas(64) T t[W];
    _mm512_store_pd(t, a);
    T s = 0;
    for (int i = 0; i < W; ++i) s += t[i];
    return s;
  }  static R sqrt(R a) { return _mm512_sqrt_pd(a); }
  static T hmax(R a) { return _mm512_reduce_max_pd(a); }
  static __mmask8 tail_mask(int n) { return __mmask8((1u << n) - 1u); }
  static R load_partial(const T* p, int n) { return _mm512_maskz_loadu_pd(tail_mask(n), p); }
  static void store_partial(T* p, R r, int n) { _mm512_mask_storeu_pd(p, tail_mask(n), r); }
};
#endif  // FUSEDOPS_WITH_AVX512

}  // namespace fusedops::cpu::FUSEDOPS_ISA_NS
#endif  // AVX2

#include "storage.h"
