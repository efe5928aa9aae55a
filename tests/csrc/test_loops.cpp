// Standalone tests (no torch) of the loops the bindings call and of kernels called from
// several threads, which the Python tests reach only through torch:
//
// 1. The linear cross-entropy chunk loop (csrc/cpu/kernels/lce.h) against a long-double
//    reference: the loss sum, the row losses and dx / dW / db, for fp64, fp32 and bf16 hidden
//    states over an fp32 master weight, with chunks of 1, 3 and 7 rows and the default (one
//    chunk, or a remainder chunk), ignored rows, label smoothing and per-row gradient scales.
//    Budget: a length-K or length-V dot product in the arithmetic's roundoff u is within
//    c * L * u * sum|terms| of the truth (c = 4; bf16 products: the operand roundings 2 * 2^-8
//    relative, plus the fp32 sums).
// 2. The recurrent layer's time loop (csrc/cpu/kernels/rnn_layer.h) in double, every mode,
//    padded and packed (shrinking batch sizes) sequences, both directions: the forward against a
//    step-by-step reference of the gate formulas (contracts/rnn.h), within 1e-12; the backward
//    against central differences of our own forward (step 1e-6: within 1e-7 relative, plus
//    1e-8), for x, h0, c0 and every weight and bias.
// 3. Kernels called from several threads at once from a cold start (the dispatch tables, the
//    CPU facts and the scratch cache first touched concurrently): four std::threads run the
//    GEMM (fp32, fp64, mixed bf16) and the chunk loop and must give the same bits as the same
//    calls run one after another. Run under ThreadSanitizer by tests/csrc/run.sh with one
//    OpenMP thread (libgomp is not instrumented: its barriers would be reported as races).
//
// Prints "N passed, M failed" last; exits 1 on any failure.
#include <array>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "cpu/kernels/bf16.h"
#include "cpu/kernels/gemm/gemm.h"
#include "cpu/kernels/gemm/gemm_bf16.h"
#include "cpu/kernels/lce.h"
#include "cpu/kernels/rnn_layer.h"

using namespace fusedops::cpu;

namespace {

int g_passed = 0, g_failed = 0, g_printed = 0;
std::mt19937_64 g_rng(7);

void record(bool ok, const std::string& what) {
  if (ok) {
    ++g_passed;
  } else {
    ++g_failed;
    if (g_printed++ < 40) std::printf("FAIL %s\n", what.c_str());
  }
}

std::string fmt(const char* f, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, f);
  vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  return buf;
}

double randn() {
  static std::normal_distribution<double> d(0.0, 1.0);
  return d(g_rng);
}

uint16_t to_bf16(float f) {  // round to nearest even
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fff + ((u >> 16) & 1);
  return uint16_t(u >> 16);
}
float from_bf16(uint16_t h) {
  const uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// ---- 1. the chunk loop against a long-double reference -----------------------------------------

struct Problem {
  int64_t N, K, V;
  std::vector<double> x, w, b, row_scale;  // x [N, K], w [V, K] with row stride K + 3 (strided)
  std::vector<int64_t> target;
  double ls, scale;
  int64_t ignore = -100;
};

struct Truth {
  std::vector<long double> loss, gx, gw, gb;
  long double sum = 0;
  // per entry: the sum of |terms| the entry's dot products add (the error budget's scale)
  std::vector<long double> gx_abs, gw_abs, gb_abs;
};

Truth reference(const Problem& p, const std::vector<double>& x, const std::vector<double>& w) {
  const int64_t N = p.N, K = p.K, V = p.V, ldw = K + 3;
  Truth t;
  t.loss.assign(N, 0), t.gx.assign(N * K, 0), t.gw.assign(V * K, 0), t.gb.assign(V, 0);
  t.gx_abs.assign(N * K, 0), t.gw_abs.assign(V * K, 0), t.gb_abs.assign(V, 0);
  std::vector<long double> z(V), d(V);
  for (int64_t i = 0; i < N; ++i) {
    long double mx = -INFINITY;
    for (int64_t v = 0; v < V; ++v) {
      long double s = p.b.empty() ? 0 : p.b[v];
      for (int64_t k = 0; k < K; ++k) s += (long double)x[i * K + k] * w[v * ldw + k];
      z[v] = s, mx = std::max(mx, s);
    }
    if (p.target[i] == p.ignore) continue;
    long double se = 0;
    for (int64_t v = 0; v < V; ++v) se += std::exp(z[v] - mx);
    const long double lse = mx + std::log(se);
    long double loss = 0;
    const long double eps = p.ls;
    for (int64_t v = 0; v < V; ++v) {
      const long double q = (v == p.target[i] ? 1 - eps : 0) + eps / V;
      loss -= q * (z[v] - lse);
      d[v] = (std::exp(z[v] - lse) - q) * p.scale * (p.row_scale.empty() ? 1 : p.row_scale[i]);
    }
    t.loss[i] = loss, t.sum += loss;
    for (int64_t v = 0; v < V; ++v) {
      t.gb[v] += d[v], t.gb_abs[v] += std::fabs(d[v]);
      for (int64_t k = 0; k < K; ++k) {
        t.gx[i * K + k] += d[v] * w[v * ldw + k], t.gx_abs[i * K + k] += std::fabs(d[v] * w[v * ldw + k]);
        t.gw[v * K + k] += d[v] * x[i * K + k], t.gw_abs[v * K + k] += std::fabs(d[v] * x[i * K + k]);
      }
    }
  }
  return t;
}

template <typename T>
bool close(const T* ours, const std::vector<long double>& truth, const std::vector<long double>& abs,
           double u, double L, double floor_abs, std::string* where) {
  for (size_t i = 0; i < truth.size(); ++i) {
    const double bound = 4 * L * u * double(abs.empty() ? std::fabs(truth[i]) : abs[i]) + floor_abs;
    if (!(std::fabs(double(ours[i]) - double(truth[i])) <= bound)) {
      *where = fmt("[%zu] ours %.9g truth %.9g bound %.3g", i, double(ours[i]), double(truth[i]), bound);
      return false;
    }
  }
  return true;
}

enum class Kind { f64, f32, bf16 };
const char* kind_str(Kind k) { return k == Kind::f64 ? "f64" : k == Kind::f32 ? "f32" : "bf16"; }

void test_lce(Kind kind, int64_t N, int64_t K, int64_t V, int64_t chunk, bool bias, bool per_row, double ls) {
  Problem p{N, K, V};
  const int64_t ldw = K + 3;
  p.x.resize(N * K), p.w.assign(V * ldw, 1e300), p.target.resize(N);
  for (auto& v : p.x) v = randn();
  for (int64_t v = 0; v < V; ++v)
    for (int64_t k = 0; k < K; ++k) p.w[v * ldw + k] = randn() / std::sqrt(double(K));
  if (bias) {
    p.b.resize(V);
    for (auto& v : p.b) v = randn();
  }
  for (int64_t i = 0; i < N; ++i) p.target[i] = (i % 5 == 3) ? p.ignore : int64_t(g_rng() % V);
  p.ls = ls, p.scale = per_row ? 1.0 : 1.0 / std::max<int64_t>(N, 1);
  if (per_row) {
    p.row_scale.resize(N);
    for (auto& v : p.row_scale) v = randn();
  }
  // the operands as the kernel sees them (bf16 hidden states rounded; the weight stays fp32)
  std::vector<double> xs = p.x, ws = p.w;
  std::vector<uint16_t> x16(N * K);
  if (kind == Kind::bf16)
    for (int64_t i = 0; i < N * K; ++i) x16[i] = to_bf16(float(p.x[i])), xs[i] = from_bf16(x16[i]);
  // the native bf16 kernels round an fp32 operand to bf16 for the products with bf16 x; the
  // widening path keeps it (bf16_path() says which runs)
  const bool native = std::strncmp(bf16_path(), "native", 6) == 0;
  if (kind != Kind::f64)
    for (auto& v : ws) v = (kind == Kind::bf16 && native && std::fabs(v) < 1e30) ? from_bf16(to_bf16(float(v))) : float(v);
  std::vector<double> bs = p.b;
  if (kind != Kind::f64)
    for (auto& v : bs) v = float(v);
  Problem q = p;
  q.b = bs;
  if (kind != Kind::f64)
    for (auto& v : q.row_scale) v = float(v);
  const Truth t = reference(q, xs, ws);
  const std::string what = fmt("lce %s N=%lld K=%lld V=%lld chunk=%lld%s%s ls=%.1f", kind_str(kind), (long long)N,
                               (long long)K, (long long)V, (long long)chunk, bias ? " bias" : "",
                               per_row ? " per-row" : "", ls);
  std::string where;
  if (kind == Kind::f64) {
    LceArgs<double> a;
    a.N = N, a.K = K, a.V = V, a.chunk_rows = chunk;
    a.x = p.x.data(), a.rsx = K, a.csx = 1;
    a.w = p.w.data(), a.rsw = ldw, a.csw = 1;
    if (bias) a.bias = p.b.data();
    a.target = p.target.data(), a.label_smoothing = ls, a.scale = p.scale;
    if (per_row) a.row_scale = p.row_scale.data();
    std::vector<double> loss(N), gx(N * K), gw(V * K, NAN), gb(V, NAN);
    double sum = NAN;
    a.loss_rows = loss.data(), a.loss_sum = &sum, a.gx = gx.data(), a.gw = gw.data(), a.gb = bias ? gb.data() : nullptr;
    linear_cross_entropy(a);
    const double u = std::ldexp(1.0, -53), L = double(K + V);
    bool ok = close(loss.data(), t.loss, {}, u, L, 1e-13, &where);
    record(ok, what + " loss " + where);
    record(std::fabs(sum - double(t.sum)) <= 4 * L * u * double(N) * 30 + 1e-12, what + " sum");
    ok = close(gx.data(), t.gx, t.gx_abs, u, L, 1e-15, &where);
    record(ok, what + " gx " + where);
    ok = close(gw.data(), t.gw, t.gw_abs, u, L + N, 1e-15, &where);
    record(ok, what + " gw " + where);
    if (bias) {
      ok = close(gb.data(), t.gb, t.gb_abs, u, L + N, 1e-15, &where);
      record(ok, what + " gb " + where);
    }
    return;
  }
  std::vector<float> x32(p.x.begin(), p.x.end()), w32(p.w.size()), b32(bs.begin(), bs.end());
  for (size_t i = 0; i < p.w.size(); ++i) w32[i] = std::fabs(p.w[i]) > 1e30 ? NAN : float(p.w[i]);
  std::vector<float> rs(q.row_scale.begin(), q.row_scale.end());
  LceArgs<float> a;
  a.N = N, a.K = K, a.V = V, a.chunk_rows = chunk;
  if (kind == Kind::bf16)
    a.x = x16.data(), a.x_type = DType::bf16;
  else
    a.x = x32.data();
  a.rsx = K, a.csx = 1;
  a.w = w32.data(), a.rsw = ldw, a.csw = 1;
  if (bias) a.bias = b32.data();
  a.target = p.target.data(), a.label_smoothing = ls, a.scale = p.scale;
  if (per_row) a.row_scale = rs.data();
  std::vector<float> loss(N), gx32(N * K), gw(V * K, NAN), gb(V, NAN);
  std::vector<uint16_t> gx16(N * K);
  double sum = NAN;
  a.loss_rows = loss.data(), a.loss_sum = &sum, a.gw = gw.data(), a.gb = bias ? gb.data() : nullptr;
  a.gx = kind == Kind::bf16 ? static_cast<void*>(gx16.data()) : static_cast<void*>(gx32.data());
  linear_cross_entropy(a);
  // fp32: the sums' roundoff; bf16 products (the native path rounds dlogits and the fp32 weight
  // to bf16 for dx and dW): 2^-8 per operand rounding, and gx itself rounded to bf16 once
  const bool b16 = kind == Kind::bf16;
  const double u = std::ldexp(1.0, -24), L = double(K + V), ub = b16 ? std::ldexp(1.0, -8) : 0;
  std::vector<float> gx(N * K);
  for (int64_t i = 0; i < N * K; ++i) gx[i] = b16 ? from_bf16(gx16[i]) : gx32[i];
  // the loss depends on the logits, which see bf16 only through x (exact in the reference)
  bool ok = close(loss.data(), t.loss, {}, u, L, 1e-5, &where);
  record(ok, what + " loss " + where);
  // gx: the products' roundoff (dlogits rounded to bf16 on the native path), then gx itself
  // rounded to bf16 once (half a bf16 ulp of |gx|, within ub |truth| + the sums' error)
  ok = close(gx.data(), t.gx, t.gx_abs, u + 2 * ub, L, 1e-7, &where);
  record(ok, what + " gx " + where);
  ok = close(gw.data(), t.gw, t.gw_abs, u + ub, L + N, 1e-7, &where);
  record(ok, what + " gw " + where);
  if (bias) {
    ok = close(gb.data(), t.gb, t.gb_abs, u, L + N, 1e-7, &where);
    record(ok, what + " gb " + where);
  }
}


// ---- 2. the recurrent layer --------------------------------------------------------------------

using fusedops::RnnDims;
using fusedops::RnnMode;

struct RnnCase {
  RnnDims d;
  bool reverse;
  std::vector<double> x, h0, c0, w_ih, w_hh, b_ih, b_hh;
};

double sigm(double v) { return 1.0 / (1.0 + std::exp(-v)); }

// The gate formulas step by step: out [N, H], hy [B, H], cy [B, H].
void rnn_reference(const RnnCase& c, std::vector<double>& out, std::vector<double>& hy, std::vector<double>& cy) {
  const RnnDims& d = c.d;
  const int64_t H = d.H, I = d.I, G = d.G;
  out.assign(d.N * H, 0), hy = c.h0, cy = c.c0;
  std::vector<double> gi(G * H), gh(G * H);
  for (int64_t k = 0; k < d.T; ++k) {
    const int64_t t = d.step(k, c.reverse);
    for (int64_t b = 0; b < d.bs[t]; ++b) {
      const int64_t row = d.off[t] + b;
      for (int64_t j = 0; j < G * H; ++j) {
        double si = c.b_ih[j], sh = c.b_hh[j];
        for (int64_t i = 0; i < I; ++i) si += c.w_ih[j * I + i] * c.x[row * I + i];
        for (int64_t i = 0; i < H; ++i) sh += c.w_hh[j * H + i] * hy[b * H + i];
        gi[j] = si, gh[j] = sh;
      }
      for (int64_t u = 0; u < H; ++u) {
        double h;
        if (d.mode == RnnMode::rnn_tanh || d.mode == RnnMode::rnn_relu) {
          const double z = gi[u] + gh[u];
          h = d.mode == RnnMode::rnn_tanh ? std::tanh(z) : std::max(z, 0.0);
        } else if (d.mode == RnnMode::lstm) {
          const double ig = sigm(gi[u] + gh[u]), fg = sigm(gi[H + u] + gh[H + u]);
          const double gg = std::tanh(gi[2 * H + u] + gh[2 * H + u]), og = sigm(gi[3 * H + u] + gh[3 * H + u]);
          cy[b * H + u] = fg * cy[b * H + u] + ig * gg;
          h = og * std::tanh(cy[b * H + u]);
        } else {
          const double r = sigm(gi[u] + gh[u]), z = sigm(gi[H + u] + gh[H + u]);
          const double n = std::tanh(gi[2 * H + u] + r * gh[2 * H + u]);
          h = (1 - z) * n + z * hy[b * H + u];
        }
        out[row * H + u] = h;
      }
      for (int64_t u = 0; u < H; ++u) hy[b * H + u] = out[row * H + u];
    }
  }
}

// Ours: out, hy, cy (and the workspace, for the backward).
void rnn_ours(const RnnCase& c, std::vector<double>& out, std::vector<double>& hy, std::vector<double>& cy,
              std::vector<double>& ws) {
  const RnnDims& d = c.d;
  const bool gru = d.mode == RnnMode::gru, lstm = d.mode == RnnMode::lstm;
  std::vector<double> bias(c.b_ih);
  if (!gru)
    for (size_t j = 0; j < bias.size(); ++j) bias[j] += c.b_hh[j];
  out.assign(d.N * d.P, NAN), hy = c.h0, cy = c.c0, ws.assign(d.N * d.W, NAN);
  rnn_layer_forward<double>(d, c.reverse,
                            {c.x.data(), c.w_ih.data(), c.w_hh.data(), bias.data(), gru ? c.b_hh.data() : nullptr,
                             nullptr, out.data(), hy.data(), lstm ? cy.data() : nullptr, ws.data()});
}

// The scalar the gradients are taken of: sum(out R) + sum(hy R2) + sum(cy R3).
double rnn_loss(const RnnCase& c, const std::vector<double>& R, const std::vector<double>& R2,
                const std::vector<double>& R3) {
  std::vector<double> out, hy, cy, ws;
  rnn_ours(c, out, hy, cy, ws);
  double s = 0;
  for (size_t i = 0; i < out.size(); ++i) s += out[i] * R[i];
  for (size_t i = 0; i < hy.size(); ++i) s += hy[i] * R2[i];
  if (c.d.mode == RnnMode::lstm)
    for (size_t i = 0; i < cy.size(); ++i) s += cy[i] * R3[i];
  return s;
}

void test_rnn(RnnMode mode, bool packed, bool reverse) {
  RnnCase c;
  RnnDims& d = c.d;
  d.mode = mode, d.G = fusedops::rnn_gate_count(mode), d.I = 3, d.H = d.P = 2;
  d.W = fusedops::rnn_workspace_width(mode) * d.H, d.packed = packed, d.T = 4;
  d.bs = packed ? std::vector<int64_t>{3, 3, 2, 1} : std::vector<int64_t>{3, 3, 3, 3};
  d.B = 3;
  for (int64_t t = 0, o = 0; t < d.T; ++t) d.off.push_back(o), o += d.bs[t], d.N = o;
  c.reverse = reverse;
  const int64_t GH = d.G * d.H;
  auto fill = [](std::vector<double>& v, size_t n, double s) {
    v.resize(n);
    for (auto& e : v) e = s * randn();
  };
  fill(c.x, d.N * d.I, 1.0), fill(c.h0, d.B * d.H, 0.5), fill(c.w_ih, GH * d.I, 0.6), fill(c.w_hh, GH * d.H, 0.6);
  fill(c.b_ih, GH, 0.3), fill(c.b_hh, GH, 0.3);
  if (mode == RnnMode::lstm) fill(c.c0, d.B * d.H, 0.5);
  const std::string what = fmt("rnn_layer mode=%d %s%s", int(mode), packed ? "packed" : "padded", reverse ? " reverse" : "");
  std::vector<double> out, hy, cy, ws, rout, rhy, rcy;
  rnn_ours(c, out, hy, cy, ws);
  rnn_reference(c, rout, rhy, rcy);
  double err = 0;
  for (size_t i = 0; i < out.size(); ++i) err = std::max(err, std::fabs(out[i] - rout[i]));
  for (size_t i = 0; i < hy.size(); ++i) err = std::max(err, std::fabs(hy[i] - rhy[i]));
  if (mode == RnnMode::lstm)
    for (size_t i = 0; i < cy.size(); ++i) err = std::max(err, std::fabs(cy[i] - rcy[i]));
  record(err <= 1e-12, what + fmt(" forward: max error %.3g", err));

  std::vector<double> R, R2, R3;
  fill(R, d.N * d.P, 1.0), fill(R2, d.B * d.P, 1.0), fill(R3, d.B * d.H, 1.0);
  const bool lstm = mode == RnnMode::lstm;
  std::vector<double> dx(d.N * d.I), dh0 = R2, dc0 = lstm ? R3 : std::vector<double>(), dwi(GH * d.I), dwh(GH * d.H),
      dbi(GH), dbh(GH);
  rnn_layer_backward<double>(d, reverse,
                             {c.x.data(), c.h0.data(), lstm ? c.c0.data() : nullptr, c.w_ih.data(), c.w_hh.data(),
                              nullptr, out.data(), ws.data(), R.data()},
                             {dx.data(), dh0.data(), lstm ? dc0.data() : nullptr, dwi.data(), dwh.data(), dbi.data(),
                              dbh.data(), nullptr});
  struct Param {
    const char* name;
    std::vector<double>* value;
    const std::vector<double>* grad;
  };
  std::vector<Param> params{{"x", &c.x, &dx}, {"h0", &c.h0, &dh0}, {"w_ih", &c.w_ih, &dwi},
                            {"w_hh", &c.w_hh, &dwh}, {"b_ih", &c.b_ih, &dbi}, {"b_hh", &c.b_hh, &dbh}};
  if (lstm) params.push_back({"c0", &c.c0, &dc0});
  for (const Param& p : params) {
    double worst = 0;
    for (size_t i = 0; i < p.value->size(); ++i) {
      const double keep = (*p.value)[i], h = 1e-6;
      (*p.value)[i] = keep + h;
      const double up = rnn_loss(c, R, R2, R3);
      (*p.value)[i] = keep - h;
      const double down = rnn_loss(c, R, R2, R3);
      (*p.value)[i] = keep;
      const double fd = (up - down) / (2 * h), g = (*p.grad)[i];
      worst = std::max(worst, std::fabs(g - fd) / (1e-7 * std::fabs(fd) + 1e-8));
    }
    record(worst <= 1.0, what + fmt(" d%s against central differences (worst %.3g of the budget)", p.name, worst));
  }
}

// ---- 3. several threads from a cold start -------------------------------------------------------

struct Work {
  std::vector<float> a, b, c;
  std::vector<double> ad, bd, cd;
  std::vector<uint16_t> a16;
  std::vector<float> cm;
  std::vector<float> x, w, gw, loss;
  std::vector<int64_t> t;
  double sum = 0;
};

void make_work(Work& w, int seed) {
  std::mt19937_64 r(seed);
  std::normal_distribution<float> d;
  const int64_t M = 37 + seed, N = 45, K = 70;
  w.a.resize(M * K), w.b.resize(K * N), w.c.assign(M * N, 0);
  for (auto& v : w.a) v = d(r);
  for (auto& v : w.b) v = d(r);
  w.ad.assign(w.a.begin(), w.a.end()), w.bd.assign(w.b.begin(), w.b.end()), w.cd.assign(M * N, 0);
  w.a16.resize(M * K);
  for (int64_t i = 0; i < M * K; ++i) w.a16[i] = to_bf16(w.a[i]);
  w.cm.assign(M * N, 0);
  w.x.resize(M * K), w.w.resize(N * K), w.gw.assign(N * K, 0), w.loss.assign(M, 0), w.t.resize(M);
  for (auto& v : w.x) v = d(r);
  for (auto& v : w.w) v = d(r);
  for (auto& v : w.t) v = int64_t(r() % N);
}

void run_work(Work& w) {
  const int64_t K = 70, N = 45, M = int64_t(w.a.size()) / K;
  GemmArgs<float> g;
  g.M = M, g.N = N, g.K = K, g.A = w.a.data(), g.rsa = K, g.csa = 1, g.B = w.b.data(), g.rsb = N, g.csb = 1;
  g.C = w.c.data(), g.ldc = N;
  gemm<float>(g);
  GemmArgs<double> gd;
  gd.M = M, gd.N = N, gd.K = K, gd.A = w.ad.data(), gd.rsa = K, gd.csa = 1, gd.B = w.bd.data(), gd.rsb = N, gd.csb = 1;
  gd.C = w.cd.data(), gd.ldc = N;
  gemm<double>(gd);
  GemmMixedArgs gm;
  gm.M = M, gm.N = N, gm.K = K, gm.A = w.a16.data(), gm.a_type = DType::bf16, gm.rsa = K, gm.csa = 1;
  gm.B = w.b.data(), gm.b_type = DType::f32, gm.rsb = N, gm.csb = 1;
  gm.C = w.cm.data(), gm.c_type = DType::f32, gm.ldc = N;
  gemm_mixed(gm);
  LceArgs<float> l;
  l.N = M, l.K = K, l.V = N, l.chunk_rows = 16;
  l.x = w.x.data(), l.rsx = K, l.csx = 1, l.w = w.w.data(), l.rsw = K, l.csw = 1;
  l.target = w.t.data(), l.loss_rows = w.loss.data(), l.loss_sum = &w.sum, l.gw = w.gw.data();
  linear_cross_entropy(l);
}

bool same(const Work& a, const Work& b) {
  return a.c == b.c && a.cd == b.cd && a.cm == b.cm && a.gw == b.gw && a.loss == b.loss &&
         std::memcmp(&a.sum, &b.sum, sizeof(double)) == 0;
}

void test_threads() {
  constexpr int kThreads = 4;
  std::vector<Work> conc(kThreads), seq(kThreads);
  for (int i = 0; i < kThreads; ++i) make_work(conc[i], i), make_work(seq[i], i);
  {
    std::vector<std::thread> ts;
    for (int i = 0; i < kThreads; ++i) ts.emplace_back([&, i] { run_work(conc[i]); });
    for (auto& t : ts) t.join();
  }
  for (int i = 0; i < kThreads; ++i) run_work(seq[i]);
  for (int i = 0; i < kThreads; ++i) record(same(conc[i], seq[i]), fmt("thread %d: same bits as a sequential run", i));
}

}  // namespace

const std::array<std::array<int64_t, 3>, 4> kShapes{{{1, 1, 1}, {9, 5, 3}, {23, 33, 70}, {40, 17, 130}}};

int main() {
  test_threads();  // first: the kernels' first calls happen concurrently
  for (Kind k : {Kind::f64, Kind::f32, Kind::bf16})
    for (int64_t chunk : {int64_t(0), int64_t(1), int64_t(3), int64_t(7)})
      for (const auto& [N, K, V] : kShapes) {
        test_lce(k, N, K, V, chunk, true, false, 0.0);
        test_lce(k, N, K, V, chunk, false, true, 0.1);
      }
  test_lce(Kind::f32, 0, 5, 3, 0, true, false, 0.0);  // no rows: zero gradients
  for (RnnMode m : {RnnMode::rnn_tanh, RnnMode::rnn_relu, RnnMode::lstm, RnnMode::gru})
    for (bool packed : {false, true})
      for (bool reverse : {false, true}) test_rnn(m, packed, reverse);
  std::printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed ? 1 : 0;
}
