// The AVX512-BF16 GEMM of gemm_bf16.h: a 14 x 32 microkernel on `vdpbf16ps` (28 zmm of fp32
// sums; each instruction adds, per lane, the two products of a K-pair).
//
// Packed layouts, in 32-bit words each holding a K-pair of bf16 (the lower k in the low half):
//   A: micro-panels of MR rows, pair-major: Ap[p * MR + i] = (A(i, 2p), A(i, 2p + 1))
//   B: micro-panels of NR columns, pair-major: Bp[p * NR + j] = (B(2p, j), B(2p + 1, j))
// An odd K is padded with a zero. fp32 operands are rounded to bf16 (nearest even) here.
//
// Loop nest as the fp32 GEMM's (gemm_impl.h): column blocks -> K steps -> [pack B, all
// threads] -> row blocks taken from a shared counter -> micro-panels -> microkernel into an
// fp32 tile -> the epilogue (alpha, beta, bias, pre-activation, activation) and the store in
// C's type. A bf16 C is written once: its product runs over all of K in one step (the sums
// never leave fp32); past kWholeK it goes through an fp32 buffer, a block of rows at a time.
#if defined(__x86_64__)
#include "gemm_bf16.h"

#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "../vec/isa_avx512bf16.h"
#include "../vec/activation_impl.h"
#include "amx.h"

namespace fusedops::cpu::avx512bf16 {
namespace {

using V = VecF32Avx512;
constexpr int MR = 14, NV = 2, NR = NV * 16;
constexpr int kAmxMR = 32;  // the AMX kernel's tile: 32 x 32 (four 16 x 16 fp32 tiles)
constexpr int64_t kWholeK = 16384;  // a bf16 C's K in one step up to this

inline __mmask16 lanes(int64_t n) { return n >= 16 ? __mmask16(0xffff) : n <= 0 ? 0 : __mmask16((1u << n) - 1u); }
inline int64_t elem_size(DType t) { return t == DType::bf16 ? 2 : 4; }
inline const char* at(const void* p, DType t, int64_t i) { return static_cast<const char*>(p) + i * elem_size(t); }
inline char* at(void* p, DType t, int64_t i) { return static_cast<char*>(p) + i * elem_size(t); }

inline __m512 widen(__m256i h) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); }
inline __m256i narrow(__m512 x) { return (__m256i)_mm512_cvtneps_pbh(x); }

// Up to 16 elements (mask m) of type t as fp32 lanes; zeros elsewhere.
inline __m512 load16(const void* p, DType t, __mmask16 m) {
  return t == DType::bf16 ? widen(_mm256_maskz_loadu_epi16(m, p)) : _mm512_maskz_loadu_ps(m, p);
}
inline void store16(void* p, DType t, __mmask16 m, __m512 x) {
  if (t == DType::bf16) _mm256_mask_storeu_epi16(p, m, narrow(x));
  else _mm512_mask_storeu_ps(static_cast<float*>(p), m, x);
}
// Up to 16 elements as bf16 bits in 32-bit lanes (zero-extended).
inline __m512i bits16(const void* p, DType t, __mmask16 m) {
  return _mm512_cvtepu16_epi32(t == DType::bf16 ? _mm256_maskz_loadu_epi16(m, p)
                                                : narrow(_mm512_maskz_loadu_ps(m, static_cast<const float*>(p))));
}

// out[q] = (r0[q], r1[q]) for q < n, zero pairs for n <= q < w (w <= 16 words written); r1
// may be null (the zero padding of an odd K).
inline void interleave16(const void* r0, const void* r1, DType t, int64_t n, int w, uint32_t* out) {
  const __mmask16 m = lanes(n);
  __m512i v = bits16(r0, t, m);
  if (r1) v = _mm512_or_si512(v, _mm512_slli_epi32(bits16(r1, t, m), 16));
  _mm512_mask_storeu_epi32(out, lanes(w), v);
}

// out[q] = (src[2q], src[2q + 1]) for the n <= 32 elements of src; zeros past them; 16 words.
inline void pairs16(const void* src, DType t, int64_t n, uint32_t* out) {
  if (t == DType::bf16) {  // the pairs are the words themselves
    const __mmask32 m = n >= 32 ? __mmask32(0xffffffffu) : __mmask32((1u << n) - 1u);
    _mm512_storeu_si512(out, _mm512_maskz_loadu_epi16(m, src));
    return;
  }
  const float* f = static_cast<const float*>(src);
  const __m512 lo = _mm512_maskz_loadu_ps(lanes(n), f), hi = _mm512_maskz_loadu_ps(lanes(n - 16), f + 16);
  _mm512_storeu_si512(out, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
}

// Packs `len` rows or columns whose K runs are contiguous (src(r) + k, r < len <= 16) for K
// [0, kc) into pair-major words at dst[p * ld + r], through a 16 x 16 word transpose.
template <class Src>
void pack_contiguous(Src src, int len, DType t, int64_t kc, int ld, uint32_t* dst) {
  alignas(64) uint32_t tmp[16][16];
  for (int64_t k = 0; k < kc; k += 32) {
    const int64_t n = std::min<int64_t>(32, kc - k), np = (n + 1) / 2;
    for (int r = 0; r < len; ++r) pairs16(at(src(r), t, k), t, n, tmp[r]);
    uint32_t* d = dst + (k / 2) * ld;
    for (int64_t q = 0; q < np; ++q)
      for (int r = 0; r < len; ++r) d[q * ld + r] = tmp[r][q];
  }
}

// A rows [i0, i0 + mc) x K [k0, k0 + kc) -> micro-panels of MR rows (zero rows past mc).
void pack_a(const GemmMixedArgs& g, int64_t i0, int64_t mc, int64_t k0, int64_t kc, uint32_t* Ap) {
  const int64_t kp = (kc + 1) / 2;
  for (int64_t r0 = 0; r0 < mc; r0 += MR, Ap += MR * kp) {
    const int mr = int(std::min<int64_t>(MR, mc - r0));
    const int64_t base = (i0 + r0) * g.rsa + k0 * g.csa;
    if (g.csa == 1) {
      pack_contiguous([&](int r) { return at(g.A, g.a_type, base + r * g.rsa); }, mr, g.a_type, kc, MR, Ap);
      if (mr < MR)
        for (int64_t p = 0; p < kp; ++p)
          for (int r = mr; r < MR; ++r) Ap[p * MR + r] = 0;
    } else if (g.rsa == 1) {  // rows contiguous in i: two K rows interleaved per pair
      for (int64_t p = 0; p < kp; ++p) {
        const bool two = 2 * p + 1 < kc;
        interleave16(at(g.A, g.a_type, base + 2 * p * g.csa),
                     two ? at(g.A, g.a_type, base + (2 * p + 1) * g.csa) : nullptr, g.a_type, mr, MR, Ap + p * MR);
      }
    } else {
      for (int64_t p = 0; p < kp; ++p)
        for (int r = 0; r < MR; ++r) {
          uint32_t w = 0;
          if (r < mr) {
            const int64_t e = base + r * g.rsa + 2 * p * g.csa;
            w = float_to_bf16(load_as_float(g.A, g.a_type, e));
            if (2 * p + 1 < kc) w |= uint32_t(float_to_bf16(load_as_float(g.A, g.a_type, e + g.csa))) << 16;
          }
          Ap[p * MR + r] = w;
        }
    }
  }
}

// B rows K [k0, k0 + kc) x columns [j0, j0 + nr) -> one micro-panel of NR columns (zero
// columns past nr).
void pack_b(const GemmMixedArgs& g, int64_t k0, int64_t kc, int64_t j0, int64_t nr, uint32_t* Bp) {
  const int64_t kp = (kc + 1) / 2;
  const int64_t base = k0 * g.rsb + j0 * g.csb;
  if (g.csb == 1) {  // rows of B contiguous: two rows interleaved per pair
    for (int64_t p = 0; p < kp; ++p) {
      const int64_t e0 = base + 2 * p * g.rsb;
      const bool two = 2 * p + 1 < kc;
      for (int j = 0; j < NR; j += 16)
        interleave16(at(g.B, g.b_type, e0 + j), two ? at(g.B, g.b_type, e0 + g.rsb + j) : nullptr, g.b_type,
                     nr - j, 16, Bp + p * NR + j);
    }
  } else if (g.rsb == 1) {  // columns contiguous in K (a transposed weight)
    for (int j = 0; j < NR; j += 16) {
      const int len = int(std::clamp<int64_t>(nr - j, 0, 16));
      pack_contiguous([&](int r) { return at(g.B, g.b_type, base + (j + r) * g.csb); }, len, g.b_type, kc, NR,
                      Bp + j);
      for (int64_t p = 0; p < kp; ++p)
        for (int r = len; r < 16; ++r) Bp[p * NR + j + r] = 0;
    }
  } else {
    for (int64_t p = 0; p < kp; ++p)
      for (int j = 0; j < NR; ++j) {
        uint32_t w = 0;
        if (j < nr) {
          const int64_t e = base + 2 * p * g.rsb + j * g.csb;
          w = float_to_bf16(load_as_float(g.B, g.b_type, e));
          if (2 * p + 1 < kc) w |= uint32_t(float_to_bf16(load_as_float(g.B, g.b_type, e + g.rsb))) << 16;
        }
        Bp[p * NR + j] = w;
      }
  }
}

// tile[i * NR + j] = sum over the kp pairs of the micro-panels' products.
void microkernel(int64_t kp, const uint32_t* __restrict Ap, const uint32_t* __restrict Bp, float* tile) {
  __m512 acc[MR][NV];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_setzero_ps();
#pragma GCC unroll 2
  for (int64_t p = 0; p < kp; ++p) {
    __m512bh b[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) b[v] = (__m512bh)_mm512_load_si512(Bp + v * 16);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const __m512bh a = (__m512bh)_mm512_set1_epi32(int(Ap[i]));
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_dpbf16_ps(acc[i][v], a, b[v]);
    }
    Ap += MR;
    Bp += NR;
  }
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) _mm512_store_ps(tile + i * NR + v * 16, acc[i][v]);
}

// ---- AMX (Intel's tile unit): 32 x 32 C from two 16-row A tiles and two 16-column B tiles --
// A packed as rows (kAmxMR rows of kcp bf16, K padded with zeros to a multiple of 32); B as the
// pair-major panels above, padded with zero pairs to a multiple of 16: a 16-pair x 16-column
// slice of a panel is one B tile (rows 128 bytes apart).
// The sums start from cin (fp32, row stride ldi; an fp32 C's earlier K steps) or zero and go
// to out (row stride ldo).
void amx_microkernel(int64_t kpp, const uint16_t* Ap, int64_t kcp, const uint32_t* Bp, const float* cin,
                     int64_t ldi, float* out, int64_t ldo) {
  if (cin) {
    _tile_loadd(0, cin, ldi * 4);
    _tile_loadd(1, cin + 16, ldi * 4);
    _tile_loadd(2, cin + 16 * ldi, ldi * 4);
    _tile_loadd(3, cin + 16 * ldi + 16, ldi * 4);
  } else {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
  }
  const int64_t lda = kcp * 2;
  for (int64_t p = 0; p < kpp; p += 16) {
    _tile_loadd(4, Ap + 2 * p, lda);
    _tile_loadd(5, Ap + 16 * kcp + 2 * p, lda);
    _tile_loadd(6, Bp + p * NR, NR * 4);
    _tile_loadd(7, Bp + p * NR + 16, NR * 4);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  _tile_stored(0, out, ldo * 4);
  _tile_stored(1, out + 16, ldo * 4);
  _tile_stored(2, out + 16 * ldo, ldo * 4);
  _tile_stored(3, out + 16 * ldo + 16, ldo * 4);
}

// A rows [i0, i0 + mc) x K [k0, k0 + kc) -> rows of kcp bf16 (zeros past kc and past mc, to a
// multiple of kAmxMR rows).
void pack_a_rows(const GemmMixedArgs& g, int64_t i0, int64_t mc, int64_t k0, int64_t kc, int64_t kcp, uint16_t* Ap) {
  const int64_t rows = (mc + kAmxMR - 1) / kAmxMR * kAmxMR;
  if (g.rsa == 1 && g.csa != 1) {  // A^T stored: K rows, contiguous in i; pairs scattered to rows
    const __m512i idx = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                           _mm512_set1_epi32(int(kcp / 2)));
    std::memset(Ap, 0, size_t(rows * kcp) * 2);
    for (int64_t r0 = 0; r0 < mc; r0 += 16) {
      const int64_t n = std::min<int64_t>(16, mc - r0);
      const __mmask16 m = lanes(n);
      for (int64_t k = 0; k < kc; k += 2) {
        const int64_t base = (i0 + r0) + (k0 + k) * g.csa;
        __m512i v = bits16(at(g.A, g.a_type, base), g.a_type, m);
        if (k + 1 < kc) v = _mm512_or_si512(v, _mm512_slli_epi32(bits16(at(g.A, g.a_type, base + g.csa), g.a_type, m), 16));
        _mm512_mask_i32scatter_epi32(Ap + r0 * kcp + k, m, idx, v, 4);
      }
    }
    return;
  }
  for (int64_t r = 0; r < rows; ++r) {
    uint16_t* d = Ap + r * kcp;
    int64_t k = 0;
    if (r < mc) {
      const int64_t base = (i0 + r) * g.rsa + k0 * g.csa;
      if (g.csa == 1 && g.a_type == DType::bf16) {
        std::memcpy(d, static_cast<const uint16_t*>(g.A) + base, size_t(kc) * 2);
        k = kc;
      } else if (g.csa == 1) {
        const float* a = static_cast<const float*>(g.A) + base;
        for (; k < kc; k += 16) _mm256_mask_storeu_epi16(d + k, lanes(kc - k), narrow(_mm512_maskz_loadu_ps(lanes(kc - k), a + k)));
        k = kc;
      } else {
        for (; k < kc; ++k) d[k] = float_to_bf16(load_as_float(g.A, g.a_type, base + k * g.csa));
      }
    }
    std::memset(d + k, 0, size_t(kcp - k) * 2);
  }
}

bool amx_ready() {
  static const bool ok = [] {
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    if (!((d >> 22) & 1) || !((d >> 24) & 1)) return false;  // AMX-BF16, AMX-TILE
    // Linux hands out the tile state on request (ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA).
    return syscall(SYS_arch_prctl, 0x1023, 18) == 0;
  }();
  return ok;
}

// C rows [i0, i0 + m) x columns [j0, j0 + n) from the sums t (row stride ldt): alpha * t plus
// C (a later K step; C is fp32 then) or beta * C (the first, when beta != 0); at the last K step
// the bias, the pre-activation store and the activation; stored in C's type (fp32 before the
// last step).
void finish(const GemmMixedArgs& g, const float* t, int64_t ldt, int64_t i0, int64_t j0, int64_t m, int64_t n,
            bool first, bool last) {
  // Everything the loop needs in locals (stores through C could otherwise alias g), the
  // column bias and the masks once per tile.
  const float alpha = g.alpha, beta = g.beta;
  const DType ct = last ? g.c_type : DType::f32, bt = g.bias_type;
  const BiasMode bm = last ? g.bias_mode : BiasMode::none;
  const Activation act = last ? g.act : Activation::none;
  const bool add_c = !first, scale_c = first && beta != 0.0f, scale = alpha != 1.0f;
  const int64_t esz = elem_size(g.c_type), ldc = g.ldc, ldp = g.ld_preact;
  char* const c0 = static_cast<char*>(g.C) + (i0 * ldc + j0) * esz;
  char* const p0 = last && g.preact ? static_cast<char*>(g.preact) + (i0 * ldp + j0) * esz : nullptr;
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
  for (int64_t v0 = 0; v0 < n; v0 += 16) {
    const __mmask16 mk = lanes(n - v0);
    const __m512 cbias = bm == BiasMode::per_col ? load16(at(g.bias, bt, j0 + v0), bt, mk) : _mm512_setzero_ps();
    for (int64_t i = 0; i < m; ++i) {
      char* c = c0 + (i * ldc + v0) * esz;
      __m512 x = _mm512_maskz_loadu_ps(mk, t + i * ldt + v0);
      if (scale) x = _mm512_mul_ps(va, x);
      if (add_c) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(mk, reinterpret_cast<float*>(c)));
      else if (scale_c) x = _mm512_fmadd_ps(vb, load16(c, g.c_type, mk), x);
      if (bm == BiasMode::per_col) x = _mm512_add_ps(x, cbias);
      else if (bm == BiasMode::per_row) x = _mm512_add_ps(x, _mm512_set1_ps(load_as_float(g.bias, bt, i0 + i)));
      if (p0) store16(p0 + (i * ldp + v0) * esz, g.c_type, mk, x);
      if (act != Activation::none) x = act_vec<V>(x, act);
      store16(c, ct, mk, x);
    }
  }
}

// finish() for a tile of NR = 32 whole columns, the last K step: with `stream`, rows whose 64
// bytes (bf16) or 128 bytes (fp32) start on a cache line are stored around the caches (a C
// larger than the caches is not read back soon, and a streaming store skips reading the line
// it overwrites); the caller fences.
void finish_cols32(const GemmMixedArgs& g, const float* t, int64_t i0, int64_t j0, int64_t m, bool first,
                   bool stream) {
  const float alpha = g.alpha, beta = g.beta;
  const DType ct = g.c_type, bt = g.bias_type;
  const BiasMode bm = g.bias_mode;
  const Activation act = g.act;
  const bool scale_c = first && beta != 0.0f, scale = alpha != 1.0f, add_c = !first;
  const int64_t esz = elem_size(ct), ldc = g.ldc, ldp = g.ld_preact;
  char* const c0 = static_cast<char*>(g.C) + (i0 * ldc + j0) * esz;
  char* const p0 = g.preact ? static_cast<char*>(g.preact) + (i0 * ldp + j0) * esz : nullptr;
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
  __m512 cb0 = _mm512_setzero_ps(), cb1 = _mm512_setzero_ps();
  if (bm == BiasMode::per_col) {
    cb0 = load16(at(g.bias, bt, j0), bt, 0xffff);
    cb1 = load16(at(g.bias, bt, j0 + 16), bt, 0xffff);
  }
  for (int64_t i = 0; i < m; ++i) {
    char* c = c0 + i * ldc * esz;
    __m512 x0 = _mm512_load_ps(t + i * NR), x1 = _mm512_load_ps(t + i * NR + 16);
    if (scale) x0 = _mm512_mul_ps(va, x0), x1 = _mm512_mul_ps(va, x1);
    if (add_c) {
      x0 = _mm512_add_ps(x0, _mm512_loadu_ps(reinterpret_cast<float*>(c)));
      x1 = _mm512_add_ps(x1, _mm512_loadu_ps(reinterpret_cast<float*>(c) + 16));
    } else if (scale_c) {
      x0 = _mm512_fmadd_ps(vb, load16(c, ct, 0xffff), x0);
      x1 = _mm512_fmadd_ps(vb, load16(c + 16 * esz, ct, 0xffff), x1);
    }
    if (bm == BiasMode::per_col) {
      x0 = _mm512_add_ps(x0, cb0), x1 = _mm512_add_ps(x1, cb1);
    } else if (bm == BiasMode::per_row) {
      const __m512 rb = _mm512_set1_ps(load_as_float(g.bias, bt, i0 + i));
      x0 = _mm512_add_ps(x0, rb), x1 = _mm512_add_ps(x1, rb);
    }
    if (p0) {
      store16(p0 + i * ldp * esz, ct, 0xffff, x0);
      store16(p0 + (i * ldp + 16) * esz, ct, 0xffff, x1);
    }
    if (act != Activation::none) x0 = act_vec<V>(x0, act), x1 = act_vec<V>(x1, act);
    const bool line = stream && (reinterpret_cast<uintptr_t>(c) & 63) == 0;
    if (ct == DType::bf16) {
      const __m512i both = _mm512_inserti64x4(_mm512_castsi256_si512(narrow(x0)), narrow(x1), 1);
      if (line) _mm512_stream_si512(reinterpret_cast<__m512i*>(c), both);
      else _mm512_storeu_si512(c, both);
    } else if (line) {
      _mm512_stream_ps(reinterpret_cast<float*>(c), x0);
      _mm512_stream_ps(reinterpret_cast<float*>(c) + 16, x1);
    } else {
      _mm512_storeu_ps(reinterpret_cast<float*>(c), x0);
      _mm512_storeu_ps(reinterpret_cast<float*>(c) + 16, x1);
    }
  }
}

template <typename T>
T* aligned(ScratchVec<T>& buf, size_t n) {
  const size_t pad = 64 / sizeof(T);
  if (buf.size() < n + pad) buf.resize(n + pad);
  auto p = reinterpret_cast<uintptr_t>(buf.data());
  return reinterpret_cast<T*>((p + 63) & ~uintptr_t(63));
}

int choose_threads(const GemmMixedArgs& g) {
  if (omp_in_parallel()) return 1;
  // bf16 runs twice the fp32 rate: ~4 MFLOP per thread pays for the fork/join.
  const int nt = threads_for_work(2.0 * double(g.M) * double(g.N) * double(g.K), 4e6);
  return g.max_threads > 0 ? std::min(nt, g.max_threads) : nt;
}

// K == 0: C = beta * C, then the epilogue.
void run_k0(const GemmMixedArgs& g) {
  alignas(64) float zeros[16] = {};
  for (int64_t i = 0; i < g.M; ++i)
    for (int64_t j = 0; j < g.N; j += 16) finish(g, zeros, 0, i, j, 1, std::min<int64_t>(16, g.N - j), true, true);
}

template <bool AMX>
void run_blocked(const GemmMixedArgs& g) {
  constexpr int MRK = AMX ? kAmxMR : MR;
  const CpuInfo& ci = cpu_info();
  // K steps: a bf16 C's whole K (its sums stay in fp32 registers and tiles); otherwise a B
  // micro-panel (kc x NR bf16) about the size of L1. Equal steps, even (whole pairs).
  int64_t kc_max = g.K;
  if (g.c_type == DType::f32) {
    // AMX: a third of L1, so that a 32-row A group and a B panel both stay there (with the
    // K steps accumulated in the tiles below, 10-20% faster than L1-sized B panels alone on a
    // Sapphire-Rapids-class Xeon: the weight gradients' GEMMs)
    const int64_t kc = AMX ? std::clamp<int64_t>(ci.l1d / (NR * 2) / 3, 128, 512)
                           : std::clamp<int64_t>(ci.l1d / (NR * 2), 256, 2048);
    const int64_t ksteps = (g.K + kc - 1) / kc;
    kc_max = ((g.K + ksteps - 1) / ksteps + 1) / 2 * 2;
  }
  // Pairs per K step (AMX: whole 16-pair B tiles).
  auto pairs = [](int64_t kc) { return AMX ? (kc + 31) / 32 * 16 : (kc + 1) / 2; };
  const int64_t kp_max = pairs(kc_max);
  // An A block (mc x kc bf16) ~55% of L2; the packed B panel an eighth of L3 (capped: virtual
  // machines may report the host's).
  int64_t mc_max = std::clamp<int64_t>(ci.l2 * 11 / 20 / (kp_max * 4), MRK, 1024) / MRK * MRK;
  const int64_t l3 = std::clamp<int64_t>(ci.l3, 2 << 20, 32 << 20);
  int64_t nc_blk = std::clamp<int64_t>(l3 / 8 / (kp_max * 4), NR, 8192) / NR * NR;
  const int nt = choose_threads(g);
  const int64_t nsteps = (g.N + nc_blk - 1) / nc_blk;
  const int64_t nc_max = ((g.N + nsteps - 1) / nsteps + NR - 1) / NR * NR;

  // C (and the pre-activation) past twice the L2 of the threads: its last stores stream.
  const bool stream = double(g.M) * double(g.N) * double(elem_size(g.c_type)) * (g.preact ? 2 : 1) >
                      2.0 * double(ci.l2) * nt;
  // Row blocks of at most mc_max, at least two per thread when M allows (threads take them
  // from a counter: one that loses its core delays the call by a block); few row blocks split
  // the column panels too.
  int64_t mblocks = (g.M + mc_max - 1) / mc_max;
  if (nt > 1 && mblocks < 2 * nt && g.M >= 2 * nt * 4 * MRK) mblocks = 2 * nt;
  const int64_t mc = ((g.M + mblocks - 1) / mblocks + MRK - 1) / MRK * MRK;
  mblocks = (g.M + mc - 1) / mc;
  const int64_t nparts = mblocks >= nt ? 1 : (nt + mblocks - 1) / mblocks;
  const int64_t items = mblocks * nparts;

  ScratchVec<uint32_t> bbuf;
  const size_t bsize = (size_t(kp_max) * nc_max + 15) / 16 * 16;
  uint32_t* const Bbuf = aligned(bbuf, 2 * bsize);
  const int64_t steps = ((g.N + nc_max - 1) / nc_max) * ((g.K + kc_max - 1) / kc_max);
  std::unique_ptr<std::atomic<int64_t>[]> counters(new std::atomic<int64_t>[2 * steps]);
  for (int64_t i = 0; i < 2 * steps; ++i) counters[i].store(0, std::memory_order_relaxed);

  // AMX on an fp32 C with alpha 1: K steps accumulate in the tiles (above); the last step's
  // epilogue then reads no C (its sums are in the tile).
  const bool tile_acc = AMX && g.c_type == DType::f32 && g.alpha == 1.0f;
  GemmMixedArgs g_sums = g;
  g_sums.beta = 0.0f;
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    ScratchVec<uint32_t> abuf;
    uint32_t* const Ap = aligned(abuf, size_t(kp_max) * mc);
    alignas(64) float tile[MRK * NR];
    if constexpr (AMX) amx_begin();
    int64_t step = 0;
    for (int64_t jc = 0; jc < g.N; jc += nc_max) {
      const int64_t nc = std::min(nc_max, g.N - jc), npanels = (nc + NR - 1) / NR;
      for (int64_t pc = 0; pc < g.K; pc += kc_max, ++step) {
        const int64_t kc = std::min(kc_max, g.K - pc), kp = pairs(kc);
        const bool first = pc == 0, last = pc + kc == g.K;
        uint32_t* const Bp = Bbuf + (step % 2) * bsize;
        std::atomic<int64_t>& next_panel = counters[2 * step];
        for (int64_t p0; (p0 = next_panel.fetch_add(4)) < npanels;)
          for (int64_t p = p0; p < std::min(p0 + 4, npanels); ++p)
          {
            pack_b(g, pc, kc, jc + p * NR, std::min<int64_t>(NR, nc - p * NR), Bp + p * NR * kp);
            if constexpr (AMX) {  // zero pairs up to the whole tiles
              const int64_t have = (kc + 1) / 2;
              std::memset(Bp + p * NR * kp + have * NR, 0, size_t(kp - have) * NR * 4);
            }
          }
#pragma omp barrier
        std::atomic<int64_t>& next_item = counters[2 * step + 1];
        for (int64_t item; (item = next_item.fetch_add(1)) < items;) {
          const int64_t ib = item / nparts, part = item % nparts;
          const int64_t ic = ib * mc, mcur = std::min(mc, g.M - ic);
          const int64_t p0 = part * npanels / nparts, p1 = (part + 1) * npanels / nparts;
          if (p0 == p1) continue;
          if constexpr (AMX) pack_a_rows(g, ic, mcur, pc, kc, 2 * kp, reinterpret_cast<uint16_t*>(Ap));
          else pack_a(g, ic, mcur, pc, kc, Ap);
          for (int64_t p = p0; p < p1; ++p) {
            const int64_t j0 = jc + p * NR, n = std::min<int64_t>(NR, g.N - j0);
            for (int64_t i0 = 0; i0 < mcur; i0 += MRK) {
              if constexpr (AMX) {
                // A whole tile of an fp32 C across K steps: the tiles start from C's partial
                // sums and, before the last step, go straight back to C (no epilogue pass).
                const bool direct = tile_acc && n == NR && mcur - i0 >= MRK;
                float* const c = direct ? static_cast<float*>(g.C) + (ic + i0) * g.ldc + j0 : nullptr;
                const bool cin = direct && !first, cout = direct && !last && (!first || g.beta == 0.0f);
                amx_microkernel(kp, reinterpret_cast<const uint16_t*>(Ap) + i0 * 2 * kp, 2 * kp, Bp + p * NR * kp,
                                cin ? c : nullptr, g.ldc, cout ? c : tile, cout ? g.ldc : NR);
                if (cout) continue;
                if (cin) {  // the last step over C's sums: the epilogue alone
                  finish_cols32(g_sums, tile, ic + i0, j0, MRK, true, stream);
                  continue;
                }
              } else {
                microkernel(kp, Ap + i0 * kp, Bp + p * NR * kp, tile);
              }
              if (last && n == NR)
                finish_cols32(g, tile, ic + i0, j0, std::min<int64_t>(MRK, mcur - i0), first, stream);
              else
                finish(g, tile, NR, ic + i0, j0, std::min<int64_t>(MRK, mcur - i0), n, first, last);
            }
          }
        }
      }
    }
    if constexpr (AMX) _tile_release();
    if (stream) _mm_sfence();  // the streaming stores done before the region ends
  }
}

// A bf16 C with K past kWholeK: blocks of rows through an fp32 buffer (fp32 sums across the K
// steps), then the epilogue and the rounding.
template <bool AMX>
void run_via_f32(const GemmMixedArgs& g) {
  const int64_t rows = std::clamp<int64_t>((int64_t(16) << 20) / 4 / std::max<int64_t>(g.N, 1), MR, g.M);
  ScratchVec<float> buf;
  float* const tmp = aligned(buf, size_t(rows * g.N));
  for (int64_t r0 = 0; r0 < g.M; r0 += rows) {
    GemmMixedArgs h = g;
    h.M = std::min(rows, g.M - r0);
    h.A = at(g.A, g.a_type, r0 * g.rsa);
    h.alpha = 1.0f;
    h.beta = 0.0f;
    h.C = tmp;
    h.c_type = DType::f32;
    h.ldc = g.N;
    h.bias_mode = BiasMode::none;
    h.act = Activation::none;
    h.preact = nullptr;
    run_blocked<AMX>(h);
    const int nt = std::min(threads_for_work(double(h.M) * double(g.N), 65536),
                            g.max_threads > 0 ? g.max_threads : pool_threads());
    parallel_items(nt, h.M, [&](int64_t i) { finish(g, tmp + i * g.N, 0, r0 + i, 0, 1, g.N, true, true); });
  }
}


template <bool AMX>
void run(const GemmMixedArgs& g) {
  if (g.M <= 0 || g.N <= 0) return;
  if (g.K <= 0) return run_k0(g);
  if (g.c_type == DType::bf16 && g.K > kWholeK) return run_via_f32<AMX>(g);
  run_blocked<AMX>(g);
}

}  // namespace

void gemm_mixed(const GemmMixedArgs& g) { run<false>(g); }

void bias_act_backward(int64_t M, int64_t N, const void* g, DType gt, int64_t rsg, int64_t csg, const void* z,
                       DType zt, int64_t ldz, void* dz, DType dzt, Activation act, float* db) {
  if (M <= 0 || N <= 0) {
    if (db)
      for (int64_t j = 0; j < N; ++j) db[j] = 0.0f;
    return;
  }
  // Rows in fixed chunks (by the sizes alone), each chunk's column sums in its own row of
  // `part`, added in chunk order: the same bits for any thread count.
  const int64_t chunks = db ? reduction_chunks(M, N) : std::min<int64_t>(M, 64);
  ScratchVec<float> pbuf;
  float* const part = db ? aligned(pbuf, size_t(chunks * N)) : nullptr;
  const int nt = threads_for_work(double(M) * double(N), 65536);
  ScratchVec<float> gbuf;  // a strided gradient's rows gathered
  const bool dense = csg == 1;
  float* const grow = dense ? nullptr : aligned(gbuf, size_t(nt * N));
  parallel_items(nt, chunks, [&](int64_t c) {
    float* sums = part ? part + c * N : nullptr;
    if (sums) std::memset(sums, 0, size_t(N) * 4);
    float* gr = grow ? grow + size_t(omp_get_thread_num()) * N : nullptr;
    for (int64_t i = chunk_start(c, chunks, M), e = chunk_start(c + 1, chunks, M); i < e; ++i) {
      if (gr)
        for (int64_t j = 0; j < N; ++j) gr[j] = load_as_float(g, gt, i * rsg + j * csg);
      for (int64_t j = 0; j < N; j += 16) {
        const __mmask16 m = lanes(N - j);
        __m512 x = gr ? _mm512_maskz_loadu_ps(m, gr + j) : load16(at(g, gt, i * rsg + j), gt, m);
        if (act != Activation::none) x = _mm512_mul_ps(x, act_grad_vec<V>(load16(at(z, zt, i * ldz + j), zt, m), act));
        if (dz) store16(at(dz, dzt, i * N + j), dzt, m, x);
        if (sums) _mm512_mask_storeu_ps(sums + j, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, sums + j), x));
      }
    }
  });
  if (db) sum_partials(nt, chunks, N, part, N, db);
}

bool amx_available() { return amx_ready(); }

// (without AMX, or without the OS's leave to use it, the vdpbf16ps kernel)
void gemm_mixed_amx(const GemmMixedArgs& g) { amx_ready() ? run<true>(g) : run<false>(g); }

double amx_peak_gflops(int threads, double seconds) {
  if (!amx_ready()) return 0.0;
  double total = 0;
#pragma omp parallel num_threads(threads) reduction(+ : total)
  {
    amx_begin();
    alignas(64) static const uint16_t zeros[16 * 32] = {};
    _tile_loadd(4, zeros, 64);
    _tile_loadd(5, zeros, 64);
    _tile_loadd(6, zeros, 64);
    _tile_loadd(7, zeros, 64);
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    int64_t iters = 0;
    const double t0 = omp_get_wtime();
    double t1 = t0;
    while (t1 - t0 < seconds) {
      for (int rep = 0; rep < 10000; ++rep) {
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
      }
      iters += 10000;
      t1 = omp_get_wtime();
    }
    _tile_release();
    total += double(iters) * 4 * 16 * 16 * 32 * 2 / (t1 - t0) / 1e9;
  }
  return total;
}

double dot_peak_gflops(int threads, double seconds) {
  double total = 0;
#pragma omp parallel num_threads(threads) reduction(+ : total)
  {
    __m512 acc[12];
    for (int i = 0; i < 12; ++i) acc[i] = _mm512_set1_ps(0.01f * float(i));
    const __m512bh a = (__m512bh)_mm512_set1_epi32(0x3f803f80), b = (__m512bh)_mm512_set1_epi32(0x3a803a80);
    int64_t iters = 0;
    const double t0 = omp_get_wtime();
    double t1 = t0;
    while (t1 - t0 < seconds) {
      for (int rep = 0; rep < 100000; ++rep) {
#pragma GCC unroll 12
        for (int i = 0; i < 12; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
      }
      iters += 100000;
      t1 = omp_get_wtime();
    }
    float sink = 0;
    for (int i = 0; i < 12; ++i) sink += _mm512_reduce_add_ps(acc[i]);
    total += (sink == sink) ? double(iters) * 12 * 64 / (t1 - t0) / 1e9 : 0.0;  // 32 products, 2 flops each
  }
  return total;
}

}  // namespace fusedops::cpu::avx512bf16
#endif
