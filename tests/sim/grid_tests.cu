/* Simulator tests of the kernels whose blocks number their work over grid.y and grid.z, past
   grid.y's limit of 65535: conv2d forward ((output-channel tile, group) pairs, csrc/cuda/kernels/
   conv.cuh) and attention ((batch, head) pairs, attention.cuh). The plans' limit is lowered to
   a few blocks so that every layout (idle blocks in the last grid.z row included) runs in
   milliseconds; each result must equal, bit for bit, that of the default plan, which the
   Python tests check against torch (they also run one real case past 65535 each).
   Built by tests/sim/run.sh as C++ with the simulator force-included.

   Usage: grid_tests */
#include "kernel_check.h"
#include "../../csrc/cuda/kernels/attention.cuh"
#include "../../csrc/cuda/kernels/conv.cuh"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

using namespace fusedops::cuda;

using kernel_check::Failure;
using kernel_check::Test;

namespace {

template <typename T>
std::vector<T> random_values(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<T> v(n);
  for (auto& x : v) x = gemm_detail::from_acc<T>(gemm_acc_t<T>(u(rng)));
  return v;
}

// Every output starts as NaN bytes, so one the kernels leave unwritten differs too.
template <typename T>
void poison(std::vector<T>& v) { std::memset(static_cast<void*>(v.data()), 0xff, v.size() * sizeof(T)); }

template <typename T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

const int64_t kLimits[] = {1, 2, 3};  // grid.y limits: z = pairs, and rows with idle blocks

// Depthwise (7 pairs) and grouped with two 64-row output-channel tiles per group (4 pairs).
template <typename T>
void conv_forward() {
  struct Case {
    int64_t N, C, H, W, K, R, S, groups;
  };
  for (const Case c : {Case{2, 7, 5, 4, 7, 3, 2, 7}, Case{1, 4, 6, 5, 130, 2, 2, 2}}) {
    fusedops::Conv2dShape s;
    s.N = c.N, s.C = c.C, s.H = c.H, s.W = c.W, s.K = c.K, s.R = c.R, s.S = c.S, s.groups = c.groups;
    s.ph = 1, s.OH = c.H + 2 - c.R + 1, s.OW = c.W - c.S + 1;
    const auto x = random_values<T>(size_t(c.N * c.C * c.H * c.W), 1);
    const auto w = random_values<T>(size_t(c.K * c.C / c.groups * c.R * c.S), 2);
    const auto b = random_values<T>(size_t(c.K), 3);
    std::vector<T> want(size_t(c.N * c.K * s.OH * s.OW)), got(want.size());
    poison(want);
    conv2d_forward_launch<T>(s, x.data(), w.data(), b.data(), want.data(), nullptr);
    CHECK(conv2d_forward_plan(s).grid.z == 1, "the default plan keeps every pair along grid.y");
    for (int64_t limit : kLimits) {
      CHECK(conv2d_forward_plan(s, limit).grid.y <= limit, "grid.y within the limit");
      poison(got);
      conv2d_forward_launch<T>(s, x.data(), w.data(), b.data(), got.data(), nullptr, limit);
      CHECK(same_bits(got, want), "groups " + std::to_string(c.groups) + ", grid.y limit " + std::to_string(limit));
    }
  }
}

// 7 (batch, head) pairs, causal, L != S; E = Ev = 16 so that fp16 runs the tensor-core kernels.
template <typename T>
void attention_forward_backward() {
  using Acc = gemm_acc_t<T>;
  const int64_t B = 7, L = 5, S = 6, E = 16;
  const auto q = random_values<T>(size_t(B * L * E), 4), k = random_values<T>(size_t(B * S * E), 5),
             v = random_values<T>(size_t(B * S * E), 6), dout = random_values<T>(size_t(B * L * E), 7);
  std::vector<int64_t> off(size_t(4 * B), 0);
  for (int64_t i = 0; i < B; ++i) off[size_t(i)] = i * L * E, off[size_t(B + i)] = off[size_t(2 * B + i)] = i * S * E;
  struct Results {
    std::vector<T> out, dq, dk, dv;
    std::vector<Acc> lse, delta;
  };
  auto run = [&](int64_t limit) {
    Results r{std::vector<T>(q.size()), std::vector<T>(q.size()), std::vector<T>(k.size()),
              std::vector<T>(v.size()), std::vector<Acc>(size_t(B * L)), std::vector<Acc>(size_t(B * L))};
    poison(r.out), poison(r.dq), poison(r.dk), poison(r.dv), poison(r.lse), poison(r.delta);
    AttentionParams<T> p;
    p.batch = B, p.L = L, p.S = S, p.E = E, p.Ev = E;
    p.q = q.data(), p.k = k.data(), p.v = v.data(), p.off = off.data();
    p.q_rs = p.k_rs = p.v_rs = E;
    p.causal = true;
    p.scale = Acc(1 / std::sqrt(double(E)));
    p.out = r.out.data(), p.lse = r.lse.data(), p.dout = dout.data(), p.delta = r.delta.data();
    p.dq = r.dq.data(), p.dk = r.dk.data(), p.dv = r.dv.data();
    attention_forward_launch<T>(p, nullptr, limit);
    attention_backward_launch<T>(p, nullptr, limit);
    return r;
  };
  const Results want = run(kMaxGridYZ);
  for (int64_t limit : kLimits) {
    const Results got = run(limit);
    const std::string at = "grid.y limit " + std::to_string(limit);
    CHECK(same_bits(got.out, want.out) && same_bits(got.lse, want.lse), "forward, " + at);
    CHECK(same_bits(got.delta, want.delta) && same_bits(got.dq, want.dq), "delta and dq, " + at);
    CHECK(same_bits(got.dk, want.dk) && same_bits(got.dv, want.dv), "dk and dv, " + at);
  }
}

const Test kTests[] = {
    {"conv_forward_f32", conv_forward<float>},
    {"conv_forward_f16", conv_forward<__half>},
    {"attention_f32", attention_forward_backward<float>},
    {"attention_f16", attention_forward_backward<__half>},
};

}  // namespace

int main() { return kernel_check::run_tests("grid", kTests); }
