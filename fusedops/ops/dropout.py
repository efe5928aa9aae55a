"""dropout: the function, its autograd formula and fake (meta) shapes.

Each call in training mode draws a (seed, offset) pair from torch's default generator (so
``torch.manual_seed`` makes it reproducible) and hands it to the op, whose counter-based hash
(the one attention's dropout uses) decides each element from its flat index. The backward
(``dropout_backward``) regenerates the same decisions from the pair: the mask is never stored,
and the result is the same bits for any thread count and on the CPU and CUDA kernels.

``p == 0`` and ``training=False`` return the input itself (no copy, no op call).
``inplace=True`` is accepted for torch compatibility but computes out of place: the input is
left unchanged and a new tensor is returned (as ``fusedops.ops.relu``).
"""
import torch

from .attention import _draw_rng

_ops = torch.ops.fusedops


def dropout(input: torch.Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> torch.Tensor:
    """``torch.nn.functional.dropout``: zeroes each element with probability ``p`` and scales
    the others by ``1 / (1 - p)``, in training mode; the input itself otherwise or when
    ``p == 0``."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"fusedops.dropout: p must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return input
    return _ops.dropout(input, p, _draw_rng())


# ---- fake (meta) implementations -------------------------------------------------------------


@torch.library.register_fake("fusedops::dropout")
def _dropout_fake(input, p, rng):
    return input.new_empty(input.shape)


@torch.library.register_fake("fusedops::dropout_backward")
def _dropout_backward_fake(grad_output, p, rng):
    return grad_output.new_empty(grad_output.shape)


# ---- autograd -------------------------------------------------------------------------------
# dropout is linear in its input with a self-adjoint mask: the gradient of either op is the
# backward op applied to the incoming gradient, to any order.


def _setup(ctx, inputs, output):
    _, ctx.p, rng = inputs
    ctx.save_for_backward(rng)


def _backward(ctx, grad):
    (rng,) = ctx.saved_tensors
    return _ops.dropout_backward(grad, ctx.p, rng), None, None


torch.library.register_autograd("fusedops::dropout", _backward, setup_context=_setup)
torch.library.register_autograd("fusedops::dropout_backward", _backward, setup_context=_setup)
