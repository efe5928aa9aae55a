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

  // ---- optimizers (fusedops/optim) ----

  // ---- convolution and pooling (fusedops/ops/conv.py) ----
  // torch.nn.functional.conv2d with explicit padding ("same"/"valid" resolved in Python);
  // input [N, C, H, W] or [C, H, W]; weight [K, C / groups, kH, kW].
  m.def(
      "conv2d(Tensor input, Tensor weight, Tensor? bias=None, int[2] stride=1, int[2] padding=0, "
      "int[2] dilation=1, int groups=1) -> Tensor");
  // Gradients of conv2d w.r.t. (input, weight, bias); outputs not in output_mask are None.
  m.def(
      "conv2d_backward(Tensor grad_output, Tensor input, Tensor weight, int[2] stride, "
      "int[2] padding, int[2] dilation, int groups, bool[3] output_mask) "
      "-> (Tensor?, Tensor?, Tensor?)");
  // Max pooling returning the values and the flat index (ih * W + iw) of each maximum.
  m.def(
      "max_pool2d_with_indices(Tensor input, int[2] kernel_size, int[2] stride, "
      "int[2] padding=0, int[2] dilation=1, bool ceil_mode=False) -> (Tensor, Tensor)");
  // Gradient of max pooling: grad_output added at the positions in indices (the pooling
  // arguments of the forward give the windows).
  m.def(
      "max_pool2d_backward(Tensor grad_output, Tensor input, Tensor indices, int[2] kernel_size, "
      "int[2] stride, int[2] padding, int[2] dilation, bool ceil_mode) -> Tensor");
}

}  // namespace fusedops

TORCH_LIBRARY(fusedops, m) { fusedops::define_schemas(m); }
