#include "lce.h"

#include <algorithm>
#include <type_traits>

#include "gemm/gemm.h"
#include "gemm/gemm_bf16.h"
#include "loss.h"
#include "scratch.h"

namespace fusedops::cpu {

int64_t lce_chunk_rows(int64_t N, int64_t V, int64_t elem) {
  const int64_t cap = std::max<int64_t>(256, (int64_t(256) << 20) / std::max<int64_t>(1, V * elem));
  const int64_t rows = std::min(cap, std::max<int64_t>(256, (N + 3) / 4));
  return std::max<int64_t>(1, std::min(rows, N));
}

namespace {

struct Mat {
  const void* p;
  DType t;
  int64_t rs, cs;
};

size_t elem_size(DType t) { return t == DType::bf16 ? 2 : 4; }

// C[M, N] (= beta C) + A B (+ bias per column) with every operand of type T.
template <typename T>
void typed_product(int64_t M, int64_t N, int64_t K, Mat A, Mat B, void* C, int64_t ldc, bool accumulate,
                   const void* bias) {
  GemmArgs<T> g;
  g.M = M, g.N = N, g.K = K;
  g.A = static_cast<const T*>(A.p), g.rsa = A.rs, g.csa = A.cs;
  g.B = static_cast<const T*>(B.p), g.rsb = B.rs, g.csb = B.cs;
  g.C = static_cast<T*>(C), g.ldc = ldc;
  g.beta = accumulate ? T(1) : T(0);
  if (bias) g.bias = static_cast<const T*>(bias), g.bias_mode = BiasMode::per_col;
  gemm<T>(g);
}

// The same on the GEMM the operand types call for: fp64, fp32, else the mixed-precision one.
template <typename Acc>
void product(int64_t M, int64_t N, int64_t K, Mat A, Mat B, void* C, DType ct, int64_t ldc,
             bool accumulate, const void* bias, DType bias_t) {
  if constexpr (std::is_same_v<Acc, double>) {
    typed_product<double>(M, N, K, A, B, C, ldc, accumulate, bias);
  } else if (A.t == DType::f32 && B.t == DType::f32 && ct == DType::f32 && (!bias || bias_t == DType::f32)) {
    typed_product<float>(M, N, K, A, B, C, ldc, accumulate, bias);
  } else {
    GemmMixedArgs g;
    g.M = M, g.N = N, g.K = K;
    g.A = A.p, g.a_type = A.t, g.rsa = A.rs, g.csa = A.cs;
    g.B = B.p, g.b_type = B.t, g.rsb = B.rs, g.csb = B.cs;
    g.C = C, g.c_type = ct, g.ldc = ldc;
    g.beta = accumulate ? 1.0f : 0.0f;
    if (bias) g.bias = bias, g.bias_type = bias_t, g.bias_mode = BiasMode::per_col;
    gemm_mixed(g);
  }
}

}  // namespace

template <typename Acc>
void linear_cross_entropy(const LceArgs<Acc>& L) {
  constexpr bool f64 = std::is_same_v<Acc, double>;
  const DType acc_t = DType::f32, x_t = f64 ? acc_t : L.x_type;  // (ignored for double)
  const DType w_t = f64 ? acc_t : L.w_type, b_t = f64 ? acc_t : L.bias_type;
  const int64_t N = L.N, K = L.K, V = L.V;
  const size_t xe = f64 ? sizeof(double) : elem_size(x_t);
  const bool grads = L.gx || L.gw || L.gb;
  if (L.gb) std::fill(L.gb, L.gb + V, Acc(0));
  if (L.loss_sum) *L.loss_sum = 0;
  if (N == 0) {
    if (L.gw) std::fill(L.gw, L.gw + V * K, Acc(0));
    return;
  }
  const int64_t rows = L.chunk_rows > 0 ? std::min(L.chunk_rows, N) : lce_chunk_rows(N, V, sizeof(Acc));
  ScratchVec<Acc> buf(size_t(rows * V));
  Acc* const lg = buf.data();
  const auto* x = static_cast<const char*>(L.x);
  for (int64_t r0 = 0; r0 < N; r0 += rows) {
    const int64_t bm = std::min(rows, N - r0);
    const Mat xr{x + r0 * L.rsx * xe, x_t, L.rsx, L.csx};
    // logits = x W^T + b
    product<Acc>(bm, V, K, xr, {L.w, w_t, L.csw, L.rsw}, lg, acc_t, V, false, L.bias, b_t);
    double part = 0;
    CrossEntropyArgs<Acc> a;
    a.N = bm, a.C = V, a.x = lg, a.ldx = V;
    a.target = L.target + r0;
    a.ignore_index = L.ignore_index;
    a.label_smoothing = L.label_smoothing;
    a.loss_rows = L.loss_rows ? L.loss_rows + r0 : nullptr;
    a.loss_sum = &part;
    if (grads) a.grad = lg, a.ldg = V;  // dlogits overwrite the logits
    a.scale = L.scale;
    if (L.row_scale) a.row_scale = L.row_scale + r0, a.row_scale_stride = 1;
    loss_kernels<Acc>().cross_entropy(a);
    if (L.loss_sum) *L.loss_sum += part;
    const Mat d{lg, acc_t, V, 1}, dt{lg, acc_t, 1, V};
    if (L.gx)  // dx = dlogits W
      product<Acc>(bm, K, V, d, {L.w, w_t, L.rsw, L.csw}, static_cast<char*>(L.gx) + r0 * K * xe, x_t, K,
                   false, nullptr, acc_t);
    if (L.gw)  // dW (+)= dlogits^T x: the first chunk writes, the others add
      product<Acc>(V, K, bm, dt, xr, L.gw, acc_t, K, r0 > 0, nullptr, acc_t);
    if (L.gb) loss_kernels<Acc>().add_column_sums(bm, V, lg, V, L.gb);
  }
}

template void linear_cross_entropy<float>(const LceArgs<float>&);
template void linear_cross_entropy<double>(const LceArgs<double>&);

}  // namespace fusedops::cpu
