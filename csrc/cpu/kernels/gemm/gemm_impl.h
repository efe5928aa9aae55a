// The GEMM driver, packing routines and register-blocked microkernel, written once over a
// register trait V (vec.h) and instantiated per instruction set by gemm_<isa>.cpp, each in its
// own namespace FUSEDOPS_ISA_NS. Include <algorithm>, <atomic>, <cmath>, <cstring>, <memory>,
// <omp.h> and <vector> before selecting the instruction set.
//
// Loop nest (BLIS): jc over NC columns -> pc over KC of K -> [pack B panel, all threads] ->
//   ic over MC rows (threads) -> [pack A block] -> jr over NR -> ir over MR -> microkernel.
// The B micro-panel (KC x NR) stays in L1 across the ir loop, the A block (MC x KC) in L2,
// the packed B panel (KC x NC) in L3.
#pragma once

#include "../parallel.h"
#include "../vec/activation_impl.h"
#include "gemm.h"

namespace fusedops::cpu::FUSEDOPS_ISA_NS {

// ---- blocking -------------------------------------------------------------------------------

struct Blocking {
  int64_t kc, mc, nc;
};

// Block sizes from the cache sizes: a B micro-panel (KC x NR) as large as L1 (the A
// micro-panel streams from L2 beside it; measured on Zen3: KC 512 beats 256 by ~5%, fewer
// passes over C), an A block (MC x KC) ~55% of L2, the packed B panel (two of them, see
// run()) an eighth of L3 each. Virtual machines may report the host's whole L3: capped at 32 MB.
template <typename T, int MR, int NR>
Blocking blocking_for_cpu() {
  const CpuInfo& ci = cpu_info();
  const int64_t sz = sizeof(T);
  int64_t kc = std::clamp<int64_t>(ci.l1d / (NR * sz), 128, 512);
  int64_t mc = std::clamp<int64_t>(ci.l2 * 11 / 20 / (kc * sz), MR, 1024) / MR * MR;
  int64_t l3 = std::clamp<int64_t>(ci.l3, 2 << 20, 32 << 20);
  int64_t nc = std::clamp<int64_t>(l3 / 8 / (kc * sz), NR, 8192) / NR * NR;
  return {kc, mc, nc};
}

// ---- packing --------------------------------------------------------------------------------

// A block rows [0, mc) x cols [0, kc) -> micro-panels of MR rows, k-major, zero-padded rows.
template <typename T, int MR>
void pack_a(const T* A, int64_t rsa, int64_t csa, int64_t mc, int64_t kc, T* Ap) {
  for (int64_t i0 = 0; i0 < mc; i0 += MR, Ap += MR * kc) {
    const int64_t mr = std::min<int64_t>(MR, mc - i0);
    const T* a = A + i0 * rsa;
    if (mr == MR && csa == 1) {
      for (int64_t k = 0; k < kc; ++k)
        for (int i = 0; i < MR; ++i) Ap[k * MR + i] = a[i * rsa + k];
    } else if (mr == MR && rsa == 1) {
      for (int64_t k = 0; k < kc; ++k)
        for (int i = 0; i < MR; ++i) Ap[k * MR + i] = a[k * csa + i];
    } else {
      for (int64_t k = 0; k < kc; ++k)
        for (int i = 0; i < MR; ++i) Ap[k * MR + i] = i < mr ? a[i * rsa + k * csa] : T(0);
    }
  }
}

#if defined(FUSEDOPS_WITH_AVX2) || defined(FUSEDOPS_WITH_AVX512)
// Bp[(k0 + r) * NR + j0 + c] = B[(j0 + c) * csb + k0 + r] for an 8 x 8 block of a transposed
// fp32 B (rsb == 1): eight row loads, an in-register transpose, eight stores.
template <int NR>
inline void transpose8x8_f32(const float* B, int64_t csb, float* Bp) {
  __m256 r[8], t[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(B + i * csb);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
    r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
    r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  // r[0..3]: rows k0 + {0, 1, 2, 3} of columns j0..j0+3 (low lane) and k0 + {4..7}... (high)
  static constexpr int order[4] = {0, 1, 2, 3};
  for (int q = 0; q < 4; ++q) {
    const int a = order[q];
    _mm256_store_ps(Bp + q * NR, _mm256_permute2f128_ps(r[a], r[a + 4], 0x20));
    _mm256_store_ps(Bp + (q + 4) * NR, _mm256_permute2f128_ps(r[a], r[a + 4], 0x31));
  }
}
#endif

// B block rows [0, kc) x cols [0, nc) -> micro-panels of NR columns, k-major, zero-padded.
template <class V, int NR>
void pack_b_panel(const typename V::T* B, int64_t rsb, int64_t csb, int64_t kc, int64_t nr,
                  typename V::T* Bp) {
  using T = typename V::T;
  if (nr == NR && csb == 1) {
    for (int64_t k = 0; k < kc; ++k)
      for (int j = 0; j < NR; j += V::W) V::store(Bp + k * NR + j, V::loadu(B + k * rsb + j));
  } else if (nr == NR && rsb == 1) {
#if defined(FUSEDOPS_WITH_AVX2) || defined(FUSEDOPS_WITH_AVX512)
    if constexpr (std::is_same_v<T, float> && NR % 8 == 0) {
      int64_t k = 0;
      for (; k + 8 <= kc; k += 8)
        for (int j = 0; j < NR; j += 8) transpose8x8_f32<NR>(B + j * csb + k, csb, Bp + k * NR + j);
      for (; k < kc; ++k)
        for (int j = 0; j < NR; ++j) Bp[k * NR + j] = B[j * csb + k];
      return;
    }
#endif
    for (int j = 0; j < NR; ++j) {
      const T* b = B + j * csb;
      for (int64_t k = 0; k < kc; ++k) Bp[k * NR + j] = b[k];
    }
  } else {
    for (int64_t k = 0; k < kc; ++k)
      for (int j = 0; j < NR; ++j) Bp[k * NR + j] = j < nr ? B[k * rsb + j * csb] : T(0);
  }
}

// ---- microkernel ----------------------------------------------------------------------------

// C[0:m, 0:n] = alpha * Ap @ Bp + beta * C for one MR x NR tile; m < MR or n < NR go through
// a scratch tile. Accumulators: MR x NV registers. Bp is a packed KC x NR micro-panel, or with
// OFF the implicit operand whose row k is the NR elements at Bp + boff[k] (read unaligned).
// rbias: optional bias of the tile's rows, added after alpha and beta. With OFFC, row i of the
// tile is at C + coff[i] (ldc unused); rows may overlap, and are stored in order.
template <class V, int MR, int NV, bool OFF = false, bool OFFC = false>
void microkernel(int64_t kc, const typename V::T* __restrict Ap, const typename V::T* __restrict Bp,
                 typename V::T* C, int64_t ldc, typename V::T alpha, typename V::T beta, int m,
                 int n, const int64_t* boff = nullptr, const typename V::T* rbias = nullptr,
                 const int64_t* coff = nullptr) {
  using T = typename V::T;
  using R = typename V::R;
  constexpr int NR = NV * V::W;
  auto row = [&](int i) { return OFFC ? C + coff[i] : C + i * ldc; };
  R acc[MR][NV];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
    // The C tile is needed only after the k loop: fetch it meanwhile.
    if (OFFC && i >= m) break;
    __builtin_prefetch(row(i), 1);
    __builtin_prefetch(row(i) + NR - 1, 1);
  }
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[i][v] = V::zero();

#pragma GCC unroll 4
  for (int64_t k = 0; k < kc; ++k) {
    R b[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      if constexpr (OFF) b[v] = V::loadu(Bp + boff[k] + v * V::W);
      else b[v] = V::load(Bp + v * V::W);
    }
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      R a = V::bcast(Ap + i);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[i][v] = V::fmadd(a, b[v], acc[i][v]);
    }
    Ap += MR;
    if constexpr (!OFF) Bp += NR;
  }

  const R va = V::set1(alpha);
  const R vb = V::set1(beta);
  // alpha * acc + beta * C (+ the row's bias): C is read only when beta != 0.
  auto value = [&](const R& a, const T* c, int i, int cnt) {
    R r = beta == T(0) ? V::mul(va, a)
                       : V::fmadd(va, a, V::mul(vb, cnt == V::W ? V::loadu(c) : V::load_partial(c, cnt)));
    return rbias ? V::add(r, V::bcast(rbias + i)) : r;
  };
  if (m == MR && n == NR) {
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) {
        T* c = row(i) + v * V::W;
        V::storeu(c, value(acc[i][v], c, i, V::W));
      }
    return;
  }
  // A partial tile: whole vectors where the columns allow, masked ones at the edge.
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
    if (i >= m) break;
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      const int left = n - v * V::W;
      if (left <= 0) break;
      T* c = row(i) + v * V::W;
      if (left >= V::W) V::storeu(c, value(acc[i][v], c, i, V::W));
      else V::store_partial(c, value(acc[i][v], c, i, left), left);
    }
  }
}

// ---- driver ---------------------------------------------------------------------------------

// A 64-byte aligned view of n elements of a call's scratch buffer (scratch.h: the blocks come
// from the process-wide cache and go back to it when the call ends).
template <typename T>
T* scratch(ScratchVec<T>& buf, size_t n) {
  const size_t pad = 64 / sizeof(T);
  if (buf.size() < n + pad) buf.resize(n + pad);
  auto p = reinterpret_cast<uintptr_t>(buf.data());
  return reinterpret_cast<T*>((p + 63) & ~uintptr_t(63));
}

template <class V, int MR, int NV>
struct Gemm {
  using T = typename V::T;
  static constexpr int NR = NV * V::W;
  static constexpr int kMR = MR;

  static void epilogue_tile(const GemmArgs<T>& g, int64_t i0, int64_t j0, int m, int n) {
    for (int i = 0; i < m; ++i) {
      const int64_t row = i0 + i;
      const T* bias_col = g.bias_mode == BiasMode::per_col ? g.bias + j0 : nullptr;
      const T bias_row = g.bias_mode == BiasMode::per_row ? g.bias[row] : T(0);
      T* pre = g.preact ? g.preact + row * g.ld_preact + j0 : nullptr;
      epilogue_row<V>(g.C + row * g.ldc + j0, n, bias_col, bias_row, g.act, pre);
    }
  }

  static bool has_epilogue(const GemmArgs<T>& g) {
    return g.bias_mode != BiasMode::none || g.act != Activation::none || g.preact != nullptr;
  }

  // K == 0: C = beta * C, then the epilogue.
  static void run_k0(const GemmArgs<T>& g) {
    for (int64_t i = 0; i < g.M; ++i) {
      T* c = g.C + i * g.ldc;
      for (int64_t j = 0; j < g.N; ++j) c[j] = g.beta == T(0) ? T(0) : g.beta * c[j];
    }
    if (!has_epilogue(g)) return;
    for (int64_t i0 = 0; i0 < g.M; i0 += MR)
      for (int64_t j0 = 0; j0 < g.N; j0 += NR)
        epilogue_tile(g, i0, j0, int(std::min<int64_t>(MR, g.M - i0)),
                      int(std::min<int64_t>(NR, g.N - j0)));
  }

  static int choose_threads(const GemmArgs<T>& g) {
    if (omp_in_parallel()) return 1;
    int nt = g.max_threads > 0 ? g.max_threads : pool_threads();
    // Below ~2 MFLOP per thread the fork/join costs more than it saves.
    const double flops = 2.0 * double(g.M) * double(g.N) * double(g.K);
    return std::max(1, std::min<int>(nt, int(flops / 2e6)));
  }

  // K and N in equal steps no larger than KC and NC (K = 768 as 384 + 384, not 512 + 256:
  // a short last step would pay a whole pass over C for half the work).
  static void plan(int64_t N, int64_t K, int64_t& kc_max, int64_t& nc_max) {
    static const Blocking blk = blocking_for_cpu<T, MR, NR>();
    const int64_t ksteps = (K + blk.kc - 1) / blk.kc;
    kc_max = (K + ksteps - 1) / ksteps;
    const int64_t nsteps = (N + blk.nc - 1) / blk.nc;
    nc_max = ((N + nsteps - 1) / nsteps + NR - 1) / NR * NR;
  }

  // Where the (jc, pc) step's panels start in a B packed whole (pack_b_whole): the columns
  // before jc, all of K, then the rows before pc of this column block's panels.
  static int64_t packed_offset(int64_t jc, int64_t pc, int64_t npanels, int64_t K) {
    return jc * K + npanels * NR * pc;
  }

  static int64_t packed_b_size(int64_t N, int64_t K) { return (N + NR - 1) / NR * NR * K; }

  // Packs all of B (explicit or implicit) in the layout run() reads through g.packed_b.
  static void pack_b_whole(const GemmArgs<T>& g, T* dst) {
    if (g.N <= 0 || g.K <= 0) return;
    int64_t kc_max, nc_max;
    plan(g.N, g.K, kc_max, nc_max);
    const int64_t panels = (g.N + NR - 1) / NR;
    const int nt = threads_for_work(double(panels) * double(g.K), 65536.0);
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int64_t q = 0; q < panels; ++q) {
      const int64_t j0 = q * NR, jc = j0 / nc_max * nc_max, nc = std::min(nc_max, g.N - jc);
      const int64_t npanels = (nc + NR - 1) / NR, p = (j0 - jc) / NR, nr = std::min<int64_t>(NR, g.N - j0);
      for (int64_t pc = 0; pc < g.K; pc += kc_max) {
        const int64_t kc = std::min(kc_max, g.K - pc);
        T* Bp = dst + packed_offset(jc, pc, npanels, g.K) + p * NR * kc;
        if (g.pack_b) g.pack_b(g.pack_b_ctx, pc, kc, j0, nr, NR, Bp);
        else pack_b_panel<V, NR>(g.B + pc * g.rsb + j0 * g.csb, g.rsb, g.csb, kc, nr, Bp);
      }
    }
  }

  // ---- small M against a transposed weight --------------------------------------------
  // With few rows of A (a recurrent step, a cell, a small batch) the product does too little
  // work per element of B to pay for packing B, and a B read as W^T (B(k, j) = W[j * csb + k],
  // every linear and recurrent weight) is the slow layout to pack. Computed instead as
  // C^T = W A^T: the weight's rows are broadcast in place, only A^T is packed (into NR-column
  // panels, M x K: small), and each tile is written to C transposed. All of K in one pass,
  // the accumulators in registers; the columns of C split between threads; bias (per column)
  // and beta applied when storing. (B read by rows packs by plain copies: measured no gain.)
  static constexpr int64_t kSmallM = 4 * NR;

  // A^T is packed whole (all of K in one pass): up to 4 MB of it, beyond that (a long K) the
  // blocked path, whose buffers do not grow with K.
  static constexpr int64_t kSmallMPackMax = (int64_t(4) << 20) / int64_t(sizeof(T));

  static bool small_m(const GemmArgs<T>& g) {
    return g.M <= kSmallM && g.M >= NR / 2 && g.rsb == 1 && g.csb != 1 && !g.packed_b && !g.pack_b &&
           g.act == Activation::none && !g.preact && g.bias_mode != BiasMode::per_row && g.K >= 16 && g.N >= MR &&
           (g.M + NR - 1) / NR * NR * g.K <= kSmallMPackMax;
  }

  // tile[i * NR + j] = sum_k a[i][k] B[k * NR + j] for i < MR, j < NR. With run > 0, row i of A
  // is read in runs: the first `first` elements from a[i], then `run` at a time, each run
  // starting `gap` elements past the end of the one before (an image's output rows, read
  // from its padded rows).
  static void tile_product(int64_t kc, const T* const (&a)[MR], const T* B, T* tile, int64_t run = 0,
                           int64_t gap = 0, int64_t first = 0) {
    using R = typename V::R;
    R acc[MR][NV];
    const T* ap[MR];
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      ap[i] = a[i];
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[i][v] = V::zero();
    }
    for (int64_t k = 0, len = run > 0 ? std::min(first, kc) : kc; k < kc;) {
#pragma GCC unroll 2
      for (int64_t t = 0; t < len; ++t) {
        R b[NV];
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) b[v] = V::load(B + v * V::W);
#pragma GCC unroll 16
        for (int i = 0; i < MR; ++i) {
          const R x = V::bcast(ap[i]++);
#pragma GCC unroll 8
          for (int v = 0; v < NV; ++v) acc[i][v] = V::fmadd(x, b[v], acc[i][v]);
        }
        B += NR;
      }
      k += len;
      if (k >= kc) break;
#pragma GCC unroll 16
      for (int i = 0; i < MR; ++i) ap[i] += gap;
      len = std::min(run, kc - k);
    }
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) V::store(tile + i * NR + v * V::W, acc[i][v]);
  }

  static void run_small_m(const GemmArgs<T>& g) {
    const int nt = choose_threads(g);
    ScratchVec<T> sbuf;
    const int64_t panels = (g.M + NR - 1) / NR;
    T* const At = scratch(sbuf, size_t(panels * NR * g.K));
    for (int64_t p = 0; p < panels; ++p)  // At panel p: (k, c) = A(p * NR + c, k)
      pack_b_panel<V, NR>(g.A + p * NR * g.rsa, g.csa, g.rsa, g.K, std::min<int64_t>(NR, g.M - p * NR),
                          At + p * NR * g.K);
    const int64_t blocks = (g.N + MR - 1) / MR;  // MR weight rows (columns of C) each
    const bool plain = g.alpha == T(1) && g.beta == T(0) && g.bias_mode == BiasMode::none;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
      alignas(64) T tile[MR * NR];
      const int t = omp_get_thread_num(), n_t = omp_get_num_threads();
      for (int64_t blk = t * blocks / n_t, end = (t + 1) * blocks / n_t; blk < end; ++blk) {
        const int64_t j0 = blk * MR;
        const int n = int(std::min<int64_t>(MR, g.N - j0));
        const T* a[MR];
        for (int i = 0; i < MR; ++i) a[i] = g.B + (j0 + std::min(i, n - 1)) * g.csb;
        for (int64_t p = 0; p < panels; ++p) {
          tile_product(g.K, a, At + p * NR * g.K, tile);
          const int64_t i0 = p * NR;
          const int m = int(std::min<int64_t>(NR, g.M - i0));
          if (plain) {
            for (int i = 0; i < m; ++i) {
              T* c = g.C + (i0 + i) * g.ldc + j0;
              for (int j = 0; j < n; ++j) c[j] = tile[j * NR + i];
            }
            continue;
          }
          for (int i = 0; i < m; ++i) {
            T* c = g.C + (i0 + i) * g.ldc + j0;
            for (int j = 0; j < n; ++j) {
              T v = g.alpha * tile[j * NR + i];
              if (g.beta != T(0)) v += g.beta * c[j];
              if (g.bias_mode == BiasMode::per_col) v += g.bias[j0 + j];
              c[j] = v;
            }
          }
        }
      }
    }
  }

  // ---- few rows against a transposed weight (a decode step, a cell of batch 1) ------------
  // With M < NR / 2 the small-M path would leave most of its packed panel's columns empty, and
  // the blocked path packs all of B for a few rows. Each C(i, j) is instead the dot product of
  // A's row i and the weight's row j, both contiguous in K: the weight is read once, in place,
  // four rows at a time sharing each vector load of A; bias and activation applied per row of C.
  // Column blocks split between threads.
  static bool few_rows(const GemmArgs<T>& g) {
    return g.M < NR / 2 && g.rsb == 1 && g.csb != 1 && g.csa == 1 && !g.packed_b && !g.pack_b &&
           g.bias_mode != BiasMode::per_row && g.K >= V::W;
  }

  static void run_few_rows(const GemmArgs<T>& g) {
    using R = typename V::R;
    constexpr int kRows = 4;
    const int64_t blocks = (g.N + kRows - 1) / kRows, kv = g.K / V::W * V::W;
    const int tail = int(g.K - kv);
    // Threads by the weight's size: the product streams it once, so it is bound by memory
    // (a 768 x 768 weight at one row: 74 us on one thread, 28 us for torch on two).
    const int nt = threads_for_work(double(g.N) * double(g.K), 65536);
    parallel_items(g.max_threads > 0 ? std::min(nt, g.max_threads) : nt, blocks, [&](int64_t blk) {
      const int64_t j0 = blk * kRows;
      const int n = int(std::min<int64_t>(kRows, g.N - j0));
      const T* w[kRows];
      for (int r = 0; r < kRows; ++r) w[r] = g.B + (j0 + std::min(r, n - 1)) * g.csb;
      for (int64_t i = 0; i < g.M; ++i) {
        const T* a = g.A + i * g.rsa;
        R acc[kRows];
        for (int r = 0; r < kRows; ++r) acc[r] = V::zero();
        for (int64_t k = 0; k < kv; k += V::W) {
          const R av = V::loadu(a + k);
#pragma GCC unroll 4
          for (int r = 0; r < kRows; ++r) acc[r] = V::fmadd(av, V::loadu(w[r] + k), acc[r]);
        }
        if (tail) {
          const R av = V::load_partial(a + kv, tail);
          for (int r = 0; r < kRows; ++r) acc[r] = V::fmadd(av, V::load_partial(w[r] + kv, tail), acc[r]);
        }
        T* c = g.C + i * g.ldc + j0;
        for (int r = 0; r < n; ++r) c[r] = g.alpha * V::hsum(acc[r]) + (g.beta != T(0) ? g.beta * c[r] : T(0));
        if (has_epilogue(g))  // bias, pre-activation store, activation
          epilogue_row<V>(c, n, g.bias_mode == BiasMode::per_col ? g.bias + j0 : nullptr, T(0), g.act,
                          g.preact ? g.preact + i * g.ld_preact + j0 : nullptr);
      }
    });
  }

  // ---- implicit B by row offsets (convolution over a padded image) ---------------------
  // B(k, j) = X[boff[k] + j]. A is packed whole (it is the small operand: the weights); the
  // column tiles of C are split between threads, each walking its tile's K steps and row
  // tiles, so the tile's B rows (KC x NR, read in place) stay in L1 across the row tiles.
  static void run_offset_b(const GemmArgs<T>& g, const T* X, const int64_t* boff, int64_t batch, int64_t x_stride,
                           int64_t c_stride) {
    if (g.M <= 0 || g.N <= 0 || batch <= 0) return;
    if (g.K <= 0) {
      for (int64_t b = 0; b < batch; ++b) {
        GemmArgs<T> gb = g;
        gb.C = g.C + b * c_stride;
        run_k0(gb);
      }
      return;
    }
    int64_t kc_max, nc_max;
    plan(g.N, g.K, kc_max, nc_max);
    const int64_t mp = (g.M + MR - 1) / MR * MR;
    ScratchVec<T> abuf;
    T* const Ap = scratch(abuf, size_t(mp * g.K));
    for (int64_t pc = 0; pc < g.K; pc += kc_max)  // K step pc: panels at Ap + mp * pc
      pack_a<T, MR>(g.A + pc * g.csa, g.rsa, g.csa, g.M, std::min(kc_max, g.K - pc), Ap + mp * pc);
    // A bias per row alone goes into the microkernel's store (no second pass over the tile).
    const bool row_bias_only = g.bias_mode == BiasMode::per_row && g.act == Activation::none && !g.preact;
    GemmArgs<T> gb = g;
    gb.M *= batch;  // choose_threads: the work of the whole batch
    const int nt = choose_threads(gb);
    const int64_t tiles = (g.N + NR - 1) / NR, items = tiles * batch;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
      const int t = omp_get_thread_num(), n_t = omp_get_num_threads();
      GemmArgs<T> ga = g;  // C of the item's batch entry, for the epilogue
      // K steps outermost: the packed A of one step (MC-sized) stays in L2 while the thread's
      // tiles pass under it; the tiles' C blocks are revisited once per step.
      const int64_t item0 = t * items / n_t, item1 = (t + 1) * items / n_t;
      for (int64_t pc = 0; pc < g.K; pc += kc_max) {
        const int64_t kc = std::min(kc_max, g.K - pc);
        const bool last = pc + kc == g.K;
        for (int64_t item = item0; item < item1; ++item) {
          const int64_t b = item / tiles, j0 = item % tiles * NR;
          const int n = int(std::min<int64_t>(NR, g.N - j0));
          const T* Xb = X + b * x_stride;
          ga.C = g.C + b * c_stride;
          for (int64_t i0 = 0; i0 < g.M; i0 += MR) {
            const int m = int(std::min<int64_t>(MR, g.M - i0));
            microkernel<V, MR, NV, true>(kc, Ap + mp * pc + i0 * kc, Xb + j0, ga.C + i0 * g.ldc + j0, g.ldc,
                                         g.alpha, pc == 0 ? g.beta : T(1), m, n, boff + pc,
                                         last && row_bias_only ? g.bias + i0 : nullptr);
            if (last && !row_bias_only && has_epilogue(ga)) epilogue_tile(ga, i0, j0, m, n);
          }
        }
      }
    }
  }

  // ---- implicit B and C by row offsets (a convolution's input gradient) ----------------
  // Y[coff[i] + j] += alpha * (A @ B)(i, j) with B(k, j) = X[boff[k] + j] read in place. Rows of
  // C may overlap (an input channel's taps add into shifted views of one plane), so rows are
  // handed to threads in whole groups of `row_group` (the rows that may overlap each other)
  // and each group's rows are added in order. Batch entry b reads X + b * x_stride and adds
  // into Y + b * y_stride; A is packed once for all.
  static void run_offset_c(const GemmArgs<T>& g, const T* X, const int64_t* boff, T* Y, const int64_t* coff,
                           int64_t row_group, int64_t batch, int64_t x_stride, int64_t y_stride) {
    if (g.M <= 0 || g.N <= 0 || g.K <= 0 || batch <= 0) return;
    int64_t kc_max, nc_max;
    plan(g.N, g.K, kc_max, nc_max);
    GemmArgs<T> gb = g;
    gb.M *= batch;
    const int nt = choose_threads(gb);
    // Row blocks: whole groups, enough blocks for two items per thread.
    const int64_t groups = (g.M + row_group - 1) / row_group;
    const int64_t want = std::min<int64_t>(groups, (2 * nt + batch - 1) / batch);
    const int64_t rows = (groups + want - 1) / want * row_group;
    const int64_t rblocks = (g.M + rows - 1) / rows, items = rblocks * batch;
    // A packed per row block (its tiles start at the block's first row), per K step:
    // block q, step pc at Ap + q * bp * K + bp * pc.
    const int64_t bp = (rows + MR - 1) / MR * MR;
    ScratchVec<T> abuf;
    T* const Ap = scratch(abuf, size_t(rblocks * bp * g.K));
    for (int64_t q = 0; q < rblocks; ++q)
      for (int64_t pc = 0; pc < g.K; pc += kc_max)
        pack_a<T, MR>(g.A + q * rows * g.rsa + pc * g.csa, g.rsa, g.csa, std::min(rows, g.M - q * rows),
                      std::min(kc_max, g.K - pc), Ap + q * bp * g.K + bp * pc);
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(dynamic, 1)
    for (int64_t item = 0; item < items; ++item) {
      const int64_t b = item / rblocks, q = item % rblocks, r0 = q * rows, r1 = std::min(g.M, r0 + rows);
      const T* Xb = X + b * x_stride;
      T* Yb = Y + b * y_stride;
      for (int64_t pc = 0; pc < g.K; pc += kc_max) {
        const int64_t kc = std::min(kc_max, g.K - pc);
        const T* Aq = Ap + q * bp * g.K + bp * pc;
        for (int64_t j0 = 0; j0 < g.N; j0 += NR) {
          const int n = int(std::min<int64_t>(NR, g.N - j0));
          for (int64_t i0 = r0; i0 < r1; i0 += MR) {
            const int m = int(std::min<int64_t>(MR, r1 - i0));
            microkernel<V, MR, NV, true, true>(kc, Aq + (i0 - r0) * kc, Xb + j0, Yb + j0, 0, g.alpha, T(1), m, n,
                                               boff + pc, nullptr, coff + i0);
          }
        }
      }
    }
  }

  // ---- implicit A by row offsets (a convolution's weight gradient) -----------------------
  // A(i, k) = X[aoff[i] + k]: row i of A is K consecutive elements of X (a padded image's tap
  // i over the output positions), broadcast in place; or, with run > 0, runs of `run` of
  // them every `stride` (A(i, k) = X[aoff[i] + k / run * stride + k % run]: the tap over the
  // output rows, read from the padded rows). B packed whole (the output gradient, small).
  // Blocks of MR rows of C split between threads; each walks the K steps and the column
  // panels, adding alpha * tile to C (beta applied at the first K step).
  static void run_offset_a(const GemmArgs<T>& g, const T* X, const int64_t* aoff, int64_t run = 0,
                           int64_t stride = 0) {
    if (g.M <= 0 || g.N <= 0) return;
    if (g.K <= 0) return run_k0(g);
    int64_t kc_max, nc_max;
    plan(g.N, g.K, kc_max, nc_max);
    const int64_t panels = (g.N + NR - 1) / NR, np = panels * NR;
    ScratchVec<T> bbuf;
    T* const Bp = scratch(bbuf, size_t(np * g.K));
    for (int64_t pc = 0; pc < g.K; pc += kc_max) {  // K step pc: panels at Bp + np * pc
      const int64_t kc = std::min(kc_max, g.K - pc);
      for (int64_t p = 0; p < panels; ++p)
        pack_b_panel<V, NR>(g.B + pc * g.rsb + p * NR * g.csb, g.rsb, g.csb, kc,
                            std::min<int64_t>(NR, g.N - p * NR), Bp + np * pc + p * NR * kc);
    }
    const int nt = choose_threads(g);
    const int64_t blocks = (g.M + MR - 1) / MR;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
      alignas(64) T tile[MR * NR];
      const int t = omp_get_thread_num(), n_t = omp_get_num_threads();
      for (int64_t blk = t * blocks / n_t, end = (t + 1) * blocks / n_t; blk < end; ++blk) {
        const int64_t i0 = blk * MR;
        const int m = int(std::min<int64_t>(MR, g.M - i0));
        for (int64_t pc = 0; pc < g.K; pc += kc_max) {
          const int64_t kc = std::min(kc_max, g.K - pc);
          const T* a[MR];
          const int64_t start = run > 0 ? pc / run * stride + pc % run : pc;
          for (int i = 0; i < MR; ++i) a[i] = X + aoff[i0 + std::min(i, m - 1)] + start;
          for (int64_t p = 0; p < panels; ++p) {
            if (run > 0) tile_product(kc, a, Bp + np * pc + p * NR * kc, tile, run, stride - run, run - pc % run);
            else tile_product(kc, a, Bp + np * pc + p * NR * kc, tile);
            const int64_t j0 = p * NR;
            const int n = int(std::min<int64_t>(NR, g.N - j0));
            // C = (first K step: beta * C, else C) + alpha * tile, in vectors (masked at the edge).
            using R = typename V::R;
            const T keep = pc == 0 ? g.beta : T(1);
            const R va = V::set1(g.alpha), vk = V::set1(keep);
            for (int i = 0; i < m; ++i) {
              T* c = g.C + (i0 + i) * g.ldc + j0;
              for (int v = 0; v < NV; ++v) {
                const int left = n - v * V::W;
                if (left <= 0) break;
                T* cv = c + v * V::W;
                const R t = V::mul(va, V::load(tile + i * NR + v * V::W));
                if (left >= V::W) V::storeu(cv, keep == T(0) ? t : V::fmadd(vk, V::loadu(cv), t));
                else V::store_partial(cv, keep == T(0) ? t : V::fmadd(vk, V::load_partial(cv, left), t), left);
              }
            }
          }
        }
      }
    }
  }

  static void run(const GemmArgs<T>& g) {
    if (g.M <= 0 || g.N <= 0) return;
    if (g.K <= 0) return run_k0(g);
    if (small_m(g)) return run_small_m(g);
    if (few_rows(g)) return run_few_rows(g);
    static const Blocking blk = blocking_for_cpu<T, MR, NR>();
    const int nt = choose_threads(g);
    int64_t kc_max, nc_max;
    plan(g.N, g.K, kc_max, nc_max);
    // M in blocks of at most MC rows, at least two per thread when M allows: threads take
    // blocks from a shared counter, so a thread that loses its core to another process (a
    // spinning BLAS pool, a busy machine) delays the call by a block, not by its whole share.
    int64_t mblocks = (g.M + blk.mc - 1) / blk.mc;
    if (nt > 1 && mblocks < 2 * nt && g.M >= 2 * nt * 4 * MR) mblocks = 2 * nt;
    int64_t mc = ((g.M + mblocks - 1) / mblocks + MR - 1) / MR * MR;
    mblocks = (g.M + mc - 1) / mc;
    // Few row blocks: split the columns of each block between threads too.
    const int64_t nparts = mblocks >= nt ? 1 : (nt + mblocks - 1) / mblocks;
    const int64_t items = mblocks * nparts;

    // Two packed-B buffers, used by alternate steps: the barrier after a step's packing also
    // tells that every thread is done with the step before, so no barrier closes a step.
    ScratchVec<T> bbuf;
    const size_t bsize = g.packed_b ? 0 : (size_t(kc_max) * nc_max + 15) / 16 * 16;
    T* const Bbuf = g.packed_b ? nullptr : scratch(bbuf, 2 * bsize);
    // Per (jc, pc) step: a counter of packed B panels handed out and one of work items.
    const int64_t steps = ((g.N + nc_max - 1) / nc_max) * ((g.K + kc_max - 1) / kc_max);
    std::unique_ptr<std::atomic<int64_t>[]> counters(new std::atomic<int64_t>[2 * steps]);
    for (int64_t i = 0; i < 2 * steps; ++i) counters[i].store(0, std::memory_order_relaxed);

#pragma omp parallel num_threads(nt) if (nt > 1)
    {
      ScratchVec<T> abuf;
      T* Ap = scratch(abuf, size_t(kc_max) * mc);
      int64_t step = 0;
      for (int64_t jc = 0; jc < g.N; jc += nc_max) {
        const int64_t nc = std::min(nc_max, g.N - jc);
        const int64_t npanels = (nc + NR - 1) / NR;
        for (int64_t pc = 0; pc < g.K; pc += kc_max, ++step) {
          const int64_t kc = std::min(kc_max, g.K - pc);
          const bool first = pc == 0, last = pc + kc == g.K;
          const T beta = first ? g.beta : T(1);
          T* Bp = Bbuf + (step % 2) * bsize;
          if (g.packed_b) {
            Bp = const_cast<T*>(g.packed_b) + packed_offset(jc, pc, npanels, g.K);
            // No packing, but the barrier stays: the K steps of a column block accumulate into
            // the same C tiles, so no thread may start step s + 1 while another is in step s.
#pragma omp barrier
          } else {
          std::atomic<int64_t>& next_panel = counters[2 * step];
          for (int64_t p0; (p0 = next_panel.fetch_add(4)) < npanels;)
            for (int64_t p = p0; p < std::min(p0 + 4, npanels); ++p)
              if (g.pack_b)
                g.pack_b(g.pack_b_ctx, pc, kc, jc + p * NR, std::min<int64_t>(NR, nc - p * NR), NR,
                         Bp + p * NR * kc);
              else
                pack_b_panel<V, NR>(g.B + pc * g.rsb + (jc + p * NR) * g.csb, g.rsb, g.csb, kc,
                                    std::min<int64_t>(NR, nc - p * NR), Bp + p * NR * kc);
#pragma omp barrier
          }
          std::atomic<int64_t>& next_item = counters[2 * step + 1];
          for (int64_t item; (item = next_item.fetch_add(1)) < items;) {
            const int64_t ib = item / nparts, part = item % nparts;
            const int64_t ic = ib * mc, mcur = std::min(mc, g.M - ic);
            const int64_t p0 = part * npanels / nparts, p1 = (part + 1) * npanels / nparts;
            if (p0 == p1) continue;
            pack_a<T, MR>(g.A + ic * g.rsa + pc * g.csa, g.rsa, g.csa, mcur, kc, Ap);
            for (int64_t p = p0; p < p1; ++p) {
              const int64_t j0 = jc + p * NR;
              const int n = int(std::min<int64_t>(NR, g.N - j0));
              for (int64_t i0 = 0; i0 < mcur; i0 += MR) {
                const int m = int(std::min<int64_t>(MR, mcur - i0));
                T* c = g.C + (ic + i0) * g.ldc + j0;
                microkernel<V, MR, NV>(kc, Ap + i0 * kc, Bp + p * NR * kc, c, g.ldc, g.alpha,
                                       beta, m, n);
                if (last && has_epilogue(g)) epilogue_tile(g, ic + i0, j0, m, n);
              }
            }
          }
        }
      }
    }
  }
};

}  // namespace fusedops::cpu::FUSEDOPS_ISA_NS
