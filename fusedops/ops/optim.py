"""Optimizer ops: fused multi-tensor Adam/AdamW and SGD steps, the total gradient norm and the
clipping scale; their fake (meta) implementations for torch.compile and opcheck.

The optimizers in fusedops.optim call these once per param group (per device and dtype):

- ``adam_step_(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, lr, beta1,
  beta2, weight_decay, eps, amsgrad, maximize, decoupled_weight_decay)``: every state step
  += 1, then one pass over each tensor (read p, g, m, v; write p, m, v).
- ``sgd_step_(params, grads, momentum_buffers, fresh_buffers, lr, momentum, dampening,
  weight_decay, nesterov, maximize)``.
- ``total_norm(tensors, norm_type) -> Tensor`` (0-d, the tensors' dtype) and
  ``clip_scale_(tensors, total_norm, max_norm)``: tensors *= min(max_norm / (norm + 1e-6), 1).
"""
import torch

_ops = torch.ops.fusedops


def _check_lengths(name, n, **lists):
    for arg, (values, want) in lists.items():
        torch._check(
            len(values) == want,
            lambda: f"fusedops.{name}: {arg} must hold {want} tensors, got {len(values)}",
        )


@torch.library.register_fake("fusedops::adam_step_")
def _adam_step_fake(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, lr,
                    beta1, beta2, weight_decay, eps, amsgrad, maximize, decoupled_weight_decay):
    n = len(params)
    _check_lengths("adam_step_", n, grads=(grads, n), exp_avgs=(exp_avgs, n),
                   exp_avg_sqs=(exp_avg_sqs, n), state_steps=(state_steps, n),
                   max_exp_avg_sqs=(max_exp_avg_sqs, n if amsgrad else 0))
    for p, g in zip(params, grads):
        torch._check(g.shape == p.shape,
                     lambda: "fusedops.adam_step_: grads must have the shapes of params")


@torch.library.register_fake("fusedops::sgd_step_")
def _sgd_step_fake(params, grads, momentum_buffers, fresh_buffers, lr, momentum, dampening,
                   weight_decay, nesterov, maximize):
    n = len(params)
    _check_lengths("sgd_step_", n, grads=(grads, n),
                   momentum_buffers=(momentum_buffers, n if momentum != 0 else 0))
    for p, g in zip(params, grads):
        torch._check(g.shape == p.shape,
                     lambda: "fusedops.sgd_step_: grads must have the shapes of params")


@torch.library.register_fake("fusedops::total_norm")
def _total_norm_fake(tensors, norm_type):
    torch._check(len(tensors) > 0, lambda: "fusedops.total_norm: tensors must not be empty")
    return tensors[0].new_empty(())


@torch.library.register_fake("fusedops::clip_scale_")
def _clip_scale_fake(tensors, total_norm, max_norm):
    torch._check(total_norm.numel() == 1,
                 lambda: "fusedops.clip_scale_: total_norm must have one element")


def adam_step_(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, *, lr,
               beta1, beta2, weight_decay, eps, amsgrad, maximize, decoupled_weight_decay):
    """One fused Adam (decoupled_weight_decay=True: AdamW) step over lists of tensors of one
    device and dtype, in place; see the module docstring."""
    _ops.adam_step_(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps,
                    float(lr), float(beta1), float(beta2), float(weight_decay), float(eps),
                    bool(amsgrad), bool(maximize), bool(decoupled_weight_decay))


def sgd_step_(params, grads, momentum_buffers, fresh_buffers, *, lr, momentum, dampening,
              weight_decay, nesterov, maximize):
    """One fused SGD step over lists of tensors of one device and dtype, in place."""
    _ops.sgd_step_(params, grads, momentum_buffers, [bool(f) for f in fresh_buffers], float(lr),
                   float(momentum), float(dampening), float(weight_decay), bool(nesterov),
                   bool(maximize))


def total_norm(tensors, norm_type=2.0):
    """The norm_type-norm of all elements of `tensors` (one device and dtype) together."""
    return _ops.total_norm(list(tensors), float(norm_type))


def clip_scale_(tensors, total_norm, max_norm):
    """tensors *= min(max_norm / (total_norm + 1e-6), 1), in place."""
    _ops.clip_scale_(list(tensors), total_norm, float(max_norm))
