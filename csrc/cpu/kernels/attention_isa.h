// Flash attention forward and backward written once over a register trait V (vec.h) and
// instantiated per instruction set by attention_<isa>.cpp (each defines FUSEDOPS_ATTN_MR_*,
// FUSEDOPS_ATTN_NV_* and FUSEDOPS_ATTN_BLOCK_* before including this file).
//
// The products of a block pair (scores Q K^T, P V, and the backward's dP = dO V^T, dV += P^T dO,
// dK += dS^T Q, dQ += dS K) run through one register-blocked tile, MR rows x NV vectors of
// accumulators (AVX2 fp32: 6 x 16, 12 ymm), over operands packed per head or per block into
// per-thread scratch whose padding is zero, so tiles never need edge cases:
//   forward, per (b, query block): Q scaled [BM][E]; per head K^T [E][S] and V [S][Ev]
//     (packed when the thread's head changes); scores [BM][BN]; O accumulator [BM][Ev].
//   backward, per (b, key block): per head Q scaled [L][E], dO [L][Ev], D = rowsum(dO * O),
//     the dQ accumulator [L][E]; per key block K^T, K, V^T and the dK / dV accumulators.
// Threads: forward over (b, query block) tasks, interleaved so causal rows balance; backward
// over heads (each thread owns its heads' dQ), or, with fewer heads than threads, over the key
// blocks of one head with a dQ accumulator per thread summed at the end.
#pragma once

#include "attention.h"
#include "../../contracts/attention_rng.h"

namespace fusedops::cpu::FUSEDOPS_ISA_NS {

template <class V, int MR, int NV, int BM, int BN, int FBN = BN, class St = typename V::T>
struct FlashAttention {
  using T = typename V::T;  // arithmetic (and packed operands)
  using R = typename V::R;
  using Args = AttentionArgs<St>;  // St: the tensors' storage type (bf16 widens while packing)
  static constexpr int W = V::W;
  static constexpr int NR = NV * W;
  static_assert(BM % MR == 0 && BN % NR == 0 && BN % MR == 0 && BN % W == 0 && FBN % NR == 0,
                "attention blocks must hold whole tiles");
  static constexpr T kNegInf = -std::numeric_limits<T>::infinity();

  static int64_t rup(int64_t x, int64_t a) { return (x + a - 1) / a * a; }

  // ---- the tile ------------------------------------------------------------------------------

  // C[MR][NR] (leading dimension ldc) over A(r, k) = A[r * ars + k * aks] and
  // B(k, c) = B[k * ldb + c], k < K. MODE 0: C = A B; 1: C += A B; 2: C = rs[r] C + A B.
  template <int MODE>
  static inline void tile(int64_t K, const T* __restrict A, int64_t ars, int64_t aks,
                          const T* __restrict B, int64_t ldb, T* __restrict C, int64_t ldc,
                          const T* rs) {
    R acc[MR][NV];
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      R f = MODE == 2 ? V::set1(rs[i]) : V::zero();
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) {
        if constexpr (MODE == 0) acc[i][v] = V::zero();
        else if constexpr (MODE == 1) acc[i][v] = V::loadu(C + i * ldc + v * W);
        else acc[i][v] = V::mul(f, V::loadu(C + i * ldc + v * W));
      }
    }
    const T* a = A;
#pragma GCC unroll 4
    for (int64_t k = 0; k < K; ++k) {
      R b[NV];
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) b[v] = V::loadu(B + v * W);
#pragma GCC unroll 16
      for (int i = 0; i < MR; ++i) {
        R x = V::bcast(a + i * ars);
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) acc[i][v] = V::fmadd(x, b[v], acc[i][v]);
      }
      a += aks;
      B += ldb;
    }
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) V::storeu(C + i * ldc + v * W, acc[i][v]);
  }

  // The tiles covering rows [0, rup(M, MR)) and columns [0, rup(N, NR)) of C.
  template <int MODE>
  static void block(int64_t M, int64_t N, int64_t K, const T* A, int64_t ars, int64_t aks,
                    const T* B, int64_t ldb, T* C, int64_t ldc, const T* rs = nullptr) {
    for (int64_t c0 = 0; c0 < N; c0 += NR)
      for (int64_t r0 = 0; r0 < M; r0 += MR)
        tile<MODE>(K, A + r0 * ars, ars, aks, B + c0, ldb, C + r0 * ldc + c0, ldc,
                   MODE == 2 ? rs + r0 : nullptr);
  }

  // ---- row helpers ---------------------------------------------------------------------------

  static T row_max(const T* x, int64_t n) {  // n a multiple of W
    R m = V::set1(kNegInf);
    for (int64_t c = 0; c < n; c += W) m = V::max(m, V::loadu(x + c));
    return V::hmax(m);
  }

  // x[c] = exp(x[c] - sub) for c < n (a multiple of W); returns the sum.
  static T exp_row(T* x, int64_t n, T sub) {
    if constexpr (V::fast_math) {
      const R s = V::set1(sub);
      R acc = V::zero();
      for (int64_t c = 0; c < n; c += W) {
        R p = vexp<V>(V::sub(V::loadu(x + c), s));
        V::storeu(x + c, p);
        acc = V::add(acc, p);
      }
      return V::hsum(acc);
    } else {
      T acc = 0;
      for (int64_t c = 0; c < n; ++c) {
        x[c] = std::exp(x[c] - sub);
        acc += x[c];
      }
      return acc;
    }
  }

  // Scores of row `row` for keys [j0, j0 + n): the mask applied, keys past `ncol` (causal) and
  // the padding up to rup(n, W) set to -inf.
  static void mask_row(const Args& a, int64_t b, int64_t row, int64_t j0, int64_t n,
                       int64_t ncol, T* s) {
    if (a.mask == AttnMask::additive) {
      const St* mk = a.mask_add + a.m_off[b] + row * a.m_rs + j0 * a.m_cs;
      if (a.m_cs == 1) {
        int64_t c = 0;
        for (; c + W <= ncol; c += W) V::storeu(s + c, V::add(V::loadu(s + c), ld<V>(mk + c)));
        for (; c < ncol; ++c) s[c] += to_t<T>(mk[c]);
      } else {
        for (int64_t c = 0; c < ncol; ++c) s[c] += to_t<T>(mk[c * a.m_cs]);
      }
    } else if (a.mask == AttnMask::boolean) {
      const uint8_t* mk = a.mask_bool + a.m_off[b] + row * a.m_rs + j0 * a.m_cs;
      for (int64_t c = 0; c < ncol; ++c)
        if (!mk[c * a.m_cs]) s[c] = kNegInf;
    }
    const int64_t np = rup(n, W);
    for (int64_t c = ncol; c < np; ++c) s[c] = kNegInf;
  }

  static int64_t visible(const Args& a, int64_t row, int64_t j0, int64_t n) {
    if (!a.causal) return n;
    return std::clamp<int64_t>(row - j0 + 1, 0, n);
  }

  // A row of n elements between the tensors' storage and the packed arithmetic type.
  static void copy_row(T* d, const St* s, int64_t n) {
    if constexpr (std::is_same_v<St, T>) std::memcpy(d, s, sizeof(T) * size_t(n));
    else for (int64_t c = 0; c < n; ++c) d[c] = to_t<T>(s[c]);
  }
  static void store_row(St* d, const T* s, int64_t n) {
    if constexpr (std::is_same_v<St, T>) std::memcpy(d, s, sizeof(T) * size_t(n));
    else for (int64_t c = 0; c < n; ++c) d[c] = from_t<St>(s[c]);
  }

  // ---- per-thread scratch --------------------------------------------------------------------

  struct Buf {
    std::vector<T> v;
    T* get(size_t n) {  // 64-byte aligned, grows only
      const size_t pad = 64 / sizeof(T);
      if (v.size() < n + pad) v.assign(n + pad, T(0));
      auto p = reinterpret_cast<uintptr_t>(v.data());
      return reinterpret_cast<T*>((p + 63) & ~uintptr_t(63));
    }
  };

  static int threads_for(double flops) {
    return threads_for_work(flops, 1e6);  // a thread per MFLOP
  }

  // ---- forward -------------------------------------------------------------------------------

  struct FwdScratch {
    Buf kt_b, vp_b, qs_b, s_b, o_b, st_b;
    int64_t k_cached = -1, v_cached = -1;
    T *kt, *vp, *qs, *s, *o, *mrow, *lrow, *corr;
  };

  // K^T of head b as one [E][FBN] panel per key block (a power-of-two row stride such as S
  // would map the rows of a panel to the same L1 sets), zero past S; V as [S][Evp].
  static void pack_head_kv(const Args& a, int64_t b, FwdScratch& w) {
    const int64_t Evp = rup(a.Ev, NR), E = a.E;
    if (a.k_off[b] != w.k_cached) {
      const St* k = a.k + a.k_off[b];
      const int64_t nkb = (a.S + FBN - 1) / FBN;
      for (int64_t j = 0; j < a.S; ++j) {
        const St* kr = k + j * a.k_rs;
        T* d = w.kt + (j / FBN) * E * FBN + j % FBN;
        for (int64_t e = 0; e < E; ++e) d[e * FBN] = to_t<T>(kr[e]);
      }
      for (int64_t j = a.S; j < nkb * FBN; ++j) {
        T* d = w.kt + (j / FBN) * E * FBN + j % FBN;
        for (int64_t e = 0; e < E; ++e) d[e * FBN] = T(0);
      }
      w.k_cached = a.k_off[b];
    }
    if (a.v_off[b] != w.v_cached) {
      const St* v = a.v + a.v_off[b];
      for (int64_t j = 0; j < a.S; ++j) {
        T* d = w.vp + j * Evp;
        copy_row(d, v + j * a.v_rs, a.Ev);
        for (int64_t c = a.Ev; c < Evp; ++c) d[c] = T(0);
      }
      w.v_cached = a.v_off[b];
    }
  }

  // One row's step of the online softmax over keys [j0, j0 + n): the scores s (rup(n, W)
  // wide, scaled) become the probabilities P (masked, dropout applied), the row's running max
  // mrow and sum lrow are updated, and corr is the factor its output accumulator takes first.
  static void online_softmax_row(const Args& a, int64_t b, int64_t row, int64_t j0, int64_t n, T* s, T& mrow,
                                 T& lrow, T& corr) {
    const int64_t ncol = visible(a, row, j0, n);
    mask_row(a, b, row, j0, n, ncol, s);
    T mnew = std::max(mrow, row_max(s, rup(n, W)));
    if (mnew == kNegInf) {
      // a NaN score (NaN in q or k) is no masked key: the row becomes NaN, as in torch
      if (std::any_of(s, s + n, [](T v) { return std::isnan(v); })) {
        mnew = std::numeric_limits<T>::quiet_NaN();
      } else {  // nothing visible yet: P = 0, O stays 0
        std::fill(s, s + rup(n, W), T(0));
        corr = T(0);
        return;
      }
    }
    corr = std::exp(mrow - mnew);
    const T sum = exp_row(s, rup(n, W), mnew);
    lrow = lrow * corr + sum;
    mrow = mnew;
    if (a.dropout_p > 0.0) {
      const uint64_t thr = attention_drop_threshold(a.dropout_p), key = attention_seed_key(a.seed);
      const T inv_keep = a.dropout_p < 1.0 ? T(1.0 / (1.0 - a.dropout_p)) : T(0);
      const uint64_t base = a.offset + uint64_t((b * a.L + row) * a.S + j0);
      for (int64_t c = 0; c < ncol; ++c) s[c] = attention_keep(key, base + c, thr) ? s[c] * inv_keep : T(0);
    }
  }

  // A finished row: out = o / l and the row's log-sum-exp.
  static void finish_row(const Args& a, int64_t b, int64_t row, const T* o, T l, T mrow) {
    St* out = a.out + (b * a.L + row) * a.Ev;
    const R inv = V::set1(l > T(0) ? T(1) / l : T(0));
    for (int64_t c = 0; c < a.Ev; c += W)  // o is padded to whole vectors
      st_n<V, St>(out + c, V::mul(V::loadu(o + c), inv), std::min<int64_t>(W, a.Ev - c));
    a.lse[b * a.L + row] =  // +inf marks a row with no visible key; NaN stays NaN
        l > T(0) || std::isnan(l) ? mrow + std::log(l) : std::numeric_limits<T>::infinity();
  }

  static void forward_block(const Args& a, int64_t b, int64_t i0, FwdScratch& w) {
    const int64_t L = a.L, S = a.S, E = a.E, Ev = a.Ev;
    const int64_t Evp = rup(Ev, NR);
    const int64_t m = std::min<int64_t>(BM, L - i0), mp = rup(m, MR);
    const St* q = a.q + a.q_off[b] + i0 * a.q_rs;
    const R sc = V::set1(a.scale);
    for (int64_t r = 0; r < m; ++r)
      for (int64_t e = 0; e < E; e += W) {
        const int64_t n = std::min<int64_t>(W, E - e);
        st_n<V, T>(w.qs + r * E + e, V::mul(sc, ld_n<V>(q + r * a.q_rs + e, n)), n);
      }
    std::fill(w.qs + m * E, w.qs + mp * E, T(0));
    std::fill(w.o, w.o + mp * Evp, T(0));
    for (int64_t r = 0; r < mp; ++r) {
      w.mrow[r] = kNegInf;
      w.lrow[r] = T(0);
      w.corr[r] = T(0);
    }
    const int64_t kend = a.causal ? std::min(S, i0 + m) : S;
    for (int64_t j0 = 0; j0 < kend; j0 += FBN) {
      const int64_t n = std::min<int64_t>(FBN, kend - j0);
      block<0>(m, n, E, w.qs, E, 1, w.kt + (j0 / FBN) * E * FBN, FBN, w.s, FBN);
      for (int64_t r = 0; r < m; ++r)
        online_softmax_row(a, b, i0 + r, j0, n, w.s + r * FBN, w.mrow[r], w.lrow[r], w.corr[r]);
      block<2>(m, Ev, n, w.s, FBN, 1, w.vp + j0 * Evp, Evp, w.o, Evp, w.corr);
    }
    for (int64_t r = 0; r < m; ++r) finish_row(a, b, i0 + r, w.o + r * Evp, w.lrow[r], w.mrow[r]);
  }

  static void forward(const Args& a) {
    if (a.batch <= 0 || a.L <= 0) return;
    const int64_t nib = (a.L + BM - 1) / BM, tasks = a.batch * nib;
    const double flops = 2.0 * double(a.batch) * a.L * a.S * (a.E + a.Ev);
    const int nt = threads_for(flops);
    const int64_t Sp = rup(a.S, NR), Evp = rup(a.Ev, NR), Ep = rup(a.E, NR);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
      FwdScratch w;  // per call: the packed K and V of a head are megabytes; not kept between calls
      w.kt = w.kt_b.get(size_t(std::max<int64_t>(a.E, 1) * (Sp + FBN)));
      w.vp = w.vp_b.get(size_t(std::max<int64_t>(Sp, 1) * Evp));
      w.qs = w.qs_b.get(size_t(BM * Ep));
      w.s = w.s_b.get(size_t(BM * FBN));
      w.o = w.o_b.get(size_t(BM * std::max<int64_t>(Evp, NR)));
      w.mrow = w.st_b.get(size_t(3 * BM));
      w.lrow = w.mrow + BM;
      w.corr = w.lrow + BM;
#pragma omp for schedule(static, 1)
      for (int64_t t = 0; t < tasks; ++t) {
        const int64_t b = t / nib, i0 = (t % nib) * BM;
        pack_head_kv(a, b, w);
        forward_block(a, b, i0, w);
      }
    }
  }

  // ---- backward ------------------------------------------------------------------------------

  struct BwdScratch {
    Buf qs_b, do_b, d_b, dq_b, kt_b, kp_b, vt_b, dk_b, dv_b, s_b, dp_b, pd_b;
    T *qs, *dO, *D, *dq, *kt, *kp, *vt, *dk, *dv, *s, *dp, *pd;
  };

  static void alloc_bwd(const Args& a, BwdScratch& w) {
    const int64_t Ep = rup(a.E, NR), Evp = rup(a.Ev, NR), Lr = a.L + BM;
    w.qs = w.qs_b.get(size_t(Lr * Ep));
    w.dO = w.do_b.get(size_t(Lr * Evp));
    w.D = w.d_b.get(size_t(Lr));
    w.dq = w.dq_b.get(size_t(Lr * Ep));
    w.kt = w.kt_b.get(size_t(std::max<int64_t>(a.E, 1) * BN));
    w.kp = w.kp_b.get(size_t(BN * Ep));
    w.vt = w.vt_b.get(size_t(std::max<int64_t>(a.Ev, 1) * BN));
    w.dk = w.dk_b.get(size_t(BN * Ep));
    w.dv = w.dv_b.get(size_t(BN * Evp));
    w.s = w.s_b.get(size_t(BM * BN));
    w.dp = w.dp_b.get(size_t(BM * BN));
    w.pd = w.pd_b.get(size_t(BM * BN));
  }

  // Q scaled, dO, D = rowsum(dO * O) of head b.
  static void prepare_head(const Args& a, int64_t b, BwdScratch& w) {
    const int64_t L = a.L, E = a.E, Ev = a.Ev, Ep = rup(E, NR), Evp = rup(Ev, NR);
    const St* q = a.q + a.q_off[b];
    const St* dO = a.dout + b * L * Ev;
    const St* O = a.out + b * L * Ev;
    for (int64_t r = 0; r < L; ++r) {
      T* qs = w.qs + r * Ep;
      for (int64_t e = 0; e < E; ++e) qs[e] = a.scale * to_t<T>(q[r * a.q_rs + e]);
      std::fill(qs + E, qs + Ep, T(0));
      T* d = w.dO + r * Evp;
      T acc = 0;
      for (int64_t c = 0; c < Ev; ++c) {
        d[c] = to_t<T>(dO[r * Ev + c]);
        acc += d[c] * to_t<T>(O[r * Ev + c]);
      }
      std::fill(d + Ev, d + Evp, T(0));
      w.D[r] = acc;
    }
    std::fill(w.qs + L * Ep, w.qs + (L + BM) * Ep, T(0));
    std::fill(w.dO + L * Evp, w.dO + (L + BM) * Evp, T(0));
  }

  static void backward_key_block(const Args& a, int64_t b, int64_t j0, BwdScratch& w) {
    const int64_t L = a.L, S = a.S, E = a.E, Ev = a.Ev, Ep = rup(E, NR), Evp = rup(Ev, NR);
    const int64_t n = std::min<int64_t>(BN, S - j0), np = rup(n, W);
    const St* k = a.k + a.k_off[b] + j0 * a.k_rs;
    const St* v = a.v + a.v_off[b] + j0 * a.v_rs;
    for (int64_t j = 0; j < BN; ++j) {
      T* kp = w.kp + j * Ep;
      if (j < n) {
        const St* kr = k + j * a.k_rs;
        const St* vr = v + j * a.v_rs;
        for (int64_t e = 0; e < E; ++e) {
          kp[e] = to_t<T>(kr[e]);
          w.kt[e * BN + j] = kp[e];
        }
        std::fill(kp + E, kp + Ep, T(0));
        for (int64_t c = 0; c < Ev; ++c) w.vt[c * BN + j] = to_t<T>(vr[c]);
      } else {
        for (int64_t e = 0; e < E; ++e) w.kt[e * BN + j] = T(0);
        std::fill(kp, kp + Ep, T(0));
        for (int64_t c = 0; c < Ev; ++c) w.vt[c * BN + j] = T(0);
      }
    }
    std::fill(w.dk, w.dk + BN * Ep, T(0));
    std::fill(w.dv, w.dv + BN * Evp, T(0));
    const bool drop = a.dropout_p > 0.0;
    const uint64_t thr = attention_drop_threshold(a.dropout_p), key = attention_seed_key(a.seed);
    const T inv_keep = a.dropout_p < 1.0 ? T(1.0 / (1.0 - a.dropout_p)) : T(0);
    const T* lse = a.lse + b * L;  // the arithmetic type for every storage type
    for (int64_t i0 = a.causal ? j0 : 0; i0 < L; i0 += BM) {
      const int64_t m = std::min<int64_t>(BM, L - i0);
      const T* qs = w.qs + i0 * Ep;
      const T* dO = w.dO + i0 * Evp;
      block<0>(m, n, E, qs, Ep, 1, w.kt, BN, w.s, BN);    // S = (scale Q) K^T
      block<0>(m, n, Ev, dO, Evp, 1, w.vt, BN, w.dp, BN);  // dP = dO V^T
      for (int64_t r = 0; r < m; ++r) {
        const int64_t row = i0 + r;
        T* s = w.s + r * BN;
        T* dp = w.dp + r * BN;
        const int64_t ncol = visible(a, row, j0, n);
        mask_row(a, b, row, j0, n, ncol, s);
        const T l = lse[row];
        if (l == std::numeric_limits<T>::infinity()) std::fill(s, s + np, T(0));
        else exp_row(s, np, l);  // P
        const T Dr = w.D[row];
        if (drop) {
          T* pd = w.pd + r * BN;
          const uint64_t base = a.offset + uint64_t((b * L + row) * S + j0);
          for (int64_t c = 0; c < np; ++c) {
            const bool keep = c < ncol && attention_keep(key, base + c, thr);
            pd[c] = keep ? s[c] * inv_keep : T(0);
            dp[c] = s[c] * ((keep ? dp[c] * inv_keep : T(0)) - Dr);  // dS
          }
        } else {
          const R d = V::set1(Dr);
          for (int64_t c = 0; c < np; c += W)
            V::storeu(dp + c, V::mul(V::loadu(s + c), V::sub(V::loadu(dp + c), d)));  // dS
        }
      }
      if (a.dv) block<1>(n, Ev, m, drop ? w.pd : w.s, 1, BN, dO, Evp, w.dv, Evp);  // dV += P^T dO
      if (a.dk) block<1>(n, E, m, w.dp, 1, BN, qs, Ep, w.dk, Ep);  // dK += dS^T (scale Q)
      if (a.dq) block<1>(m, E, n, w.dp, BN, 1, w.kp, Ep, w.dq + i0 * Ep, Ep);  // dQ += dS K
    }
    if (a.dk) {
      St* dk = a.dk + (b * S + j0) * E;
      for (int64_t j = 0; j < n; ++j) store_row(dk + j * E, w.dk + j * Ep, E);
    }
    if (a.dv) {
      St* dv = a.dv + (b * S + j0) * Ev;
      for (int64_t j = 0; j < n; ++j) store_row(dv + j * Ev, w.dv + j * Evp, Ev);
    }
  }

  // Rows [r0, r1) of head b's dQ = scale * the sum, in group order, of `groups` accumulators
  // (rows Ep apart, `stride` apart from one group to the next), rounded once into the tensor.
  static void store_dq(const Args& a, int64_t b, int64_t r0, int64_t r1, const T* acc, int64_t groups,
                       int64_t stride, int64_t Ep) {
    St* dq = a.dq + b * a.L * a.E;
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t e = 0; e < a.E; ++e) {
        T sum = acc[r * Ep + e];
        for (int64_t g = 1; g < groups; ++g) sum += acc[g * stride + r * Ep + e];
        dq[r * a.E + e] = from_t<St>(a.scale * sum);
      }
  }

  static void backward(const Args& a) {
    if (a.batch <= 0) return;
    const int64_t L = a.L, S = a.S, E = a.E, Ep = rup(E, NR);
    if (L <= 0 || S <= 0) {  // no products: zero gradients
      const St zero = from_t<St>(T(0));
      if (a.dq) std::fill(a.dq, a.dq + a.batch * L * E, zero);
      if (a.dk) std::fill(a.dk, a.dk + a.batch * S * E, zero);
      if (a.dv) std::fill(a.dv, a.dv + a.batch * S * a.Ev, zero);
      return;
    }
    const int64_t nkb = (S + BN - 1) / BN;
    const double flops = 4.0 * double(a.batch) * L * S * (E + a.Ev);
    const int nt = threads_for(flops);
    // Tasks: (head, group of key blocks). With few heads a head's key blocks are split into
    // groups, each summing its own partial dQ; the partials are added in group order. The
    // groups follow from the shape alone (about 8 tasks), never from the thread count, so
    // dQ has the same bits for any number of threads.
    const int64_t groups = std::clamp<int64_t>(8 / a.batch, 1, nkb), tasks = a.batch * groups;
    const int64_t Lr = L + BM;
    std::vector<T> partial(a.dq && groups > 1 ? size_t(tasks * Lr * Ep) : 0);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
      BwdScratch w;  // per call: a head's Q, dO and dQ are megabytes; not kept between calls
      alloc_bwd(a, w);
      T* const own_dq = w.dq;
      int64_t prepared = -1;  // the head whose scaled Q, dO and D the scratch holds
#pragma omp for schedule(dynamic, 1)
      for (int64_t task = 0; task < tasks; ++task) {
        const int64_t b = task / groups, grp = task % groups;
        if (groups > 1 && a.dq) w.dq = partial.data() + task * Lr * Ep;
        if (b != prepared) prepare_head(a, b, w), prepared = b;
        if (a.dq) std::fill(w.dq, w.dq + Lr * Ep, T(0));
        for (int64_t kb = grp * nkb / groups, k1 = (grp + 1) * nkb / groups; kb < k1; ++kb)
          backward_key_block(a, b, kb * BN, w);
        if (a.dq && groups == 1) store_dq(a, b, 0, L, w.dq, 1, 0, Ep);
        w.dq = own_dq;
      }
      if (a.dq && groups > 1) {
#pragma omp for schedule(static)
        for (int64_t row = 0; row < a.batch * L; ++row) {
          const int64_t b = row / L, r = row % L;
          store_dq(a, b, r, r + 1, partial.data() + b * groups * Lr * Ep, groups, Lr * Ep, Ep);
        }
      }
    }
  }
};

}  // namespace fusedops::cpu::FUSEDOPS_ISA_NS

// Instantiation for the instruction set of the including file (not where a file includes this
// one for the helpers alone: attention_avx512bf16.cpp).
#ifndef FUSEDOPS_ATTN_HELPERS_ONLY
namespace fusedops::cpu::FUSEDOPS_ISA_NS {
#ifndef FUSEDOPS_ATTN_FBN_F32
#define FUSEDOPS_ATTN_FBN_F32 FUSEDOPS_ATTN_BN_F32
#endif
using AttnF32 = FlashAttention<FUSEDOPS_VEC_F32, FUSEDOPS_ATTN_MR_F32, FUSEDOPS_ATTN_NV_F32,
                               FUSEDOPS_ATTN_BM_F32, FUSEDOPS_ATTN_BN_F32, FUSEDOPS_ATTN_FBN_F32>;
using AttnF64 = FlashAttention<FUSEDOPS_VEC_F64, FUSEDOPS_ATTN_MR_F64, FUSEDOPS_ATTN_NV_F64,
                               FUSEDOPS_ATTN_BM_F64, FUSEDOPS_ATTN_BN_F64>;
// bf16 tensors: the fp32 kernel, widening while it packs and rounding what it stores.
using AttnBf16 = FlashAttention<FUSEDOPS_VEC_F32, FUSEDOPS_ATTN_MR_F32, FUSEDOPS_ATTN_NV_F32,
                                FUSEDOPS_ATTN_BM_F32, FUSEDOPS_ATTN_BN_F32, FUSEDOPS_ATTN_FBN_F32, bf16_t>;

template <typename T>
using AttnFor = std::conditional_t<std::is_same_v<T, float>, AttnF32,
                                   std::conditional_t<std::is_same_v<T, double>, AttnF64, AttnBf16>>;

template <typename T>
void attention_forward_run(const AttentionArgs<T>& a) {
#ifdef FUSEDOPS_ATTN_NATIVE_BF16
  if constexpr (std::is_same_v<T, bf16_t>) {
    const Bf16Kernel k = bf16_kernel();
    if (k != Bf16Kernel::widened) return avx512bf16::attention_forward_bf16(a, k == Bf16Kernel::amx);
  }
#endif
  AttnFor<T>::forward(a);
}
template <typename T>
void attention_backward_run(const AttentionArgs<T>& a) {
#ifdef FUSEDOPS_ATTN_NATIVE_BF16
  if constexpr (std::is_same_v<T, bf16_t>) {
    const Bf16Kernel k = bf16_kernel();
    if (k != Bf16Kernel::widened && avx512bf16::attention_backward_bf16(a, k == Bf16Kernel::amx)) return;
  }
#endif
  AttnFor<T>::backward(a);
}
template <typename T>
AttentionKernels<T> attention_table() {
  return {&attention_forward_run<T>, &attention_backward_run<T>};
}
template AttentionKernels<float> attention_table<float>();
template AttentionKernels<double> attention_table<double>();
template AttentionKernels<bf16_t> attention_table<bf16_t>();
}  // namespace fusedops::cpu::FUSEDOPS_ISA_NS
#endif  // FUSEDOPS_ATTN_HELPERS_ONLY
