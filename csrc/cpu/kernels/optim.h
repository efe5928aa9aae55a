// Fused optimizer steps and gradient-norm clipping over lists of tensors, torch-free.
//
// Each step is one pass over every tensor's memory: per element the parameter, gradient and
// state are read once and the parameter and state written once (Adam: read p, g, m, v; write
// p, m, v). The tensors of a call are seen as one concatenated range of elements, cut into
// chunks of 64K elements that the OpenMP threads take dynamically (a big tensor is split
// between threads, small ones share a chunk); within a chunk the loop runs on SIMD registers
// with partial loads and stores at the tail of each tensor.
//
// The arithmetic follows torch.optim's single-tensor formulas operation by operation in the
// parameter's dtype (scalars rounded to it as torch rounds them), so trajectories match torch's
// to rounding: Adam(W) below, SGD at SgdTensor.
#pragma once
#include <cstdint>

#include "../../contracts/optim.h"
#include "bf16.h"
#include "cpu_features.h"

namespace fusedops::cpu {

// ---- Adam / AdamW --------------------------------------------------------------------------
//   g  = maximize ? -grad : grad
//   p *= 1 - lr * wd                    (decoupled, AdamW)   |  g += wd * p  (Adam)
//   m  = lerp(m, g, 1 - beta1)
//   v  = v * beta2 + (1 - beta2) * g * g
//   vm = max(vm, v)                     (amsgrad; the denominator then uses vm)
//   p += -step_size * m / (sqrt(v) / bc2_sqrt + eps)
// with step_size = lr / (1 - beta1^step), bc2_sqrt = sqrt(1 - beta2^step), per tensor (a
// tensor's step counts the steps it took part in).

// T: the parameter's and gradient's storage type; the state is in compute_t<T> (fp32 for
// bf16 parameters: the update is computed in fp32 and the parameter rounded once to bf16).
template <typename T>
struct AdamTensor {
  T* p = nullptr;
  const T* g = nullptr;
  compute_t<T>* m = nullptr;
  compute_t<T>* v = nullptr;
  compute_t<T>* vmax = nullptr;  // amsgrad only
  int64_t n = 0;
  double step_size = 0;  // lr / (1 - beta1^step)
  double bc2_sqrt = 1;   // (1 - beta2^step)^0.5
};

// ---- SGD -------------------------------------------------------------------------------------
//   g   = maximize ? -grad : grad;  g += wd * p
//   buf = fresh ? g : buf * momentum + (1 - dampening) * g      (momentum != 0)
//   g   = nesterov ? g + momentum * buf : buf                    (momentum != 0)
//   p  += -lr * g

template <typename T>
struct SgdTensor {
  T* p = nullptr;
  const T* g = nullptr;
  compute_t<T>* buf = nullptr;  // momentum != 0 only; fp32 for bf16 parameters
  int64_t n = 0;
  bool fresh = false;  // the buffer is new: it becomes a copy of g (torch's first step)
};

// ---- gradient norm and scaling ----------------------------------------------------------------
// The p-norm of all elements of all tensors together: (sum |x|^p)^(1/p); p = inf: max |x|,
// -inf: min |x|, 0: the count of non-zeros. Accumulated in double per chunk (float32 sums over
// blocks of 256 elements first), chunks combined in order: the result does not depend on the
// thread count. Empty input: 0.

// Optimizer kernels, one table per instruction set (vec/dispatch.h).
template <typename T>
struct OptimKernels {
  void (*adam_step)(const AdamTensor<T>* tensors, int64_t count, const AdamHyper& h);
  void (*sgd_step)(const SgdTensor<T>* tensors, int64_t count, const SgdHyper& h);
  double (*total_norm)(const T* const* data, const int64_t* sizes, int64_t count, double p);
  // x *= scale for every element of every tensor.
  void (*scale_all)(T* const* data, const int64_t* sizes, int64_t count, compute_t<T> scale);
};

// The kernels of an instruction set (default: the one in force), filled once.
template <typename T>
const OptimKernels<T>& optim_kernels(Isa isa = active_isa());

}  // namespace fusedops::cpu
