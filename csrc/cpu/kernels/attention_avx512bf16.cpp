// Flash attention forward for bf16 tensors with both products on the bf16 units: the scores
// Q K^T and P V as bf16 x bf16 -> fp32 on AMX tiles (tdpbf16ps) where the CPU lends them, else
// on vdpbf16ps. The scale, the mask, the online softmax, dropout, the row sums and the output
// accumulator stay fp32 and run through the fp32 kernel's row helpers (attention_isa.h), so
// masks, causal rows, empty rows and NaNs behave as there. P is rounded to bf16 for its
// product (as in torch's bf16 flash attention); the row sums are those of the fp32 P.
//
// Operands per thread, every padding zero (tiles need no edge cases):
//   Q block:  bf16 rows [BM][Ep], Ep = E rounded up to 32 (one tile's depth)
//   K of the head: per key block a pair-major panel [Ep / 2][FBN] of 32-bit words, the word
//             (p, j) holding (K[j][2p], K[j][2p + 1]): the B operand of Q K^T
//   V of the head: pair-major along keys [Sp / 2][Evp], word (p, c) = (V[2p][c], V[2p + 1][c])
//   P block:  bf16 rows [BM][FBN]
// Threads as the fp32 forward: (head, query block) tasks interleaved, K and V packed when a
// thread's head changes.
#if defined(__x86_64__)
#include "attention.h"
#include "vec/isa_avx512bf16.h"
#define FUSEDOPS_ATTN_HELPERS_ONLY 1
#include "attention_isa.h"
#include "gemm/amx.h"

namespace fusedops::cpu::avx512bf16 {
namespace {

using V = VecF32Avx512;
constexpr int BM = 64, FBN = 128;  // query rows and keys per block (multiples of 32)
// The fp32 kernel over bf16 tensors, for its row helpers (mask, online softmax, finish).
using Rows = FlashAttention<V, 8, 2, BM, 64, FBN, bf16_t>;

int64_t rup(int64_t x, int64_t a) { return (x + a - 1) / a * a; }
inline __mmask16 lanes(int64_t n) { return n >= 16 ? __mmask16(0xffff) : n <= 0 ? 0 : __mmask16((1u << n) - 1u); }
inline __mmask32 lanes32(int64_t n) { return n >= 32 ? __mmask32(~0u) : n <= 0 ? 0 : __mmask32((1u << n) - 1u); }

// C[M][N] = A B (+ C with ACC), fp32 (row stride ldc): A bf16 rows (stride lda elements) over
// depth K, B pair-major words (stride ldb words per pair). M, N and K multiples of 32.
template <bool ACC>
void mm_amx(int64_t M, int64_t N, int64_t K, const uint16_t* A, int64_t lda, const uint32_t* B, int64_t ldb,
            float* C, int64_t ldc) {
  for (int64_t i = 0; i < M; i += 32)
    for (int64_t j = 0; j < N; j += 32) {
      float* c = C + i * ldc + j;
      if constexpr (ACC) {
        _tile_loadd(0, c, ldc * 4);
        _tile_loadd(1, c + 16, ldc * 4);
        _tile_loadd(2, c + 16 * ldc, ldc * 4);
        _tile_loadd(3, c + 16 * ldc + 16, ldc * 4);
      } else {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
      }
      for (int64_t k = 0; k < K; k += 32) {
        _tile_loadd(4, A + i * lda + k, lda * 2);
        _tile_loadd(5, A + (i + 16) * lda + k, lda * 2);
        _tile_loadd(6, B + (k / 2) * ldb + j, ldb * 4);
        _tile_loadd(7, B + (k / 2) * ldb + j + 16, ldb * 4);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
      }
      _tile_stored(0, c, ldc * 4);
      _tile_stored(1, c + 16, ldc * 4);
      _tile_stored(2, c + 16 * ldc, ldc * 4);
      _tile_stored(3, c + 16 * ldc + 16, ldc * 4);
    }
}

// The same product on vdpbf16ps: 8 x 32 tiles, A broadcast by pairs.
template <bool ACC>
void mm_dot(int64_t M, int64_t N, int64_t K, const uint16_t* A, int64_t lda, const uint32_t* B, int64_t ldb,
            float* C, int64_t ldc) {
  constexpr int MR = 8;
  for (int64_t j = 0; j < N; j += 32)
    for (int64_t i = 0; i < M; i += MR) {
      __m512 acc[MR][2];
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r) {
        acc[r][0] = ACC ? _mm512_loadu_ps(C + (i + r) * ldc + j) : _mm512_setzero_ps();
        acc[r][1] = ACC ? _mm512_loadu_ps(C + (i + r) * ldc + j + 16) : _mm512_setzero_ps();
      }
      const uint16_t* a = A + i * lda;
      const uint32_t* b = B + j;
#pragma GCC unroll 2
      for (int64_t p = 0; p < K / 2; ++p, b += ldb) {
        const __m512bh b0 = (__m512bh)_mm512_loadu_si512(b), b1 = (__m512bh)_mm512_loadu_si512(b + 16);
#pragma GCC unroll 8
        for (int r = 0; r < MR; ++r) {
          uint32_t w;
          std::memcpy(&w, a + r * lda + 2 * p, 4);
          const __m512bh x = (__m512bh)_mm512_set1_epi32(int(w));
          acc[r][0] = _mm512_dpbf16_ps(acc[r][0], x, b0);
          acc[r][1] = _mm512_dpbf16_ps(acc[r][1], x, b1);
        }
      }
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r) {
        _mm512_storeu_ps(C + (i + r) * ldc + j, acc[r][0]);
        _mm512_storeu_ps(C + (i + r) * ldc + j + 16, acc[r][1]);
      }
    }
}

// A zero-filled buffer starting on a cache line: a tile row that straddles two lines loads at
// a third of the speed (measured with AMX on a Sapphire-Rapids-class Xeon).
template <typename T>
class Aligned {
 public:
  void assign(size_t n, T x) {
    v_.assign(n + 64 / sizeof(T), x);
    p_ = reinterpret_cast<T*>((reinterpret_cast<uintptr_t>(v_.data()) + 63) & ~uintptr_t(63));
    n_ = n;
  }
  T* data() { return p_; }
  T* begin() { return p_; }
  T* end() { return p_ + n_; }
  T& operator[](size_t i) { return p_[i]; }

 private:
  std::vector<T> v_;
  T* p_ = nullptr;
  size_t n_ = 0;
};

struct Scratch {
  Aligned<uint32_t> kt, vp;
  Aligned<uint16_t> qb, pb;
  Aligned<float> s, ot, o, mrow, lrow, corr;
  int64_t k_cached = -1, v_cached = -1;
};

template <bool AMX, bool ACC = false>
void mm(int64_t M, int64_t N, int64_t K, const uint16_t* A, int64_t lda, const uint32_t* B, int64_t ldb, float* C,
        int64_t ldc) {
  if constexpr (AMX) mm_amx<ACC>(M, N, K, A, lda, B, ldb, C, ldc);
  else mm_dot<ACC>(M, N, K, A, lda, B, ldb, C, ldc);
}

// Rows [0, len) of a bf16 matrix (row stride rs elements, n columns) as pair-major words down
// the columns of a panel: d[p * ld + j] = (X[j][2p], X[j][2p + 1]) for 2p < cols (zeros past
// n and past len up to rows); the B operand of a product against X^T.
void pack_transposed_pairs(const bf16_t* x, int64_t rs, int64_t len, int64_t n, int64_t cols, int64_t rows,
                           int64_t ld, uint32_t* d) {
  const __m512i idx = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                         _mm512_set1_epi32(int(ld)));
  for (int64_t j = 0; j < rows; ++j)
    for (int64_t e = 0; e < cols; e += 32) {
      const __m512i v = j < len ? _mm512_maskz_loadu_epi16(lanes32(n - e), x + j * rs + e) : _mm512_setzero_si512();
      _mm512_i32scatter_epi32(d + (e / 2) * ld + j, idx, v, 4);
    }
}

// Rows 2p and 2p + 1 (p < rows / 2; rows past len zero) of a bf16 matrix interleaved:
// d[p * ld + c] = (X[2p][c], X[2p + 1][c]) for c < cols (zeros past n); the B operand of a
// product over X's rows.
void pack_row_pairs(const bf16_t* x, int64_t rs, int64_t len, int64_t n, int64_t cols, int64_t rows, int64_t ld,
                    uint32_t* d) {
  for (int64_t p = 0; p < rows / 2; ++p) {
    const bf16_t* r0 = x + 2 * p * rs;
    const bool has0 = 2 * p < len, has1 = 2 * p + 1 < len;
    for (int64_t c = 0; c < cols; c += 16) {
      const __mmask16 mk = lanes(n - c);
      const __m512i lo = has0 ? _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mk, r0 + c)) : _mm512_setzero_si512();
      const __m512i hi = has1 ? _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mk, r0 + rs + c)) : _mm512_setzero_si512();
      _mm512_storeu_si512(d + p * ld + c, _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
    }
  }
}

template <bool AMX>
struct NativeForward {

  static void pack_head(const AttentionArgs<bf16_t>& a, int64_t b, Scratch& w) {
    const int64_t Ep = rup(a.E, 32), Evp = rup(a.Ev, 32), Sp = rup(a.S, FBN);
    if (a.k_off[b] != w.k_cached) {  // a panel per key block
      for (int64_t j0 = 0; j0 < Sp; j0 += FBN)
        pack_transposed_pairs(a.k + a.k_off[b] + j0 * a.k_rs, a.k_rs, a.S - j0, a.E, Ep, FBN, FBN,
                              w.kt.data() + (j0 / FBN) * (Ep / 2) * FBN);
      w.k_cached = a.k_off[b];
    }
    if (a.v_off[b] != w.v_cached) {
      pack_row_pairs(a.v + a.v_off[b], a.v_rs, a.S, a.Ev, Evp, Sp, Evp, w.vp.data());
      w.v_cached = a.v_off[b];
    }
  }

  // The online softmax step of row r over keys [j0, j0 + n) without a mask or dropout: the
  // raw scores s scaled, their max and exponentials in one register pass each, P stored as bf16
  // into p (zeros up to n32). As Rows::online_softmax_row, fused.
  static void fast_row(const AttentionArgs<bf16_t>& a, int64_t row, int64_t j0, int64_t n, int64_t n32,
                       const float* s, uint16_t* p, float& mrow, float& lrow, float& corr) {
    const int64_t ncol = Rows::visible(a, row, j0, n);
    const __m512 scale = _mm512_set1_ps(a.scale), ninf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
    __m512 mx = ninf;
    for (int64_t c = 0; c < ncol; c += 16)
      mx = _mm512_mask_max_ps(mx, lanes(ncol - c), mx, _mm512_mul_ps(scale, _mm512_loadu_ps(s + c)));
    float mnew = std::max(mrow, _mm512_reduce_max_ps(mx));
    if (mnew == -std::numeric_limits<float>::infinity()) {
      if (std::any_of(s, s + ncol, [](float v) { return std::isnan(v); })) {
        mnew = std::numeric_limits<float>::quiet_NaN();  // as the fp32 kernel: the row becomes NaN
      } else {  // nothing visible yet: P = 0, O stays 0
        std::fill(p, p + n32, uint16_t(0));
        corr = 0.0f;
        return;
      }
    }
    corr = std::exp(mrow - mnew);
    const __m512 sub = _mm512_set1_ps(-mnew);
    __m512 sum = _mm512_setzero_ps();
    for (int64_t c = 0; c < n32; c += 16) {
      const __mmask16 mk = lanes(ncol - c);
      const __m512 e = _mm512_maskz_mov_ps(mk, vexp<V>(_mm512_fmadd_ps(_mm512_loadu_ps(s + c), scale, sub)));
      sum = _mm512_add_ps(sum, e);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(p + c), (__m256i)_mm512_cvtneps_pbh(e));
    }
    lrow = lrow * corr + _mm512_reduce_add_ps(sum);
    mrow = mnew;
  }

  static void block(const AttentionArgs<bf16_t>& a, int64_t b, int64_t i0, Scratch& w) {
    const int64_t E = a.E, S = a.S, Ep = rup(E, 32), Evp = rup(a.Ev, 32);
    const int64_t m = std::min<int64_t>(BM, a.L - i0), mp = rup(m, 32);
    const bf16_t* q = a.q + a.q_off[b] + i0 * a.q_rs;
    uint16_t* qb = w.qb.data();
    for (int64_t r = 0; r < mp; ++r) {
      if (r < m) std::memcpy(qb + r * Ep, q + r * a.q_rs, size_t(E) * 2);
      std::fill(qb + r * Ep + (r < m ? E : 0), qb + (r + 1) * Ep, uint16_t(0));
    }
    std::fill(w.pb.data() + m * FBN, w.pb.data() + mp * FBN, uint16_t(0));
    std::fill(w.o.begin(), w.o.begin() + m * Evp, 0.0f);
    std::fill(w.mrow.begin(), w.mrow.end(), -std::numeric_limits<float>::infinity());
    std::fill(w.lrow.begin(), w.lrow.end(), 0.0f);
    const __m512 scale = _mm512_set1_ps(a.scale);
    const bool plain = a.mask == AttnMask::none && a.dropout_p == 0.0;  // the fused row step
    const int64_t kend = a.causal ? std::min(S, i0 + m) : S;
    for (int64_t j0 = 0; j0 < kend; j0 += FBN) {
      const int64_t n = std::min<int64_t>(FBN, kend - j0), n16 = rup(n, 16), n32 = rup(n, 32);
      mm<AMX>(mp, n32, Ep, qb, Ep, w.kt.data() + (j0 / FBN) * (Ep / 2) * FBN, FBN, w.s.data(), FBN);
      for (int64_t r = 0; r < m; ++r) {
        float* s = w.s.data() + r * FBN;
        uint16_t* p = w.pb.data() + r * FBN;
        if (plain) {
          fast_row(a, i0 + r, j0, n, n32, s, p, w.mrow[r], w.lrow[r], w.corr[r]);
          continue;
        }
        for (int64_t c = 0; c < n16; c += 16) _mm512_storeu_ps(s + c, _mm512_mul_ps(scale, _mm512_loadu_ps(s + c)));
        Rows::online_softmax_row(a, b, i0 + r, j0, n, s, w.mrow[r], w.lrow[r], w.corr[r]);
        for (int64_t c = 0; c < n32; c += 16)
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(p + c),
                              (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(lanes(n16 - c), s + c)));
      }
      mm<AMX>(mp, Evp, n32, w.pb.data(), FBN, w.vp.data() + (j0 / 2) * Evp, Evp, w.ot.data(), Evp);
      for (int64_t r = 0; r < m; ++r) {
        const __m512 f = _mm512_set1_ps(w.corr[r]);
        float* o = w.o.data() + r * Evp;
        const float* t = w.ot.data() + r * Evp;
        for (int64_t c = 0; c < Evp; c += 16)
          _mm512_storeu_ps(o + c, _mm512_fmadd_ps(f, _mm512_loadu_ps(o + c), _mm512_loadu_ps(t + c)));
      }
    }
    for (int64_t r = 0; r < m; ++r) Rows::finish_row(a, b, i0 + r, w.o.data() + r * Evp, w.lrow[r], w.mrow[r]);
  }

  static void run(const AttentionArgs<bf16_t>& a) {
    if (a.batch <= 0 || a.L <= 0) return;
    const int64_t nib = (a.L + BM - 1) / BM, tasks = a.batch * nib;
    const int nt = threads_for_work(2.0 * double(a.batch) * a.L * a.S * (a.E + a.Ev), 1e6);
    const int64_t Ep = rup(a.E, 32), Evp = rup(a.Ev, 32), Sp = rup(a.S, FBN);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
      Scratch w;  // per call: the packed K and V of a head are megabytes; not kept between calls
      w.kt.assign(size_t(std::max<int64_t>(Sp, FBN) * Ep / 2), 0);
      w.vp.assign(size_t(std::max<int64_t>(Sp, FBN) / 2 * Evp), 0);
      w.qb.assign(size_t(BM * Ep), 0);
      w.pb.assign(size_t(BM * FBN), 0);
      w.s.assign(size_t(BM * FBN), 0.0f);
      w.ot.assign(size_t(BM * Evp), 0.0f);
      w.o.assign(size_t(BM * Evp), 0.0f);
      w.mrow.assign(BM, 0.0f);
      w.lrow.assign(BM, 0.0f);
      w.corr.assign(BM, 0.0f);
      if constexpr (AMX) amx_begin();
#pragma omp for schedule(static, 1)
      for (int64_t t = 0; t < tasks; ++t) {
        const int64_t b = t / nib, i0 = (t % nib) * BM;
        pack_head(a, b, w);
        block(a, b, i0, w);
      }
      if constexpr (AMX) _tile_release();
    }
  }
};


// ---- backward ----------------------------------------------------------------------------------
// FlashAttention-2 order, per (head, key block of BN keys), over the query blocks of BM rows:
//   S = Q K^T and dP = dO V^T (bf16 rows against K^T, V^T panels), P = exp(scale S - lse) and
//   dS = P (dP - D) in fp32, then P and dS rounded to bf16 for the three accumulating products
//   dV^T += dO^T P, dK^T += Q^T dS (P and dS interleaved by pairs of query rows) and
//   dQ += dS K (K interleaved by pairs of keys); dK^T and dV^T are transposed when stored.
// Per head: Q and dO as bf16 rows and transposed, D = rowsum(dO * O), the dQ accumulator.
// Tasks as the fp32 backward: (head, group of key blocks), partial dQ per group summed in group
// order, so the bits do not depend on the thread count.
struct BwdScratch {
  Aligned<uint16_t> qb, dob, qT, doT, dsb;
  Aligned<uint32_t> kt, vt, kp, ppair, dspair;
  Aligned<float> D, dq, dkT, dvT, s, dp;
};

template <bool AMX>
struct NativeBackward {
  static constexpr int BM = 64, BN = 64;
  using Rw = FlashAttention<V, 8, 2, BM, BN, BN, bf16_t>;

  static void alloc(const AttentionArgs<bf16_t>& a, BwdScratch& w) {
    const int64_t Lp = rup(a.L, 32), Ep = rup(a.E, 32), Evp = rup(a.Ev, 32);
    w.qb.assign(size_t(Lp * Ep), 0);
    w.dob.assign(size_t(Lp * Evp), 0);
    w.qT.assign(size_t(Ep * Lp), 0);
    w.doT.assign(size_t(Evp * Lp), 0);
    w.dsb.assign(size_t(BM * BN), 0);
    w.kt.assign(size_t(Ep / 2 * BN), 0);
    w.vt.assign(size_t(Evp / 2 * BN), 0);
    w.kp.assign(size_t(BN / 2 * Ep), 0);
    w.ppair.assign(size_t(BM / 2 * BN), 0);
    w.dspair.assign(size_t(BM / 2 * BN), 0);
    w.D.assign(size_t(Lp), 0.0f);
    w.dq.assign(size_t(Lp * Ep), 0.0f);
    w.dkT.assign(size_t(Ep * BN), 0.0f);
    w.dvT.assign(size_t(Evp * BN), 0.0f);
    w.s.assign(size_t(BM * BN), 0.0f);
    w.dp.assign(size_t(BM * BN), 0.0f);
  }

  // Q and dO of head b as bf16 rows [Lp][Ep] / [Lp][Evp] and transposed, D = rowsum(dO * O).
  static void prepare_head(const AttentionArgs<bf16_t>& a, int64_t b, BwdScratch& w) {
    const int64_t L = a.L, E = a.E, Ev = a.Ev, Lp = rup(L, 32), Ep = rup(E, 32), Evp = rup(Ev, 32);
    const bf16_t* q = a.q + a.q_off[b];
    const bf16_t* dO = a.dout + b * L * Ev;
    const bf16_t* O = a.out + b * L * Ev;
    for (int64_t r = 0; r < L; ++r) {
      std::memcpy(w.qb.data() + r * Ep, q + r * a.q_rs, size_t(E) * 2);
      std::memcpy(w.dob.data() + r * Evp, dO + r * Ev, size_t(Ev) * 2);
      __m512 acc = _mm512_setzero_ps();
      for (int64_t c = 0; c < Ev; c += 16) {
        const __mmask16 mk = lanes(Ev - c);
        const __m512 x = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mk, dO + r * Ev + c)), 16));
        const __m512 y = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mk, O + r * Ev + c)), 16));
        acc = _mm512_fmadd_ps(x, y, acc);
      }
      w.D[r] = _mm512_reduce_add_ps(acc);
    }
    for (int64_t r = 0; r < Lp; ++r)
      for (int64_t e = 0; e < Ep; ++e) w.qT[e * Lp + r] = w.qb[r * Ep + e];
    for (int64_t r = 0; r < Lp; ++r)
      for (int64_t c = 0; c < Evp; ++c) w.doT[c * Lp + r] = w.dob[r * Evp + c];
  }

  // P and dS of query rows [i0, i0 + m) against keys [j0, j0 + n) into w.s and w.dp (fp32).
  static void probabilities(const AttentionArgs<bf16_t>& a, int64_t b, int64_t i0, int64_t m, int64_t j0, int64_t n,
                            BwdScratch& w) {
    const float* lse = a.lse + b * a.L;
    const __m512 scale = _mm512_set1_ps(a.scale);
    const bool plain = a.mask == AttnMask::none && a.dropout_p == 0.0;
    const int64_t n16 = rup(n, 16);
    for (int64_t r = 0; r < m; ++r) {
      const int64_t row = i0 + r;
      float* s = w.s.data() + r * BN;
      float* dp = w.dp.data() + r * BN;
      const float l = lse[row], Dr = w.D[row];
      const __m512 d = _mm512_set1_ps(Dr);
      if (l == std::numeric_limits<float>::infinity()) {  // no visible key: P = dS = 0
        std::fill(s, s + BN, 0.0f);
        std::fill(dp, dp + BN, 0.0f);
        continue;
      }
      const int64_t ncol = Rw::visible(a, row, j0, n);
      if (plain) {
        const __m512 sub = _mm512_set1_ps(-l);
        for (int64_t c = 0; c < n16; c += 16) {
          const __m512 p = _mm512_maskz_mov_ps(lanes(ncol - c), vexp<V>(_mm512_fmadd_ps(_mm512_loadu_ps(s + c), scale, sub)));
          _mm512_storeu_ps(s + c, p);
          _mm512_storeu_ps(dp + c, _mm512_mul_ps(p, _mm512_sub_ps(_mm512_loadu_ps(dp + c), d)));
        }
        continue;
      }
      for (int64_t c = 0; c < n16; c += 16) _mm512_storeu_ps(s + c, _mm512_mul_ps(scale, _mm512_loadu_ps(s + c)));
      Rw::mask_row(a, b, row, j0, n, ncol, s);
      Rw::exp_row(s, n16, l);  // P
      if (a.dropout_p > 0.0) {  // dV takes the dropped, rescaled P; dS the kept dP
        const uint64_t thr = attention_drop_threshold(a.dropout_p), key = attention_seed_key(a.seed);
        const float inv_keep = a.dropout_p < 1.0 ? float(1.0 / (1.0 - a.dropout_p)) : 0.0f;
        const uint64_t base = a.offset + uint64_t((b * a.L + row) * a.S + j0);
        for (int64_t c = 0; c < n16; ++c) {
          const bool keep = c < ncol && attention_keep(key, base + c, thr);
          dp[c] = s[c] * ((keep ? dp[c] * inv_keep : 0.0f) - Dr);
          s[c] = keep ? s[c] * inv_keep : 0.0f;
        }
      } else {
        for (int64_t c = 0; c < n16; c += 16)
          _mm512_storeu_ps(dp + c, _mm512_mul_ps(_mm512_loadu_ps(s + c), _mm512_sub_ps(_mm512_loadu_ps(dp + c), d)));
      }
    }
  }

  // P and dS (rows < m, keys < n) to bf16: interleaved by row pairs (ppair, dspair) and dS rows (dsb).
  static void round_pairs(int64_t m, int64_t mp, int64_t n, BwdScratch& w) {
    for (int64_t p = 0; p < mp / 2; ++p) {
      const int64_t r0 = 2 * p, r1 = 2 * p + 1;
      for (int64_t c = 0; c < BN; c += 16) {
        const __mmask16 k0 = r0 < m ? lanes(n - c) : 0, k1 = r1 < m ? lanes(n - c) : 0;
        const __m256i p0 = (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(k0, w.s.data() + r0 * BN + c));
        const __m256i p1 = (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(k1, w.s.data() + r1 * BN + c));
        const __m256i d0 = (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(k0, w.dp.data() + r0 * BN + c));
        const __m256i d1 = (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(k1, w.dp.data() + r1 * BN + c));
        _mm512_storeu_si512(w.ppair.data() + p * BN + c,
                            _mm512_or_si512(_mm512_cvtepu16_epi32(p0), _mm512_slli_epi32(_mm512_cvtepu16_epi32(p1), 16)));
        _mm512_storeu_si512(w.dspair.data() + p * BN + c,
                            _mm512_or_si512(_mm512_cvtepu16_epi32(d0), _mm512_slli_epi32(_mm512_cvtepu16_epi32(d1), 16)));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(w.dsb.data() + r0 * BN + c), d0);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(w.dsb.data() + r1 * BN + c), d1);
      }
    }
  }

  static void key_block(const AttentionArgs<bf16_t>& a, int64_t b, int64_t j0, BwdScratch& w) {
    const int64_t L = a.L, S = a.S, E = a.E, Ev = a.Ev;
    const int64_t Lp = rup(L, 32), Ep = rup(E, 32), Evp = rup(Ev, 32);
    const int64_t n = std::min<int64_t>(BN, S - j0);
    const bf16_t* k = a.k + a.k_off[b] + j0 * a.k_rs;
    const bf16_t* v = a.v + a.v_off[b] + j0 * a.v_rs;
    pack_transposed_pairs(k, a.k_rs, n, E, Ep, BN, BN, w.kt.data());
    pack_transposed_pairs(v, a.v_rs, n, Ev, Evp, BN, BN, w.vt.data());
    pack_row_pairs(k, a.k_rs, n, E, Ep, BN, Ep, w.kp.data());
    std::fill(w.dkT.begin(), w.dkT.end(), 0.0f);
    std::fill(w.dvT.begin(), w.dvT.end(), 0.0f);
    for (int64_t i0 = a.causal ? j0 / BM * BM : 0; i0 < L; i0 += BM) {
      const int64_t m = std::min<int64_t>(BM, L - i0), mp = rup(m, 32);
      mm<AMX>(mp, BN, Ep, w.qb.data() + i0 * Ep, Ep, w.kt.data(), BN, w.s.data(), BN);     // S = Q K^T
      mm<AMX>(mp, BN, Evp, w.dob.data() + i0 * Evp, Evp, w.vt.data(), BN, w.dp.data(), BN);  // dP = dO V^T
      probabilities(a, b, i0, m, j0, n, w);
      round_pairs(m, mp, n, w);
      if (a.dv) mm<AMX, true>(Evp, BN, mp, w.doT.data() + i0, Lp, w.ppair.data(), BN, w.dvT.data(), BN);
      if (a.dk) mm<AMX, true>(Ep, BN, mp, w.qT.data() + i0, Lp, w.dspair.data(), BN, w.dkT.data(), BN);
      if (a.dq) mm<AMX, true>(mp, Ep, BN, w.dsb.data(), BN, w.kp.data(), Ep, w.dq.data() + i0 * Ep, Ep);
    }
    if (a.dk) {
      bf16_t* dk = a.dk + (b * S + j0) * E;
      for (int64_t j = 0; j < n; ++j)
        for (int64_t e = 0; e < E; ++e) dk[j * E + e] = float_to_bf16(a.scale * w.dkT[e * BN + j]);
    }
    if (a.dv) {
      bf16_t* dv = a.dv + (b * S + j0) * Ev;
      for (int64_t j = 0; j < n; ++j)
        for (int64_t c = 0; c < Ev; ++c) dv[j * Ev + c] = float_to_bf16(w.dvT[c * BN + j]);
    }
  }

  static void run(const AttentionArgs<bf16_t>& a) {
    const int64_t L = a.L, S = a.S, E = a.E, Lp = rup(L, 32), Ep = rup(E, 32);
    const int64_t nkb = (S + BN - 1) / BN;
    const int nt = threads_for_work(4.0 * double(a.batch) * L * S * (E + a.Ev), 1e6);
    const int64_t groups = std::clamp<int64_t>(8 / a.batch, 1, nkb), tasks = a.batch * groups;
    std::vector<float> partial(a.dq && groups > 1 ? size_t(tasks * Lp * Ep) : 0);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
      BwdScratch w;
      alloc(a, w);
      if constexpr (AMX) amx_begin();
      int64_t prepared = -1;
#pragma omp for schedule(dynamic, 1)
      for (int64_t task = 0; task < tasks; ++task) {
        const int64_t b = task / groups, grp = task % groups;
        if (b != prepared) prepare_head(a, b, w), prepared = b;
        std::fill(w.dq.begin(), w.dq.end(), 0.0f);
        for (int64_t kb = grp * nkb / groups, k1 = (grp + 1) * nkb / groups; kb < k1; ++kb) key_block(a, b, kb * BN, w);
        if (a.dq && groups > 1) std::copy(w.dq.begin(), w.dq.end(), partial.begin() + task * Lp * Ep);
        else if (a.dq) Rw::store_dq(a, b, 0, L, w.dq.data(), 1, 0, Ep);
      }
      if constexpr (AMX) _tile_release();
      if (a.dq && groups > 1) {
#pragma omp for schedule(static)
        for (int64_t row = 0; row < a.batch * L; ++row) {
          const int64_t b = row / L, r = row % L;
          Rw::store_dq(a, b, r, r + 1, partial.data() + b * groups * Lp * Ep, groups, Lp * Ep, Ep);
        }
      }
    }
  }
};

}  // namespace

void attention_forward_bf16(const AttentionArgs<bf16_t>& a, bool amx) {
  if (amx) NativeForward<true>::run(a);
  else NativeForward<false>::run(a);
}

bool attention_backward_bf16(const AttentionArgs<bf16_t>& a, bool amx) {
  if (a.batch <= 0 || a.L <= 0 || a.S <= 0) return false;  // no products: the fp32 kernel's zeros
  if (amx) NativeBackward<true>::run(a);
  else NativeBackward<false>::run(a);
  return true;
}

}  // namespace fusedops::cpu::avx512bf16
#endif
