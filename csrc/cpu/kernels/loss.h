// Loss kernels (cross-entropy, MSE, BCE with logits), torch-free, on raw pointers.
//
// Cross-entropy works on rows of logits [N, C] (unit column stride). One pass over a row
// computes its max and sum of exponentials in blocks that stay in L1 (an online log-sum-exp:
// one exp per element), plus the sums label smoothing or probability targets need; when a
// gradient is asked for, a second pass over the same row (now in L2) writes
// scale * d loss_i / d logits, which may overwrite the logits in place (grad == x).
#pragma once
#include <cstdint>

#include "bf16.h"
#include "cpu_features.h"

namespace fusedops::cpu {

// T: the storage type of logits, probabilities and gradient (float, double, bf16_t); class
// weights, row losses and row scales are in the arithmetic type Arith (fp32 for bf16).
template <typename T>
struct CrossEntropyArgs {
  using Arith = compute_t<T>;
  int64_t N = 0, C = 0;
  const T* x = nullptr;
  int64_t ldx = 0;                   // logits row stride
  const int64_t* target = nullptr;   // class indices [N], or nullptr when probs is given
  const T* probs = nullptr;          // class probabilities [N, C], row stride ldp
  int64_t ldp = 0;
  const Arith* weight = nullptr;         // class weights [C], or nullptr
  int64_t ignore_index = -100;       // class-index rows with this target give 0 loss and 0 grad
  double label_smoothing = 0.0;
  Arith* loss_rows = nullptr;            // optional: loss of each row [N] (torch's reduction "none")
  double* loss_sum = nullptr;        // optional: receives the sum of the row losses
  T* grad = nullptr;                 // optional: [N, C] row stride ldg; may equal x
  int64_t ldg = 0;
  double scale = 1.0;                // the gradient of row i is scaled by scale * row_scale[i]
  const Arith* row_scale = nullptr;      // optional, stride row_scale_stride (0: one value)
  int64_t row_scale_stride = 1;
};

// Checks class-index targets before any logit is read: every target is ignore_index or in
// [0, C). Returns the first bad row, or -1 when all are valid; *weight_sum receives the sum of
// weight[t] (1 without weights) over the rows not ignored (the "mean" denominator).
template <typename T>
int64_t cross_entropy_targets(int64_t N, int64_t C, const int64_t* target, const T* weight,
                              int64_t ignore_index, double* weight_sum);

// Loss kernels, one table per instruction set (vec/dispatch.h) and storage type; the bf16
// table has cross_entropy and scale_rows only (the others are null).
template <typename T>
struct LossKernels {
  void (*cross_entropy)(const CrossEntropyArgs<T>& args);
  // g[i, j] *= s[i * s_stride] for a [N, C] block with row stride ldg (s_stride 0: one scale).
  void (*scale_rows)(int64_t N, int64_t C, T* g, int64_t ldg, const compute_t<T>* s, int64_t s_stride);
  // out[j] += sum_i g[i, j] over a [N, C] block with row stride ldg.
  void (*add_column_sums)(int64_t N, int64_t C, const T* g, int64_t ldg, T* out);
  // Elementwise losses over n elements (same shapes; weight/pos_weight expanded to n or null).
  // loss_rows (reduction "none") or loss_sum receives the result.
  void (*mse_forward)(int64_t n, const T* x, const T* y, T* loss_rows, double* loss_sum);
  // gx = scale * g[i * gs] * 2 (x - y)
  void (*mse_backward)(int64_t n, const T* g, int64_t gs, double scale, const T* x, const T* y, T* gx);
  void (*bce_logits_forward)(int64_t n, const T* x, const T* y, const T* w, const T* pw, T* loss_rows, double* loss_sum);
  // gx = s w ((1 - y) - lw sigmoid(-x)), gy = s w (-x - (pw - 1) log_sigmoid(x)); s = scale g[i*gs]
  void (*bce_logits_backward)(int64_t n, const T* g, int64_t gs, double scale, const T* x, const T* y, const T* w, const T* pw, T* gx, T* gy);
};

// The kernels of an instruction set (default: the one in force), filled once.
template <typename T>
const LossKernels<T>& loss_kernels(Isa isa = active_isa());

}  // namespace fusedops::cpu
