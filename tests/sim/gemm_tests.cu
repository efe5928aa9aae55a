/* Simulator tests of the CUDA GEMM kernels (csrc/cuda/kernels/gemm.cuh) and the bias/activation
   backward kernel (csrc/cuda/kernels/pointwise.cuh) against double-precision CPU references.
   Built by tests/sim/run.sh as C++ with the simulator force-included.

   Usage: gemm_tests [--quick] [NAME...]   all tests (or those whose name contains NAME);
          --quick runs a few small shapes per variant (the sanitizer build). */
#include "kernel_check.h"
#include "../../csrc/cuda/kernels/gemm.cuh"
#include "../../csrc/cuda/kernels/pointwise.cuh"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <array>
#include <random>
#include <string>
#include <vector>

using namespace fusedops::cuda;
using fusedops::Activation;
using fusedops::BiasMode;

using kernel_check::Failure;
using kernel_check::Test;

namespace {
bool g_quick = false;
int g_cases = 0;

template <typename T> double to_d(T x) { return double(gemm_detail::to_acc(x)); }
template <typename T> T from_d(double v) { return gemm_detail::from_acc<T>(gemm_acc_t<T>(v)); }

// Unit roundoff of the stored type and of the accumulation.
template <typename T> double u_store() {
  if constexpr (std::is_same_v<T, __half>) return std::ldexp(1.0, -11);
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) return std::ldexp(1.0, -8);
  else if constexpr (std::is_same_v<T, float>) return std::ldexp(1.0, -24);
  else return std::ldexp(1.0, -53);
}

double act_ref(double x, Activation a) {
  switch (a) {
    case Activation::relu: return x > 0 ? x : 0;
    case Activation::gelu: return 0.5 * x * (1 + std::erf(x * fusedops::kSqrtHalf));
    case Activation::gelu_tanh:
      return 0.5 * x * (1 + std::tanh(fusedops::kSqrt2OverPi * (x + fusedops::kGeluTanhC * x * x * x)));
    default: return x;
  }
}
double act_grad_ref(double z, Activation a) {
  switch (a) {
    case Activation::relu: return z > 0 ? 1 : 0;
    case Activation::gelu:
      return 0.5 * (1 + std::erf(z * fusedops::kSqrtHalf)) + z * fusedops::kInvSqrt2Pi * std::exp(-0.5 * z * z);
    case Activation::gelu_tanh: {
      const double c = fusedops::kSqrt2OverPi, k = fusedops::kGeluTanhC;
      const double t = std::tanh(c * (z + k * z * z * z));
      return 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * c * (1 + 3 * k * z * z);
    }
    default: return 1;
  }
}

// One GEMM configuration.
struct Case {
  int64_t M, N, K, batch = 1;
  bool a_t = false, b_t = false;  // A stored [K, M] (M-contiguous); B stored [N, K] (K-contiguous)
  int64_t pad_a = 0, pad_b = 0;   // extra elements per stored row
  int64_t col_step_a = 1, col_step_b = 1;  // stride of the contiguous dimension (>1: strided view)
  int64_t off_a = 0, off_b = 0;   // element offset of the first element (1 forces the generic path)
  bool bcast_a = false, bcast_b = false;
  double alpha = 1, beta = 0;
  BiasMode bias = BiasMode::none;
  Activation act = Activation::none;
  bool preact = false;
  bool tf32 = false;
  const char* expect = nullptr;  // substring of the plan name, and "fast"/"generic" checks below
  int expect_fast = -1;          // 1: both operands on the cp.async path, 0: both generic
};

std::string describe(const Case& c) {
  char b[400];
  std::snprintf(b, sizeof b,
                "M=%lld N=%lld K=%lld batch=%lld a_t=%d b_t=%d pad=%lld/%lld step=%lld/%lld off=%lld/%lld bcast=%d/%d "
                "alpha=%g beta=%g bias=%d act=%d preact=%d tf32=%d",
                (long long)c.M, (long long)c.N, (long long)c.K, (long long)c.batch, c.a_t, c.b_t, (long long)c.pad_a,
                (long long)c.pad_b, (long long)c.col_step_a, (long long)c.col_step_b, (long long)c.off_a,
                (long long)c.off_b, c.bcast_a, c.bcast_b, c.alpha, c.beta, int(c.bias), int(c.act), c.preact, c.tf32);
  return b;
}

// A stored matrix of R rows x Cn columns (row-major with padding and a column step).
template <typename T>
struct Stored {
  int64_t rows, cols, rs, cs, off, bstride, nb;
  std::vector<T> buf;
  T* base() { return buf.data() + off; }
};
template <typename T>
Stored<T> make_stored(int64_t rows, int64_t cols, int64_t pad, int64_t step, int64_t off, int64_t batch, bool bcast,
                      std::mt19937& rng, double scale) {
  Stored<T> s;
  s.rows = rows, s.cols = cols, s.cs = step, s.rs = cols * step + pad, s.off = off;
  s.nb = bcast ? 1 : batch;
  s.bstride = bcast ? 0 : rows * s.rs + 3;  // odd gap between batches (unaligned for odd offs)
  if (!bcast && off == 0) s.bstride = (s.bstride + 15) / 16 * 16;
  s.buf.resize(size_t(off + s.nb * (s.bstride ? s.bstride : rows * s.rs) + 16));
  std::uniform_real_distribution<double> u(-scale, scale);
  for (auto& x : s.buf) x = from_d<T>(u(rng));
  return s;
}

template <typename T>
void run_case(const Case& c, unsigned seed) {
  ++g_cases;
  using Acc = gemm_acc_t<T>;
  std::mt19937 rng(seed);
  // A(i,k): stored [M,K] or [K,M]; B(k,j): stored [K,N] or [N,K]
  auto A = make_stored<T>(c.a_t ? c.K : c.M, c.a_t ? c.M : c.K, c.pad_a, c.col_step_a, c.off_a, c.batch, c.bcast_a,
                          rng, 1.0);
  auto B = make_stored<T>(c.b_t ? c.N : c.K, c.b_t ? c.K : c.N, c.pad_b, c.col_step_b, c.off_b, c.batch, c.bcast_b,
                          rng, 1.0);
  const int64_t ldc = c.N + 3, bsc = c.M * ldc + 5;
  std::vector<T> C(size_t(c.batch * bsc + 8)), C0;
  std::uniform_real_distribution<double> u(-1, 1);
  for (auto& x : C) x = from_d<T>(c.beta == 0 ? NAN : u(rng));  // beta 0: NaN must not leak
  C0 = C;
  std::vector<T> pre(c.preact ? C.size() : 0, from_d<T>(777.0));
  std::vector<T> bias(size_t(c.bias == BiasMode::per_row ? c.M : c.N));
  for (auto& x : bias) x = from_d<T>(u(rng));

  GemmParams<T> p;
  p.M = c.M, p.N = c.N, p.K = c.K, p.batch = c.batch;
  p.A = A.base(), p.batch_stride_a = A.bstride;
  if (c.a_t) p.rsa = A.cs, p.csa = A.rs;
  else p.rsa = A.rs, p.csa = A.cs;
  p.B = B.base(), p.batch_stride_b = B.bstride;
  if (c.b_t) p.rsb = B.cs, p.csb = B.rs;
  else p.rsb = B.rs, p.csb = B.cs;
  p.C = C.data(), p.ldc = ldc, p.batch_stride_c = bsc;
  p.alpha = Acc(c.alpha), p.beta = Acc(c.beta);
  if (c.bias != BiasMode::none) p.bias = bias.data(), p.bias_mode = c.bias;
  p.act = c.act;
  if (c.preact) p.preact = pre.data(), p.ld_preact = ldc, p.batch_stride_preact = bsc;
  p.allow_tf32 = c.tf32;

  const LaunchPlan plan = gemm_plan(p);
  if (c.expect) CHECK(std::strstr(plan.name, c.expect), std::string("plan ") + plan.name + " for " + describe(c));
  if (c.expect_fast >= 0) {
    const bool both_fast = (plan.variant & gemm_detail::kVarFastA) && (plan.variant & gemm_detail::kVarFastB);
    const bool none_fast = !(plan.variant & (gemm_detail::kVarFastA | gemm_detail::kVarFastB));
    CHECK(c.expect_fast ? both_fast : none_fast, "fast-path selection, variant " + std::to_string(plan.variant) +
                                                     " for " + describe(c));
  }
  gemm_launch(p, plan, cudaStream_t{});

  const bool tf32 = std::is_same_v<T, float> && c.tf32;
  const double u_in = tf32 ? std::ldexp(1.0, -11) : 0;  // tf32 rounds the inputs
  const double u_acc = std::is_same_v<T, double> ? std::ldexp(1.0, -53) : std::ldexp(1.0, -24);
  const double u_out = u_store<T>();
  for (int64_t b = 0; b < c.batch; ++b) {
    const T* Ab = p.A + b * p.batch_stride_a;
    const T* Bb = p.B + b * p.batch_stride_b;
    for (int64_t i = 0; i < c.M; ++i)
      for (int64_t j = 0; j < c.N; ++j) {
        double s = 0, mag = 0;
        for (int64_t k = 0; k < c.K; ++k) {
          const double x = to_d(Ab[i * p.rsa + k * p.csa]) * to_d(Bb[k * p.rsb + j * p.csb]);
          s += x, mag += std::fabs(x);
        }
        const size_t ci = size_t(b * bsc + i * ldc + j);
        double v = c.alpha * s;
        mag = std::fabs(c.alpha) * mag * (2 * u_in + (c.K + 2) * u_acc);
        if (c.beta != 0) v += c.beta * to_d(C0[ci]), mag += std::fabs(c.beta * to_d(C0[ci])) * 2 * u_acc;
        if (c.bias == BiasMode::per_col) v += to_d(bias[size_t(j)]);
        if (c.bias == BiasMode::per_row) v += to_d(bias[size_t(i)]);
        mag += (std::fabs(v) + 1e-30) * 4 * u_acc;
        const double want = act_ref(v, c.act);
        const double tol_pre = 2 * mag + 1.01 * u_out * std::fabs(v) + 1e-300;
        const double tol = 1.2 * 2 * mag + 1.01 * u_out * std::fabs(want) + 16 * u_acc * (std::fabs(v) + 1e-3);
        const double got = to_d(C[ci]);
        if (!(std::fabs(got - want) <= tol)) {
          char m[200];
          std::snprintf(m, sizeof m, "C[%lld][%lld][%lld] = %.9g, want %.9g (tol %.3g); ", (long long)b, (long long)i,
                        (long long)j, got, want, tol);
          throw Failure{m + describe(c) + " plan " + plan.name};
        }
        if (c.preact) {
          const double gp = to_d(pre[ci]);
          if (!(std::fabs(gp - v) <= tol_pre)) {
            char m[200];
            std::snprintf(m, sizeof m, "preact[%lld][%lld][%lld] = %.9g, want %.9g; ", (long long)b, (long long)i,
                          (long long)j, gp, v);
            throw Failure{m + describe(c)};
          }
        }
      }
    // padding of C (and of preact) untouched
    for (int64_t i = 0; i < c.M; ++i)
      for (int64_t j = c.N; j < ldc; ++j) {
        const size_t ci = size_t(b * bsc + i * ldc + j);
        CHECK(std::memcmp(&C[ci], &C0[ci], sizeof(T)) == 0, "C padding written: " + describe(c));
        if (c.preact) CHECK(to_d(pre[ci]) == to_d(from_d<T>(777.0)), "preact padding written: " + describe(c));
      }
  }
}

// ---- the case lists -------------------------------------------------------------------------------
template <typename T>
void shapes_and_layouts(bool tf32, const char* name_part) {
  const std::vector<std::array<int64_t, 3>> shapes =
      g_quick ? std::vector<std::array<int64_t, 3>>{{7, 9, 33}, {65, 17, 40}}
              : std::vector<std::array<int64_t, 3>>{{1, 1, 1},    {7, 16, 33},  {16, 7, 16},  {33, 65, 7},
                                                    {65, 33, 64}, {1, 70, 129}, {133, 5, 48}, {40, 133, 24}};
  unsigned seed = 1;
  for (auto [M, N, K] : shapes)
    for (int layout = 0; layout < 4; ++layout) {
      Case c{M, N, K};
      c.a_t = layout & 1, c.b_t = layout & 2, c.tf32 = tf32, c.expect = name_part;
      run_case<T>(c, seed++);
    }
}

template <typename T>
void strided_unaligned(bool tf32) {
  constexpr int VEC = 16 / int(sizeof(T));
  // aligned rows (pad a multiple of VEC): the cp.async path (tensor-core variants)
  for (int layout = 0; layout < 4; ++layout) {
    Case c{37, 45, g_quick ? 40 : 72};
    c.a_t = layout & 1, c.b_t = layout & 2, c.tf32 = tf32;
    const int64_t a_cols = c.a_t ? c.M : c.K, b_cols = c.b_t ? c.K : c.N;  // rows a multiple of VEC
    c.pad_a = VEC + (VEC - a_cols % VEC) % VEC, c.pad_b = 2 * VEC + (VEC - b_cols % VEC) % VEC;
    if (!std::is_same_v<T, double> && (!std::is_same_v<T, float> || tf32)) c.expect_fast = 1;
    run_case<T>(c, 100 + layout);
  }
  // unaligned base pointers, odd padding, column steps: the generic path
  for (int layout = 0; layout < 4; ++layout) {
    Case c{35, 41, g_quick ? 19 : 50};
    c.a_t = layout & 1, c.b_t = layout & 2, c.tf32 = tf32;
    c.off_a = 1, c.off_b = 1, c.pad_a = 1, c.pad_b = 3;
    if (layout == 3) c.col_step_a = 2, c.col_step_b = 3;
    if (!std::is_same_v<T, double> && (!std::is_same_v<T, float> || tf32)) c.expect_fast = 0;
    run_case<T>(c, 200 + layout);
  }
}

template <typename T>
void epilogues(bool tf32) {
  unsigned seed = 300;
  const Activation acts[] = {Activation::none, Activation::relu, Activation::gelu, Activation::gelu_tanh};
  for (int a = 0; a < 4; ++a) {
    Case c{29, 70, 24};
    c.act = acts[a], c.tf32 = tf32, c.preact = a != 1;
    c.bias = a % 2 ? BiasMode::per_row : BiasMode::per_col;
    c.alpha = 0.75, c.beta = a >= 2 ? 1.0 : 0.0;
    c.b_t = a % 2;
    run_case<T>(c, seed++);
    if (g_quick) break;
  }
  Case c{20, 12, 16};  // alpha and beta both non-trivial, per-row bias, gelu
  c.alpha = -1.5, c.beta = 0.5, c.bias = BiasMode::per_row, c.act = Activation::gelu, c.tf32 = tf32;
  run_case<T>(c, seed++);
  Case z{9, 11, 0};  // K = 0: C = act(beta C + bias)
  z.beta = 1, z.bias = BiasMode::per_col, z.act = Activation::relu, z.tf32 = tf32;
  run_case<T>(z, seed++);
}

template <typename T>
void batched(bool tf32) {
  unsigned seed = 400;
  for (int v = 0; v < (g_quick ? 1 : 4); ++v) {
    Case c{21, 19, 40, 3};
    c.bcast_a = v == 1, c.bcast_b = v == 2, c.a_t = v == 3, c.tf32 = tf32;
    c.bias = BiasMode::per_col, c.act = Activation::gelu_tanh, c.preact = v == 0, c.beta = v == 3 ? 1.0 : 0.0;
    run_case<T>(c, seed++);
  }
}

template <typename T>
void big_tile(bool tf32) {  // enough tiles for the 128x128 tensor-core configuration
  Case c{129, 133, 40, 24};  // 2 x 2 tiles x 24 batches: 96 tiles of 128x128
  c.b_t = true, c.tf32 = tf32, c.bias = BiasMode::per_col, c.act = Activation::relu, c.bcast_b = true;
  c.expect = std::is_same_v<T, float> && !tf32 ? "simt_f32" : "128x128";
  run_case<T>(c, 500);
}

template <typename T>
void bias_act_backward_case(int64_t M, int64_t N, Activation act, bool want_db, bool ws, bool strided_g,
                            unsigned seed) {
  ++g_cases;
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(-2, 2);
  const int64_t rsg = strided_g ? 1 : N + 2, csg = strided_g ? M + 1 : 1;  // strided: g is a transposed view
  std::vector<T> g(size_t((M + 1) * (N + 2) + 4)), z(size_t(M * (N + 1) + 1)), dz(size_t(M * N + 1), from_d<T>(NAN));
  for (auto& x : g) x = from_d<T>(u(rng));
  for (auto& x : z) x = from_d<T>(u(rng));
  const int64_t ldz = N + 1;
  std::vector<T> db(size_t(N), from_d<T>(NAN));
  const LaunchPlan plan = bias_act_backward_plan<T>(M, N);
  std::vector<float> w(plan.workspace_bytes / sizeof(float) + 1, NAN);
  bias_act_backward_launch<T>(plan, M, N, g.data(), rsg, csg, z.data(), ldz, act == Activation::none ? nullptr : dz.data(),
                              act, want_db ? db.data() : nullptr, ws ? w.data() : nullptr, cudaStream_t{});
  const double uo = u_store<T>();
  for (int64_t n = 0; n < N; ++n) {
    double s = 0, mag = 0;
    for (int64_t m = 0; m < M; ++m) {
      double v = to_d(g[size_t(m * rsg + n * csg)]);
      if (act != Activation::none) {
        v *= act_grad_ref(to_d(z[size_t(m * ldz + n)]), act);
        const double got = to_d(dz[size_t(m * N + n)]);
        CHECK(std::fabs(got - v) <= 1.01 * uo * std::fabs(v) + 1e-5 * (std::fabs(v) + 1e-2) * (uo > 1e-10),
              "dz[" + std::to_string(m) + "][" + std::to_string(n) + "] = " + std::to_string(got) + ", want " +
                  std::to_string(v));
        v = got;
      }
      s += v, mag += std::fabs(v);
    }
    if (want_db) {
      const double got = to_d(db[size_t(n)]);
      const double us = std::ldexp(1.0, std::is_same_v<T, double> ? -52 : -23);  // float partials
      const double tol = (M + 2) * us * mag + uo * std::fabs(s) * 1.01 + 1e-300;
      CHECK(std::fabs(got - s) <= tol, "db[" + std::to_string(n) + "] = " + std::to_string(got) + ", want " +
                                           std::to_string(s) + " (M=" + std::to_string(M) + ")");
    }
  }
}

template <typename T>
void bias_act_backward_all() {
  unsigned seed = 600;
  const Activation acts[] = {Activation::none, Activation::relu, Activation::gelu, Activation::gelu_tanh};
  for (auto [M, N] : g_quick ? std::vector<std::array<int64_t, 2>>{{37, 45}}
                             : std::vector<std::array<int64_t, 2>>{{1, 1}, {37, 45}, {600, 7}, {1000, 70}})
    for (int a = 0; a < 4; ++a) {
      bias_act_backward_case<T>(M, N, acts[a], true, true, a == 2, seed++);
      if (!g_quick) bias_act_backward_case<T>(M, N, acts[a], a != 0, false, a == 3, seed++);
    }
  // determinism: two runs agree bit for bit
  const int64_t M = 700, N = 33;
  std::vector<T> g(static_cast<size_t>(M * N)), db1(static_cast<size_t>(N)), db2(static_cast<size_t>(N));
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> u(-1, 1);
  for (auto& x : g) x = from_d<T>(u(rng));
  const LaunchPlan plan = bias_act_backward_plan<T>(M, N);
  std::vector<float> w(plan.workspace_bytes / sizeof(float) + 1);
  for (auto* db : {&db1, &db2})
    bias_act_backward_launch<T>(plan, M, N, g.data(), N, 1, nullptr, 0, nullptr, Activation::none, db->data(),
                                w.data(), cudaStream_t{});
  CHECK(std::memcmp(db1.data(), db2.data(), sizeof(T) * size_t(N)) == 0, "db not deterministic");
}

template <typename T>
void gemm_all(bool tf32, const char* name_part) {
  shapes_and_layouts<T>(tf32, name_part);
  strided_unaligned<T>(tf32);
  epilogues<T>(tf32);
  batched<T>(tf32);
}

const Test kTests[] = {
    {"gemm_f64_simt", [] { gemm_all<double>(false, "simt_f64"); }},
    {"gemm_f32_simt", [] { gemm_all<float>(false, "simt_f32"); }},
    {"gemm_f16_tc", [] { gemm_all<__half>(false, "tc_f16"); }},
    {"gemm_bf16_tc", [] { gemm_all<__nv_bfloat16>(false, "tc_bf16"); }},
    {"gemm_tf32_tc", [] { gemm_all<float>(true, "tc_tf32"); }},
    {"gemm_big_tile_f16", [] { big_tile<__half>(false); }},
    {"gemm_big_tile_bf16", [] { big_tile<__nv_bfloat16>(false); }},
    {"gemm_big_tile_tf32", [] { big_tile<float>(true); }},
    {"gemm_big_tile_f32_simt", [] { big_tile<float>(false); }},
    {"bias_act_backward_f32", [] { bias_act_backward_all<float>(); }},
    {"bias_act_backward_f64", [] { bias_act_backward_all<double>(); }},
    {"bias_act_backward_f16", [] { bias_act_backward_all<__half>(); }},
    {"bias_act_backward_bf16", [] { bias_act_backward_all<__nv_bfloat16>(); }},
};
}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> filters;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) g_quick = true;
    else filters.emplace_back(argv[i]);
  }
  int passed = 0, failed = 0;
  const auto t_all = std::chrono::steady_clock::now();
  for (const Test& t : kTests) {
    if (!filters.empty()) {
      bool hit = false;
      for (auto& f : filters) hit |= std::strstr(t.name, f.c_str()) != nullptr;
      if (!hit) continue;
    }
    if (g_quick && std::strstr(t.name, "big_tile") && !std::strstr(t.name, "_f16")) continue;
    const int before = g_cases;
    const auto t0 = std::chrono::steady_clock::now();
    try {
      t.fn();
      ++passed;
      std::printf("ok    %-26s %3d cases %6.2fs\n", t.name, g_cases - before,
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    } catch (const Failure& f) {
      ++failed;
      std::printf("FAIL  %-26s %s\n", t.name, f.what.c_str());
    } catch (const std::exception& e) {
      ++failed;
      std::printf("FAIL  %-26s exception: %s\n", t.name, e.what());
    }
    std::fflush(stdout);
  }
  std::printf("gemm tests: %d passed, %d failed (%d cases, %.1fs)\n", passed, failed, g_cases,
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t_all).count());
  return failed == 0 ? 0 : 1;
}
