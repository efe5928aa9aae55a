// The simulator's 16-bit floats (csrc/sim/cuda_types.h) against CUDA's own host code
// (cuda_fp16.h, cuda_bf16.h), bit for bit: every conversion in every rounding mode, the
// arithmetic, comparisons, min/max and classification, the constructors and conversion
// operators. Exhaustive where the input is 16 bits; over every rounding boundary (each 16-bit
// value's neighbourhood and midpoints) plus an even sweep of the rest where it is wider.
// Built by tests/sim/run.sh only where CUDA's headers exist:
//   g++ -std=c++20 -O2 -isystem <cuda>/include -Icsrc -x c++ tests/sim/fp16_tests.cu
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#define CUDASIM_TYPES_NO_GLOBAL_NAMES
#include "sim/cuda_types.h"

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <vector>

namespace sim = cudasim::types;

namespace {

long long g_checks = 0, g_failures = 0;

template <class A, class B>
void expect_same(const char* what, const A& ours, const B& theirs, double input, const char* input_kind = "") {
  ++g_checks;
  std::uint64_t a = 0, b = 0;
  static_assert(sizeof(A) == sizeof(B) && sizeof(A) <= 8);
  std::memcpy(&a, &ours, sizeof(A));
  std::memcpy(&b, &theirs, sizeof(B));
  if (a != b) {
    if (++g_failures <= 20)
      std::printf("FAIL %s(%s%.17g): ours 0x%llx, CUDA 0x%llx\n", what, input_kind, input, (unsigned long long)a,
                  (unsigned long long)b);
  }
}

std::uint16_t bits(__half h) { return __half_raw(h).x; }
std::uint16_t bits(__nv_bfloat16 h) { return __nv_bfloat16_raw(h).x; }
std::uint16_t bits(sim::__half h) { return sim::__half_raw(h).x; }
std::uint16_t bits(sim::__nv_bfloat16 h) { return sim::__nv_bfloat16_raw(h).x; }
__half cuda_half(std::uint16_t b) { return __half_raw{b}; }
__nv_bfloat16 cuda_bf16(std::uint16_t b) { return __nv_bfloat16_raw{b}; }
sim::__half sim_half(std::uint16_t b) { return sim::__half_raw{b}; }
sim::__nv_bfloat16 sim_bf16(std::uint16_t b) { return sim::__nv_bfloat16_raw{b}; }

struct Lcg {
  std::uint64_t s = 0x9e3779b97f4a7c15ull;
  std::uint64_t next() {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    return s ^ (s >> 29);
  }
};

// floats whose conversion to 16 bits rounds differently: every upper half with low halves at
// the rounding boundaries of both formats, and an even sweep of all 2^32 bit patterns
std::vector<float> float_inputs() {
  static const std::uint32_t lows[] = {0x0000, 0x0001, 0x0fff, 0x1000, 0x1001, 0x1fff, 0x2000, 0x3000,
                                       0x7fff, 0x8000, 0x8001, 0xefff, 0xf000, 0xf001, 0xffff};
  std::vector<float> v;
  for (std::uint32_t hi = 0; hi < 0x10000u; ++hi)
    for (std::uint32_t lo : lows) v.push_back(std::bit_cast<float>((hi << 16) | lo));
  for (std::uint64_t x = 0; x < (1ull << 32); x += 251) v.push_back(std::bit_cast<float>(std::uint32_t(x)));
  return v;
}

// doubles at and around every 16-bit value and every midpoint between neighbours
template <class ToDouble>
std::vector<double> double_inputs(ToDouble value_of) {
  std::vector<double> v;
  Lcg rng;
  for (std::uint32_t b = 0; b < 0x10000u; ++b) {
    const double x = value_of(std::uint16_t(b)), y = value_of(std::uint16_t(b + 1));
    if (!std::isfinite(x)) {
      v.push_back(x);
      continue;
    }
    v.push_back(x);
    v.push_back(std::nextafter(x, INFINITY));
    v.push_back(std::nextafter(x, -INFINITY));
    if (std::isfinite(y) && (b & 0x7fffu) != 0x7fffu) {
      const double mid = x + (y - x) / 2;  // exact: one more bit than the 16-bit format has
      v.push_back(mid);
      v.push_back(std::nextafter(mid, INFINITY));
      v.push_back(std::nextafter(mid, -INFINITY));
      v.push_back(x + (y - x) * (double(rng.next() % 1000) / 1000.0));
    }
  }
  for (int i = 0; i < 200000; ++i) v.push_back(std::bit_cast<double>(rng.next()));  // anything
  for (int i = 0; i < 200000; ++i) {  // near the 16-bit range: exponents -150 .. 130
    const int e = int(rng.next() % 281) - 150;
    v.push_back(std::ldexp(double(rng.next() >> 11) / double(1ull << 53), e) * ((rng.next() & 1) ? 1 : -1));
  }
  v.push_back(0.0), v.push_back(-0.0), v.push_back(INFINITY), v.push_back(-INFINITY), v.push_back(NAN);
  v.push_back(std::numeric_limits<double>::denorm_min()), v.push_back(std::numeric_limits<double>::max());
  return v;
}

template <class I>
std::vector<I> int_inputs() {
  std::vector<I> v;
  Lcg rng;
  if constexpr (sizeof(I) <= 2) {
    for (std::uint32_t x = 0; x < (1u << (8 * sizeof(I))); ++x) v.push_back(I(x));
    return v;
  }
  for (int k = 0; k < int(8 * sizeof(I)); ++k)
    for (int d = -300; d <= 300; ++d) v.push_back(I((std::uint64_t(1) << k) + std::uint64_t(std::int64_t(d))));
  for (int k = 0; k < int(8 * sizeof(I)); ++k)  // ties: 2^k + 2^j (+-1) for j below k
    for (int j = 0; j < k; ++j)
      for (int d = -1; d <= 1; ++d) {
        const std::uint64_t x = (std::uint64_t(1) << k) + (std::uint64_t(1) << j) + std::uint64_t(std::int64_t(d));
        v.push_back(I(x)), v.push_back(I(0 - x));
      }
  for (int i = 0; i < 300000; ++i) v.push_back(I(rng.next()));
  for (int i = 0; i < 300000; ++i) v.push_back(I(rng.next() >> (rng.next() % 64)));
  v.push_back(std::numeric_limits<I>::min()), v.push_back(std::numeric_limits<I>::max());
  return v;
}

void conversions_from_float() {
  for (float f : float_inputs()) {
    expect_same("__float2half", bits(sim::__float2half(f)), bits(__float2half(f)), f);
    expect_same("__float2half_rn", bits(sim::__float2half_rn(f)), bits(__float2half_rn(f)), f);
    expect_same("__float2half_rz", bits(sim::__float2half_rz(f)), bits(__float2half_rz(f)), f);
    expect_same("__float2half_rd", bits(sim::__float2half_rd(f)), bits(__float2half_rd(f)), f);
    expect_same("__float2half_ru", bits(sim::__float2half_ru(f)), bits(__float2half_ru(f)), f);
    expect_same("__half(float)", bits(sim::__half(f)), bits(__half(f)), f);
    expect_same("__float2bfloat16", bits(sim::__float2bfloat16(f)), bits(__float2bfloat16(f)), f);
    expect_same("__float2bfloat16_rn", bits(sim::__float2bfloat16_rn(f)), bits(__float2bfloat16_rn(f)), f);
    expect_same("__float2bfloat16_rz", bits(sim::__float2bfloat16_rz(f)), bits(__float2bfloat16_rz(f)), f);
    expect_same("__float2bfloat16_rd", bits(sim::__float2bfloat16_rd(f)), bits(__float2bfloat16_rd(f)), f);
    expect_same("__float2bfloat16_ru", bits(sim::__float2bfloat16_ru(f)), bits(__float2bfloat16_ru(f)), f);
    expect_same("__nv_bfloat16(float)", bits(sim::__nv_bfloat16(f)), bits(__nv_bfloat16(f)), f);
  }
}

void conversions_from_double() {
  const auto half_value = [](std::uint16_t b) { return double(__half2float(cuda_half(b))); };
  for (double d : double_inputs(half_value)) {
    expect_same("__double2half", bits(sim::__double2half(d)), bits(__double2half(d)), d);
    expect_same("__half(double)", bits(sim::__half(d)), bits(__half(d)), d);
  }
  const auto bf16_value = [](std::uint16_t b) { return double(__bfloat162float(cuda_bf16(b))); };
  for (double d : double_inputs(bf16_value)) {
    expect_same("__double2bfloat16", bits(sim::__double2bfloat16(d)), bits(__double2bfloat16(d)), d);
    expect_same("__nv_bfloat16(double)", bits(sim::__nv_bfloat16(d)), bits(__nv_bfloat16(d)), d);
  }
}

// every 16-bit value: to float, to the other format, to every integer type
void conversions_from_16_bits() {
  for (std::uint32_t b = 0; b < 0x10000u; ++b) {
    const auto sh = sim_half(std::uint16_t(b));
    const auto ch = cuda_half(std::uint16_t(b));
    const auto sb = sim_bf16(std::uint16_t(b));
    const auto cb = cuda_bf16(std::uint16_t(b));
    const double in = b;
    expect_same("__half2float", sim::__half2float(sh), __half2float(ch), in, "bits ");
    expect_same("float(__half)", float(sh), float(ch), in, "bits ");
    expect_same("__bfloat162float", sim::__bfloat162float(sb), __bfloat162float(cb), in, "bits ");
    expect_same("float(__nv_bfloat16)", float(sb), float(cb), in, "bits ");
    expect_same("__nv_bfloat16(__half)", bits(sim::__nv_bfloat16(sh)), bits(__nv_bfloat16(ch)), in, "bits ");
    expect_same("__half(__nv_bfloat16)", bits(sim::__half(sb)), bits(__half(cb)), in, "bits ");
    expect_same("__half2int_rz", sim::__half2int_rz(sh), __half2int_rz(ch), in, "bits ");
    expect_same("__half2uint_rz", sim::__half2uint_rz(sh), __half2uint_rz(ch), in, "bits ");
    expect_same("__half2short_rz", sim::__half2short_rz(sh), __half2short_rz(ch), in, "bits ");
    expect_same("__half2ushort_rz", sim::__half2ushort_rz(sh), __half2ushort_rz(ch), in, "bits ");
    expect_same("__half2ll_rz", sim::__half2ll_rz(sh), __half2ll_rz(ch), in, "bits ");
    expect_same("__half2ull_rz", sim::__half2ull_rz(sh), __half2ull_rz(ch), in, "bits ");
    expect_same("__half2char_rz", sim::__half2char_rz(sh), __half2char_rz(ch), in, "bits ");
    expect_same("__half2uchar_rz", sim::__half2uchar_rz(sh), __half2uchar_rz(ch), in, "bits ");
    expect_same("int(__half)", int(sh), int(ch), in, "bits ");
    expect_same("unsigned(__half)", (unsigned)sh, (unsigned)ch, in, "bits ");
    expect_same("long long(__half)", (long long)sh, (long long)ch, in, "bits ");
    expect_same("__bfloat162int_rz", sim::__bfloat162int_rz(sb), __bfloat162int_rz(cb), in, "bits ");
    expect_same("int(__nv_bfloat16)", int(sb), int(cb), in, "bits ");
    expect_same("__bfloat162ll_rz", sim::__bfloat162ll_rz(sb), __bfloat162ll_rz(cb), in, "bits ");
    expect_same("__bfloat162uint_rz", sim::__bfloat162uint_rz(sb), __bfloat162uint_rz(cb), in, "bits ");
    expect_same("__bfloat162short_rz", sim::__bfloat162short_rz(sb), __bfloat162short_rz(cb), in, "bits ");
    expect_same("__bfloat162ushort_rz", sim::__bfloat162ushort_rz(sb), __bfloat162ushort_rz(cb), in, "bits ");
    expect_same("__bfloat162ull_rz", sim::__bfloat162ull_rz(sb), __bfloat162ull_rz(cb), in, "bits ");
    expect_same("__bfloat162char_rz", sim::__bfloat162char_rz(sb), __bfloat162char_rz(cb), in, "bits ");
    expect_same("__bfloat162uchar_rz", sim::__bfloat162uchar_rz(sb), __bfloat162uchar_rz(cb), in, "bits ");
    expect_same("__hneg", bits(sim::__hneg(sh)), bits(__hneg(ch)), in, "bits ");
    expect_same("__habs", bits(sim::__habs(sh)), bits(__habs(ch)), in, "bits ");
    expect_same("__hisnan", sim::__hisnan(sh), __hisnan(ch), in, "bits ");
    expect_same("__hisinf", sim::__hisinf(sh), __hisinf(ch), in, "bits ");
    expect_same("-__half", bits(-sh), bits(-ch), in, "bits ");
    expect_same("__hneg bf16", bits(sim::__hneg(sb)), bits(__hneg(cb)), in, "bits ");
    expect_same("__habs bf16", bits(sim::__habs(sb)), bits(__habs(cb)), in, "bits ");
    expect_same("__hisnan bf16", sim::__hisnan(sb), __hisnan(cb), in, "bits ");
    expect_same("__hisinf bf16", sim::__hisinf(sb), __hisinf(cb), in, "bits ");
  }
}

template <class I>
void conversions_from_int(const char* name) {
  char what[64];
  for (I i : int_inputs<I>()) {
    const double in = double(i);
    std::snprintf(what, sizeof what, "__half(%s)", name);
    expect_same(what, bits(sim::__half(i)), bits(__half(i)), in);
    std::snprintf(what, sizeof what, "__nv_bfloat16(%s)", name);
    expect_same(what, bits(sim::__nv_bfloat16(i)), bits(__nv_bfloat16(i)), in);
  }
}

void integer_conversions() {
  conversions_from_int<short>("short");
  conversions_from_int<unsigned short>("unsigned short");
  conversions_from_int<int>("int");
  conversions_from_int<unsigned int>("unsigned int");
  conversions_from_int<long long>("long long");
  conversions_from_int<unsigned long long>("unsigned long long");
  for (int i : int_inputs<int>()) {
    expect_same("__int2half_rn", bits(sim::__int2half_rn(i)), bits(__int2half_rn(i)), i);
    expect_same("__int2bfloat16_rn", bits(sim::__int2bfloat16_rn(i)), bits(__int2bfloat16_rn(i)), i);
  }
  for (long long i : int_inputs<long long>()) {
    expect_same("__ll2half_rn", bits(sim::__ll2half_rn(i)), bits(__ll2half_rn(i)), double(i));
    expect_same("__ll2bfloat16_rn", bits(sim::__ll2bfloat16_rn(i)), bits(__ll2bfloat16_rn(i)), double(i));
  }
}

// pairs of 16-bit values: specials against everything, then random pairs
std::vector<std::uint16_t> special_bits(bool bf16) {
  std::vector<std::uint16_t> s = {0x0000, 0x8000, 0x0001, 0x8001, 0x3c00, 0xbc00, 0x3f80, 0xbf80, 0x7fff, 0xffff};
  if (bf16) s.insert(s.end(), {0x7f80, 0xff80, 0x7f7f, 0xff7f, 0x7fc0, 0x0080, 0x007f});
  else s.insert(s.end(), {0x7c00, 0xfc00, 0x7bff, 0xfbff, 0x7e00, 0x0400, 0x03ff});
  return s;
}

template <class S, class C>
void binary_ops(const char* fmt, S (*sim_of)(std::uint16_t), C (*cuda_of)(std::uint16_t), bool bf16) {
  std::vector<std::pair<std::uint16_t, std::uint16_t>> pairs;
  for (std::uint16_t a : special_bits(bf16))
    for (std::uint32_t b = 0; b < 0x10000u; b += 7) pairs.push_back({a, std::uint16_t(b)}), pairs.push_back({std::uint16_t(b), a});
  Lcg rng;
  for (int i = 0; i < 2000000; ++i) {
    const std::uint64_t r = rng.next();
    // same exponents half of the time, so that sums cancel and ties happen
    std::uint16_t a = std::uint16_t(r), b = std::uint16_t(r >> 16);
    if (r & (1ull << 40)) b = std::uint16_t((a & 0xfc00u) | (b & 0x83ffu));
    pairs.push_back({a, b});
  }
  char what[48];
  for (auto [x, y] : pairs) {
    const S sa = sim_of(x), sb = sim_of(y);
    const C ca = cuda_of(x), cb = cuda_of(y);
    const double in = double(std::uint32_t(x) << 16 | y);
#define BIN(name) std::snprintf(what, sizeof what, "%s %s", #name, fmt), expect_same(what, bits(sim::name(sa, sb)), bits(name(ca, cb)), in, "bits a<<16|b ")
#define CMP(name) std::snprintf(what, sizeof what, "%s %s", #name, fmt), expect_same(what, sim::name(sa, sb), name(ca, cb), in, "bits a<<16|b ")
    BIN(__hadd); BIN(__hsub); BIN(__hmul); BIN(__hdiv);
    BIN(__hmax); BIN(__hmin); BIN(__hmax_nan); BIN(__hmin_nan);
    CMP(__heq); CMP(__hne); CMP(__hlt); CMP(__hle); CMP(__hgt); CMP(__hge);
    CMP(__hequ); CMP(__hneu); CMP(__hltu); CMP(__hleu); CMP(__hgtu); CMP(__hgeu);
#undef BIN
#undef CMP
    std::snprintf(what, sizeof what, "operators %s", fmt);
    expect_same(what, bits(sa + sb), bits(ca + cb), in, "bits a<<16|b ");
    expect_same(what, bits(sa - sb), bits(ca - cb), in, "bits a<<16|b ");
    expect_same(what, bits(sa * sb), bits(ca * cb), in, "bits a<<16|b ");
    expect_same(what, bits(sa / sb), bits(ca / cb), in, "bits a<<16|b ");
    expect_same(what, sa == sb, ca == cb, in, "bits a<<16|b ");
    expect_same(what, sa != sb, ca != cb, in, "bits a<<16|b ");
    expect_same(what, sa < sb, ca < cb, in, "bits a<<16|b ");
    expect_same(what, sa >= sb, ca >= cb, in, "bits a<<16|b ");
  }
}

}  // namespace

int main() {
  struct Step {
    const char* name;
    void (*run)();
  } steps[] = {
      {"conversions from float", conversions_from_float},
      {"conversions from double", conversions_from_double},
      {"conversions from 16 bits", conversions_from_16_bits},
      {"integer conversions", integer_conversions},
      {"__half arithmetic and comparisons", [] { binary_ops("half", sim_half, cuda_half, false); }},
      {"__nv_bfloat16 arithmetic and comparisons", [] { binary_ops("bf16", sim_bf16, cuda_bf16, true); }},
  };
  int passed = 0, failed = 0;
  for (const Step& s : steps) {
    const long long before = g_failures, checks = g_checks;
    s.run();
    const bool ok = g_failures == before;
    (ok ? passed : failed)++;
    std::printf("%-4s %s (%lld checks)\n", ok ? "ok" : "FAIL", s.name, g_checks - checks);
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
