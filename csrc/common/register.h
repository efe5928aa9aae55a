// The ops of each family, listed once for the three registrations: the CPU bindings
// (cpu/<family>.cpp), the CUDA bindings (cuda/<family>.cu) and the simulator's
// (sim/sim_<family>.cpp), which all write
//
//   TORCH_LIBRARY_IMPL(fusedops, CPU, m) { FUSEDOPS_NORM_OPS(FUSEDOPS_IMPL_CPU) }
//
// X(op, fn): the schema name `op` (ops.cpp) is implemented by `fn_cpu` on the CPU and by
// `bind::fn` in the CUDA and simulator builds. An op added to a family's list and missing from a
// backend is a compile error, not a silently missing kernel. Torch-free.
#pragma once

#define FUSEDOPS_ACTIVATION_OPS(X)                          \
  X(gelu, gelu) X(gelu_backward, gelu_backward)             \
  X(relu, relu) X(relu_backward, relu_backward)             \
  X(sigmoid, sigmoid) X(sigmoid_backward, sigmoid_backward) \
  X(tanh, tanh) X(tanh_backward, tanh_backward)             \
  X(softmax, softmax) X(softmax_backward, softmax_backward) \
  X(log_softmax, log_softmax) X(log_softmax_backward, log_softmax_backward) \
  X(swiglu, swiglu) X(swiglu_backward, swiglu_backward)

#define FUSEDOPS_ATTENTION_OPS(X)                                 \
  X(scaled_dot_product_attention, scaled_dot_product_attention)   \
  X(scaled_dot_product_attention_backward, scaled_dot_product_attention_backward)

#define FUSEDOPS_BATCH_NORM_OPS(X) X(batch_norm, batch_norm) X(batch_norm_backward, batch_norm_backward)

#define FUSEDOPS_CONV_OPS(X)                                                   \
  X(conv2d, conv2d) X(conv2d_backward, conv2d_backward)                        \
  X(max_pool2d_with_indices, max_pool2d_with_indices)                          \
  X(max_pool2d_backward, max_pool2d_backward)

#define FUSEDOPS_DROPOUT_OPS(X) X(dropout, dropout) X(dropout_backward, dropout_backward)

#define FUSEDOPS_EMBEDDING_OPS(X) X(embedding, embedding) X(embedding_backward, embedding_backward)

#define FUSEDOPS_LINEAR_OPS(X)                                              \
  X(linear, linear) X(linear_act, linear_act) X(linear_backward, linear_backward) \
  X(matmul, matmul) X(matmul_backward, matmul_backward)

#define FUSEDOPS_LOSS_OPS(X)                                                       \
  X(cross_entropy, cross_entropy) X(cross_entropy_backward, cross_entropy_backward) \
  X(loss_grad_scale, loss_grad_scale)                                              \
  X(linear_cross_entropy, linear_cross_entropy)                                    \
  X(linear_cross_entropy_backward, linear_cross_entropy_backward)                  \
  X(mse_loss, mse_loss) X(mse_loss_backward, mse_loss_backward)                    \
  X(binary_cross_entropy_with_logits, bce_with_logits)                             \
  X(binary_cross_entropy_with_logits_backward, bce_with_logits_backward)

#define FUSEDOPS_NORM_OPS(X)                                                          \
  X(layer_norm, layer_norm) X(layer_norm_stats, layer_norm_stats)                    \
  X(layer_norm_backward, layer_norm_backward)                                        \
  X(add_layer_norm, add_layer_norm) X(add_layer_norm_stats, add_layer_norm_stats)    \
  X(add_layer_norm_backward, add_layer_norm_backward)                                \
  X(rms_norm, rms_norm) X(rms_norm_stats, rms_norm_stats)                            \
  X(rms_norm_backward, rms_norm_backward)                                            \
  X(add_rms_norm, add_rms_norm) X(add_rms_norm_stats, add_rms_norm_stats)            \
  X(add_rms_norm_backward, add_rms_norm_backward)

#define FUSEDOPS_OPTIM_OPS(X) \
  X(adam_step_, adam_step) X(sgd_step_, sgd_step) X(total_norm, total_norm) X(clip_scale_, clip_scale)

#define FUSEDOPS_ROTARY_OPS(X)                                                 \
  X(rotary_embedding, rotary_embedding) X(rotary_embedding_, rotary_embedding_inplace) \
  X(rotary_embedding_backward, rotary_embedding_backward)

#define FUSEDOPS_RNN_OPS(X) X(rnn_layer, rnn_layer) X(rnn_layer_backward, rnn_layer_backward)

// The X of each backend; `m` is the torch::Library of the enclosing TORCH_LIBRARY_IMPL.
#define FUSEDOPS_IMPL_CPU(op, fn) m.impl(#op, FUSEDOPS_CPU(fn##_cpu));
#define FUSEDOPS_IMPL_BIND(op, fn) m.impl(#op, &fn);
