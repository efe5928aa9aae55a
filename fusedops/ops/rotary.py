"""rotary_embedding (out of place, differentiable) and rotary_embedding_ (in place, for inference
and no-grad use): rotary position embedding in the rotate-half convention of GPT-NeoX and
Hugging Face Llama, ``x * cos + rotate_half(x) * sin`` for q and k together.

Why two ops. torch.library gives no autograd formula to an op that mutates its inputs
(``register_autograd`` refuses schemas with ``Tensor(a!)`` arguments), and a hand-written
in-place autograd.Function would give up what a custom op has (opcheck, torch.compile,
fake tensors). So training uses the functional op, which reads the strided q/k views in place
and writes fresh contiguous outputs (the layout attention reads next); its backward is one
more op, ``rotary_embedding_backward``: the same kernel applying the transposed rotation (by
-theta) to the incoming gradients. Inference uses ``rotary_embedding_``, which rotates the q/k
views where they lie and allocates nothing.
"""
from typing import Tuple

import torch

from ._autograd import needs_grad
from ._registry import register_autocast_cpu_keep, register_fake

_ops = torch.ops.fusedops


def rotary_embedding(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor,
                     sin: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin)``, Hugging Face's
    ``apply_rotary_pos_emb`` with cos/sin unsqueezed at dim 1. q: [B, Hq, T, D]; k:
    [B, Hk, T, D] (Hk may differ: grouped-query attention); cos, sin: [T, R], [B, T, R] or
    [B, 1, T, R] (batch 1 or B), R even and at most D: with R < D the first R features of each
    head rotate and the rest pass through (partial rotary, as GPT-NeoX's rotary_pct). q and k
    may be strided views (a [B, T, H, D] projection transposed) and are read without a copy;
    the outputs are contiguous. cos and sin are not differentiated (as in Hugging Face, where
    they are computed without grad)."""
    if torch.is_grad_enabled() and (cos.requires_grad or sin.requires_grad):
        raise RuntimeError("fusedops.rotary_embedding: gradients with respect to cos and sin are not "
                           "supported; pass them detached (q and k may require grad)")
    return _ops.rotary_embedding(q, k, cos, sin)


def rotary_embedding_(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor,
                      sin: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """:func:`rotary_embedding` written over q and k in place (returns them). For inference and
    ``torch.no_grad``: it has no backward, so q and k must not require grad. cos and sin of
    another dtype are cast to q's (the result keeps q's dtype, unlike the promoting
    out-of-place form)."""
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad):
        raise RuntimeError("fusedops.rotary_embedding_: q and k require grad, and the in-place rotation has "
                           "no backward; use fusedops.ops.rotary_embedding when training")
    if cos.dtype != q.dtype:
        cos = cos.to(q.dtype)
    if sin.dtype != q.dtype:
        sin = sin.to(q.dtype)
    _ops.rotary_embedding_(q, k, cos, sin)
    return q, k


# ---- fake (meta) implementations -------------------------------------------------------------


def _check(q, k, cos, sin, op, q_name="q", k_name="k"):
    torch._check(q.dim() == 4, lambda: f"fusedops.{op}: {q_name} must be 4-D [batch, heads, positions, head_dim], "
                 f"got shape {list(q.shape)}")
    torch._check(k.dim() == 4 and k.shape[0] == q.shape[0] and k.shape[2:] == q.shape[2:],
                 lambda: f"fusedops.{op}: {k_name} must be 4-D [batch, kv_heads, positions, head_dim] with "
                 f"{q_name}'s batch, positions and head_dim {list(q.shape)}, got shape {list(k.shape)}")
    torch._check(cos.shape == sin.shape, lambda: f"fusedops.{op}: sin must have the shape of cos")
    torch._check(2 <= cos.dim() <= 4, lambda: f"fusedops.{op}: cos must have shape [T, R], [B, T, R] or [B, 1, T, R]")
    for name, t in ((k_name, k), ("cos", cos), ("sin", sin)):
        torch._check(t.dtype == q.dtype, lambda: f"fusedops.{op}: {name} must have the dtype of {q_name}")
    r = cos.shape[-1]
    torch._check(r % 2 == 0 and 2 <= r <= q.shape[3],
                 lambda: f"fusedops.{op}: cos's last dimension (the rotary dimension) must be even, at least 2 "
                 f"and at most the head dimension")


@register_fake("fusedops::rotary_embedding")
def _rotary_embedding_fake(q, k, cos, sin):
    _check(q, k, cos, sin, "rotary_embedding")
    return q.new_empty(q.shape), k.new_empty(k.shape)


@register_fake("fusedops::rotary_embedding_")
def _rotary_embedding_inplace_fake(q, k, cos, sin):
    _check(q, k, cos, sin, "rotary_embedding_")


@register_fake("fusedops::rotary_embedding_backward")
def _rotary_embedding_backward_fake(grad_q, grad_k, cos, sin):
    torch._check(grad_q is not None or grad_k is not None,
                 lambda: "fusedops.rotary_embedding_backward: grad_q and grad_k must not both be None")
    gq = grad_q if grad_q is not None else grad_k
    gk = grad_k if grad_k is not None else grad_q
    _check(gq, gk, cos, sin, "rotary_embedding_backward", "grad_q", "grad_k")
    return (None if grad_q is None else grad_q.new_empty(grad_q.shape),
            None if grad_k is None else grad_k.new_empty(grad_k.shape))


# ---- autograd -------------------------------------------------------------------------------


def _table4(t):
    # cos / sin as [B or 1, 1, T, R], broadcasting against [B, H, T, R]
    return t if t.dim() == 4 else (t.unsqueeze(1) if t.dim() == 3 else t[None, None])


def _rotate_back(g, cos, sin):
    """The transposed rotation as torch ops (differentiable: the double-backward path)."""
    c, s = _table4(cos), _table4(sin)
    r = c.shape[-1]
    h = r // 2
    gr = g[..., :r]
    gs = gr * s
    out = gr * c + torch.cat((gs[..., h:], -gs[..., :h]), dim=-1)
    return out if r == g.shape[-1] else torch.cat((out, g[..., r:]), dim=-1)


def _setup(ctx, inputs, output):
    _, _, cos, sin = inputs
    ctx.save_for_backward(cos, sin)


def _backward(ctx, grad_q, grad_k):
    cos, sin = ctx.saved_tensors
    nig = needs_grad(ctx, 4)
    if nig[2] or nig[3]:
        raise RuntimeError("fusedops.rotary_embedding: gradients with respect to cos and sin are not supported")
    if torch.is_grad_enabled():
        gq = _rotate_back(grad_q, cos, sin) if nig[0] else None
        gk = _rotate_back(grad_k, cos, sin) if nig[1] else None
        return gq, gk, None, None
    gq, gk = _ops.rotary_embedding_backward(grad_q if nig[0] else None, grad_k if nig[1] else None, cos, sin)
    return gq, gk, None, None


torch.library.register_autograd("fusedops::rotary_embedding", _backward, setup_context=_setup)


# ---- autocast -------------------------------------------------------------------------------
# q, k, cos and sin are promoted to a common dtype first (bfloat16 q and k with float32 cos and
# sin compute and return float32, as Hugging Face's composite does under autocast). The in-place
# op has no autocast rule: it keeps q's dtype (rotary_embedding_ casts cos and sin to it).

register_autocast_cpu_keep("rotary_embedding", activations=(0, 1, 2, 3))
