// Standalone test of the mixed-precision GEMM (csrc/cpu/kernels/gemm/gemm_bf16.h), no torch:
// every combination of operand types (fp32 / bf16 for A, B, C and the bias), layouts (row-major,
// transposed, strided), epilogues and edge shapes, on the native AVX512-BF16 kernel (where the
// CPU has it) and on the widening path, against a long-double oracle within a budget derived
// from the roundings involved:
//   |C - C_exact| <= 1.2 * (|alpha| * (r_in + (K + 2) * u32) * S + u32 * (|beta C| + |bias|))
//                    + u16 * |C_exact|  (when C is bf16)  + 1e-6 * (1 + |C_exact|)
// with S = sum_k |A(i,k) B(k,j)|, u32 = 2^-24 and u16 = 2^-8 the unit roundoffs of fp32 and
// bf16, r_in = 2 * u16 when an fp32 operand is rounded to bf16 (the native path) else 0; 1.2
// covers the activations' slopes (GELU's is below 1.13) and 1e-6 their vector approximations.
// Also: the same bits on 1 to 4 threads, beta == 0 never reading C (NaN there does not leak),
// K == 0, a bf16 C past the one-step K limit, and a C past the caches (streaming stores).
#include <cinttypes>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cpu/kernels/cpu_features.h"
#include "cpu/kernels/gemm/gemm_bf16.h"

using namespace fusedops::cpu;
using fusedops::Activation;
using fusedops::BiasMode;

namespace {

int g_passed = 0, g_failed = 0;
std::mt19937_64 g_rng(20261207);

std::string fmt(const char* f, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, f);
  std::vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  return buf;
}

void record(bool ok, const std::string& what) {
  if (ok) {
    ++g_passed;
  } else {
    ++g_failed;
    std::printf("FAIL %s\n", what.c_str());
  }
}

// A matrix of either type, its values drawn in [-1, 1] (bf16 ones exactly representable).
struct Mat {
  DType t;
  std::vector<float> f;
  std::vector<uint16_t> h;
  Mat(DType type, int64_t n) : t(type) {
    std::uniform_real_distribution<float> d(-1.0f, 1.0f);
    if (t == DType::f32) {
      f.resize(size_t(std::max<int64_t>(n, 1)));
      for (auto& x : f) x = d(g_rng);
    } else {
      h.resize(size_t(std::max<int64_t>(n, 1)));
      for (auto& x : h) x = float_to_bf16(d(g_rng));
    }
  }
  void* data() { return t == DType::f32 ? static_cast<void*>(f.data()) : static_cast<void*>(h.data()); }
  float get(int64_t i) const { return t == DType::f32 ? f[size_t(i)] : bf16_to_float(h[size_t(i)]); }
  bool same_bits(const Mat& o) const { return t == DType::f32 ? f == o.f : h == o.h; }
};

const char* tname(DType t) { return t == DType::f32 ? "f32" : "bf16"; }

enum class Layout { rows, cols, strided };  // (rs, cs) = (ld, 1), (1, ld), (2 ld, 2)
const char* lname(Layout l) { return l == Layout::rows ? "rows" : l == Layout::cols ? "cols" : "strided"; }

struct Case {
  int64_t M, N, K;
  DType a, b, c, bias_t;
  Layout la, lb;
  float alpha, beta;
  BiasMode bias;
  Activation act;
  bool preact;
};

// The path under test: 0 widened, 1 vdpbf16ps, 2 AMX.
int g_path = 0;
const char* path_name() { return g_path == 0 ? "widened" : g_path == 1 ? "avx512_bf16" : "amx"; }
void run_path(bool native, const GemmMixedArgs& g) {
  if (!native) return gemm_mixed_widened(g);
  if (g_path == 2) return avx512bf16::gemm_mixed_amx(g);
  avx512bf16::gemm_mixed(g);
}

std::string describe(const Case& c, bool native) {
  (void)native;
  return fmt("%s M%" PRId64 " N%" PRId64 " K%" PRId64 " A %s/%s B %s/%s C %s alpha %g beta %g bias %d/%s act %d%s",
             path_name(), c.M, c.N, c.K, tname(c.a), lname(c.la), tname(c.b), lname(c.lb),
             tname(c.c), c.alpha, c.beta, int(c.bias), tname(c.bias_t), int(c.act), c.preact ? " preact" : "");
}

// Operands laid out per the case; returns the args (pointing into the matrices).
struct Operands {
  Mat A, B, C, bias, pre;
  GemmMixedArgs g;
  Operands(const Case& c)
      : A(c.a, (c.la == Layout::strided ? 4 : 1) * c.M * c.K),
        B(c.b, (c.lb == Layout::strided ? 4 : 1) * c.K * c.N),
        C(c.c, c.M * c.N),
        bias(c.bias_t, std::max(c.M, c.N)),
        pre(c.c, c.M * c.N) {
    g.M = c.M, g.N = c.N, g.K = c.K;
    g.alpha = c.alpha, g.beta = c.beta;
    g.A = A.data(), g.a_type = c.a;
    if (c.la == Layout::rows) g.rsa = c.K, g.csa = 1;
    else if (c.la == Layout::cols) g.rsa = 1, g.csa = c.M;
    else g.rsa = 2 * c.K, g.csa = 2;
    g.B = B.data(), g.b_type = c.b;
    if (c.lb == Layout::rows) g.rsb = c.N, g.csb = 1;
    else if (c.lb == Layout::cols) g.rsb = 1, g.csb = c.K;
    else g.rsb = 2 * c.N, g.csb = 2;
    g.C = C.data(), g.c_type = c.c, g.ldc = c.N;
    g.bias = bias.data(), g.bias_type = c.bias_t, g.bias_mode = c.bias;
    g.act = c.act;
    if (c.preact) g.preact = pre.data(), g.ld_preact = c.N;
  }
};

double budget(const Case& c, const GemmMixedArgs& g, const Mat& C0, bool native, int64_t i, int64_t j, double exact,
              bool is_pre) {
  const double u32 = std::ldexp(1.0, -24), u16 = std::ldexp(1.0, -8);
  const bool rounds_in = native && (c.a == DType::f32 || c.b == DType::f32);
  double S = 0;
  for (int64_t k = 0; k < c.K; ++k)
    S += std::fabs(double(load_as_float(g.A, g.a_type, i * g.rsa + k * g.csa)) *
                   double(load_as_float(g.B, g.b_type, k * g.rsb + j * g.csb)));
  double extra = 0;
  if (c.beta != 0) extra += std::fabs(c.beta * C0.get(i * c.N + j));
  if (c.bias == BiasMode::per_col) extra += std::fabs(load_as_float(g.bias, g.bias_type, j));
  if (c.bias == BiasMode::per_row) extra += std::fabs(load_as_float(g.bias, g.bias_type, i));
  double e = std::fabs(c.alpha) * ((rounds_in ? 2 * u16 : 0) + double(c.K + 2) * u32) * S + u32 * extra;
  e *= is_pre ? 1.0 : 1.2;
  if (c.c == DType::bf16) e += u16 * (std::fabs(exact) + e);
  return e + 1e-6 * (1 + std::fabs(exact));
}

void run_case(const Case& c, bool native) {
  Operands got(c);
  // The oracle works on copies with an fp32 C and pre-activation (C's starting values widened
  // exactly): its results are not rounded to bf16 a second time.
  Case rc = c;
  rc.c = DType::f32;
  Operands ref(rc);
  ref.A = got.A, ref.B = got.B, ref.bias = got.bias;
  for (int64_t i = 0; i < c.M * c.N; ++i) ref.C.f[size_t(i)] = got.C.get(i);
  ref.g = got.g;
  ref.g.A = ref.A.data(), ref.g.B = ref.B.data(), ref.g.bias = ref.bias.data();
  ref.g.C = ref.C.data(), ref.g.c_type = DType::f32;
  ref.g.preact = c.preact ? ref.pre.data() : nullptr;
  const Mat C0 = got.C;
  if (c.beta == 0) {  // C must not be read: NaN in it would leak
    for (auto& x : got.C.f) x = NAN;
    for (auto& x : got.C.h) x = 0x7fc0;
  }
  run_path(native, got.g);
  gemm_mixed_reference(ref.g);
  double worst = 0;
  int64_t wi = -1, wj = -1;
  bool ok = true;
  for (int64_t i = 0; i < c.M; ++i)
    for (int64_t j = 0; j < c.N; ++j) {
      for (int which = 0; which < (c.preact ? 2 : 1); ++which) {
        const Mat& G = which ? got.pre : got.C;
        const Mat& R = which ? ref.pre : ref.C;
        const double v = G.get(i * c.N + j), r = R.get(i * c.N + j);
        const double b = budget(c, got.g, C0, native, i, j, r, which == 1);
        const double err = std::fabs(v - r);
        if (!(err <= b)) {
          ok = false;
          if (!(err / b <= worst)) worst = err / b, wi = i, wj = j;
        }
      }
    }
  record(ok, describe(c, native) + (ok ? "" : fmt(": worst at (%" PRId64 ", %" PRId64 "), %.3g x budget", wi, wj, worst)));
}

void test_cases(bool native) {
  const int64_t Ms[] = {1, 2, 13, 14, 15, 29, 64};
  const int64_t Ns[] = {1, 16, 31, 33, 70};
  const int64_t Ks[] = {1, 2, 3, 31, 64, 257};
  const DType types[] = {DType::f32, DType::bf16};
  const Layout layouts[] = {Layout::rows, Layout::cols, Layout::strided};
  const Activation acts[] = {Activation::none, Activation::relu, Activation::gelu, Activation::gelu_tanh};
  std::uniform_int_distribution<int> coin(0, 1), three(0, 2), four(0, 3);
  // Every type combination and layout pair over the shapes, epilogues drawn at random.
  for (int64_t M : Ms)
    for (int64_t N : Ns)
      for (int64_t K : Ks) {
        Case c{M, N, K, types[coin(g_rng)], types[coin(g_rng)], types[coin(g_rng)], types[coin(g_rng)],
               layouts[three(g_rng)], layouts[three(g_rng)], 1.0f, 0.0f, BiasMode::none, Activation::none, false};
        if (coin(g_rng)) c.alpha = 0.75f;
        if (coin(g_rng)) c.beta = coin(g_rng) ? 1.0f : -0.5f;
        c.bias = BiasMode(three(g_rng));
        c.act = acts[four(g_rng)];
        c.preact = c.act != Activation::none && coin(g_rng);
        run_case(c, native);
      }
  // All 16 type combinations and 9 layout pairs on one tile-remainder shape.
  for (int t = 0; t < 16; ++t)
    for (Layout la : layouts)
      for (Layout lb : layouts) {
        Case c{29, 45, 67, types[t & 1], types[(t >> 1) & 1], types[(t >> 2) & 1], types[(t >> 3) & 1], la, lb,
               1.0f, 0.5f, BiasMode::per_col, Activation::gelu_tanh, true};
        run_case(c, native);
      }
  // Several K steps (fp32 C), several column blocks and row blocks, a long K into a bf16 C.
  run_case({300, 200, 1600, DType::bf16, DType::f32, DType::f32, DType::f32, Layout::rows, Layout::cols, 1.0f, 0.5f,
            BiasMode::per_row, Activation::relu, true},
           native);
  run_case({257, 1100, 96, DType::bf16, DType::bf16, DType::bf16, DType::bf16, Layout::rows, Layout::rows, 1.0f,
            0.0f, BiasMode::per_col, Activation::gelu, false},
           native);
  run_case({3, 37, 17000, DType::f32, DType::bf16, DType::bf16, DType::f32, Layout::cols, Layout::rows, 1.0f, 1.0f,
            BiasMode::per_col, Activation::none, true},
           native);
  // A C larger than the caches (its last stores stream, when 64-byte aligned), fp32 and bf16.
  run_case({2100, 2112, 40, DType::bf16, DType::f32, DType::bf16, DType::f32, Layout::rows, Layout::cols, 1.0f,
            0.0f, BiasMode::per_col, Activation::gelu_tanh, false},
           native);
  run_case({1100, 2112, 24, DType::bf16, DType::bf16, DType::f32, DType::bf16, Layout::rows, Layout::rows, 0.5f,
            1.0f, BiasMode::per_row, Activation::none, true},
           native);
  // K == 0: C = beta * C, then the epilogue.
  for (float beta : {0.0f, 2.0f})
    run_case({5, 19, 0, DType::bf16, DType::bf16, DType::bf16, DType::bf16, Layout::rows, Layout::rows, 1.0f, beta,
              BiasMode::per_col, Activation::relu, true},
             native);
}

// The same bits whatever the number of threads.
void test_threads(bool native) {
  for (DType ct : {DType::f32, DType::bf16}) {
    Case c{333, 190, 900, DType::bf16, DType::f32, ct, DType::f32, Layout::rows, Layout::cols, 1.0f, 0.0f,
           BiasMode::per_col, Activation::gelu_tanh, false};
    Operands base(c);
    std::vector<Mat> outs;
    for (int t = 1; t <= 4; ++t) {
      Operands o = base;
      o.g.A = o.A.data(), o.g.B = o.B.data(), o.g.C = o.C.data(), o.g.bias = o.bias.data();
      o.g.max_threads = t;
      run_path(native, o.g);
      outs.push_back(o.C);
    }
    bool same = true;
    for (auto& m : outs) same = same && m.same_bits(outs[0]);
    record(same, fmt("%s C %s: the same bits on 1-4 threads", path_name(), tname(ct)));
  }
}

}  // namespace

int main() {
  const auto& ci = fusedops::cpu_info();
  std::printf("CPU: %s; AVX512-BF16 %s\n", ci.model.c_str(), ci.avx512_bf16 ? "yes" : "no");
  record(float_to_bf16(1.0f) == 0x3f80 && float_to_bf16(1.00390625f) == 0x3f80 &&
             float_to_bf16(1.01171875f) == 0x3f82 && float_to_bf16(-0.0f) == 0x8000 &&
             std::isnan(bf16_to_float(float_to_bf16(NAN))) && float_to_bf16(INFINITY) == 0x7f80,
         "float_to_bf16 rounds to nearest even, keeps NaN, inf and the sign of zero");
  for (g_path = 0; g_path < 3; ++g_path) {
    const bool native = g_path > 0;
    if (native && !ci.avx512_bf16) {
      std::printf("SKIP %s: the CPU lacks AVX512-BF16\n", path_name());
      continue;
    }
    if (g_path == 2 && !avx512bf16::amx_available()) {
      std::printf("SKIP amx: the CPU lacks AMX or the OS does not lend it\n");
      continue;
    }
    test_cases(native);
    test_threads(native);
  }
  std::printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed ? 1 : 0;
}
