// Standalone test of the CPU GEMM (csrc/cpu/kernels/gemm), no torch: every instruction set the
// CPU supports (microkernels + packing + blocking + epilogues) against gemm_reference, for
// float and double.
//
// Covered: shapes around the microkernel tiles (generic 4x4, AVX2 6x16 / 6x8, AVX-512 14x32 /
// 14x16), K across the 512-deep KC block, M across several MC blocks, N across the NC block;
// alpha / beta (beta == 0 must not read C: C starts as NaN); bias per column and per row;
// each activation; the pre-activation output; row-major, column-major (transposed), padded,
// strided and stride-0 (expanded) A and B; ldc and ld_preact wider than N (padding must stay
// untouched); K == 0; M == 0 / N == 0; one thread vs the pool; gemm_batched (strided,
// broadcast, reduction); bias_act_backward against a scalar loop; and the accuracy of the
// vectorised gelu / gelu_tanh (and their derivatives) against <cmath> in double.
//
// Tolerance: a dot product of length K in precision eps is within c sqrt(K) eps sum|a||b| of
// the truth (probabilistic bound; the reference accumulates in long double), plus, after an
// activation, a few eps of the pre-activation for the vectorised erf/tanh.
//
// Accuracy of the activations in the fp32 epilogue and in bias_act_backward, against <cmath>
// in double over 400k points in [-10, 10] plus special values (every run prints these; the
// asserted bound is 2.5e-7 |x| + 2 eps |act(x)|, from math.h's erf 4e-7 / tanh 2e-7 absolute,
// and 1e-6 + 4 eps |act'(x)| for the derivatives). Measured on an AMD EPYC (Zen3, AVX2):
//                          max |err|            at x     |err| / |x|   derivative max |err|
//   avx2    float gelu      9.7e-7 (~2 ulp)     4.94     2.1e-7         2.2e-7
//   avx2    float gelu_tanh 4.3e-7              4.71     1.1e-7         5.6e-7
//   generic float gelu      4.5e-7              5.08     1.0e-7         1.3e-7   (<cmath> in float)
//   generic float gelu_tanh 4.3e-7              4.71     1.3e-7         5.6e-7
//   double (all paths)      <= 8.9e-16                                  <= 1.6e-15
// The vector gelu's error is absolute, not relative, for negative x: at x = -5.56 it is off
// by 9e-7 where the truth is -7.4e-8 (still within 2e-7 |x|). relu is exact everywhere.
//
// Usage: test_gemm [--small]   (--small: no product over 2M multiply-adds and a coarser
// activation grid, for the sanitizer build)
// Prints "N passed, M failed" last; exits 1 on any failure.
#include <algorithm>
#include <array>
#include <cinttypes>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <omp.h>

#include "cpu/kernels/cpu_features.h"
#include "cpu/kernels/gemm/gemm.h"

using fusedops::Isa;
using fusedops::Activation;
using fusedops::BiasMode;
using fusedops::cpu::GemmArgs;

namespace {

// ---- harness ----------------------------------------------------------------------------------

int g_passed = 0, g_failed = 0, g_printed = 0;
bool g_small = false;
std::mt19937_64 g_rng(20240611);

std::string fmt(const char* f, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, f);
  vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  return buf;
}

// Records one check; prints the first 40 failures in full.
void record(bool ok, const std::string& what, const std::string& detail = "") {
  if (ok) {
    ++g_passed;
    return;
  }
  ++g_failed;
  if (g_printed++ < 40) std::printf("FAIL %s%s%s\n", what.c_str(), detail.empty() ? "" : ": ", detail.c_str());
}

const char* isa_str(Isa isa) { return fusedops::isa_name(isa); }
template <typename T>
const char* type_str() {
  return sizeof(T) == 4 ? "float" : "double";
}
const char* act_str(Activation a) {
  switch (a) {
    case Activation::relu: return "relu";
    case Activation::gelu: return "gelu";
    case Activation::gelu_tanh: return "gelu_tanh";
    default: return "none";
  }
}
const char* bias_str(BiasMode b) {
  return b == BiasMode::per_col ? "bias_col" : b == BiasMode::per_row ? "bias_row" : "nobias";
}

template <typename T>
T randn() {
  static std::normal_distribution<double> d(0.0, 1.0);
  return T(d(g_rng));
}

// ---- operands in every layout -------------------------------------------------------------------

enum class Layout { row, col, padded, strided, bcast_rows, bcast_cols };
const Layout kLayouts[] = {Layout::row, Layout::col, Layout::padded, Layout::strided,
                           Layout::bcast_rows, Layout::bcast_cols};
const char* layout_str(Layout l) {
  switch (l) {
    case Layout::row: return "row";
    case Layout::col: return "col";
    case Layout::padded: return "padded";
    case Layout::strided: return "strided";
    case Layout::bcast_rows: return "bcast_rows";
    default: return "bcast_cols";
  }
}

// A rows x cols operand, read as X(i, j) = data[i * rs + j * cs].
template <typename T>
struct Operand {
  std::vector<T> data;
  int64_t rs = 0, cs = 0;
  T at(int64_t i, int64_t j) const { return data[i * rs + j * cs]; }
};

template <typename T>
Operand<T> make_operand(int64_t rows, int64_t cols, Layout l) {
  Operand<T> o;
  int64_t size = 0;
  switch (l) {
    case Layout::row: o.rs = cols, o.cs = 1, size = rows * cols; break;
    case Layout::col: o.rs = 1, o.cs = rows, size = rows * cols; break;
    case Layout::padded: o.rs = cols + 3, o.cs = 1, size = rows * (cols + 3); break;
    case Layout::strided: o.rs = 2 * cols + 1, o.cs = 2, size = rows * (2 * cols + 1); break;
    case Layout::bcast_rows: o.rs = 0, o.cs = 1, size = cols; break;  // every row the same
    case Layout::bcast_cols: o.rs = 1, o.cs = 0, size = rows; break;  // every column the same
  }
  o.data.resize(size_t(std::max<int64_t>(size, 1)));
  for (auto& v : o.data) v = randn<T>();
  return o;
}

// ---- one GEMM against the reference ---------------------------------------------------------------

template <typename T>
struct Case {
  int64_t M, N, K;
  T alpha = T(1), beta = T(0);
  Layout a = Layout::row, b = Layout::row;
  BiasMode bias = BiasMode::none;
  Activation act = Activation::none;
  bool preact = false;
  int64_t ldc_pad = 0;
  int max_threads = 0;
};

template <typename T>
std::string describe(Isa isa, const Case<T>& c) {
  return fmt("%s %s M=%" PRId64 " N=%" PRId64 " K=%" PRId64 " alpha=%g beta=%g A=%s B=%s %s %s%s ldc+%" PRId64
             "%s",
             isa_str(isa), type_str<T>(), c.M, c.N, c.K, double(c.alpha), double(c.beta),
             layout_str(c.a), layout_str(c.b), bias_str(c.bias), act_str(c.act),
             c.preact ? " preact" : "", c.ldc_pad, c.max_threads == 1 ? " 1thread" : "");
}

const double kSentinel = 12345.5;

template <typename T>
void run_case(Isa isa, const Case<T>& c) {
  const std::string name = describe(isa, c);
  const int64_t M = c.M, N = c.N, K = c.K;
  const Operand<T> A = make_operand<T>(M, K, c.a), B = make_operand<T>(K, N, c.b);
  const int64_t ldc = N + c.ldc_pad, ldp = N + 2;
  std::vector<T> C0(size_t(std::max<int64_t>(M * ldc, 1)));
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < ldc; ++j)
      C0[i * ldc + j] = j >= N ? T(kSentinel)
                        : c.beta == T(0) ? std::numeric_limits<T>::quiet_NaN()  // must not be read
                                         : randn<T>();
  std::vector<T> bias(size_t(std::max<int64_t>(c.bias == BiasMode::per_row ? M : N, 1)));
  for (auto& v : bias) v = randn<T>();
  std::vector<T> C = C0, Cref = C0;
  std::vector<T> P(size_t(std::max<int64_t>(M * ldp, 1)), T(kSentinel)), Pref = P;

  GemmArgs<T> g;
  g.M = M, g.N = N, g.K = K, g.alpha = c.alpha, g.beta = c.beta;
  g.A = A.data.data(), g.rsa = A.rs, g.csa = A.cs;
  g.B = B.data.data(), g.rsb = B.rs, g.csb = B.cs;
  g.C = C.data(), g.ldc = ldc;
  g.bias = c.bias == BiasMode::none ? nullptr : bias.data();
  g.bias_mode = c.bias;
  g.act = c.act;
  g.preact = c.preact ? P.data() : nullptr;
  g.ld_preact = ldp;
  g.max_threads = c.max_threads;
  GemmArgs<T> r = g;  // the reference always reports its pre-activation (for the tolerance)
  r.C = Cref.data();
  r.preact = Pref.data();

  fusedops::cpu::gemm_with_isa<T>(isa, g);
  fusedops::cpu::gemm_reference<T>(r);

  const double eps = std::numeric_limits<T>::epsilon();
  const double fast_act = (c.act == Activation::gelu || c.act == Activation::gelu_tanh) ? 8 * eps : 2 * eps;
  int bad = 0;
  std::string first;
  auto fail = [&](const std::string& s) {
    if (!bad++) first = s;
  };
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t j = 0; j < N; ++j) {
      double bound = 0;
      for (int64_t k = 0; k < K; ++k) bound += std::fabs(double(A.at(i, k)) * double(B.at(k, j)));
      bound *= std::fabs(double(c.alpha));
      if (c.beta != T(0)) bound += std::fabs(double(c.beta) * double(C0[i * ldc + j]));
      if (c.bias == BiasMode::per_col) bound += std::fabs(double(bias[j]));
      if (c.bias == BiasMode::per_row) bound += std::fabs(double(bias[i]));
      const double tol_pre = (4 * std::sqrt(double(K) + 1) + 4) * eps * bound;
      const double pre = Pref[i * ldp + j];
      const double tol = c.act == Activation::none ? tol_pre : 1.2 * tol_pre + fast_act * std::fabs(pre);
      const double got = C[i * ldc + j], want = Cref[i * ldc + j];
      if (!(std::fabs(got - want) <= tol))
        fail(fmt("C(%" PRId64 ",%" PRId64 ") = %.9g, reference %.9g, tolerance %.3g", i, j, got, want, tol));
      if (c.preact) {
        const double gp = P[i * ldp + j], wp = Pref[i * ldp + j];
        if (!(std::fabs(gp - wp) <= tol_pre))
          fail(fmt("preact(%" PRId64 ",%" PRId64 ") = %.9g, reference %.9g", i, j, gp, wp));
      }
    }
    for (int64_t j = N; j < ldc; ++j)
      if (C[i * ldc + j] != T(kSentinel)) fail(fmt("C padding (%" PRId64 ",%" PRId64 ") overwritten", i, j));
    for (int64_t j = N; j < ldp && c.preact; ++j)
      if (P[i * ldp + j] != T(kSentinel)) fail(fmt("preact padding (%" PRId64 ",%" PRId64 ") overwritten", i, j));
  }
  record(bad == 0, name, bad ? fmt("%d bad; first: %s", bad, first.c_str()) : "");
}

// ---- the sweeps ----------------------------------------------------------------------------------

const Activation kActs[] = {Activation::none, Activation::relu, Activation::gelu, Activation::gelu_tanh};
const BiasMode kBias[] = {BiasMode::none, BiasMode::per_col, BiasMode::per_row};

template <typename T>
void test_gemm(Isa isa) {
  const int before = g_failed;
  // 1. tile edges: every (M, N) around the tiles, K cycling, plain row-major, beta 0
  const int64_t Ms[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 14, 15, 16, 17, 27, 28, 29, 33};
  const int64_t Ns[] = {1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 24, 31, 32, 33, 47, 48, 49, 64, 65};
  const int64_t Ks[] = {1, 2, 3, 5, 8, 16, 17, 31};
  int n = 0;
  for (int64_t M : Ms)
    for (int64_t N : Ns) {
      Case<T> c{M, N, Ks[n++ % 8]};
      run_case<T>(isa, c);
      // the same shape with every feature on, rotating through layouts and epilogues
      Case<T> f{M, N, Ks[(n * 3) % 8]};
      f.a = kLayouts[n % 6];
      f.b = kLayouts[(n / 6) % 6];
      f.bias = kBias[n % 3];
      f.act = kActs[(n / 3) % 4];
      f.preact = n % 2;
      f.beta = n % 5 == 0 ? T(0.75) : T(0);
      f.alpha = n % 7 == 0 ? T(-1.5) : T(1);
      f.ldc_pad = n % 3;
      run_case<T>(isa, f);
    }

  // 2. every A layout against every B layout
  for (Layout la : kLayouts)
    for (Layout lb : kLayouts) {
      Case<T> c{17, 33, 21};
      c.a = la, c.b = lb;
      run_case<T>(isa, c);
      {
        Case<T> d{15, 31, 520};  // two KC blocks: packing of the second block at an offset
        d.a = la, d.b = lb, d.beta = T(0.5), d.bias = BiasMode::per_col, d.act = Activation::gelu;
        run_case<T>(isa, d);
      }
    }

  // 3. alpha and beta
  const T alphas[] = {T(1), T(0.5), T(-2), T(1), T(0)};
  const T betas[] = {T(0), T(1.5), T(0), T(-1), T(1)};
  for (int i = 0; i < 5; ++i)
    for (auto shape : {std::vector<int64_t>{13, 37, 19}, std::vector<int64_t>{6, 16, 1},
                       std::vector<int64_t>{29, 65, 600}}) {
      Case<T> c{shape[0], shape[1], shape[2]};
      c.alpha = alphas[i], c.beta = betas[i];
      c.ldc_pad = 5;
      run_case<T>(isa, c);
    }

  // 4. every bias mode x activation, with and without the pre-activation output
  for (BiasMode bm : kBias)
    for (Activation act : kActs)
      for (bool pre : {false, true})
        for (auto shape : {std::vector<int64_t>{13, 37, 19}, std::vector<int64_t>{14, 32, 5},
                           std::vector<int64_t>{29, 65, 600}}) {
          Case<T> c{shape[0], shape[1], shape[2]};
          c.bias = bm, c.act = act, c.preact = pre;
          c.beta = pre ? T(0.5) : T(0);
          run_case<T>(isa, c);
        }

  // 5. K == 0 (C = beta C + bias, then the activation), M == 0, N == 0
  for (BiasMode bm : kBias)
    for (Activation act : kActs)
      for (T beta : {T(0), T(2)}) {
        Case<T> c{7, 19, 0};
        c.bias = bm, c.act = act, c.beta = beta, c.preact = true, c.ldc_pad = 1;
        run_case<T>(isa, c);
      }
  for (auto shape : {std::vector<int64_t>{0, 5, 7}, std::vector<int64_t>{5, 0, 7},
                     std::vector<int64_t>{0, 0, 0}}) {
    Case<T> c{shape[0], shape[1], shape[2]};
    c.bias = BiasMode::per_col, c.act = Activation::gelu, c.preact = true, c.ldc_pad = 2;
    run_case<T>(isa, c);
  }

  // 6. blocks: K past KC, M past MC, N past NC; one thread vs the pool (--small: the cheap ones)
  {
    const std::vector<std::vector<int64_t>> big = {
        {33, 65, 513}, {3, 8200, 3}, {7, 1, 1023}, {1, 257, 255}, {255, 1, 257}, {97, 97, 1025},
        {300, 45, 600}, {130, 70, 512}, {200, 130, 1100}};
    int i = 0;
    for (const auto& s : big)
      for (int threads : {0, 1}) {
        if (g_small && s[0] * s[1] * s[2] > 2000000) continue;
        Case<T> c{s[0], s[1], s[2]};
        c.max_threads = threads;
        c.bias = kBias[i % 3], c.act = kActs[i % 4], c.preact = i % 2, c.beta = i % 3 ? T(0) : T(1);
        c.a = i % 4 == 1 ? Layout::col : Layout::row;
        c.b = i % 4 == 2 ? Layout::col : Layout::row;
        ++i;
        run_case<T>(isa, c);
      }
  }
  std::printf("  %-7s %-6s gemm: %d failed\n", isa_str(isa), type_str<T>(), g_failed - before);
}

// ---- gemm_batched ----------------------------------------------------------------------------------

template <typename T>
void test_gemm_batched(Isa isa) {
  fusedops::set_isa(isa);
  const int64_t M = 9, N = 13, K = 11, batch = 4;
  for (int mode = 0; mode < 4; ++mode) {  // 0 plain, 1 A broadcast, 2 B broadcast, 3 reduce into C
    std::vector<T> A(size_t(batch * M * K)), B(size_t(batch * K * N));
    for (auto& v : A) v = randn<T>();
    for (auto& v : B) v = randn<T>();
    const int64_t sa = mode == 1 ? 0 : M * K, sb = mode == 2 ? 0 : K * N, sc = mode == 3 ? 0 : M * N;
    std::vector<T> C(size_t(batch * M * N), std::numeric_limits<T>::quiet_NaN()), R(C.size(), T(0));
    GemmArgs<T> g;
    g.M = M, g.N = N, g.K = K, g.A = A.data(), g.rsa = K, g.csa = 1, g.B = B.data(), g.rsb = N, g.csb = 1;
    g.C = C.data(), g.ldc = N;
    fusedops::cpu::gemm_batched<T>(g, batch, sa, sb, sc);
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j) {
          long double acc = 0;
          for (int64_t k = 0; k < K; ++k) acc += (long double)A[b * sa + i * K + k] * B[b * sb + k * N + j];
          R[b * sc + i * N + j] += T(acc);
        }
    double worst = 0;
    const int64_t outs = mode == 3 ? 1 : batch;
    for (int64_t x = 0; x < outs * M * N; ++x)
      worst = std::max(worst, std::fabs(double(C[x]) - double(R[x])) / (1 + std::fabs(double(R[x]))));
    const double tol = 64 * std::numeric_limits<T>::epsilon() * std::sqrt(double(K * batch));
    record(worst <= tol, fmt("%s %s gemm_batched mode %d", isa_str(isa), type_str<T>(), mode),
           fmt("max relative error %.3g > %.3g", worst, tol));
  }
}

// ---- implicit B operand (GemmArgs::pack_b) -----------------------------------------------------------

// B(k, j) = sin(k) + 0.01 * k * j, produced only through the packing callback.
template <typename T>
void pack_formula(const void* ctx, int64_t k0, int64_t kc, int64_t j0, int64_t nr, int NR, T* Bp) {
  (void)ctx;
  for (int64_t k = 0; k < kc; ++k)
    for (int j = 0; j < NR; ++j)
      Bp[k * NR + j] = j < nr ? T(std::sin(double(k0 + k)) + 0.01 * double(k0 + k) * double(j0 + j)) : T(0);
}

template <typename T>
void test_gemm_pack_b(Isa isa) {
  fusedops::set_isa(isa);
  for (auto [M, N, K] : {std::array<int64_t, 3>{7, 37, 5}, {33, 130, 700}, {1, 1, 1}, {64, 600, 96}}) {
    std::vector<T> A(static_cast<size_t>(M * K)), bias(static_cast<size_t>(M));
    for (auto& v : A) v = randn<T>();
    for (auto& v : bias) v = randn<T>();
    std::vector<T> C(size_t(M * N), std::numeric_limits<T>::quiet_NaN()), R(C.size());
    GemmArgs<T> g;
    g.M = M, g.N = N, g.K = K, g.A = A.data(), g.rsa = K, g.csa = 1;
    g.pack_b = &pack_formula<T>;
    g.C = C.data(), g.ldc = N, g.bias = bias.data(), g.bias_mode = BiasMode::per_row;
    fusedops::cpu::gemm<T>(g);
    g.C = R.data();
    fusedops::cpu::gemm_reference<T>(g);
    double worst = 0;
    for (size_t x = 0; x < C.size(); ++x)
      worst = std::max(worst, std::fabs(double(C[x]) - double(R[x])) / (1 + std::fabs(double(R[x]))));
    const double tol = 64 * std::numeric_limits<T>::epsilon() * std::sqrt(double(K)) * (1 + 0.01 * double(K * N));
    record(worst <= tol, fmt("%s %s gemm pack_b %ldx%ldx%ld", isa_str(isa), type_str<T>(), long(M), long(N), long(K)),
           fmt("max relative error %.3g > %.3g", worst, tol));
  }
}

// ---- B packed ahead (gemm_pack_b + GemmArgs::packed_b) ------------------------------------------------

// One packed B serves several products with different A, M, beta and C: explicit strided and
// transposed B, the implicit B, and sizes that span several KC and NC blocks; packed for 13 or
// 64 rows (on AVX-512 fp32, 64 packs for the second tile), used by products of any M.
template <typename T>
void test_gemm_packed_b(Isa isa) {
  fusedops::set_isa(isa);
  for (int64_t pack_m : {13, 64})
  for (auto [N, K, transposed] : {std::array<int64_t, 3>{37, 5, 0}, {130, 700, 1}, {1, 1, 0}, {2050, 1100, 1},
                                  {600, 96, 2}}) {
    if (g_small && N * K > 200000) continue;
    std::vector<T> Bm(static_cast<size_t>(N * K));
    for (auto& v : Bm) v = randn<T>();
    GemmArgs<T> g;
    g.M = pack_m, g.N = N, g.K = K, g.B = Bm.data();
    if (transposed == 1) g.rsb = 1, g.csb = K;  // B(k, j) = Bm[j * K + k]
    else g.rsb = N, g.csb = 1;
    if (transposed == 2) g.pack_b = &pack_formula<T>;
    std::vector<T> storage;
    Isa packed_isa;
    const T* packed = fusedops::cpu::gemm_pack_b<T>(g, storage, &packed_isa);
    // The products run on the instruction set the panels were packed for, whatever is in
    // force when they run: each set packs its own layout.
    fusedops::set_isa(isa == Isa::generic ? Isa::avx512 : Isa::generic);
    for (auto [M, beta] : {std::pair<int64_t, double>{1, 0.0}, {64, 1.0}, {13, 0.5}}) {
      std::vector<T> A(static_cast<size_t>(M * K));
      for (auto& v : A) v = randn<T>();
      std::vector<T> C(size_t(M * N)), R(C.size());
      for (size_t x = 0; x < C.size(); ++x) C[x] = R[x] = beta == 0.0 ? std::numeric_limits<T>::quiet_NaN() : randn<T>();
      GemmArgs<T> p = g;
      p.M = M, p.A = A.data(), p.rsa = K, p.csa = 1, p.beta = T(beta), p.C = C.data(), p.ldc = N;
      p.packed_b = packed, p.packed_m = pack_m, p.packed_isa = packed_isa;
      fusedops::cpu::gemm<T>(p);
      p.packed_b = nullptr, p.C = R.data();
      fusedops::cpu::gemm_reference<T>(p);
      double worst = 0;
      for (size_t x = 0; x < C.size(); ++x)
        worst = std::max(worst, std::fabs(double(C[x]) - double(R[x])) / (1 + std::fabs(double(R[x]))));
      double tol = 64 * std::numeric_limits<T>::epsilon() * std::sqrt(double(K));
      if (transposed == 2) tol *= 1 + 0.01 * double(K * N);
      record(worst <= tol, fmt("%s %s gemm packed_b %ldx%ldx%ld (B layout %d, beta %.1f, packed for %ld rows)",
                               isa_str(isa), type_str<T>(), long(M), long(N), long(K), int(transposed), beta,
                               long(pack_m)),
             fmt("max relative error %.3g > %.3g", worst, tol));
    }
    fusedops::set_isa(isa);
  }
}

// ---- small M against a transposed weight (read in place, C^T = W A^T) ----------------------------

template <typename T>
void test_gemm_small_m(Isa isa) {
  fusedops::set_isa(isa);
  const int before = g_failed;
  for (int64_t M : {1, 2, 4, 8, 13, 15, 16, 31, 64, 65, 130})  // M < NR / 2: the few-rows path
    for (auto [N, K] : {std::pair<int64_t, int64_t>{6, 16}, {7, 17}, {37, 300}, {130, 64}, {515, 129}, {5, 3}})
      for (int variant = 0; variant < 4; ++variant) {
        if (g_small && M * N * K > 300000) continue;
        // variant bits: 1 = A transposed (rsa 1) and beta 0.5 + bias + alpha -0.5, 2 = one thread
        const bool full = variant & 1;
        const int64_t ldw = K + 3, lda = full ? M + 2 : K + 1;
        std::vector<T> W(static_cast<size_t>(N * ldw)), A(static_cast<size_t>(M * lda + K * lda)), bias(static_cast<size_t>(N));
        for (auto& v : W) v = randn<T>();
        for (auto& v : A) v = randn<T>();
        for (auto& v : bias) v = randn<T>();
        std::vector<T> C(static_cast<size_t>(M * (N + 1))), R(C.size());
        for (size_t x = 0; x < C.size(); ++x) C[x] = R[x] = full ? randn<T>() : std::numeric_limits<T>::quiet_NaN();
        GemmArgs<T> g;
        g.M = M, g.N = N, g.K = K, g.A = A.data();
        if (full) g.rsa = 1, g.csa = lda;
        else g.rsa = lda, g.csa = 1;
        g.B = W.data(), g.rsb = 1, g.csb = ldw;
        g.C = C.data(), g.ldc = N + 1;
        if (full) g.alpha = T(-0.5), g.beta = T(0.5), g.bias = bias.data(), g.bias_mode = BiasMode::per_col;
        if (variant & 2) g.max_threads = 1;
        fusedops::cpu::gemm<T>(g);
        GemmArgs<T> r = g;
        r.C = R.data();
        fusedops::cpu::gemm_reference<T>(r);
        double worst = 0;
        bool pad_ok = true;
        for (int64_t i = 0; i < M; ++i) {
          for (int64_t j = 0; j < N; ++j) {
            const size_t x = size_t(i * (N + 1) + j);
            worst = std::max(worst, std::fabs(double(C[x]) - double(R[x])) / (1 + std::fabs(double(R[x]))));
            if (std::isnan(double(C[x]))) worst = INFINITY;
          }
          const size_t pad = size_t(i * (N + 1) + N);  // the column past N: untouched
          pad_ok = pad_ok && (std::isnan(double(C[pad])) == std::isnan(double(R[pad]))) &&
                   (std::isnan(double(C[pad])) || C[pad] == R[pad]);
        }
        const double tol = 64 * std::numeric_limits<T>::epsilon() * std::sqrt(double(K));
        record(worst <= tol && pad_ok,
               fmt("%s %s gemm small-M %ldx%ldx%ld (variant %d)", isa_str(isa), type_str<T>(), long(M), long(N),
                   long(K), variant),
               fmt("max relative error %.3g > %.3g, or C written past N", worst, tol));
      }
  (void)before;
}

// ---- implicit B by row offsets (gemm_offset_b: convolution over a padded image) ------------------

template <typename T>
void test_gemm_offset_b(Isa isa) {
  fusedops::set_isa(isa);
  // (64 x 141 and 130 x 70 take the second fp32 tile where the instruction set has one)
  for (auto [M, N, K] :
       {std::array<int64_t, 3>{1, 1, 1}, {5, 17, 9}, {64, 203, 576}, {64, 141, 288}, {13, 33, 1100}, {130, 70, 31}})
    for (int variant = 0; variant < 3; ++variant) {  // 0: plain, 1: alpha, beta, bias per row, 2: one thread
      if (g_small && M * N * K > 300000) continue;
      const int64_t span = 3 * N + 50;
      std::vector<T> X(static_cast<size_t>(span + N + fusedops::cpu::kGemmOffsetSlack));
      for (auto& v : X) v = randn<T>();
      std::vector<int64_t> boff(static_cast<size_t>(K));
      for (int64_t k = 0; k < K; ++k) boff[size_t(k)] = (k * 7919) % span;
      std::vector<T> A(static_cast<size_t>(M * K)), bias(static_cast<size_t>(M)), Bm(static_cast<size_t>(K * N));
      for (auto& v : A) v = randn<T>();
      for (auto& v : bias) v = randn<T>();
      for (int64_t k = 0; k < K; ++k)
        for (int64_t j = 0; j < N; ++j) Bm[size_t(k * N + j)] = X[size_t(boff[size_t(k)] + j)];
      std::vector<T> C(static_cast<size_t>(M * (N + 1))), R(C.size());
      for (size_t x = 0; x < C.size(); ++x) C[x] = R[x] = variant == 1 ? randn<T>() : std::numeric_limits<T>::quiet_NaN();
      GemmArgs<T> g;
      g.M = M, g.N = N, g.K = K, g.A = A.data(), g.rsa = K, g.csa = 1;
      g.C = C.data(), g.ldc = N + 1;
      if (variant == 1) g.alpha = T(0.5), g.beta = T(-1), g.bias = bias.data(), g.bias_mode = BiasMode::per_row;
      if (variant == 2) g.max_threads = 1;
      fusedops::cpu::gemm_offset_b<T>(g, X.data(), boff.data());
      GemmArgs<T> r = g;
      r.B = Bm.data(), r.rsb = N, r.csb = 1, r.C = R.data();
      fusedops::cpu::gemm_reference<T>(r);
      double worst = 0;
      for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j) {
          const size_t x = size_t(i * (N + 1) + j);
          const double e = std::fabs(double(C[x]) - double(R[x])) / (1 + std::fabs(double(R[x])));
          worst = std::isnan(e) ? INFINITY : std::max(worst, e);
        }
      const double tol = 64 * std::numeric_limits<T>::epsilon() * std::sqrt(double(K));
      record(worst <= tol, fmt("%s %s gemm_offset_b %ldx%ldx%ld (variant %d)", isa_str(isa), type_str<T>(), long(M),
                               long(N), long(K), variant),
             fmt("max relative error %.3g > %.3g", worst, tol));
    }
}

// ---- implicit B and C by row offsets (gemm_offset_c: a convolution's input gradient) ------------

template <typename T>
void test_gemm_offset_c(Isa isa) {
  fusedops::set_isa(isa);
  // M, N, K, rows per group: a group's rows add into one plane at shifts 0, 1, N / 2, ...
  // (overlapping); groups into planes of their own. 288 x 141 takes the second fp32 tile where
  // the instruction set has one; K = 600 runs two K steps.
  for (auto [M, N, K, G] : {std::array<int64_t, 4>{1, 1, 1, 1}, {9, 17, 5, 9}, {288, 141, 64, 9}, {50, 70, 600, 5},
                            {30, 33, 7, 3}})
    for (int variant = 0; variant < 3; ++variant) {  // 0: plain, 1: alpha, 2: one thread
      if (g_small && M * N * K > 300000) continue;
      const int64_t batch = 2, span = 3 * N + 50;
      const int64_t xs = span + N + 7, plane = N + (G - 1) * (N / 2 + 1) + 3;
      const int64_t ys = (M + G - 1) / G * plane + 5;
      std::vector<T> X(static_cast<size_t>(batch * xs + fusedops::cpu::kGemmOffsetSlack));
      for (auto& v : X) v = randn<T>();
      std::vector<int64_t> boff(static_cast<size_t>(K)), coff(static_cast<size_t>(M));
      for (int64_t k = 0; k < K; ++k) boff[size_t(k)] = (k * 7919) % span;
      for (int64_t i = 0; i < M; ++i) coff[size_t(i)] = i / G * plane + (i % G) * (i % 2 ? N / 2 + 1 : 1);
      std::vector<T> A(static_cast<size_t>(M * K));
      for (auto& v : A) v = randn<T>();
      std::vector<T> Y(static_cast<size_t>(batch * ys)), Yr;
      for (auto& v : Y) v = randn<T>();
      Yr = Y;
      GemmArgs<T> g;
      g.M = M, g.N = N, g.K = K, g.A = A.data(), g.rsa = 1, g.csa = M;  // A read transposed, as a weight
      if (variant == 1) g.alpha = T(0.5);
      if (variant == 2) g.max_threads = 1;
      fusedops::cpu::gemm_offset_c<T>(g, X.data(), boff.data(), Y.data(), coff.data(), G, batch, xs, ys);
      for (int64_t b = 0; b < batch; ++b) {
        std::vector<T> Bm(static_cast<size_t>(K * N)), D(static_cast<size_t>(M * N));
        for (int64_t k = 0; k < K; ++k)
          for (int64_t j = 0; j < N; ++j) Bm[size_t(k * N + j)] = X[size_t(b * xs + boff[size_t(k)] + j)];
        GemmArgs<T> r = g;
        r.B = Bm.data(), r.rsb = N, r.csb = 1, r.C = D.data(), r.ldc = N, r.alpha = T(1), r.beta = T(0);
        fusedops::cpu::gemm_reference<T>(r);
        for (int64_t i = 0; i < M; ++i)
          for (int64_t j = 0; j < N; ++j) Yr[size_t(b * ys + coff[size_t(i)] + j)] += g.alpha * D[size_t(i * N + j)];
      }
      double worst = 0;
      for (size_t x = 0; x < Y.size(); ++x) {
        const double e = std::fabs(double(Y[x]) - double(Yr[x])) / (1 + std::fabs(double(Yr[x])));
        worst = std::isnan(e) ? INFINITY : std::max(worst, e);
      }
      const double tol = 64 * std::numeric_limits<T>::epsilon() * std::sqrt(double(K * G));
      record(worst <= tol, fmt("%s %s gemm_offset_c %ldx%ldx%ld groups of %ld (variant %d)", isa_str(isa),
                               type_str<T>(), long(M), long(N), long(K), long(G), variant),
             fmt("max relative error %.3g > %.3g", worst, tol));
    }
}

// ---- implicit A by row offsets (gemm_offset_a: a convolution's weight gradient) -------------------

template <typename T>
void test_gemm_offset_a(Isa isa) {
  fusedops::set_isa(isa);
  for (auto [M, N, K] : {std::array<int64_t, 3>{1, 1, 1}, {7, 17, 9}, {288, 64, 193}, {13, 33, 1100}, {30, 70, 31}})
    for (int variant = 0; variant < 4; ++variant) {  // 0: plain, 1: alpha and beta, 2: one thread, 3: runs
      if (g_small && M * N * K > 300000) continue;
      const int64_t span = 3 * M + 50, run = variant == 3 ? 7 : 0, stride = 10;
      std::vector<T> X(static_cast<size_t>(span + (run ? (K / run + 1) * stride : K)));
      for (auto& v : X) v = randn<T>();
      std::vector<int64_t> aoff(static_cast<size_t>(M));
      for (int64_t i = 0; i < M; ++i) aoff[size_t(i)] = (i * 7919) % span;
      std::vector<T> Am(static_cast<size_t>(M * K)), B(static_cast<size_t>(N * (K + 2)));
      for (auto& v : B) v = randn<T>();
      for (int64_t i = 0; i < M; ++i)
        for (int64_t k = 0; k < K; ++k)
          Am[size_t(i * K + k)] = X[size_t(aoff[size_t(i)] + (run ? k / run * stride + k % run : k))];
      std::vector<T> C(static_cast<size_t>(M * (N + 1))), R(C.size());
      for (size_t x = 0; x < C.size(); ++x) C[x] = R[x] = variant == 1 ? randn<T>() : std::numeric_limits<T>::quiet_NaN();
      GemmArgs<T> g;
      g.M = M, g.N = N, g.K = K, g.B = B.data(), g.rsb = 1, g.csb = K + 2;  // B transposed, padded rows
      g.C = C.data(), g.ldc = N + 1;
      if (variant == 1) g.alpha = T(0.5), g.beta = T(-1);
      if (variant == 2) g.max_threads = 1;
      fusedops::cpu::gemm_offset_a<T>(g, X.data(), aoff.data(), run, stride);
      GemmArgs<T> r = g;
      r.A = Am.data(), r.rsa = K, r.csa = 1, r.C = R.data();
      fusedops::cpu::gemm_reference<T>(r);
      double worst = 0;
      for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j) {
          const size_t x = size_t(i * (N + 1) + j);
          const double e = std::fabs(double(C[x]) - double(R[x])) / (1 + std::fabs(double(R[x])));
          worst = std::isnan(e) ? INFINITY : std::max(worst, e);
        }
      const double tol = 64 * std::numeric_limits<T>::epsilon() * std::sqrt(double(K));
      record(worst <= tol, fmt("%s %s gemm_offset_a %ldx%ldx%ld (variant %d)", isa_str(isa), type_str<T>(), long(M),
                               long(N), long(K), variant),
             fmt("max relative error %.3g > %.3g", worst, tol));
    }
}

// ---- bias_act_backward -------------------------------------------------------------------------------

template <typename T>
void test_bias_act_backward(Isa isa) {
  fusedops::set_isa(isa);
  const int before = g_failed;
  const double eps = std::numeric_limits<T>::epsilon();
  std::vector<std::pair<int64_t, int64_t>> shapes = {{1, 1}, {3, 5}, {7, 8}, {16, 16}, {33, 17}, {5, 100}, {97, 33}};
  shapes.push_back({300, 257});  // M * N > 32768: rows split between threads
  for (auto [M, N] : shapes)
    for (Activation act : kActs)
      for (int gl = 0; gl < 5; ++gl)  // g: row, transposed, strided, all stride 0, rows stride 0
        for (bool want_db : {true, false}) {
          if (act == Activation::none && !want_db) continue;
          int64_t rsg, csg, size;
          switch (gl) {
            case 0: rsg = N, csg = 1, size = M * N; break;
            case 1: rsg = 1, csg = M, size = M * N; break;
            case 2: rsg = 2 * N + 1, csg = 2, size = M * (2 * N + 1); break;
            case 3: rsg = 0, csg = 0, size = 1; break;
            default: rsg = 0, csg = 1, size = N; break;
          }
          std::vector<T> g(static_cast<size_t>(size)), z(static_cast<size_t>(M * (N + 1)));
          std::vector<T> dz(static_cast<size_t>(M * N), T(kSentinel)), db(static_cast<size_t>(N), T(kSentinel));
          for (auto& v : g) v = randn<T>();
          for (auto& v : z) v = T(3) * randn<T>();
          const bool with_act = act != Activation::none;
          fusedops::cpu::bias_act_backward<T>(M, N, g.data(), rsg, csg, with_act ? z.data() : nullptr, N + 1,
                                              with_act ? dz.data() : nullptr, act, want_db ? db.data() : nullptr);
          int bad = 0;
          std::string first;
          for (int64_t j = 0; j < N; ++j) {
            long double sum = 0, abs_sum = 0;
            for (int64_t i = 0; i < M; ++i) {
              const double gv = g[i * rsg + j * csg];
              const double d = with_act ? gv * fusedops::cpu::activation_grad_reference<double>(z[i * (N + 1) + j], act) : gv;
              sum += d;
              abs_sum += std::fabs(gv) * 1.2;
              if (with_act && !(std::fabs(double(dz[i * N + j]) - d) <= 8 * eps * std::fabs(gv) * 1.2 + 2 * eps * std::fabs(d))) {
                if (!bad++) first = fmt("dz(%" PRId64 ",%" PRId64 ") = %.9g, expected %.9g", i, j, double(dz[i * N + j]), d);
              }
            }
            if (want_db) {
              const double tol = (4 * std::sqrt(double(M)) + 10) * eps * double(abs_sum);
              if (!(std::fabs(double(db[j]) - double(sum)) <= tol))
                if (!bad++) first = fmt("db(%" PRId64 ") = %.9g, expected %.9g", j, double(db[j]), double(sum));
            } else if (db[j] != T(kSentinel)) {
              if (!bad++) first = "db written though not requested";
            }
          }
          record(bad == 0,
                 fmt("%s %s bias_act_backward M=%" PRId64 " N=%" PRId64 " %s g-layout %d db=%d", isa_str(isa),
                     type_str<T>(), M, N, act_str(act), gl, int(want_db)),
                 fmt("%d bad; first: %s", bad, first.c_str()));
        }
  // M == 0: db is all zeros
  std::vector<T> db(5, T(kSentinel));
  T dummy = T(0);
  fusedops::cpu::bias_act_backward<T>(0, 5, &dummy, 5, 1, &dummy, 5, &dummy, Activation::gelu, db.data());
  record(std::all_of(db.begin(), db.end(), [](T v) { return v == T(0); }),
         fmt("%s %s bias_act_backward M=0 gives zero db", isa_str(isa), type_str<T>()));
  std::printf("  %-7s %-6s bias_act_backward: %d failed\n", isa_str(isa), type_str<T>(), g_failed - before);
}

// ---- threads: the same bits at any team size, and from inside the caller's parallel region ----

// The GEMM (blocked, small-M and offset-A paths) and the bias gradient at 1..4 threads, and
// called by each thread of a parallel region of the caller (where the kernels run on one
// thread): bit-identical results everywhere.
template <typename T>
void test_thread_independence(Isa isa) {
  fusedops::set_isa(isa);
  struct Shape { int64_t M, N, K; bool transposed; };
  const Shape shapes[] = {{300, 257, 190, false}, {40, 700, 300, true}, {1, 33, 5, false}};
  for (const Shape& sh : shapes) {
    std::vector<T> A(size_t(sh.M * sh.K)), B(size_t(sh.K * sh.N)), g(size_t(sh.M * sh.N));
    for (auto& v : A) v = randn<T>();
    for (auto& v : B) v = randn<T>();
    for (auto& v : g) v = randn<T>();
    auto product = [&](std::vector<T>& C, std::vector<T>& db) {
      GemmArgs<T> a;
      a.M = sh.M, a.N = sh.N, a.K = sh.K, a.A = A.data(), a.rsa = sh.K, a.csa = 1, a.B = B.data();
      if (sh.transposed) a.rsb = 1, a.csb = sh.K;
      else a.rsb = sh.N, a.csb = 1;
      a.C = C.data(), a.ldc = sh.N;
      fusedops::cpu::gemm<T>(a);
      fusedops::cpu::bias_act_backward<T>(sh.M, sh.N, g.data(), sh.N, 1, nullptr, 0, nullptr, Activation::none,
                                          db.data());
    };
    std::vector<T> C1(size_t(sh.M * sh.N)), db1(size_t(sh.N));
    omp_set_num_threads(1);
    product(C1, db1);
    bool same = true;
    for (int nt = 2; nt <= 4; ++nt) {
      omp_set_num_threads(nt);
      std::vector<T> C(C1.size()), db(db1.size());
      product(C, db);
      same = same && C == C1 && db == db1;
    }
    bool nested = true;
#pragma omp parallel num_threads(3)
    {
      std::vector<T> C(C1.size()), db(db1.size());
      product(C, db);
#pragma omp critical
      nested = nested && C == C1 && db == db1;
    }
    omp_set_num_threads(omp_get_num_procs());
    record(same && nested,
           fmt("%s %s same bits at 1-4 threads and inside a parallel region %ldx%ldx%ld", isa_str(isa), type_str<T>(),
               long(sh.M), long(sh.N), long(sh.K)),
           fmt("thread counts %s, nested %s", same ? "agree" : "DIFFER", nested ? "agrees" : "DIFFERS"));
  }
}

// ---- accuracy of the vectorised activations -------------------------------------------------------

template <typename T>
void test_activation_accuracy(Isa isa) {
  fusedops::set_isa(isa);
  const int64_t n = g_small ? 20001 : 400001;
  std::vector<T> x(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) x[i] = T(-10.0 + 20.0 * double(i) / double(n - 1));
  const T specials[] = {T(0), T(-0.0), T(1e-30), T(-1e-30), T(1e-3), T(-1e-3), T(20), T(-20), T(50), T(-50),
                        T(90), T(-90), T(3e4), T(-3e4), std::numeric_limits<T>::min(), T(5.6568542), T(-5.6568542)};
  x.insert(x.end(), std::begin(specials), std::end(specials));
  const int64_t N = int64_t(x.size());
  const double eps = std::numeric_limits<T>::epsilon();
  for (Activation act : {Activation::relu, Activation::gelu, Activation::gelu_tanh}) {
    // C[0, :] = act(1 * x): the epilogue runs over full vectors and the tail
    const T one = T(1);
    std::vector<T> C(static_cast<size_t>(N), std::numeric_limits<T>::quiet_NaN());
    GemmArgs<T> g;
    g.M = 1, g.N = N, g.K = 1, g.A = &one, g.rsa = 1, g.csa = 1, g.B = x.data(), g.rsb = N, g.csb = 1;
    g.C = C.data(), g.ldc = N, g.act = act;
    fusedops::cpu::gemm_with_isa<T>(isa, g);
    double worst = 0, worst_rel = 0, at = 0;
    bool ok = true;
    for (int64_t i = 0; i < N; ++i) {
      const double ref = fusedops::cpu::activation_reference<double>(double(x[i]), act);
      const double err = std::fabs(double(C[i]) - ref);
      if (err > worst) worst = err, at = double(x[i]);
      if (x[i] != T(0)) worst_rel = std::max(worst_rel, err / std::fabs(double(x[i])));
      if (!(err <= 2.5e-7 * std::fabs(double(x[i])) + 2 * eps * std::fabs(ref) + 1e-300)) ok = false;
    }
    // derivative through bias_act_backward with g = 1
    std::vector<T> ones(1, T(1)), dz(static_cast<size_t>(N));
    fusedops::cpu::bias_act_backward<T>(1, N, ones.data(), 0, 0, x.data(), N, dz.data(), act, nullptr);
    double worst_d = 0;
    for (int64_t i = 0; i < N; ++i) {
      const double ref = fusedops::cpu::activation_grad_reference<double>(double(x[i]), act);
      const double err = std::fabs(double(dz[i]) - ref);
      worst_d = std::max(worst_d, err);
      if (!(err <= 1e-6 + 4 * eps * std::fabs(ref))) ok = false;
    }
    std::printf("  %-7s %-6s %-9s max |err| %.2e at x=%g (|err|/|x| <= %.2e); derivative max |err| %.2e\n",
                isa_str(isa), type_str<T>(), act_str(act), worst, at, worst_rel, worst_d);
    record(ok, fmt("%s %s %s accuracy", isa_str(isa), type_str<T>(), act_str(act)),
           fmt("max error %.3g at x=%g exceeds 2.5e-7 |x| + 2 eps |act(x)| (or derivative %.3g > 1e-6)",
               worst, at, worst_d));
  }
  // NaN propagates through relu (as torch's relu), and through gelu
  for (Activation act : {Activation::relu, Activation::gelu}) {
    std::vector<T> xs(19, T(1)), C(19, T(0));
    xs[3] = xs[17] = std::numeric_limits<T>::quiet_NaN();
    const T one = T(1);
    GemmArgs<T> g;
    g.M = 1, g.N = 19, g.K = 1, g.A = &one, g.rsa = 1, g.csa = 1, g.B = xs.data(), g.rsb = 19, g.csb = 1;
    g.C = C.data(), g.ldc = 19, g.act = act;
    fusedops::cpu::gemm_with_isa<T>(isa, g);
    record(std::isnan(C[3]) && std::isnan(C[17]) && !std::isnan(C[4]),
           fmt("%s %s NaN propagates through %s", isa_str(isa), type_str<T>(), act_str(act)));
  }
}

// ---- microkernel description ----------------------------------------------------------------------

void test_microkernel_info(Isa isa) {
  const auto f = fusedops::cpu::microkernel_info<float>(isa);
  const auto d = fusedops::cpu::microkernel_info<double>(isa);
  int want_f[2] = {4, 4}, want_d[2] = {4, 4};
  if (isa == Isa::avx2) want_f[0] = 6, want_f[1] = 16, want_d[0] = 6, want_d[1] = 8;
  if (isa == Isa::avx512) want_f[0] = 14, want_f[1] = 32, want_d[0] = 14, want_d[1] = 16;
  record(f.mr == want_f[0] && f.nr == want_f[1] && d.mr == want_d[0] && d.nr == want_d[1] && f.name &&
             std::strstr(f.name, isa_str(isa)),
         fmt("%s microkernel_info", isa_str(isa)),
         fmt("float %dx%d, double %dx%d, name %s", f.mr, f.nr, d.mr, d.nr, f.name ? f.name : "(null)"));
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--small") == 0) {
      g_small = true;
    } else {
      std::fprintf(stderr, "usage: %s [--small]\n", argv[0]);
      return 2;
    }
  }
  const auto& ci = fusedops::cpu_info();
  std::printf("CPU: %s; best instruction set %s; L1d %" PRId64 " KB, L2 %" PRId64 " KB%s\n", ci.model.c_str(),
              isa_str(ci.best), ci.l1d / 1024, ci.l2 / 1024, g_small ? "; small shapes" : "");
  record(fusedops::set_isa(Isa::avx512) == ci.best && fusedops::active_isa() == ci.best,
         "set_isa never goes above the CPU's best");

  for (Isa isa : {Isa::generic, Isa::avx2, Isa::avx512}) {
    if (isa > ci.best) {
      std::printf("SKIP %s: CPU lacks %s (best here: %s)\n", isa_str(isa), isa_str(isa), isa_str(ci.best));
      continue;
    }
    record(fusedops::set_isa(isa) == isa, fmt("set_isa(%s)", isa_str(isa)));
    test_microkernel_info(isa);
    test_gemm<float>(isa);
    test_gemm<double>(isa);
    test_gemm_batched<float>(isa);
    test_gemm_batched<double>(isa);
    test_gemm_pack_b<float>(isa);
    test_gemm_pack_b<double>(isa);
    test_gemm_packed_b<float>(isa);
    test_gemm_packed_b<double>(isa);
    test_gemm_small_m<float>(isa);
    test_gemm_small_m<double>(isa);
    test_gemm_offset_b<float>(isa);
    test_gemm_offset_b<double>(isa);
    test_gemm_offset_a<float>(isa);
    test_gemm_offset_a<double>(isa);
    test_gemm_offset_c<float>(isa);
    test_gemm_offset_c<double>(isa);
    test_bias_act_backward<float>(isa);
    test_bias_act_backward<double>(isa);
    test_thread_independence<float>(isa);
    test_thread_independence<double>(isa);
    test_activation_accuracy<float>(isa);
    test_activation_accuracy<double>(isa);
  }
  fusedops::set_isa(ci.best);
  std::printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed ? 1 : 0;
}
