/* Simulator tests of the host loops over CUDA kernels (csrc/cuda/kernels/lce.cuh and
   rnn_layer.cuh), against references in double written here:
     lce   linear cross-entropy in chunks of rows (three uneven chunks and one whole chunk):
           row losses, the mean's divisor, dx, dW, db, with label smoothing and ignored rows;
           no rows at all (dW and db written as zeros over poisoned memory).
     rnn   tanh RNN, LSTM (with and without a projection) and GRU layers, packed (falling batch
           sizes) and reversed: the forward against the formulas of contracts/rnn.h, the
           backward against central differences of the reference forward.
   Built by tests/sim/run.sh as C++ with the simulator force-included (fibers -O2, and
   ASan+UBSan). Usage: loop_tests */
#include "kernel_check.h"
#include "../../csrc/cuda/kernels/lce.cuh"
#include "../../csrc/cuda/kernels/rnn_layer.cuh"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

using namespace fusedops::cuda;
using fusedops::RnnDims;
using fusedops::RnnLayerBackwardIn;
using fusedops::RnnLayerBackwardOut;
using fusedops::RnnLayerForward;
using fusedops::RnnMode;

using kernel_check::Failure;
using kernel_check::Test;

namespace {

// An element count as size_t (a function, so that declarations like v(U(n)) parse as variables).
size_t U(int64_t n) { return static_cast<size_t>(n); }

template <typename T>
std::vector<T> random_values(size_t n, unsigned seed, double scale = 1.0) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(-scale, scale);
  std::vector<T> v(n);
  for (auto& x : v) x = T(u(rng));
  return v;
}

template <typename T>
void poison(std::vector<T>& v) {
  if (!v.empty()) std::memset(static_cast<void*>(v.data()), 0xff, v.size() * sizeof(T));
}

// max |a - b| / max(1, max |b|): a relative error over the whole tensor.
template <typename T>
double rel_err(const std::vector<T>& a, const std::vector<double>& b) {
  double d = 0, m = 1;
  for (size_t i = 0; i < b.size(); ++i) {
    const double x = double(a[i]);
    if (!std::isfinite(x)) return INFINITY;
    d = std::fmax(d, std::fabs(x - b[i]));
    m = std::fmax(m, std::fabs(b[i]));
  }
  return d / m;
}

template <typename T>
double tolerance() { return std::is_same_v<T, double> ? 1e-10 : 2e-5; }

// ---- linear cross-entropy --------------------------------------------------------------------

template <typename T>
void lce_case(int64_t N, int64_t K, int64_t V, int64_t chunk_rows) {
  using Acc = gemm_acc_t<T>;
  const double ls = 0.1;
  const int64_t ignore = -100;
  const auto x = random_values<T>(U(N * K), 1), w = random_values<T>(U(V * K), 2);
  const auto b = random_values<T>(U(V), 3);
  std::vector<int64_t> target(U(N));
  for (int64_t i = 0; i < N; ++i) target[U(i)] = i % 5 == 3 ? ignore : (i * 7 + 2) % V;
  // reference in double
  std::vector<double> loss(U(N)), gx(U(N * K)), gw(U(V * K)), gb(U(V));
  double kept = 0;
  for (int64_t i = 0; i < N; ++i) kept += target[U(i)] != ignore;
  for (int64_t i = 0; i < N; ++i) {
    if (target[U(i)] == ignore) continue;
    std::vector<double> z(U(V));
    double mx = -INFINITY;
    for (int64_t v = 0; v < V; ++v) {
      double s = double(b[U(v)]);
      for (int64_t k = 0; k < K; ++k) s += double(x[U(i * K + k)]) * double(w[U(v * K + k)]);
      z[U(v)] = s, mx = std::fmax(mx, s);
    }
    double se = 0;
    for (double s : z) se += std::exp(s - mx);
    const double lse = mx + std::log(se);
    double mean_nll = 0;
    for (double s : z) mean_nll += (lse - s) / double(V);
    loss[U(i)] = (1 - ls) * (lse - z[U(target[U(i)])]) + ls * mean_nll;
    for (int64_t v = 0; v < V; ++v) {
      const double g = (std::exp(z[U(v)] - lse) - ls / double(V) - (v == target[U(i)] ? 1 - ls : 0)) / kept;
      gb[U(v)] += g;
      for (int64_t k = 0; k < K; ++k) {
        gx[U(i * K + k)] += g * double(w[U(v * K + k)]);
        gw[U(v * K + k)] += g * double(x[U(i * K + k)]);
      }
    }
  }
  std::vector<Acc> acc(U(N)), denom(1);
  std::vector<T> ox(U(N * K)), ow(U(V * K)), ob(U(V)), buf(U(chunk_rows * V));
  poison(acc), poison(ox), poison(ow), poison(ob);
  int bad = 0;
  targets_launch<T>(N, V, target.data(), nullptr, ignore, denom.data(), &bad, nullptr);
  LceChunkArgs<T> a;
  a.N = N, a.K = K, a.V = V, a.x = x.data(), a.w = w.data(), a.rsw = K, a.csw = 1, a.bias = b.data();
  a.target = target.data(), a.ignore_index = ignore, a.label_smoothing = ls;
  a.loss_acc = acc.data(), a.denom = denom.data();
  a.gx = ox.data(), a.gw = ow.data(), a.gb = ob.data(), a.bad = &bad;
  a.buf = buf.data(), a.chunk_rows = chunk_rows;
  lce_chunks_launch<T>(a, nullptr);
  const std::string at = "N " + std::to_string(N) + ", chunk " + std::to_string(chunk_rows);
  CHECK(bad == 0, "no target flagged: " + at);
  if (N > 0) CHECK(double(denom[0]) == kept, "the mean's divisor: " + at);
  const double tol = tolerance<T>();
  CHECK(rel_err(acc, loss) <= tol, "row losses: " + at);
  CHECK(rel_err(ox, gx) <= tol, "dx: " + at);
  CHECK(rel_err(ow, gw) <= tol, "dW: " + at);
  CHECK(rel_err(ob, gb) <= tol, "db: " + at);
}

template <typename T>
void lce() {
  lce_case<T>(37, 19, 45, 16);  // chunks of 16, 16 and 5 rows
  lce_case<T>(37, 19, 45, 37);  // one chunk
  lce_case<T>(1, 3, 1, 1);
  lce_case<T>(0, 5, 7, 1);  // no rows: dW and db must still be written
}

// ---- recurrent layers --------------------------------------------------------------------------

struct RnnCase {
  RnnMode mode;
  int64_t I, H, P;  // P < H: an LSTM projection
  std::vector<int64_t> bs;
  bool reverse;
};

RnnDims dims_of(const RnnCase& c) {
  RnnDims d;
  d.mode = c.mode, d.G = fusedops::rnn_gate_count(c.mode), d.W = fusedops::rnn_workspace_width(c.mode) * c.H;
  d.T = int64_t(c.bs.size()), d.B = c.bs[0], d.I = c.I, d.H = c.H, d.P = c.P, d.packed = true;
  int64_t o = 0;
  for (int64_t n : c.bs) d.bs.push_back(n), d.off.push_back(o), o += n;
  d.N = o;
  return d;
}

struct RnnParams {  // everything the loss depends on, in double
  std::vector<double> x, h0, c0, wi, wh, bi, bh, wr;
};

double sig(double v) { return 1 / (1 + std::exp(-v)); }

// The reference forward: out [N, P], hy [B, P], cy [B, H].
void reference_forward(const RnnDims& d, bool reverse, const RnnParams& p, std::vector<double>& out,
                       std::vector<double>& hy, std::vector<double>& cy) {
  const int64_t H = d.H, P = d.P, G = d.G, I = d.I;
  const bool proj = P != H;
  out.assign(U(d.N * P), 0), hy = p.h0, cy = p.c0;
  for (int64_t kk = 0; kk < d.T; ++kk) {
    const int64_t t = d.step(kk, reverse);
    for (int64_t b = 0; b < d.bs[t]; ++b) {
      const int64_t r = d.off[t] + b;
      std::vector<double> gi(U(G * H)), gh(U(G * H));
      for (int64_t g = 0; g < G * H; ++g) {
        double si = p.bi[U(g)], sh = p.bh[U(g)];
        for (int64_t k = 0; k < I; ++k) si += p.x[U(r * I + k)] * p.wi[U(g * I + k)];
        for (int64_t k = 0; k < P; ++k) sh += hy[U(b * P + k)] * p.wh[U(g * P + k)];
        gi[U(g)] = si, gh[U(g)] = sh;
      }
      std::vector<double> h(U(H));
      for (int64_t j = 0; j < H; ++j) {
        auto pre = [&](int64_t k) { return gi[U(k * H + j)] + gh[U(k * H + j)]; };
        if (d.mode == RnnMode::rnn_tanh) {
          h[U(j)] = std::tanh(pre(0));
        } else if (d.mode == RnnMode::lstm) {
          double& c = cy[U(b * H + j)];
          c = sig(pre(1)) * c + sig(pre(0)) * std::tanh(pre(2));
          h[U(j)] = sig(pre(3)) * std::tanh(c);
        } else {  // gru
          const double rr = sig(pre(0)), z = sig(pre(1));
          const double n = std::tanh(gi[U(2 * H + j)] + rr * gh[U(2 * H + j)]);
          h[U(j)] = (1 - z) * n + z * hy[U(b * P + j)];
        }
      }
      for (int64_t q = 0; q < P; ++q) {
        double v = h[U(q)];
        if (proj) {
          v = 0;
          for (int64_t j = 0; j < H; ++j) v += h[U(j)] * p.wr[U(q * H + j)];
        }
        out[U(r * P + q)] = v, hy[U(b * P + q)] = v;
      }
    }
  }
}

template <typename T>
std::vector<T> cast(const std::vector<double>& v) {
  return std::vector<T>(v.begin(), v.end());
}

template <typename T>
void rnn_case(const RnnCase& c) {
  const RnnDims d = dims_of(c);
  const int64_t H = d.H, P = d.P, GH = d.G * d.H, N = d.N, B = d.B, W = d.W;
  const bool lstm = d.mode == RnnMode::lstm, gru = d.mode == RnnMode::gru, proj = P != H;
  const std::string at = std::string("mode ") + std::to_string(int(d.mode)) + (proj ? " proj" : "") +
                         (c.reverse ? " reverse" : "");
  RnnParams p;
  p.x = random_values<double>(U(N * d.I), 1), p.h0 = random_values<double>(U(B * P), 2, 0.5);
  p.c0 = lstm ? random_values<double>(U(B * H), 3, 0.5) : std::vector<double>();
  p.wi = random_values<double>(U(GH * d.I), 4, 0.6), p.wh = random_values<double>(U(GH * P), 5, 0.6);
  p.bi = random_values<double>(U(GH), 6, 0.3), p.bh = random_values<double>(U(GH), 7, 0.3);
  p.wr = proj ? random_values<double>(U(P * H), 8, 0.6) : std::vector<double>();
  // the loss: sum(out * gout) + sum(hy * ghy) + sum(cy * gcy)
  const auto gout = random_values<double>(U(N * P), 9), ghy = random_values<double>(U(B * P), 10);
  const auto gcy = lstm ? random_values<double>(U(B * H), 11) : std::vector<double>();
  auto loss_of = [&](const RnnParams& q) {
    std::vector<double> o, hy, cy;
    reference_forward(d, c.reverse, q, o, hy, cy);
    double L = 0;
    for (size_t i = 0; i < o.size(); ++i) L += o[i] * gout[i];
    for (size_t i = 0; i < hy.size(); ++i) L += hy[i] * ghy[i];
    for (size_t i = 0; i < gcy.size(); ++i) L += cy[i] * gcy[i];
    return L;
  };
  // forward on the kernels
  const auto x = cast<T>(p.x), wi = cast<T>(p.wi), wh = cast<T>(p.wh), bi = cast<T>(p.bi), bh = cast<T>(p.bh);
  const auto wr = cast<T>(p.wr), h0 = cast<T>(p.h0), c0 = cast<T>(p.c0);
  std::vector<T> out(U(N * P)), hy = h0, cy = c0, ws(U(N * W)), hgates(U(B * GH)), m(U(B * H));
  poison(out), poison(ws);
  // the biases as the layer takes them: rnn / lstm both in Gi's, gru b_hh apart
  std::vector<T> gate_bias = bi;
  if (!gru)
    for (size_t i = 0; i < gate_bias.size(); ++i) gate_bias[i] = T(p.bi[i] + p.bh[i]);
  const RnnLayerForward<T> f{x.data(),  wi.data(), wh.data(), gate_bias.data(), gru ? bh.data() : nullptr,
                             proj ? wr.data() : nullptr, out.data(), hy.data(), lstm ? cy.data() : nullptr,
                             ws.data()};
  rnn_layer_forward_launch<T>(d, c.reverse, f, {hgates.data(), m.data(), false}, nullptr);
  std::vector<double> ro, rhy, rcy;
  reference_forward(d, c.reverse, p, ro, rhy, rcy);
  const double tol = tolerance<T>();
  CHECK(rel_err(out, ro) <= tol, "forward output: " + at);
  CHECK(rel_err(hy, rhy) <= tol, "forward hy: " + at);
  if (lstm) CHECK(rel_err(cy, rcy) <= tol, "forward cy: " + at);
  // backward on the kernels
  const auto go = cast<T>(gout);
  std::vector<T> dx(U(N * d.I)), dh0 = cast<T>(ghy), dc0 = cast<T>(gcy), dwi(wi.size()), dwh(wh.size());
  std::vector<T> dbi(bi.size()), dbh(bh.size()), dwr(wr.size());
  poison(dx), poison(dwi), poison(dwh), poison(dbi), poison(dbh), poison(dwr);
  std::vector<T> dgi(U(N * GH)), dgh(U(N * GH)), hprev(U(N * P)), cprev(U(N * H));
  std::vector<T> dH(U(N * P)), dm(U(B * H)), mm(U(N * H));
  std::vector<int64_t> prev(U(N));
  prev_rows(d, c.reverse, prev.data());
  std::vector<float> cs(rnn_colsum_workspace_bytes<T>(N, GH) / sizeof(float) + 1);
  RnnLayerBackwardIn<T> in{x.data(), h0.data(), lstm ? c0.data() : nullptr, wi.data(), wh.data(),
                           proj ? wr.data() : nullptr, out.data(), ws.data(), go.data()};
  RnnLayerBackwardOut<T> g{dx.data(), dh0.data(), lstm ? dc0.data() : nullptr, dwi.data(), dwh.data(),
                           dbi.data(), dbh.data(), proj ? dwr.data() : nullptr};
  RnnLayerBackwardScratch<T> sc{dgi.data(), dgh.data(), prev.data(), hprev.data(), cprev.data(),
                                dH.data(), dm.data(), mm.data(), cs.data(), false};
  rnn_layer_backward_launch<T>(d, c.reverse, in, g, sc, nullptr);
  // central differences of the reference loss
  const double eps = 1e-6;
  auto numeric = [&](std::vector<double> RnnParams::*field) {
    RnnParams q = p;
    std::vector<double> grad((p.*field).size());
    for (size_t i = 0; i < grad.size(); ++i) {
      const double v = (q.*field)[i];
      (q.*field)[i] = v + eps;
      const double up = loss_of(q);
      (q.*field)[i] = v - eps;
      grad[i] = (up - loss_of(q)) / (2 * eps);
      (q.*field)[i] = v;
    }
    return grad;
  };
  const double gtol = std::is_same_v<T, double> ? 1e-7 : 5e-5;
  CHECK(rel_err(dx, numeric(&RnnParams::x)) <= gtol, "dx: " + at);
  CHECK(rel_err(dh0, numeric(&RnnParams::h0)) <= gtol, "dh0: " + at);
  if (lstm) CHECK(rel_err(dc0, numeric(&RnnParams::c0)) <= gtol, "dc0: " + at);
  CHECK(rel_err(dwi, numeric(&RnnParams::wi)) <= gtol, "dw_ih: " + at);
  CHECK(rel_err(dwh, numeric(&RnnParams::wh)) <= gtol, "dw_hh: " + at);
  CHECK(rel_err(dbi, numeric(&RnnParams::bi)) <= gtol, "db_ih: " + at);
  CHECK(rel_err(dbh, numeric(&RnnParams::bh)) <= gtol, "db_hh: " + at);
  if (proj) CHECK(rel_err(dwr, numeric(&RnnParams::wr)) <= gtol, "dw_hr: " + at);
}

template <typename T>
void rnn() {
  const std::vector<int64_t> falling{3, 3, 2, 1};
  for (bool reverse : {false, true}) {
    rnn_case<T>({RnnMode::rnn_tanh, 3, 4, 4, falling, reverse});
    rnn_case<T>({RnnMode::lstm, 3, 4, 4, falling, reverse});
    rnn_case<T>({RnnMode::lstm, 3, 5, 3, falling, reverse});
    rnn_case<T>({RnnMode::gru, 3, 4, 4, falling, reverse});
  }
  rnn_case<T>({RnnMode::gru, 1, 1, 1, {1}, false});
}

const Test kTests[] = {
    {"lce_f32", lce<float>},
    {"lce_f64", lce<double>},
    {"rnn_f32", rnn<float>},
    {"rnn_f64", rnn<double>},
};

}  // namespace

int main() { return kernel_check::run_tests("loop", kTests); }
