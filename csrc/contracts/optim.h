// Optimizer hyperparameters and the gradient-norm kinds, shared by the CPU kernels
// (cpu/kernels/optim.h, which states the update formulas) and the CUDA kernels
// (cuda/kernels/optim.cuh). Host only: the kernels receive them by value.
#pragma once
#include <cmath>

namespace fusedops {

// AdamW / Adam (decoupled = false adds weight_decay * p to the gradient instead).
struct AdamHyper {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, weight_decay = 0, eps = 1e-8;
  bool amsgrad = false, maximize = false, decoupled = true;
};

struct SgdHyper {
  double lr = 1e-3, momentum = 0, dampening = 0, weight_decay = 0;
  bool nesterov = false, maximize = false;
};

// The p of a p-norm, by the reduction it needs: sum x^2 (2), sum |x| (1), max |x| (inf),
// min |x| (-inf), the count of non-zeros (0), sum |x|^p otherwise.
enum class NormKind : int { two = 0, one = 1, inf = 2, neg_inf = 3, zero = 4, general = 5 };

inline NormKind norm_kind(double p) {
  if (p == 2) return NormKind::two;
  if (p == 1) return NormKind::one;
  if (std::isinf(p)) return p > 0 ? NormKind::inf : NormKind::neg_inf;
  if (p == 0) return NormKind::zero;
  return NormKind::general;
}

}  // namespace fusedops
