"""embedding: the function, its autograd formula and fake (meta) shapes.

The forward gathers rows; the backward (``embedding_backward``) gives the dense gradient of the
table: a stable counting sort buckets the tokens by row, then each thread owns a range of rows
and writes each once (zeros, or its tokens' gradient rows summed in token order). No atomics:
the same bits for any thread count. The ``padding_idx`` row gets no gradient;
``scale_grad_by_freq`` divides each row's sum by its token count, as torch. ``max_norm`` (which
renormalises rows of the weight in place during the forward) and ``sparse=True`` are not
supported and raise an error saying so. Indices outside ``[0, num_embeddings)`` raise an
IndexError naming the op, the argument and the offending value.
"""
from typing import Optional

import torch

from ._autograd import needs_grad

_ops = torch.ops.fusedops
_OP = "fusedops.embedding"


def check_supported(max_norm, sparse):
    """The arguments fusedops' embedding refuses: max_norm and sparse=True."""
    if max_norm is not None:
        raise NotImplementedError(
            f"{_OP}: max_norm is not supported (renormalising rows of the weight in the forward); "
            f"got max_norm={max_norm}. Use max_norm=None (torch.nn.Embedding does support it)")
    if sparse:
        raise NotImplementedError(f"{_OP}: sparse=True is not supported (the gradient is a dense tensor); "
                                  "use sparse=False")


def embedding(
    input: torch.Tensor,
    weight: torch.Tensor,
    padding_idx: Optional[int] = None,
    max_norm: Optional[float] = None,
    norm_type: float = 2.0,
    scale_grad_by_freq: bool = False,
    sparse: bool = False,
) -> torch.Tensor:
    """``torch.nn.functional.embedding``: ``weight[input]`` for int64 or int32 indices of any
    shape, result ``input.shape + [embedding_dim]``."""
    check_supported(max_norm, sparse)
    return _ops.embedding(input, weight, padding_idx, max_norm, norm_type, scale_grad_by_freq, sparse)


# ---- fake (meta) implementations -------------------------------------------------------------


@torch.library.register_fake("fusedops::embedding")
def _embedding_fake(input, weight, padding_idx=None, max_norm=None, norm_type=2.0, scale_grad_by_freq=False,
                    sparse=False):
    torch._check(weight.dim() == 2, lambda: f"{_OP}: weight must be 2-D [num_embeddings, embedding_dim]")
    return weight.new_empty((*input.shape, weight.shape[1]))


@torch.library.register_fake("fusedops::embedding_backward")
def _embedding_backward_fake(grad_output, input, num_weights, padding_idx, scale_grad_by_freq):
    return grad_output.new_empty((num_weights, grad_output.shape[-1]))


# ---- autograd -------------------------------------------------------------------------------


def _setup(ctx, inputs, output):
    defaults = [None, None, 2.0, False, False]  # trailing arguments left at their defaults
    input, weight, padding_idx, _, _, scale_grad_by_freq, _ = list(inputs) + defaults[len(inputs) - 2:]
    ctx.num_weights = weight.shape[0]
    ctx.padding_idx = padding_idx
    ctx.scale_grad_by_freq = scale_grad_by_freq
    ctx.save_for_backward(input)


def _backward(ctx, grad):
    (input,) = ctx.saved_tensors
    gw = None
    if needs_grad(ctx, 2)[1]:
        gw = _ops.embedding_backward(grad, input, ctx.num_weights, ctx.padding_idx, ctx.scale_grad_by_freq)
    return None, gw, None, None, None, None, None


torch.library.register_autograd("fusedops::embedding", _backward, setup_context=_setup)
