import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from .. import ops
from .linear import Linear


class MultiheadAttention(torch.nn.MultiheadAttention):
    """``torch.nn.MultiheadAttention`` computed by fusedops kernels.

    A subclass of ``torch.nn.MultiheadAttention``: same constructor, parameters
    (``in_proj_weight`` or ``q_proj_weight``/``k_proj_weight``/``v_proj_weight`` when kdim/vdim
    differ, ``in_proj_bias``, ``bias_k``/``bias_v``, ``out_proj``), initialisation and
    state_dict, so ``load_state_dict`` between the two just works. The projections run through
    fusedops linear kernels (``out_proj`` is a ``fusedops.nn.Linear``) and attention through the
    fused flash kernel (``fusedops.ops.scaled_dot_product_attention``).

    ``need_weights=True`` (torch's default) also returns the attention weights, averaged over
    heads unless ``average_attn_weights=False``; computing them forms the [L, S] matrix. With
    weights requested and dropout active (training, ``dropout > 0``) the whole attention runs in
    torch ops, so that the returned weights are the dropped-out ones the output used, as in
    torch. A query whose keys are all masked gives zeros where torch's math gives NaN.
    """

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, add_bias_kv=False,
                 add_zero_attn=False, kdim=None, vdim=None, batch_first=False, device=None,
                 dtype=None) -> None:
        super().__init__(embed_dim, num_heads, dropout, bias, add_bias_kv, add_zero_attn, kdim,
                         vdim, batch_first, device, dtype)
        # torch's out_proj (initialised as torch does), re-homed in a fusedops Linear
        old = self.out_proj
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias, device=device, dtype=dtype)
        with torch.no_grad():
            self.out_proj.weight.copy_(old.weight)
            if bias:
                self.out_proj.bias.copy_(old.bias)

    def _projections(self, query, key, value):
        E = self.embed_dim
        if self._qkv_same_embed_dim:
            w = self.in_proj_weight
            b = self.in_proj_bias
            bq, bk, bv = (None, None, None) if b is None else b.split(E)
            if query is key and key is value:
                qkv = ops.linear(query, w, b)
                return qkv.split(E, dim=-1)
            wq, wk, wv = w.split(E)
            return ops.linear(query, wq, bq), ops.linear(key, wk, bk), ops.linear(value, wv, bv)
        b = self.in_proj_bias
        bq, bk, bv = (None, None, None) if b is None else b.split(E)
        return (ops.linear(query, self.q_proj_weight, bq), ops.linear(key, self.k_proj_weight, bk),
                ops.linear(value, self.v_proj_weight, bv))

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: Optional[torch.Tensor] = None,
        need_weights: bool = True,
        attn_mask: Optional[torch.Tensor] = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        name = "fusedops.nn.MultiheadAttention"
        if query.dim() not in (2, 3):
            raise ValueError(f"{name}: query must be 2-D (unbatched) or 3-D, got shape {tuple(query.shape)}")
        batched = query.dim() == 3
        if key.dim() != query.dim() or value.dim() != query.dim():
            raise ValueError(f"{name}: query, key and value must have the same number of "
                             f"dimensions, got {query.dim()}, {key.dim()} and {value.dim()}")
        if not batched:
            query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        bf = self.batch_first or not batched  # [N, L, E] (else [L, N, E]: no transposes made)
        N, L, E = query.shape if bf else (query.shape[1], query.shape[0], query.shape[2])
        if E != self.embed_dim:
            raise ValueError(f"{name}: query's embedding dim must be {self.embed_dim}, got {E}")
        H, hd = self.num_heads, self.head_dim

        key_padding_mask = F._canonical_mask(
            mask=key_padding_mask, mask_name="key_padding_mask",
            other_type=F._none_or_dtype(attn_mask), other_name="attn_mask",
            target_type=query.dtype)
        if is_causal and attn_mask is None:
            raise RuntimeError(f"{name}: need attn_mask if specifying the is_causal hint (as torch)")
        causal = False
        if is_causal and key_padding_mask is None and not need_weights:
            attn_mask = None
            causal = True
        else:
            attn_mask = F._canonical_mask(
                mask=attn_mask, mask_name="attn_mask", other_type=None, other_name="",
                target_type=query.dtype, check_other=False)

        q, k, v = self._projections(query, key, value)
        sd = 1 if bf else 0  # the sequence dimension
        if self.bias_k is not None:
            shape = (N, 1, E) if bf else (1, N, E)
            k = torch.cat([k, self.bias_k.reshape(1, 1, E).expand(shape)], dim=sd)
            v = torch.cat([v, self.bias_v.reshape(1, 1, E).expand(shape)], dim=sd)
            if attn_mask is not None:
                attn_mask = F.pad(attn_mask, (0, 1))
            if key_padding_mask is not None:
                key_padding_mask = F.pad(key_padding_mask, (0, 1))

        def heads(x):  # -> [N, H, T, hd], a strided view
            T = x.shape[sd]
            if bf:
                return x.reshape(N, T, H, hd).transpose(1, 2)
            return x.reshape(T, N, H, hd).permute(1, 2, 0, 3)

        q, k, v = heads(q), heads(k), heads(v)
        if self.add_zero_attn:
            k = torch.cat([k, k.new_zeros(N, H, 1, hd)], dim=2)
            v = torch.cat([v, v.new_zeros(N, H, 1, hd)], dim=2)
            if attn_mask is not None:
                attn_mask = F.pad(attn_mask, (0, 1))
            if key_padding_mask is not None:
                key_padding_mask = F.pad(key_padding_mask, (0, 1))
        S = k.shape[2]

        mask = None
        if attn_mask is not None:
            if attn_mask.dim() == 2:
                if attn_mask.shape != (L, S):
                    raise RuntimeError(f"{name}: the shape of the 2D attn_mask is "
                                       f"{tuple(attn_mask.shape)}, but should be {(L, S)}")
                mask = attn_mask
            elif attn_mask.dim() == 3:
                if attn_mask.shape != (N * H, L, S):
                    raise RuntimeError(f"{name}: the shape of the 3D attn_mask is "
                                       f"{tuple(attn_mask.shape)}, but should be {(N * H, L, S)}")
                mask = attn_mask.view(N, H, L, S)
            else:
                raise RuntimeError(f"{name}: attn_mask must be 2-D or 3-D, got {attn_mask.dim()}-D")
        if key_padding_mask is not None:
            if key_padding_mask.shape != (N, S):
                raise RuntimeError(f"{name}: key_padding_mask must have shape {(N, S)}, "
                                   f"got {tuple(key_padding_mask.shape)}")
            kpm = key_padding_mask.view(N, 1, 1, S)
            mask = kpm if mask is None else mask + kpm

        p = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            scores = q @ k.transpose(-2, -1) * (1.0 / math.sqrt(hd))
            if mask is not None:
                scores = scores + mask
            weights = torch.softmax(scores, dim=-1)
            if p > 0.0:  # the output must use these very (dropped-out) weights, as torch
                weights = F.dropout(weights, p=p)
                out = weights @ v
            else:
                out = ops.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            if average_attn_weights:
                weights = weights.mean(dim=1)
        else:
            out = ops.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p,
                                                   is_causal=causal)
        if bf:
            out = self.out_proj(out.transpose(1, 2).reshape(N, L, E))
        else:
            out = self.out_proj(out.permute(2, 0, 1, 3).reshape(L, N, E))
        if not batched:
            out = out.squeeze(0)
            if weights is not None:
                weights = weights.squeeze(0)
        return out, weights
