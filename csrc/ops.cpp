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
  // input @ other for 2-D and 3-D operands, batch dimension broadcast as torch.matmul.
  m.def("matmul(Tensor input, Tensor other) -> Tensor");
  m.def(
      "matmul_backward(Tensor grad_output, Tensor input, Tensor other, bool[2] output_mask) "
      "-> (Tensor?, Tensor?)");

  // ---- normalization (fusedops/ops/norm.py) ----
  // LayerNorm over the trailing dimensions normalized_shape: (x - mean) * rstd * weight + bias.
  m.def(
      "layer_norm(Tensor input, int[] normalized_shape, Tensor? weight=None, Tensor? bias=None, "
      "float eps=1e-05) -> Tensor");
  // layer_norm that also returns the per-row mean and rstd (shape: input's leading dimensions;
  // float32, or float64 for a float64 input), saved for backward when training.
  m.def(
      "layer_norm_stats(Tensor input, int[] normalized_shape, Tensor? weight, Tensor? bias, "
      "float eps) -> (Tensor, Tensor, Tensor)");
  // Gradients of layer_norm w.r.t. (input, weight, bias) from the saved mean and rstd; outputs
  // not in output_mask are None.
  m.def(
      "layer_norm_backward(Tensor grad_output, Tensor input, int[] normalized_shape, Tensor mean, "
      "Tensor rstd, Tensor? weight, bool[3] output_mask) -> (Tensor?, Tensor?, Tensor?)");
  // (layer_norm(input + residual), input + residual): a transformer block's residual add fused in.
  m.def(
      "add_layer_norm(Tensor input, Tensor residual, int[] normalized_shape, Tensor? weight=None, "
      "Tensor? bias=None, float eps=1e-05) -> (Tensor, Tensor)");
  // add_layer_norm that also returns the mean and rstd of the sum.
  m.def(
      "add_layer_norm_stats(Tensor input, Tensor residual, int[] normalized_shape, Tensor? weight, "
      "Tensor? bias, float eps) -> (Tensor, Tensor, Tensor, Tensor)");
  // Gradients of add_layer_norm w.r.t. (input and residual alike, weight, bias); grad_sum: the
  // gradient reaching the sum output (None: zero), added to the first.
  m.def(
      "add_layer_norm_backward(Tensor grad_output, Tensor? grad_sum, Tensor sum, "
      "int[] normalized_shape, Tensor mean, Tensor rstd, Tensor? weight, bool[3] output_mask) "
      "-> (Tensor?, Tensor?, Tensor?)");

  // RMSNorm over the trailing dimensions normalized_shape (None: the weight's shape, else the
  // last dimension): input * rsqrt(mean(input^2) + eps) * weight; eps None: the machine epsilon
  // of the arithmetic type (float32's for a bfloat16 input), as torch.nn.functional.rms_norm.
  m.def(
      "rms_norm(Tensor input, Tensor? weight=None, float? eps=None, int[]? normalized_shape=None) "
      "-> Tensor");
  // rms_norm that also returns the per-row rstd (input's leading shape; float32, or float64).
  m.def(
      "rms_norm_stats(Tensor input, Tensor? weight, float? eps, int[]? normalized_shape) "
      "-> (Tensor, Tensor)");
  // Gradients of rms_norm w.r.t. (input, weight) from the saved rstd.
  m.def(
      "rms_norm_backward(Tensor grad_output, Tensor input, Tensor rstd, Tensor? weight, "
      "int[]? normalized_shape, bool[2] output_mask) -> (Tensor?, Tensor?)");
  // (rms_norm(input + residual), input + residual): the residual stream fused with the norm.
  m.def(
      "add_rms_norm(Tensor input, Tensor residual, Tensor? weight=None, float? eps=None, "
      "int[]? normalized_shape=None) -> (Tensor, Tensor)");
  // add_rms_norm that also returns the rstd of the sum.
  m.def(
      "add_rms_norm_stats(Tensor input, Tensor residual, Tensor? weight, float? eps, "
      "int[]? normalized_shape) -> (Tensor, Tensor, Tensor)");
  // Gradients of add_rms_norm w.r.t. (input and residual alike, weight); grad_sum: the gradient
  // reaching the sum output (None: zero), added to the first.
  m.def(
      "add_rms_norm_backward(Tensor grad_output, Tensor? grad_sum, Tensor sum, Tensor rstd, "
      "Tensor? weight, int[]? normalized_shape, bool[2] output_mask) -> (Tensor?, Tensor?)");

  // ---- Llama-family ops: rotary embedding (fusedops/ops/rotary.py) ----
  // Rotary position embedding, rotate-half convention: x * cos + rotate_half(x) * sin for
  // q [B, Hq, T, D] and k [B, Hk, T, D] (any strides with a contiguous last dimension); cos and
  // sin [T, R], [B, T, R] or [B, 1, T, R] with R <= D even (R < D: partial rotary, the last
  // D - R features pass through). Outputs contiguous.
  m.def("rotary_embedding(Tensor q, Tensor k, Tensor cos, Tensor sin) -> (Tensor, Tensor)");
  // rotary_embedding written over q and k in place (no autograd: inference and no-grad use).
  m.def("rotary_embedding_(Tensor(a!) q, Tensor(b!) k, Tensor cos, Tensor sin) -> ()");
  // Gradients of rotary_embedding w.r.t. (q, k): the transposed rotation (by -theta),
  // g * cos + rotate_half^T(g * sin); a None gradient gives None.
  m.def(
      "rotary_embedding_backward(Tensor? grad_q, Tensor? grad_k, Tensor cos, Tensor sin) "
      "-> (Tensor?, Tensor?)");

  // ---- activations and softmax (fusedops/ops/activation.py) ----
  // GELU: x * Phi(x) (approximate="none") or its tanh approximation (approximate="tanh").
  m.def("gelu(Tensor input, str approximate='none') -> Tensor");
  // grad_output * gelu'(input), recomputed from the input in one pass.
  m.def("gelu_backward(Tensor grad_output, Tensor input, str approximate='none') -> Tensor");
  // max(input, 0); NaN stays NaN.
  m.def("relu(Tensor input) -> Tensor");
  // grad_output where output > 0 (or NaN), else 0 (as torch's threshold_backward).
  m.def("relu_backward(Tensor grad_output, Tensor output) -> Tensor");
  // 1 / (1 + exp(-input)).
  m.def("sigmoid(Tensor input) -> Tensor");
  // grad_output * output * (1 - output).
  m.def("sigmoid_backward(Tensor grad_output, Tensor output) -> Tensor");
  // tanh(input).
  m.def("tanh(Tensor input) -> Tensor");
  // grad_output * (1 - output^2).
  m.def("tanh_backward(Tensor grad_output, Tensor output) -> Tensor");
  // SwiGLU: silu(a) * b, a and b of one shape (two halves of one projection or two tensors;
  // rows read in place when their last dimension is contiguous).
  m.def("swiglu(Tensor a, Tensor b) -> Tensor");
  // Gradients of swiglu w.r.t. (a, b), recomputed from a and b in one pass.
  m.def("swiglu_backward(Tensor grad_output, Tensor a, Tensor b, bool[2] output_mask) -> (Tensor?, Tensor?)");
  // exp(x - max) / sum(exp(x - max)) along dim.
  m.def("softmax(Tensor input, int dim) -> Tensor");
  // output * (grad_output - sum(grad_output * output)) along dim.
  m.def("softmax_backward(Tensor grad_output, Tensor output, int dim) -> Tensor");
  // x - max - log(sum(exp(x - max))) along dim.
  m.def("log_softmax(Tensor input, int dim) -> Tensor");
  // grad_output - exp(output) * sum(grad_output) along dim.
  m.def("log_softmax_backward(Tensor grad_output, Tensor output, int dim) -> Tensor");

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
  // Adam (decoupled_weight_decay: AdamW) over one param group's tensors of one dtype, in
  // place: each state_step += 1, then one fused pass per tensor with its bias corrections;
  // max_exp_avg_sqs is empty unless amsgrad.
  m.def(
      "adam_step_(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] exp_avgs, "
      "Tensor(c!)[] exp_avg_sqs, Tensor(d!)[] max_exp_avg_sqs, Tensor(e!)[] state_steps, "
      "float lr, float beta1, float beta2, float weight_decay, float eps, bool amsgrad, "
      "bool maximize, bool decoupled_weight_decay) -> ()");
  // SGD with momentum/dampening/nesterov in place; momentum_buffers is empty when momentum is
  // 0; a buffer flagged in fresh_buffers becomes the (decayed) gradient, as torch's first step.
  m.def(
      "sgd_step_(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] momentum_buffers, "
      "bool[] fresh_buffers, float lr, float momentum, float dampening, float weight_decay, "
      "bool nesterov, bool maximize) -> ()");
  // The norm_type-norm of all elements of all tensors (one dtype) together: a 0-d tensor.
  m.def("total_norm(Tensor[] tensors, float norm_type) -> Tensor");
  // tensors *= min(max_norm / (total_norm + 1e-6), 1), total_norm a 0-d tensor (never synced).
  m.def("clip_scale_(Tensor(a!)[] tensors, Tensor total_norm, float max_norm) -> ()");

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

  // ---- recurrent (fusedops/ops/rnn.py) ----
  // One direction of one RNN/LSTM/GRU layer over a whole sequence; mode "rnn_tanh" | "rnn_relu" |
  // "lstm" | "gru". input [T, B, I], or packed [N, I] with batch_sizes (int64 CPU, as
  // PackedSequence); hx [B, P], cx [B, H] (lstm only); w_hr [P, H] (lstm projection). Returns
  // (output [T, B, P] or [N, P], hy [B, P], cy [B, H] or [0], workspace saved for backward).
  m.def(
      "rnn_layer(str mode, Tensor input, Tensor hx, Tensor? cx, Tensor w_ih, Tensor w_hh, "
      "Tensor? b_ih=None, Tensor? b_hh=None, Tensor? w_hr=None, Tensor? batch_sizes=None, "
      "bool reverse=False) -> (Tensor, Tensor, Tensor, Tensor)");
  // Gradients of rnn_layer w.r.t. (input, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr) from its output
  // and workspace; missing output gradients count as zero; outputs not in output_mask are None.
  m.def(
      "rnn_layer_backward(str mode, Tensor? grad_output, Tensor? grad_hy, Tensor? grad_cy, "
      "Tensor input, Tensor hx, Tensor? cx, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, "
      "Tensor? w_hr, Tensor? batch_sizes, bool reverse, Tensor output, Tensor workspace, "
      "bool[8] output_mask) -> (Tensor?, Tensor?, Tensor?, Tensor?, Tensor?, Tensor?, Tensor?, "
      "Tensor?)");

  // ---- layers: dropout, embedding, batch norm (fusedops/ops/dropout.py, embedding.py,
  // batch_norm.py) ----
  // input * keep / (1 - p), keep from the counter-based hash of contracts/attention_rng.h at
  // counter offset + (flat index); rng: CPU int64 (seed, offset). The mask is never stored.
  m.def("dropout(Tensor input, float p, Tensor rng) -> Tensor");
  // grad_output * keep / (1 - p): the forward's mask regenerated from rng.
  m.def("dropout_backward(Tensor grad_output, float p, Tensor rng) -> Tensor");
  // weight[input]: rows of weight [V, D] gathered for indices of any shape (int64 or int32);
  // max_norm and sparse=True are refused (not supported).
  m.def(
      "embedding(Tensor input, Tensor weight, int? padding_idx=None, float? max_norm=None, "
      "float norm_type=2.0, bool scale_grad_by_freq=False, bool sparse=False) -> Tensor");
  // d weight [num_weights, D]: grad_output rows summed per index, row-parallel in token order
  // (no atomics); the padding_idx row gets none; scale_grad_by_freq divides by the counts.
  m.def(
      "embedding_backward(Tensor grad_output, Tensor input, int num_weights, int? padding_idx, "
      "bool scale_grad_by_freq) -> Tensor");
  // Batch norm over [N, C, *] per channel: training uses the batch's mean and biased variance,
  // else running_mean/running_var. Returns (output, mean, rstd, var) with the statistics used
  // ([C]; float32, float64 for float64 input); var is the biased batch variance (training) for
  // the running update, which the caller makes.
  m.def(
      "batch_norm(Tensor input, Tensor? running_mean, Tensor? running_var, Tensor? weight=None, "
      "Tensor? bias=None, bool training=False, float eps=1e-05) -> (Tensor, Tensor, Tensor, Tensor)");
  // Gradients of batch_norm w.r.t. (input, weight, bias) from the saved mean and rstd
  // (training: through the batch statistics); outputs not in output_mask are None.
  m.def(
      "batch_norm_backward(Tensor grad_output, Tensor input, Tensor mean, Tensor rstd, "
      "Tensor? weight, bool training, bool[3] output_mask) -> (Tensor?, Tensor?, Tensor?)");
}

}  // namespace fusedops

TORCH_LIBRARY(fusedops, m) { fusedops::define_schemas(m); }
