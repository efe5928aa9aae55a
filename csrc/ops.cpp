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

  // ---- attention (fusedops/ops/attention.py) ----
  // softmax(scale * query @ key^T + mask) @ value over [..., L, E] / [..., S, E] / [..., S, Ev]
  // (flash: no L x S matrix); returns (output [..., L, Ev], logsumexp [..., L], +inf for rows
  // with no visible key). rng: int64 (seed, offset) of the dropout hash, needed when
  // dropout_p > 0.
  m.def(
      "scaled_dot_product_attention(Tensor query, Tensor key, Tensor value, Tensor? attn_mask=None, "
      "float dropout_p=0.0, bool is_causal=False, float? scale=None, bool enable_gqa=False, "
      "Tensor? rng=None) -> (Tensor, Tensor)");
  // Gradients w.r.t. (query, key, value) from the forward's output and logsumexp; the dropout
  // mask is regenerated from rng; outputs not in output_mask are None.
  m.def(
      "scaled_dot_product_attention_backward(Tensor grad_out, Tensor query, Tensor key, "
      "Tensor value, Tensor out, Tensor logsumexp, Tensor? attn_mask, float dropout_p, "
      "bool is_causal, float? scale, bool enable_gqa, Tensor? rng, bool[3] output_mask) "
      "-> (Tensor?, Tensor?, Tensor?)");
}

}  // namespace fusedops

TORCH_LIBRARY(fusedops, m) { fusedops::define_schemas(m); }
