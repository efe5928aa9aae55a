"""scaled_dot_product_attention: the function, its autograd formula and fake (meta) shapes.

Flash attention in our kernels: the forward streams blocks of keys through an online softmax
and saves the log-sum-exp of every query row; the backward (`scaled_dot_product_attention_backward`)
recomputes the probabilities block by block. No [L, S] matrix exists at any point.

Semantics are those of ``torch.nn.functional.scaled_dot_product_attention``, with one
deliberate difference: a query row whose keys are all masked out by ``attn_mask`` (or a key
sequence of length 0) gives an output of zeros and zero gradients, where torch's reference
math gives NaN. (Top-left causal masking alone never hides every key: query i sees key 0.)

Dropout draws a (seed, offset) pair from torch's default generator on every call and hands it
to the op, whose counter-based hash decides each (batch, head, query, key) element; the
backward regenerates the same decisions, and ``torch.manual_seed`` makes results reproducible.
The mask itself is never stored.

Higher-order gradients (``create_graph=True``) differentiate a torch composite of the same
math (it forms [L, S]); they are not available with dropout.
"""
import math
from typing import Optional

import torch

from ._autograd import needs_grad
from ._registry import register_autocast_cpu_lowp

_ops = torch.ops.fusedops
_OP = "fusedops.scaled_dot_product_attention"


def _draw_rng() -> torch.Tensor:
    """(seed, offset) for the dropout hash, from torch's default generator."""
    return torch.randint(0, 2**62, (2,), dtype=torch.int64)


def scaled_dot_product_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: Optional[torch.Tensor] = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: Optional[float] = None,
    enable_gqa: bool = False,
) -> torch.Tensor:
    """``softmax(query @ key.transpose(-2, -1) * scale + mask) @ value`` as
    ``torch.nn.functional.scaled_dot_product_attention``, fused (flash attention).

    query [..., L, E], key [..., S, E], value [..., S, Ev] (batch dimensions of key/value equal
    to query's or 1); attn_mask bool (True takes part) or additive of query's dtype,
    broadcastable to [..., L, S]; is_causal: query i sees keys j <= i (top-left aligned, as
    torch); scale defaults to 1/sqrt(E); enable_gqa: key/value may have fewer heads (dim -3)
    than query, each serving a group of query heads. A query row with no visible key gives
    zeros (torch gives NaN there) and zero gradients.
    """
    if is_causal and attn_mask is not None:
        raise ValueError(f"{_OP}: attn_mask must be None when is_causal=True (as in torch)")
    rng = _draw_rng() if dropout_p > 0.0 else None
    return _ops.scaled_dot_product_attention(
        query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa, rng
    )[0]


def reference_attention(query, key, value, attn_mask=None, is_causal=False, scale=None,
                        enable_gqa=False):
    """The same math in torch ops, forming [L, S] (for higher-order gradients and tests);
    rows with no visible key give zeros. No dropout."""
    L, S = query.shape[-2], key.shape[-2]
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    if enable_gqa and query.dim() >= 3 and key.shape[-3] != query.shape[-3]:
        key = key.repeat_interleave(query.shape[-3] // key.shape[-3], dim=-3)
    if enable_gqa and query.dim() >= 3 and value.shape[-3] != query.shape[-3]:
        value = value.repeat_interleave(query.shape[-3] // value.shape[-3], dim=-3)
    scores = query @ key.transpose(-2, -1) * scale
    visible = torch.ones(L, S, dtype=torch.bool, device=query.device)
    if is_causal:
        visible = visible.tril()
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            visible = visible & attn_mask
        else:
            scores = scores + attn_mask
    visible = visible.expand(scores.shape)
    scores = scores.masked_fill(~visible, float("-inf"))
    any_visible = (scores > float("-inf")).any(-1, keepdim=True)
    scores = scores.masked_fill(~any_visible, 0.0)
    p = torch.softmax(scores, dim=-1).masked_fill(~any_visible, 0.0)
    return p @ value


# ---- fake (meta) implementations -------------------------------------------------------------


def _check_shapes(q, k, v, attn_mask, enable_gqa, op=_OP):
    torch._check(q.dim() >= 2, lambda: f"{op}: query must have at least 2 dimensions [..., L, E]")
    torch._check(
        k.dim() == q.dim() and v.dim() == q.dim(),
        lambda: f"{op}: query, key and value must have the same number of dimensions",
    )
    torch._check(k.shape[-1] == q.shape[-1], lambda: f"{op}: key's head dim must equal query's")
    torch._check(
        v.shape[-2] == k.shape[-2], lambda: f"{op}: value's sequence length must equal key's"
    )
    for d in range(q.dim() - 2):
        for t in (k, v):
            if enable_gqa and d == q.dim() - 3:
                torch._check(q.shape[d] % t.shape[d] == 0,
                             lambda: f"{op}: with enable_gqa, key/value head counts must divide query's")
            else:
                torch._check(t.shape[d] == q.shape[d] or t.shape[d] == 1,
                             lambda: f"{op}: key/value batch dimensions must equal query's or be 1")
    if attn_mask is not None:
        torch._check(
            attn_mask.dtype == torch.bool or attn_mask.dtype == q.dtype,
            lambda: f"{op}: attn_mask must be bool or have query's dtype",
        )


@torch.library.register_fake("fusedops::scaled_dot_product_attention")
def _sdpa_fake(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
               enable_gqa=False, rng=None):
    _check_shapes(query, key, value, attn_mask, enable_gqa)
    out = query.new_empty((*query.shape[:-1], value.shape[-1]))
    # the log-sum-exp is float32 for 16-bit inputs, else query's dtype
    lse_dtype = torch.float32 if query.dtype in (torch.float16, torch.bfloat16) else query.dtype
    return out, query.new_empty(query.shape[:-1], dtype=lse_dtype)


@torch.library.register_fake("fusedops::scaled_dot_product_attention_backward")
def _sdpa_backward_fake(grad_out, query, key, value, out, logsumexp, attn_mask, dropout_p,
                        is_causal, scale, enable_gqa, rng, output_mask):
    return (
        query.new_empty(query.shape) if output_mask[0] else None,
        key.new_empty(key.shape) if output_mask[1] else None,
        value.new_empty(value.shape) if output_mask[2] else None,
    )


# ---- autograd -------------------------------------------------------------------------------



def _sdpa_setup(ctx, inputs, output):
    args = list(inputs) + [None, 0.0, False, None, False, None][len(inputs) - 3:]
    query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa, rng = args[:9]
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(query, key, value, attn_mask, output[0], output[1], rng)
    ctx.args = (dropout_p, is_causal, scale, enable_gqa)


def _sdpa_backward(ctx, grad, _grad_lse):
    query, key, value, attn_mask, out, lse, rng = ctx.saved_tensors
    dropout_p, is_causal, scale, enable_gqa = ctx.args
    needs = needs_grad(ctx, 4)
    if needs[3]:
        raise NotImplementedError(f"{_OP}: no gradient with respect to attn_mask")
    none = (None,) * 5
    if grad is None:
        grad = torch.zeros_like(out)
    if torch.is_grad_enabled():
        if dropout_p > 0.0:
            raise NotImplementedError(f"{_OP}: higher-order gradients are not available with dropout")
        with torch.enable_grad():
            ins = (query, key, value)
            res = reference_attention(query, key, value, attn_mask, is_causal, scale, enable_gqa)
            wrt = [t for t, n in zip(ins, needs) if n]
            got = iter(torch.autograd.grad(res, wrt, grad, create_graph=True, allow_unused=True))
        return (*[next(got) if n else None for n in needs[:3]], None, *none)
    dq, dk, dv = _ops.scaled_dot_product_attention_backward(
        grad, query, key, value, out, lse, attn_mask, dropout_p, is_causal, scale, enable_gqa,
        rng, needs[:3],
    )
    return dq, dk, dv, None, *none


torch.library.register_autograd(
    "fusedops::scaled_dot_product_attention", _sdpa_backward, setup_context=_sdpa_setup
)

# Under CPU autocast q, k, v (and a float mask) go to bfloat16 and the bf16 kernel runs (fp32
# arithmetic on operands widened while packed, the online softmax and log-sum-exp in fp32):
# torch's policy for attention on the CPU, which returns the autocast dtype.
register_autocast_cpu_lowp("scaled_dot_product_attention", bf16_args=(0, 1, 2, 3))
