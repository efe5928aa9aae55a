// Linear cross-entropy over chunks of rows, torch-free: the loop the CPU binding (cpu/loss.cpp)
// runs for every dtype, reachable from the standalone C++ tests.
//
// Each chunk of rows: logits = x W^T + b into a [rows, V] buffer of the arithmetic type; the
// cross-entropy kernel turns them into the loss and, in place, into dlogits; then dx = dlogits W,
// dW += dlogits^T x and db += the column sums of dlogits. The [N, V] logits never exist whole.
#pragma once
#include <cstdint>

#include "bf16.h"

namespace fusedops::cpu {

// Rows of logits per chunk, when the caller does not set them. Every chunk re-reads
// the weight twice and dW once (3 x V x K), so chunks must be tall for the GEMMs to stay
// compute-bound: measured for V = 50304, K = 768 (2 threads), 256-row chunks ran at 0.82x the
// speed of one 1024-row chunk. So: a quarter of the rows (the buffer is then at most 1/8 of the
// [N, V] logits and log-probabilities unfused code keeps), at least 256 rows, at most 256 MB.
int64_t lce_chunk_rows(int64_t N, int64_t V, int64_t elem);

// Acc is the arithmetic type: double for fp64 tensors (every operand double, the types below
// unused), float for fp32 and bf16 ones (x, w and bias each fp32 or bf16; gx of x's type). The
// products run on the fp32 GEMM when every operand is fp32, else on the mixed-precision GEMM
// (bf16 products, fp32 sums), so the logits, the loss and dW / db are always in Acc.
template <typename Acc>
struct LceArgs {
  int64_t N = 0, K = 0, V = 0;
  const void* x = nullptr;  // [N, K]: x(i, k) = x[i * rsx + k * csx]
  DType x_type = DType::f32;
  int64_t rsx = 0, csx = 0;
  const void* w = nullptr;  // [V, K]: w(v, k) = w[v * rsw + k * csw]
  DType w_type = DType::f32;
  int64_t rsw = 0, csw = 0;
  const void* bias = nullptr;  // [V] contiguous, or nullptr
  DType bias_type = DType::f32;
  const int64_t* target = nullptr;  // [N], checked by the caller (cross_entropy_targets)
  int64_t ignore_index = -100;
  double label_smoothing = 0.0;
  double scale = 1.0;              // gradient scale: 1/denominator for the mean, x grad_output
  const Acc* row_scale = nullptr;  // [N] per-row gradient scales (reduction "none"), or nullptr
  Acc* loss_rows = nullptr;        // [N] the row losses, or nullptr
  double* loss_sum = nullptr;      // the sum of the row losses, or nullptr
  void* gx = nullptr;              // [N, K] contiguous, x's type, or nullptr
  Acc* gw = nullptr;               // [V, K] contiguous, or nullptr
  Acc* gb = nullptr;               // [V], or nullptr
  int64_t chunk_rows = 0;          // rows per chunk; 0: lce_chunk_rows()
};

template <typename Acc>
void linear_cross_entropy(const LceArgs<Acc>& args);

}  // namespace fusedops::cpu
