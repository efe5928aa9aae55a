// Every fusedops operator schema, one line each. Implementations register per backend:
// csrc/cpu/*.cpp (CPU), csrc/cuda/*.cu (CUDA); autograd and fake (meta) functions in
// fusedops/ops/*.py. Names and defaults match the Python functions in fusedops.ops.
// The CUDA simulator registers the same schemas under fusedops_sim (csrc/sim/sim_ops.cpp,
// implementations in csrc/sim/sim_<family>.cpp).
#include "ops.h"

namespace fusedops {

void define_schemas(torch::Library& m) {
  // ---- linear / matmul (fusedops/ops/linear.py) ----
  // act(input @ weight.T + bias); activation: None, "relu", "gelu", "gelu_tanh".
  m.def("linear(Tensor input, Tensor weight, Tensor? bias=None, str? activation=None) -> Tensor");
  // linear that also returns the pre-activation (saved for backward when training).
  m.def("linear_act(Tensor input, Tensor weight, Tensor? bias, str activation) -> (Tensor, Tensor)");
  // Gradients of linear w.r.t. (input, weight, bias); act_input: the pre-activation (the output
  // suffices for relu); outputs not in output_mask are None.
  m.def(
      "linear_backward(Tensor grad_output, Tensor input, Tensor weight, Tensor? act_input, "
      "str? activation, bool[3] output_mask) -> (Tensor?, Tensor?, Tensor?)");
  // self @ other for 2-D and 3-D operands, batch dimension broadcast as torch.matmul.
  m.def("matmul(Tensor self, Tensor other) -> Tensor");
  m.def(
      "matmul_backward(Tensor grad_output, Tensor self, Tensor other, bool[2] output_mask) "
      "-> (Tensor?, Tensor?)");

  // ---- normalization (fusedops/ops/norm.py) ----

  // ---- activations and softmax (fusedops/ops/activation.py) ----

  // ---- losses (fusedops/ops/loss.py) ----
  // Cross-entropy of logits [N, C] with class-index targets [N] (int64) or class probabilities
  // [N, C]; reduction "mean" | "sum" | "none". Returns (loss, grad): loss 0-d (or [N] for
  // "none"); grad = d loss / d input [N, C], computed in the same pass when compute_grad, else
  // an empty tensor.
  m.def(
      "cross_entropy(Tensor input, Tensor target, Tensor? weight=None, int ignore_index=-100, "
      "str reduction=\"mean\", float label_smoothing=0.0, bool compute_grad=False) "
      "-> (Tensor, Tensor)");
  // grad_input of cross_entropy from the gradient its forward computed: grad * grad_output
  // (grad_output 0-d, or [N] scaling rows for reduction "none").
  m.def("cross_entropy_backward(Tensor grad_output, Tensor grad) -> Tensor");
  // The same in place (grad *= grad_output, rows scaled by a [N] grad_output); nothing is
  // written when grad_output is a single 1.
  m.def("loss_grad_scale(Tensor(a!) grad, Tensor grad_output) -> ()");
  // cross_entropy(input @ weight.T + bias, target) over row chunks, the [N, V] logits never whole;
  // returns (loss, grad_input?, grad_weight?, grad_bias?), gradients (for grad_mask) computed in
  // the forward pass (reduction "mean" or "sum").
  m.def(
      "linear_cross_entropy(Tensor input, Tensor weight, Tensor target, Tensor? bias=None, "
      "int ignore_index=-100, str reduction=\"mean\", float label_smoothing=0.0, "
      "bool[3] grad_mask=[False, False, False]) -> (Tensor, Tensor?, Tensor?, Tensor?)");
  // Gradients of linear_cross_entropy for (input, weight, bias), recomputing the logits chunk by
  // chunk; grad_output 0-d, or [N] for reduction "none".
  m.def(
      "linear_cross_entropy_backward(Tensor grad_output, Tensor input, Tensor weight, "
      "Tensor target, Tensor? bias, int ignore_index, str reduction, float label_smoothing, "
      "bool[3] output_mask) -> (Tensor?, Tensor?, Tensor?)");
  // (input - target)^2, reduced; input and target of one shape.
  m.def("mse_loss(Tensor input, Tensor target, str reduction=\"mean\") -> Tensor");
  // d mse_loss / d input (d / d target is its negative).
  m.def("mse_loss_backward(Tensor grad_output, Tensor input, Tensor target, str reduction) -> Tensor");
  // Binary cross-entropy of logits; weight and pos_weight broadcast to the input's shape.
  m.def(
      "binary_cross_entropy_with_logits(Tensor input, Tensor target, Tensor? weight=None, "
      "Tensor? pos_weight=None, str reduction=\"mean\") -> Tensor");
  // Gradients of binary_cross_entropy_with_logits for (input, target) as output_mask asks.
  m.def(
      "binary_cross_entropy_with_logits_backward(Tensor grad_output, Tensor input, Tensor target, "
      "Tensor? weight, Tensor? pos_weight, str reduction, bool[2] output_mask) -> (Tensor?, Tensor?)");

  // ---- optimizers (fusedops/optim) ----
}

}  // namespace fusedops

TORCH_LIBRARY(fusedops, m) { fusedops::define_schemas(m); }
