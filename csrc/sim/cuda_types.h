/* The CUDA types and 16-bit float intrinsics of the simulator build, without the CUDA toolkit.

   What CUDA's vector_types.h, vector_functions.h, cuda_fp16.h and cuda_bf16.h give host code,
   as far as the project's kernels and the simulator use it:
   - the vector types (char1 .. double4, with CUDA's alignments), dim3, the make_* functions
     and cudaStream_t;
   - __half, __half2, __nv_bfloat16, __nv_bfloat162 (and half, half2, nv_bfloat16, nv_bfloat162)
     with their raw types, constructors, conversions and operators;
   - conversions float/double/integers <-> 16-bit floats in every rounding mode CUDA offers
     host code, and the arithmetic, comparison, min/max and classification intrinsics.
   Every function gives the bits CUDA's host code gives (round to nearest even unless the name
   says otherwise, NaN results as the canonical 0x7fff, arithmetic in float then rounded):
   tests/sim/fp16_tests.cu checks them bit for bit against CUDA's headers where those exist.
   The device-only intrinsics (hexp, __hfma, ...) are in cuda_sim.h.

   Everything lives in namespace cudasim::types and is brought to the global namespace with
   using-declarations: a library that links simulator code and real CUDA code (whose types
   come from CUDA's headers) then holds no two different definitions of one name. */
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace cudasim::types {

// ---- vector types ------------------------------------------------------------------------
#define CUDASIM_VEC1(name, T, A) struct alignas(A) name { T x; };
#define CUDASIM_VEC2(name, T, A) struct alignas(A) name { T x, y; };
#define CUDASIM_VEC3(name, T, A) struct alignas(A) name { T x, y, z; };
#define CUDASIM_VEC4(name, T, A) struct alignas(A) name { T x, y, z, w; };
#define CUDASIM_VECS(base, T, A2, A4)                                                          \
  CUDASIM_VEC1(base##1, T, alignof(T)) CUDASIM_VEC2(base##2, T, A2)                           \
  CUDASIM_VEC3(base##3, T, alignof(T)) CUDASIM_VEC4(base##4, T, A4)
CUDASIM_VECS(char, signed char, 2, 4)
CUDASIM_VECS(uchar, unsigned char, 2, 4)
CUDASIM_VECS(short, short, 4, 8)
CUDASIM_VECS(ushort, unsigned short, 4, 8)
CUDASIM_VECS(int, int, 8, 16)
CUDASIM_VECS(uint, unsigned int, 8, 16)
CUDASIM_VECS(long, long, 2 * sizeof(long), 16)
CUDASIM_VECS(ulong, unsigned long, 2 * sizeof(unsigned long), 16)
CUDASIM_VECS(longlong, long long, 16, 16)
CUDASIM_VECS(ulonglong, unsigned long long, 16, 16)
CUDASIM_VECS(float, float, 8, 16)
CUDASIM_VECS(double, double, 16, 16)
#undef CUDASIM_VECS
#undef CUDASIM_VEC4
#undef CUDASIM_VEC3
#undef CUDASIM_VEC2
#undef CUDASIM_VEC1

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
  constexpr operator uint3() const { return uint3{x, y, z}; }
};

#define CUDASIM_MAKE(name, T)                                                                  \
  constexpr name##1 make_##name##1(T x) { return name##1{x}; }                                 \
  constexpr name##2 make_##name##2(T x, T y) { return name##2{x, y}; }                         \
  constexpr name##3 make_##name##3(T x, T y, T z) { return name##3{x, y, z}; }                 \
  constexpr name##4 make_##name##4(T x, T y, T z, T w) { return name##4{x, y, z, w}; }
CUDASIM_MAKE(char, signed char)
CUDASIM_MAKE(uchar, unsigned char)
CUDASIM_MAKE(short, short)
CUDASIM_MAKE(ushort, unsigned short)
CUDASIM_MAKE(int, int)
CUDASIM_MAKE(uint, unsigned int)
CUDASIM_MAKE(long, long)
CUDASIM_MAKE(ulong, unsigned long)
CUDASIM_MAKE(longlong, long long)
CUDASIM_MAKE(ulonglong, unsigned long long)
CUDASIM_MAKE(float, float)
CUDASIM_MAKE(double, double)
#undef CUDASIM_MAKE

// Streams are accepted and ignored: launches run at once, in order.
struct CUstream_st;
using cudaStream_t = CUstream_st*;

// ---- rounding to 16 bits -------------------------------------------------------------------
enum class Round { rn, rz, rd, ru };

namespace detail {
// Whether a value with this sign, truncated to `bits`, moves one unit away from zero, given
// the discarded part `rem` out of `half_unit` * 2 (sticky: any nonzero bit below it).
constexpr bool round_up(Round r, bool negative, std::uint32_t bits, bool above, bool tie, bool inexact) {
  switch (r) {
    case Round::rn: return above || (tie && (bits & 1u));
    case Round::rz: return false;
    case Round::rd: return inexact && negative;
    case Round::ru: return inexact && !negative;
  }
  return false;
}
// The largest finite value or infinity, as a rounding mode takes an overflow.
constexpr std::uint16_t overflow(Round r, std::uint16_t sign, std::uint16_t max_finite, std::uint16_t inf) {
  const bool negative = sign != 0;
  const bool to_inf = r == Round::rn || (r == Round::ru && !negative) || (r == Round::rd && negative);
  return sign | (to_inf ? inf : max_finite);
}
}  // namespace detail

// The bits of sign * sig * 2^e (sig < 2^64, exact) in a binary format with MANT stored
// significand bits and normal exponents EMIN..EMAX: binary16 is <10, -14, 15>, bfloat16
// <7, -126, 127>. Exact integer arithmetic, one rounding, any mode.
template <int MANT, int EMIN, int EMAX>
constexpr std::uint16_t round_to_bits(std::uint16_t sign, std::uint64_t sig, int e, Round r) {
  constexpr std::uint32_t inf = std::uint32_t(2 * EMAX + 1) << MANT, max_finite = inf - 1;
  if (sig == 0) return sign;
  const int lead = 63 - std::countl_zero(sig) + e;  // exponent of the leading bit
  if (lead > EMAX) return detail::overflow(r, sign, max_finite, inf);
  const int shift = (lead < EMIN ? EMIN : lead) - MANT - e;  // bits below the result's last
  std::uint64_t kept;
  bool above = false, tie = false, inexact = false;
  if (shift <= 0) {
    kept = sig << -shift;
  } else if (shift >= 64) {
    kept = 0, inexact = true;  // below half of the smallest subnormal
  } else {
    kept = sig >> shift;
    const std::uint64_t rem = sig & ((std::uint64_t(1) << shift) - 1);
    const std::uint64_t half_unit = std::uint64_t(1) << (shift - 1);
    above = rem > half_unit, tie = rem == half_unit, inexact = rem != 0;
  }
  // kept < 2^(MANT+1); for a normal result its top bit is the implicit one, which the addition
  // below carries into the exponent field (a subnormal result has kept < 2^MANT).
  std::uint32_t bits = std::uint32_t(kept) + (lead < EMIN ? 0u : std::uint32_t(lead - EMIN) << MANT);
  if (detail::round_up(r, sign != 0, bits, above, tie, inexact)) ++bits;  // may carry to inf
  if (bits >= inf) return detail::overflow(r, sign, max_finite, inf);
  return std::uint16_t(sign | bits);
}

template <int MANT, int EMIN, int EMAX>
constexpr std::uint16_t float_to_bits(float f, Round r) {
  const std::uint32_t x = std::bit_cast<std::uint32_t>(f);
  const std::uint16_t sign = std::uint16_t((x >> 16) & 0x8000u);
  const std::uint32_t a = x & 0x7fffffffu;
  if (a > 0x7f800000u) return 0x7fffu;  // NaN: the canonical one
  if (a == 0x7f800000u) return std::uint16_t(sign | (std::uint32_t(2 * EMAX + 1) << MANT));
  if (a < 0x00800000u) return round_to_bits<MANT, EMIN, EMAX>(sign, a, -149, r);
  return round_to_bits<MANT, EMIN, EMAX>(sign, (a & 0x7fffffu) | 0x800000u, int(a >> 23) - 150, r);
}

template <int MANT, int EMIN, int EMAX>
constexpr std::uint16_t double_to_bits(double d, Round r) {
  const std::uint64_t x = std::bit_cast<std::uint64_t>(d);
  const std::uint16_t sign = std::uint16_t((x >> 48) & 0x8000u);
  const std::uint64_t a = x & 0x7fffffffffffffffull;
  if (a > 0x7ff0000000000000ull) return 0x7fffu;
  if (a == 0x7ff0000000000000ull) return std::uint16_t(sign | (std::uint32_t(2 * EMAX + 1) << MANT));
  if (a < 0x0010000000000000ull) return round_to_bits<MANT, EMIN, EMAX>(sign, a, -1074, r);
  return round_to_bits<MANT, EMIN, EMAX>(sign, (a & 0xfffffffffffffull) | 0x10000000000000ull, int(a >> 52) - 1075, r);
}

template <int MANT, int EMIN, int EMAX, class I>
constexpr std::uint16_t int_to_bits(I v, Round r) {
  if constexpr (I(-1) < I(0)) {
    if (v < 0) return round_to_bits<MANT, EMIN, EMAX>(0x8000u, std::uint64_t(0) - std::uint64_t(v), 0, r);
  }
  return round_to_bits<MANT, EMIN, EMAX>(0, std::uint64_t(v), 0, r);
}

constexpr std::uint16_t float_to_f16_bits(float f, Round r) { return float_to_bits<10, -14, 15>(f, r); }
constexpr std::uint16_t float_to_bf16_bits(float f, Round r) { return float_to_bits<7, -126, 127>(f, r); }
constexpr std::uint16_t double_to_f16_bits(double d) { return double_to_bits<10, -14, 15>(d, Round::rn); }
constexpr std::uint16_t double_to_bf16_bits(double d) { return double_to_bits<7, -126, 127>(d, Round::rn); }
template <class I> constexpr std::uint16_t int_to_f16_bits(I v) { return int_to_bits<10, -14, 15>(v, Round::rn); }
template <class I> constexpr std::uint16_t int_to_bf16_bits(I v) { return int_to_bits<7, -126, 127>(v, Round::rn); }

constexpr float f16_bits_to_float(std::uint16_t h) {
  const std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16;
  const std::uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0x1f) return std::bit_cast<float>(m ? 0x7fffffffu : sign | 0x7f800000u);  // NaN: canonical
  if (e != 0) return std::bit_cast<float>(sign | ((e + 112u) << 23) | (m << 13));
  // subnormal or zero: m * 2^-24, exact in float
  const float v = float(m) * 5.9604644775390625e-08f;
  return sign ? -v : v;
}

constexpr float bf16_bits_to_float(std::uint16_t b) { return std::bit_cast<float>(std::uint32_t(b) << 16); }

// Integers: CUDA's host code converts through float and saturates; NaN gives 0, or 2^63 for
// the 64-bit types (as PTX's cvt does).
template <class I> constexpr I float_to_int_rz(float f, bool nan) {
  if (nan) return sizeof(I) == 8 ? I(std::uint64_t(1) << 63) : I(0);
  constexpr I lo = I(0) < I(-1) ? I(0) : I(I(1) << (sizeof(I) * 8 - 1));
  constexpr I hi = I(~lo);
  if (f >= float(hi)) return hi;  // float(hi) rounds up to 2^k, which is out of range
  if (f <= float(lo)) return lo;
  return I(f);
}

// ---- the 16-bit types ----------------------------------------------------------------------
struct __half_raw { unsigned short x; };
struct __half2_raw { unsigned short x, y; };
struct __nv_bfloat16_raw { unsigned short x; };
struct __nv_bfloat162_raw { unsigned short x, y; };
struct __nv_bfloat16;

#define CUDASIM_16BIT_TYPE(T, Raw, from_float, from_double, from_int, to_float, is_nan_bits)      \
  struct alignas(2) T {                                                                          \
   protected:                                                                                    \
    unsigned short __x;                                                                          \
                                                                                                 \
   public:                                                                                       \
    using raw_type = Raw;                                                                        \
    T() = default;                                                                               \
    constexpr T(const Raw& r) : __x(r.x) {}                                                      \
    T& operator=(const Raw& r) { __x = r.x; return *this; }                                      \
    constexpr operator Raw() const { return Raw{__x}; }                                          \
    constexpr T(float f) : __x(from_float(f, Round::rn)) {}                                      \
    constexpr T(double d) : __x(from_double(d)) {}                                               \
    constexpr T(short v) : __x(from_int(v)) {}                                                   \
    constexpr T(unsigned short v) : __x(from_int(v)) {}                                          \
    constexpr T(int v) : __x(from_int(v)) {}                                                     \
    constexpr T(unsigned int v) : __x(from_int(v)) {}                                            \
    constexpr T(long v) : __x(from_int(v)) {}                                                    \
    constexpr T(unsigned long v) : __x(from_int(v)) {}                                           \
    constexpr T(long long v) : __x(from_int(v)) {}                                               \
    constexpr T(unsigned long long v) : __x(from_int(v)) {}                                      \
    T& operator=(float f) { return *this = T(f); }                                               \
    T& operator=(double d) { return *this = T(d); }                                              \
    T& operator=(short v) { return *this = T(v); }                                               \
    T& operator=(unsigned short v) { return *this = T(v); }                                      \
    T& operator=(int v) { return *this = T(v); }                                                 \
    T& operator=(unsigned int v) { return *this = T(v); }                                        \
    T& operator=(long long v) { return *this = T(v); }                                           \
    T& operator=(unsigned long long v) { return *this = T(v); }                                  \
    constexpr operator float() const { return to_float(__x); }                                  \
    template <class I> constexpr I to_int() const { return float_to_int_rz<I>(to_float(__x), is_nan_bits(__x)); } \
    constexpr operator signed char() const { return to_int<signed char>(); }                     \
    constexpr operator unsigned char() const { return to_int<unsigned char>(); }                 \
    constexpr operator char() const { return char(to_int<std::conditional_t<char(-1) < 0, signed char, unsigned char>>()); } \
    constexpr operator short() const { return to_int<short>(); }                                 \
    constexpr operator unsigned short() const { return to_int<unsigned short>(); }               \
    constexpr operator int() const { return to_int<int>(); }                                     \
    constexpr operator unsigned int() const { return to_int<unsigned int>(); }                   \
    constexpr operator long() const { return to_int<long>(); }                                   \
    constexpr operator unsigned long() const { return to_int<unsigned long>(); }                 \
    constexpr operator long long() const { return to_int<long long>(); }                         \
    constexpr operator unsigned long long() const { return to_int<unsigned long long>(); }

constexpr bool f16_is_nan(unsigned short h) { return (h & 0x7fffu) > 0x7c00u; }
constexpr bool bf16_is_nan(unsigned short b) { return (b & 0x7fffu) > 0x7f80u; }

CUDASIM_16BIT_TYPE(__half, __half_raw, float_to_f16_bits, double_to_f16_bits, int_to_f16_bits, f16_bits_to_float,
                   f16_is_nan)
  explicit __half(const __nv_bfloat16& b);  // through float, as CUDA does
};
CUDASIM_16BIT_TYPE(__nv_bfloat16, __nv_bfloat16_raw, float_to_bf16_bits, double_to_bf16_bits, int_to_bf16_bits,
                   bf16_bits_to_float, bf16_is_nan)
  explicit __nv_bfloat16(const __half& h) : __nv_bfloat16(float(h)) {}
};
#undef CUDASIM_16BIT_TYPE
inline __half::__half(const __nv_bfloat16& b) : __half(float(b)) {}

struct alignas(4) __half2 {
  __half x, y;
  __half2() = default;
  constexpr __half2(const __half& a, const __half& b) : x(a), y(b) {}
  constexpr __half2(const __half2_raw& r) : x(__half_raw{r.x}), y(__half_raw{r.y}) {}
  __half2& operator=(const __half2_raw& r) { return *this = __half2(r); }
  constexpr operator __half2_raw() const { return {__half_raw(x).x, __half_raw(y).x}; }
};
struct alignas(4) __nv_bfloat162 {
  __nv_bfloat16 x, y;
  __nv_bfloat162() = default;
  constexpr __nv_bfloat162(const __nv_bfloat16& a, const __nv_bfloat16& b) : x(a), y(b) {}
  constexpr __nv_bfloat162(const __nv_bfloat162_raw& r) : x(__nv_bfloat16_raw{r.x}), y(__nv_bfloat16_raw{r.y}) {}
  __nv_bfloat162& operator=(const __nv_bfloat162_raw& r) { return *this = __nv_bfloat162(r); }
  constexpr operator __nv_bfloat162_raw() const { return {__nv_bfloat16_raw(x).x, __nv_bfloat16_raw(y).x}; }
};
using half = __half;
using half2 = __half2;
using nv_bfloat16 = __nv_bfloat16;
using nv_bfloat162 = __nv_bfloat162;

constexpr unsigned short bits_of(__half h) { return __half_raw(h).x; }
constexpr unsigned short bits_of(__nv_bfloat16 b) { return __nv_bfloat16_raw(b).x; }

// ---- conversions ---------------------------------------------------------------------------
#define CUDASIM_FROM_FLOAT(T, Raw, name, to_bits)                                               \
  constexpr T name##_rn(float f) { return Raw{to_bits(f, Round::rn)}; }                         \
  constexpr T name##_rz(float f) { return Raw{to_bits(f, Round::rz)}; }                         \
  constexpr T name##_rd(float f) { return Raw{to_bits(f, Round::rd)}; }                         \
  constexpr T name##_ru(float f) { return Raw{to_bits(f, Round::ru)}; }                         \
  constexpr T name(float f) { return Raw{to_bits(f, Round::rn)}; }
CUDASIM_FROM_FLOAT(__half, __half_raw, __float2half, float_to_f16_bits)
CUDASIM_FROM_FLOAT(__nv_bfloat16, __nv_bfloat16_raw, __float2bfloat16, float_to_bf16_bits)
#undef CUDASIM_FROM_FLOAT
constexpr __half __double2half(double d) { return __half_raw{double_to_f16_bits(d)}; }
constexpr __nv_bfloat16 __double2bfloat16(double d) { return __nv_bfloat16_raw{double_to_bf16_bits(d)}; }
constexpr float __half2float(__half h) { return f16_bits_to_float(bits_of(h)); }
constexpr float __bfloat162float(__nv_bfloat16 b) { return bf16_bits_to_float(bits_of(b)); }

// integers -> 16 bits, rounded once
#define CUDASIM_INT2(T, prefix, I, name) \
  constexpr T name(I v) { return T(v); }
CUDASIM_INT2(__half, h, int, __int2half_rn)
CUDASIM_INT2(__half, h, unsigned int, __uint2half_rn)
CUDASIM_INT2(__half, h, short, __short2half_rn)
CUDASIM_INT2(__half, h, unsigned short, __ushort2half_rn)
CUDASIM_INT2(__half, h, long long, __ll2half_rn)
CUDASIM_INT2(__half, h, unsigned long long, __ull2half_rn)
CUDASIM_INT2(__nv_bfloat16, b, int, __int2bfloat16_rn)
CUDASIM_INT2(__nv_bfloat16, b, unsigned int, __uint2bfloat16_rn)
CUDASIM_INT2(__nv_bfloat16, b, short, __short2bfloat16_rn)
CUDASIM_INT2(__nv_bfloat16, b, unsigned short, __ushort2bfloat16_rn)
CUDASIM_INT2(__nv_bfloat16, b, long long, __ll2bfloat16_rn)
CUDASIM_INT2(__nv_bfloat16, b, unsigned long long, __ull2bfloat16_rn)
#undef CUDASIM_INT2
// 16 bits -> integers, toward zero, saturating, NaN -> 0
#define CUDASIM_2INT(T, I, name) \
  constexpr I name(T h) { return h.template to_int<I>(); }
CUDASIM_2INT(__half, int, __half2int_rz)
CUDASIM_2INT(__half, unsigned int, __half2uint_rz)
CUDASIM_2INT(__half, short, __half2short_rz)
CUDASIM_2INT(__half, unsigned short, __half2ushort_rz)
CUDASIM_2INT(__half, long long, __half2ll_rz)
CUDASIM_2INT(__half, unsigned long long, __half2ull_rz)
CUDASIM_2INT(__half, signed char, __half2char_rz)
CUDASIM_2INT(__half, unsigned char, __half2uchar_rz)
CUDASIM_2INT(__nv_bfloat16, int, __bfloat162int_rz)
CUDASIM_2INT(__nv_bfloat16, unsigned int, __bfloat162uint_rz)
CUDASIM_2INT(__nv_bfloat16, short, __bfloat162short_rz)
CUDASIM_2INT(__nv_bfloat16, unsigned short, __bfloat162ushort_rz)
CUDASIM_2INT(__nv_bfloat16, long long, __bfloat162ll_rz)
CUDASIM_2INT(__nv_bfloat16, unsigned long long, __bfloat162ull_rz)
CUDASIM_2INT(__nv_bfloat16, signed char, __bfloat162char_rz)
CUDASIM_2INT(__nv_bfloat16, unsigned char, __bfloat162uchar_rz)
#undef CUDASIM_2INT

// reinterpretation
constexpr short __half_as_short(__half h) { return short(bits_of(h)); }
constexpr unsigned short __half_as_ushort(__half h) { return bits_of(h); }
constexpr __half __short_as_half(short s) { return __half_raw{(unsigned short)s}; }
constexpr __half __ushort_as_half(unsigned short s) { return __half_raw{s}; }
constexpr short __bfloat16_as_short(__nv_bfloat16 b) { return short(bits_of(b)); }
constexpr unsigned short __bfloat16_as_ushort(__nv_bfloat16 b) { return bits_of(b); }
constexpr __nv_bfloat16 __short_as_bfloat16(short s) { return __nv_bfloat16_raw{(unsigned short)s}; }
constexpr __nv_bfloat16 __ushort_as_bfloat16(unsigned short s) { return __nv_bfloat16_raw{s}; }

// pairs
constexpr __half2 __halves2half2(__half a, __half b) { return {a, b}; }
constexpr __half2 make_half2(__half a, __half b) { return {a, b}; }
constexpr __half2 __half2half2(__half a) { return {a, a}; }
constexpr __half __low2half(__half2 v) { return v.x; }
constexpr __half __high2half(__half2 v) { return v.y; }
constexpr __half2 __low2half2(__half2 v) { return {v.x, v.x}; }
constexpr __half2 __high2half2(__half2 v) { return {v.y, v.y}; }
constexpr __half2 __lowhigh2highlow(__half2 v) { return {v.y, v.x}; }
constexpr __half2 __lows2half2(__half2 a, __half2 b) { return {a.x, b.x}; }
constexpr __half2 __highs2half2(__half2 a, __half2 b) { return {a.y, b.y}; }
constexpr float __low2float(__half2 v) { return __half2float(v.x); }
constexpr float __high2float(__half2 v) { return __half2float(v.y); }
constexpr __half2 __float2half2_rn(float f) { return {__float2half_rn(f), __float2half_rn(f)}; }
constexpr __half2 __floats2half2_rn(float a, float b) { return {__float2half_rn(a), __float2half_rn(b)}; }
constexpr __half2 __float22half2_rn(float2 v) { return {__float2half_rn(v.x), __float2half_rn(v.y)}; }
constexpr float2 __half22float2(__half2 v) { return {__half2float(v.x), __half2float(v.y)}; }
constexpr __nv_bfloat162 __halves2bfloat162(__nv_bfloat16 a, __nv_bfloat16 b) { return {a, b}; }
constexpr __nv_bfloat162 make_bfloat162(__nv_bfloat16 a, __nv_bfloat16 b) { return {a, b}; }
constexpr __nv_bfloat162 __bfloat162bfloat162(__nv_bfloat16 a) { return {a, a}; }
constexpr __nv_bfloat16 __low2bfloat16(__nv_bfloat162 v) { return v.x; }
constexpr __nv_bfloat16 __high2bfloat16(__nv_bfloat162 v) { return v.y; }
constexpr __nv_bfloat162 __low2bfloat162(__nv_bfloat162 v) { return {v.x, v.x}; }
constexpr __nv_bfloat162 __high2bfloat162(__nv_bfloat162 v) { return {v.y, v.y}; }
constexpr __nv_bfloat162 __lowhigh2highlow(__nv_bfloat162 v) { return {v.y, v.x}; }
constexpr __nv_bfloat162 __lows2bfloat162(__nv_bfloat162 a, __nv_bfloat162 b) { return {a.x, b.x}; }
constexpr __nv_bfloat162 __highs2bfloat162(__nv_bfloat162 a, __nv_bfloat162 b) { return {a.y, b.y}; }
constexpr float __low2float(__nv_bfloat162 v) { return __bfloat162float(v.x); }
constexpr float __high2float(__nv_bfloat162 v) { return __bfloat162float(v.y); }
constexpr __nv_bfloat162 __float2bfloat162_rn(float f) { return {__float2bfloat16_rn(f), __float2bfloat16_rn(f)}; }
constexpr __nv_bfloat162 __floats2bfloat162_rn(float a, float b) { return {__float2bfloat16_rn(a), __float2bfloat16_rn(b)}; }
constexpr __nv_bfloat162 __float22bfloat162_rn(float2 v) { return {__float2bfloat16_rn(v.x), __float2bfloat16_rn(v.y)}; }
constexpr float2 __bfloat1622float2(__nv_bfloat162 v) { return {__bfloat162float(v.x), __bfloat162float(v.y)}; }

// ---- arithmetic, comparisons, classification (CUDA's host code: in float, then rounded) ----
#define CUDASIM_16BIT_MATH(T, P, to_f, from_f, NAN_BITS, INF_BITS, ZERO_ORDER_NAN)                              \
  constexpr bool __hisnan(T a) { return (bits_of(a) & 0x7fffu) > INF_BITS; }                     \
  constexpr int __hisinf(T a) {                                                                   \
    return (bits_of(a) & 0x7fffu) == INF_BITS ? ((bits_of(a) & 0x8000u) ? -1 : 1) : 0;             \
  }                                                                                               \
  constexpr T __hadd(T a, T b) { return from_f(to_f(a) + to_f(b)); }                              \
  constexpr T __hsub(T a, T b) { return from_f(to_f(a) - to_f(b)); }                              \
  constexpr T __hmul(T a, T b) { return from_f(to_f(a) * to_f(b)); }                              \
  constexpr T __hdiv(T a, T b) { return from_f(to_f(a) / to_f(b)); }                              \
  constexpr T __hneg(T a) { return from_f(-to_f(a)); }                                            \
  constexpr T __habs(T a) {                                                                       \
    const unsigned short m = bits_of(a) & 0x7fffu;                                                \
    return T::raw_type{m > INF_BITS ? (unsigned short)NAN_BITS : m};                              \
  }                                                                                               \
  constexpr bool __heq(T a, T b) { return to_f(a) == to_f(b); }                                   \
  constexpr bool __hne(T a, T b) { return to_f(a) != to_f(b) && !__hisnan(a) && !__hisnan(b); }   \
  constexpr bool __hlt(T a, T b) { return to_f(a) < to_f(b); }                                    \
  constexpr bool __hle(T a, T b) { return to_f(a) <= to_f(b); }                                   \
  constexpr bool __hgt(T a, T b) { return to_f(a) > to_f(b); }                                    \
  constexpr bool __hge(T a, T b) { return to_f(a) >= to_f(b); }                                   \
  constexpr bool __hequ(T a, T b) { return to_f(a) == to_f(b) || __hisnan(a) || __hisnan(b); }    \
  constexpr bool __hneu(T a, T b) { return to_f(a) != to_f(b); }                                  \
  constexpr bool __hltu(T a, T b) { return to_f(a) < to_f(b) || __hisnan(a) || __hisnan(b); }     \
  constexpr bool __hleu(T a, T b) { return to_f(a) <= to_f(b) || __hisnan(a) || __hisnan(b); }    \
  constexpr bool __hgtu(T a, T b) { return to_f(a) > to_f(b) || __hisnan(a) || __hisnan(b); }     \
  constexpr bool __hgeu(T a, T b) { return to_f(a) >= to_f(b) || __hisnan(a) || __hisnan(b); }    \
  /* max/min: a NaN operand loses, two NaNs give the canonical NaN; _nan: a NaN wins */           \
  constexpr T __hmax(T a, T b) {                                                                  \
    const T r = (__hge(a, b) || __hisnan(b)) ? a : b;                                             \
    if (__hisnan(r)) return T::raw_type{(unsigned short)NAN_BITS};                                \
    if (__heq(a, b)) return (bits_of(a) & 0x8000u) ? b : a; /* +0 over -0 */                      \
    return r;                                                                                     \
  }                                                                                               \
  constexpr T __hmin(T a, T b) {                                                                  \
    const T r = (__hle(a, b) || __hisnan(b)) ? a : b;                                             \
    if (__hisnan(r)) return T::raw_type{(unsigned short)NAN_BITS};                                \
    if (__heq(a, b)) return (bits_of(a) & 0x8000u) ? a : b; /* -0 under +0 */                     \
    return r;                                                                                     \
  }                                                                                               \
  /* (CUDA orders +0 over -0 here for __half, not for __nv_bfloat16: ZERO_ORDER_NAN says) */     \
  constexpr T __hmax_nan(T a, T b) {                                                              \
    if (__hisnan(a) || __hisnan(b)) return T::raw_type{(unsigned short)NAN_BITS};                 \
    return ZERO_ORDER_NAN ? __hmax(a, b) : (__hge(a, b) ? a : b);                                 \
  }                                                                                               \
  constexpr T __hmin_nan(T a, T b) {                                                              \
    if (__hisnan(a) || __hisnan(b)) return T::raw_type{(unsigned short)NAN_BITS};                 \
    return ZERO_ORDER_NAN ? __hmin(a, b) : (__hle(a, b) ? a : b);                                 \
  }                                                                                               \
  constexpr T operator+(const T& a, const T& b) { return __hadd(a, b); }                          \
  constexpr T operator-(const T& a, const T& b) { return __hsub(a, b); }                          \
  constexpr T operator*(const T& a, const T& b) { return __hmul(a, b); }                          \
  constexpr T operator/(const T& a, const T& b) { return __hdiv(a, b); }                          \
  inline T& operator+=(T& a, const T& b) { return a = __hadd(a, b); }                             \
  inline T& operator-=(T& a, const T& b) { return a = __hsub(a, b); }                             \
  inline T& operator*=(T& a, const T& b) { return a = __hmul(a, b); }                             \
  inline T& operator/=(T& a, const T& b) { return a = __hdiv(a, b); }                             \
  inline T& operator++(T& a) { return a = __hadd(a, T(1.0f)); }                                   \
  inline T& operator--(T& a) { return a = __hsub(a, T(1.0f)); }                                   \
  inline T operator++(T& a, int) { const T old = a; ++a; return old; }                            \
  inline T operator--(T& a, int) { const T old = a; --a; return old; }                            \
  constexpr T operator+(const T& a) { return a; }                                                 \
  constexpr T operator-(const T& a) { return __hneg(a); }                                         \
  constexpr bool operator==(const T& a, const T& b) { return __heq(a, b); }                       \
  constexpr bool operator!=(const T& a, const T& b) { return __hneu(a, b); }                      \
  constexpr bool operator<(const T& a, const T& b) { return __hlt(a, b); }                        \
  constexpr bool operator<=(const T& a, const T& b) { return __hle(a, b); }                       \
  constexpr bool operator>(const T& a, const T& b) { return __hgt(a, b); }                        \
  constexpr bool operator>=(const T& a, const T& b) { return __hge(a, b); }                       \
  /* pairs: lane by lane */                                                                       \
  constexpr P __hadd2(P a, P b) { return {__hadd(a.x, b.x), __hadd(a.y, b.y)}; }                 \
  constexpr P __hsub2(P a, P b) { return {__hsub(a.x, b.x), __hsub(a.y, b.y)}; }                 \
  constexpr P __hmul2(P a, P b) { return {__hmul(a.x, b.x), __hmul(a.y, b.y)}; }                 \
  constexpr P __h2div(P a, P b) { return {__hdiv(a.x, b.x), __hdiv(a.y, b.y)}; }                 \
  constexpr P __hneg2(P a) { return {__hneg(a.x), __hneg(a.y)}; }                                 \
  constexpr P __habs2(P a) { return {__habs(a.x), __habs(a.y)}; }                                 \
  constexpr P __hmax2(P a, P b) { return {__hmax(a.x, b.x), __hmax(a.y, b.y)}; }                 \
  constexpr P __hmin2(P a, P b) { return {__hmin(a.x, b.x), __hmin(a.y, b.y)}; }                 \
  constexpr bool __hbeq2(P a, P b) { return __heq(a.x, b.x) && __heq(a.y, b.y); }                \
  constexpr bool __hbneu2(P a, P b) { return __hneu(a.x, b.x) && __hneu(a.y, b.y); }             \
  constexpr bool __hblt2(P a, P b) { return __hlt(a.x, b.x) && __hlt(a.y, b.y); }                \
  constexpr bool __hble2(P a, P b) { return __hle(a.x, b.x) && __hle(a.y, b.y); }                \
  constexpr bool __hbgt2(P a, P b) { return __hgt(a.x, b.x) && __hgt(a.y, b.y); }                \
  constexpr bool __hbge2(P a, P b) { return __hge(a.x, b.x) && __hge(a.y, b.y); }                \
  constexpr P operator+(const P& a, const P& b) { return __hadd2(a, b); }                         \
  constexpr P operator-(const P& a, const P& b) { return __hsub2(a, b); }                         \
  constexpr P operator*(const P& a, const P& b) { return __hmul2(a, b); }                         \
  constexpr P operator/(const P& a, const P& b) { return __h2div(a, b); }                         \
  inline P& operator+=(P& a, const P& b) { return a = __hadd2(a, b); }                            \
  inline P& operator-=(P& a, const P& b) { return a = __hsub2(a, b); }                            \
  inline P& operator*=(P& a, const P& b) { return a = __hmul2(a, b); }                            \
  inline P& operator/=(P& a, const P& b) { return a = __h2div(a, b); }                            \
  constexpr P operator+(const P& a) { return a; }                                                 \
  constexpr P operator-(const P& a) { return __hneg2(a); }                                        \
  constexpr bool operator==(const P& a, const P& b) { return __hbeq2(a, b); }                     \
  constexpr bool operator!=(const P& a, const P& b) { return __hbneu2(a, b); }                    \
  constexpr bool operator<(const P& a, const P& b) { return __hblt2(a, b); }                      \
  constexpr bool operator<=(const P& a, const P& b) { return __hble2(a, b); }                     \
  constexpr bool operator>(const P& a, const P& b) { return __hbgt2(a, b); }                      \
  constexpr bool operator>=(const P& a, const P& b) { return __hbge2(a, b); }
CUDASIM_16BIT_MATH(__half, __half2, __half2float, __float2half, 0x7fffu, 0x7c00u, true)
CUDASIM_16BIT_MATH(__nv_bfloat16, __nv_bfloat162, __bfloat162float, __float2bfloat16, 0x7fffu, 0x7f80u, false)
#undef CUDASIM_16BIT_MATH

}  // namespace cudasim::types

// The global names CUDA's headers declare (left out with CUDASIM_TYPES_NO_GLOBAL_NAMES, for a
// program that includes CUDA's own headers beside this one, as tests/sim/fp16_tests.cu does).
#ifndef CUDASIM_TYPES_NO_GLOBAL_NAMES
#define CUDASIM_TYPES_USING(...) using cudasim::types::__VA_ARGS__;
CUDASIM_TYPES_USING(char1) CUDASIM_TYPES_USING(char2) CUDASIM_TYPES_USING(char3) CUDASIM_TYPES_USING(char4)
CUDASIM_TYPES_USING(uchar1) CUDASIM_TYPES_USING(uchar2) CUDASIM_TYPES_USING(uchar3) CUDASIM_TYPES_USING(uchar4)
CUDASIM_TYPES_USING(short1) CUDASIM_TYPES_USING(short2) CUDASIM_TYPES_USING(short3) CUDASIM_TYPES_USING(short4)
CUDASIM_TYPES_USING(ushort1) CUDASIM_TYPES_USING(ushort2) CUDASIM_TYPES_USING(ushort3) CUDASIM_TYPES_USING(ushort4)
CUDASIM_TYPES_USING(int1) CUDASIM_TYPES_USING(int2) CUDASIM_TYPES_USING(int3) CUDASIM_TYPES_USING(int4)
CUDASIM_TYPES_USING(uint1) CUDASIM_TYPES_USING(uint2) CUDASIM_TYPES_USING(uint3) CUDASIM_TYPES_USING(uint4)
CUDASIM_TYPES_USING(long1) CUDASIM_TYPES_USING(long2) CUDASIM_TYPES_USING(long3) CUDASIM_TYPES_USING(long4)
CUDASIM_TYPES_USING(ulong1) CUDASIM_TYPES_USING(ulong2) CUDASIM_TYPES_USING(ulong3) CUDASIM_TYPES_USING(ulong4)
CUDASIM_TYPES_USING(longlong1) CUDASIM_TYPES_USING(longlong2) CUDASIM_TYPES_USING(longlong3) CUDASIM_TYPES_USING(longlong4)
CUDASIM_TYPES_USING(ulonglong1) CUDASIM_TYPES_USING(ulonglong2) CUDASIM_TYPES_USING(ulonglong3) CUDASIM_TYPES_USING(ulonglong4)
CUDASIM_TYPES_USING(float1) CUDASIM_TYPES_USING(float2) CUDASIM_TYPES_USING(float3) CUDASIM_TYPES_USING(float4)
CUDASIM_TYPES_USING(double1) CUDASIM_TYPES_USING(double2) CUDASIM_TYPES_USING(double3) CUDASIM_TYPES_USING(double4)
CUDASIM_TYPES_USING(dim3) CUDASIM_TYPES_USING(cudaStream_t)
CUDASIM_TYPES_USING(make_char1) CUDASIM_TYPES_USING(make_char2) CUDASIM_TYPES_USING(make_char3) CUDASIM_TYPES_USING(make_char4)
CUDASIM_TYPES_USING(make_uchar1) CUDASIM_TYPES_USING(make_uchar2) CUDASIM_TYPES_USING(make_uchar3) CUDASIM_TYPES_USING(make_uchar4)
CUDASIM_TYPES_USING(make_short1) CUDASIM_TYPES_USING(make_short2) CUDASIM_TYPES_USING(make_short3) CUDASIM_TYPES_USING(make_short4)
CUDASIM_TYPES_USING(make_ushort1) CUDASIM_TYPES_USING(make_ushort2) CUDASIM_TYPES_USING(make_ushort3) CUDASIM_TYPES_USING(make_ushort4)
CUDASIM_TYPES_USING(make_int1) CUDASIM_TYPES_USING(make_int2) CUDASIM_TYPES_USING(make_int3) CUDASIM_TYPES_USING(make_int4)
CUDASIM_TYPES_USING(make_uint1) CUDASIM_TYPES_USING(make_uint2) CUDASIM_TYPES_USING(make_uint3) CUDASIM_TYPES_USING(make_uint4)
CUDASIM_TYPES_USING(make_long1) CUDASIM_TYPES_USING(make_long2) CUDASIM_TYPES_USING(make_long3) CUDASIM_TYPES_USING(make_long4)
CUDASIM_TYPES_USING(make_ulong1) CUDASIM_TYPES_USING(make_ulong2) CUDASIM_TYPES_USING(make_ulong3) CUDASIM_TYPES_USING(make_ulong4)
CUDASIM_TYPES_USING(make_longlong1) CUDASIM_TYPES_USING(make_longlong2) CUDASIM_TYPES_USING(make_longlong3) CUDASIM_TYPES_USING(make_longlong4)
CUDASIM_TYPES_USING(make_ulonglong1) CUDASIM_TYPES_USING(make_ulonglong2) CUDASIM_TYPES_USING(make_ulonglong3) CUDASIM_TYPES_USING(make_ulonglong4)
CUDASIM_TYPES_USING(make_float1) CUDASIM_TYPES_USING(make_float2) CUDASIM_TYPES_USING(make_float3) CUDASIM_TYPES_USING(make_float4)
CUDASIM_TYPES_USING(make_double1) CUDASIM_TYPES_USING(make_double2) CUDASIM_TYPES_USING(make_double3) CUDASIM_TYPES_USING(make_double4)
CUDASIM_TYPES_USING(__half_raw) CUDASIM_TYPES_USING(__half2_raw) CUDASIM_TYPES_USING(__nv_bfloat16_raw)
CUDASIM_TYPES_USING(__nv_bfloat162_raw) CUDASIM_TYPES_USING(__half) CUDASIM_TYPES_USING(__half2)
CUDASIM_TYPES_USING(__nv_bfloat16) CUDASIM_TYPES_USING(__nv_bfloat162) CUDASIM_TYPES_USING(half)
CUDASIM_TYPES_USING(half2) CUDASIM_TYPES_USING(nv_bfloat16) CUDASIM_TYPES_USING(nv_bfloat162)
CUDASIM_TYPES_USING(__float2half) CUDASIM_TYPES_USING(__float2half_rn) CUDASIM_TYPES_USING(__float2half_rz)
CUDASIM_TYPES_USING(__float2half_rd) CUDASIM_TYPES_USING(__float2half_ru) CUDASIM_TYPES_USING(__double2half)
CUDASIM_TYPES_USING(__half2float) CUDASIM_TYPES_USING(__float2bfloat16) CUDASIM_TYPES_USING(__float2bfloat16_rn)
CUDASIM_TYPES_USING(__float2bfloat16_rz) CUDASIM_TYPES_USING(__float2bfloat16_rd)
CUDASIM_TYPES_USING(__float2bfloat16_ru) CUDASIM_TYPES_USING(__double2bfloat16)
CUDASIM_TYPES_USING(__bfloat162float)
CUDASIM_TYPES_USING(__int2half_rn) CUDASIM_TYPES_USING(__uint2half_rn) CUDASIM_TYPES_USING(__short2half_rn)
CUDASIM_TYPES_USING(__ushort2half_rn) CUDASIM_TYPES_USING(__ll2half_rn) CUDASIM_TYPES_USING(__ull2half_rn)
CUDASIM_TYPES_USING(__int2bfloat16_rn) CUDASIM_TYPES_USING(__uint2bfloat16_rn)
CUDASIM_TYPES_USING(__short2bfloat16_rn) CUDASIM_TYPES_USING(__ushort2bfloat16_rn)
CUDASIM_TYPES_USING(__ll2bfloat16_rn) CUDASIM_TYPES_USING(__ull2bfloat16_rn)
CUDASIM_TYPES_USING(__half2int_rz) CUDASIM_TYPES_USING(__half2uint_rz) CUDASIM_TYPES_USING(__half2short_rz)
CUDASIM_TYPES_USING(__half2ushort_rz) CUDASIM_TYPES_USING(__half2ll_rz) CUDASIM_TYPES_USING(__half2ull_rz)
CUDASIM_TYPES_USING(__half2char_rz) CUDASIM_TYPES_USING(__half2uchar_rz)
CUDASIM_TYPES_USING(__bfloat162int_rz) CUDASIM_TYPES_USING(__bfloat162uint_rz)
CUDASIM_TYPES_USING(__bfloat162short_rz) CUDASIM_TYPES_USING(__bfloat162ushort_rz)
CUDASIM_TYPES_USING(__bfloat162ll_rz) CUDASIM_TYPES_USING(__bfloat162ull_rz)
CUDASIM_TYPES_USING(__bfloat162char_rz) CUDASIM_TYPES_USING(__bfloat162uchar_rz)
CUDASIM_TYPES_USING(__half_as_short) CUDASIM_TYPES_USING(__half_as_ushort) CUDASIM_TYPES_USING(__short_as_half)
CUDASIM_TYPES_USING(__ushort_as_half) CUDASIM_TYPES_USING(__bfloat16_as_short)
CUDASIM_TYPES_USING(__bfloat16_as_ushort) CUDASIM_TYPES_USING(__short_as_bfloat16)
CUDASIM_TYPES_USING(__ushort_as_bfloat16)
CUDASIM_TYPES_USING(__halves2half2) CUDASIM_TYPES_USING(make_half2) CUDASIM_TYPES_USING(__half2half2)
CUDASIM_TYPES_USING(__low2half) CUDASIM_TYPES_USING(__high2half) CUDASIM_TYPES_USING(__low2half2)
CUDASIM_TYPES_USING(__high2half2) CUDASIM_TYPES_USING(__lowhigh2highlow) CUDASIM_TYPES_USING(__lows2half2)
CUDASIM_TYPES_USING(__highs2half2) CUDASIM_TYPES_USING(__low2float) CUDASIM_TYPES_USING(__high2float)
CUDASIM_TYPES_USING(__float2half2_rn) CUDASIM_TYPES_USING(__floats2half2_rn) CUDASIM_TYPES_USING(__float22half2_rn)
CUDASIM_TYPES_USING(__half22float2) CUDASIM_TYPES_USING(__halves2bfloat162) CUDASIM_TYPES_USING(make_bfloat162)
CUDASIM_TYPES_USING(__bfloat162bfloat162) CUDASIM_TYPES_USING(__low2bfloat16) CUDASIM_TYPES_USING(__high2bfloat16)
CUDASIM_TYPES_USING(__low2bfloat162) CUDASIM_TYPES_USING(__high2bfloat162) CUDASIM_TYPES_USING(__lows2bfloat162)
CUDASIM_TYPES_USING(__highs2bfloat162) CUDASIM_TYPES_USING(__float2bfloat162_rn)
CUDASIM_TYPES_USING(__floats2bfloat162_rn) CUDASIM_TYPES_USING(__float22bfloat162_rn)
CUDASIM_TYPES_USING(__bfloat1622float2)
CUDASIM_TYPES_USING(__hisnan) CUDASIM_TYPES_USING(__hisinf) CUDASIM_TYPES_USING(__hadd) CUDASIM_TYPES_USING(__hsub)
CUDASIM_TYPES_USING(__hmul) CUDASIM_TYPES_USING(__hdiv) CUDASIM_TYPES_USING(__hneg) CUDASIM_TYPES_USING(__habs)
CUDASIM_TYPES_USING(__heq) CUDASIM_TYPES_USING(__hne) CUDASIM_TYPES_USING(__hlt) CUDASIM_TYPES_USING(__hle)
CUDASIM_TYPES_USING(__hgt) CUDASIM_TYPES_USING(__hge) CUDASIM_TYPES_USING(__hequ) CUDASIM_TYPES_USING(__hneu)
CUDASIM_TYPES_USING(__hltu) CUDASIM_TYPES_USING(__hleu) CUDASIM_TYPES_USING(__hgtu) CUDASIM_TYPES_USING(__hgeu)
CUDASIM_TYPES_USING(__hmax) CUDASIM_TYPES_USING(__hmin) CUDASIM_TYPES_USING(__hmax_nan) CUDASIM_TYPES_USING(__hmin_nan)
CUDASIM_TYPES_USING(__hadd2) CUDASIM_TYPES_USING(__hsub2) CUDASIM_TYPES_USING(__hmul2) CUDASIM_TYPES_USING(__h2div)
CUDASIM_TYPES_USING(__hneg2) CUDASIM_TYPES_USING(__habs2) CUDASIM_TYPES_USING(__hmax2) CUDASIM_TYPES_USING(__hmin2)
CUDASIM_TYPES_USING(__hbeq2) CUDASIM_TYPES_USING(__hbneu2) CUDASIM_TYPES_USING(__hblt2) CUDASIM_TYPES_USING(__hble2)
CUDASIM_TYPES_USING(__hbgt2) CUDASIM_TYPES_USING(__hbge2)
#undef CUDASIM_TYPES_USING
#endif  // CUDASIM_TYPES_NO_GLOBAL_NAMES
