"""Transformer layers: ``TransformerEncoderLayer``, ``TransformerDecoderLayer``,
``TransformerEncoder``, ``TransformerDecoder`` and ``Transformer``, computed by fusedops kernels.

Each is a subclass of its torch.nn counterpart with the same constructor (``batch_first``,
``norm_first``, ``activation`` as "relu", "gelu" or a callable, ``dropout``,
``layer_norm_eps``, ``bias``), parameters in torch's registration order, initialisation and
state_dict keys, so ``load_state_dict`` moves weights both ways. What runs in our kernels:
attention (``fusedops.nn.MultiheadAttention``: the projections in our GEMM, the flash kernel
with masks, key-padding masks and causal masks), the feed-forward's first Linear with its ReLU
or GELU fused into the GEMM epilogue (a callable activation runs after a plain Linear), and
every residual add fused into the LayerNorm that follows it (``fusedops.ops.add_layer_norm``):
after each sublayer in a post-norm layer, between sublayers in a pre-norm one.

Differences from torch: ``TransformerEncoder`` never converts to nested tensors (its
``enable_nested_tensor`` is accepted and ignored), so with a key-padding mask in eval mode the
padded positions hold computed values where torch's fast path gives zeros; the other
positions agree. A query whose keys are all masked gives zeros where torch gives NaN.
The dropout modules are fusedops.nn.Dropout (a counter-hash mask, regenerated in the backward).
"""
import copy
from typing import Optional

import torch
import torch.nn.functional as F

from .. import ops
from .attention import MultiheadAttention
from .dropout import Dropout
from .linear import Linear
from .norm import LayerNorm


def _check_heads(name: str, d_model: int, nhead: int) -> None:
    if type(d_model) is not int or d_model < 1 or type(nhead) is not int or nhead < 1:
        raise ValueError(f"fusedops.nn.{name}: d_model and nhead must be positive integers, "
                         f"got d_model={d_model!r}, nhead={nhead!r}")
    if d_model % nhead:
        raise ValueError(f"fusedops.nn.{name}: d_model ({d_model}) must be divisible by nhead "
                         f"({nhead})")


def _rehome(module: torch.nn.Module, fused: torch.nn.Module) -> torch.nn.Module:
    """``fused`` (built on the meta device) holding ``module``'s very parameters: torch's
    initialisation and random stream stay exactly as torch's constructor left them."""
    fused.load_state_dict(module.state_dict(keep_vars=True), assign=True)
    return fused


def _fused_mha(mha: torch.nn.MultiheadAttention) -> MultiheadAttention:
    p = mha.in_proj_weight
    fused = MultiheadAttention(mha.embed_dim, mha.num_heads, dropout=mha.dropout,
                               bias=mha.in_proj_bias is not None, batch_first=mha.batch_first,
                               device="meta", dtype=p.dtype)
    return _rehome(mha, fused)


def _fused_linear(fc: torch.nn.Linear) -> Linear:
    return _rehome(fc, Linear(fc.in_features, fc.out_features, bias=fc.bias is not None,
                              device="meta", dtype=fc.weight.dtype))


def _fused_norm(ln: torch.nn.LayerNorm) -> LayerNorm:
    return _rehome(ln, LayerNorm(ln.normalized_shape, eps=ln.eps,
                                 elementwise_affine=ln.elementwise_affine,
                                 bias=ln.bias is not None, device="meta",
                                 dtype=ln.weight.dtype if ln.weight is not None else None))


def _epilogue(activation) -> Optional[str]:
    """The GEMM-epilogue name of an activation we fuse, or None (a callable runs after)."""
    if activation is F.relu or isinstance(activation, torch.nn.ReLU):
        return "relu"
    if activation is F.gelu:
        return "gelu"
    if isinstance(activation, torch.nn.GELU):
        return "gelu" if activation.approximate == "none" else "gelu_tanh"
    return None


class _FusedLayer:
    """What the encoder and decoder layers share: checks, residual-add LayerNorm, feed-forward."""

    def _check_input(self, x: torch.Tensor, what: str) -> None:
        d = self.linear1.in_features
        if x.dim() not in (2, 3) or x.shape[-1] != d:
            raise ValueError(f"fusedops.nn.{type(self).__name__}: {what} must be [S, N, {d}], "
                             f"[N, S, {d}] (batch_first) or [S, {d}] (unbatched), got shape "
                             f"{list(x.shape)}")

    @staticmethod
    def _add_norm(x, residual, norm):
        """(norm(x + residual), x + residual) in one pass."""
        return ops.add_layer_norm(x, residual, norm.normalized_shape, norm.weight, norm.bias,
                                  norm.eps)

    def _ff_block(self, x):
        act = _epilogue(self.activation)
        fc = self.linear1
        if act is not None:
            h = ops.linear(x, fc.weight, fc.bias, activation=act)
        else:
            h = self.activation(fc(x))
        return self.dropout_ff(self.linear2(self.dropout(h)))

    def _fuse_submodules(self, names):
        for name in names:
            m = getattr(self, name)
            if isinstance(m, torch.nn.MultiheadAttention):
                setattr(self, name, _fused_mha(m))
            elif isinstance(m, torch.nn.Linear):
                setattr(self, name, _fused_linear(m))
            elif isinstance(m, torch.nn.LayerNorm):
                setattr(self, name, _fused_norm(m))
        # torch's dropout modules (no parameters) become ours: the mask from the counter hash
        for name, m in list(self.named_children()):
            if type(m) is torch.nn.Dropout:
                setattr(self, name, Dropout(m.p, m.inplace))


class TransformerEncoderLayer(_FusedLayer, torch.nn.TransformerEncoderLayer):
    """``torch.nn.TransformerEncoderLayer`` computed by fusedops kernels (see the module doc)."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048,
                 dropout: float = 0.1, activation=F.relu, layer_norm_eps: float = 1e-5,
                 batch_first: bool = False, norm_first: bool = False, bias: bool = True,
                 device=None, dtype=None) -> None:
        _check_heads("TransformerEncoderLayer", d_model, nhead)
        super().__init__(d_model, nhead, dim_feedforward, dropout, activation, layer_norm_eps,
                         batch_first, norm_first, bias, device, dtype)
        self._fuse_submodules(("self_attn", "linear1", "linear2", "norm1", "norm2"))

    @property
    def dropout_ff(self):
        return self.dropout2

    def forward(self, src: torch.Tensor, src_mask: Optional[torch.Tensor] = None,
                src_key_padding_mask: Optional[torch.Tensor] = None,
                is_causal: bool = False) -> torch.Tensor:
        self._check_input(src, "src")
        x = src
        if self.norm_first:
            a = self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            h, x = self._add_norm(a, x, self.norm2)  # x += attention; h = norm2(x)
            return x + self._ff_block(h)
        x, _ = self._add_norm(self._sa_block(x, src_mask, src_key_padding_mask, is_causal), x,
                              self.norm1)
        x, _ = self._add_norm(self._ff_block(x), x, self.norm2)
        return x


class TransformerDecoderLayer(_FusedLayer, torch.nn.TransformerDecoderLayer):
    """``torch.nn.TransformerDecoderLayer`` computed by fusedops kernels (see the module doc)."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048,
                 dropout: float = 0.1, activation=F.relu, layer_norm_eps: float = 1e-5,
                 batch_first: bool = False, norm_first: bool = False, bias: bool = True,
                 device=None, dtype=None) -> None:
        _check_heads("TransformerDecoderLayer", d_model, nhead)
        super().__init__(d_model, nhead, dim_feedforward, dropout, activation, layer_norm_eps,
                         batch_first, norm_first, bias, device, dtype)
        self._fuse_submodules(("self_attn", "multihead_attn", "linear1", "linear2", "norm1",
                               "norm2", "norm3"))

    @property
    def dropout_ff(self):
        return self.dropout3

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor,
                tgt_mask: Optional[torch.Tensor] = None,
                memory_mask: Optional[torch.Tensor] = None,
                tgt_key_padding_mask: Optional[torch.Tensor] = None,
                memory_key_padding_mask: Optional[torch.Tensor] = None,
                tgt_is_causal: bool = False, memory_is_causal: bool = False) -> torch.Tensor:
        self._check_input(tgt, "tgt")
        self._check_input(memory, "memory")
        if memory.dim() != tgt.dim():
            raise ValueError(f"fusedops.nn.TransformerDecoderLayer: tgt and memory must both be "
                             f"batched or both unbatched, got {tgt.dim()}-D and {memory.dim()}-D")
        x = tgt
        if self.norm_first:
            a = self._sa_block(self.norm1(x), tgt_mask, tgt_key_padding_mask, tgt_is_causal)
            h, x = self._add_norm(a, x, self.norm2)
            c = self._mha_block(h, memory, memory_mask, memory_key_padding_mask,
                                memory_is_causal)
            h, x = self._add_norm(c, x, self.norm3)
            return x + self._ff_block(h)
        x, _ = self._add_norm(self._sa_block(x, tgt_mask, tgt_key_padding_mask, tgt_is_causal),
                              x, self.norm1)
        x, _ = self._add_norm(self._mha_block(x, memory, memory_mask, memory_key_padding_mask,
                                              memory_is_causal), x, self.norm2)
        x, _ = self._add_norm(self._ff_block(x), x, self.norm3)
        return x


def _causal_hint(mask: Optional[torch.Tensor], is_causal: Optional[bool], size: int) -> bool:
    """torch's rule: an explicit hint wins; otherwise a [size, size] mask equal to the causal
    one (bool or additive) counts as causal."""
    if is_causal is not None:
        return bool(is_causal)
    if mask is None or mask.dim() != 2 or mask.shape != (size, size):
        return False
    causal = torch.nn.Transformer.generate_square_subsequent_mask(size, device=mask.device,
                                                                  dtype=mask.dtype
                                                                  if mask.is_floating_point()
                                                                  else torch.float32)
    if mask.dtype == torch.bool:
        return bool(torch.equal(mask, causal.isinf()))
    return bool(torch.equal(mask, causal))


class TransformerEncoder(torch.nn.TransformerEncoder):
    """``torch.nn.TransformerEncoder`` over fusedops layers: ``num_layers`` deep copies of
    ``encoder_layer`` (a ``fusedops.nn.TransformerEncoderLayer``), then ``norm``. Never uses
    nested tensors (``enable_nested_tensor`` is ignored)."""

    def __init__(self, encoder_layer, num_layers: int, norm: Optional[torch.nn.Module] = None,
                 enable_nested_tensor: bool = True, mask_check: bool = True) -> None:
        if not isinstance(encoder_layer, TransformerEncoderLayer):
            raise TypeError("fusedops.nn.TransformerEncoder: encoder_layer must be a "
                            f"fusedops.nn.TransformerEncoderLayer, got {type(encoder_layer).__name__}")
        if type(num_layers) is not int or num_layers < 1:
            raise ValueError(f"fusedops.nn.TransformerEncoder: num_layers must be a positive "
                             f"integer, got {num_layers!r}")
        torch.nn.Module.__init__(self)
        self.layers = torch.nn.ModuleList(copy.deepcopy(encoder_layer) for _ in range(num_layers))
        self.num_layers = num_layers
        self.norm = norm
        self.enable_nested_tensor = enable_nested_tensor
        self.use_nested_tensor = False
        self.mask_check = mask_check

    def forward(self, src: torch.Tensor, mask: Optional[torch.Tensor] = None,
                src_key_padding_mask: Optional[torch.Tensor] = None,
                is_causal: Optional[bool] = None) -> torch.Tensor:
        first = self.layers[0]
        seq = src.shape[1] if first.self_attn.batch_first and src.dim() == 3 else src.shape[0]
        is_causal = _causal_hint(mask, is_causal, seq)
        out = src
        for layer in self.layers:
            out = layer(out, src_mask=mask, src_key_padding_mask=src_key_padding_mask,
                        is_causal=is_causal)
        return out if self.norm is None else self.norm(out)


class TransformerDecoder(torch.nn.TransformerDecoder):
    """``torch.nn.TransformerDecoder`` over fusedops layers: ``num_layers`` deep copies of
    ``decoder_layer`` (a ``fusedops.nn.TransformerDecoderLayer``), then ``norm``."""

    def __init__(self, decoder_layer, num_layers: int,
                 norm: Optional[torch.nn.Module] = None) -> None:
        if not isinstance(decoder_layer, TransformerDecoderLayer):
            raise TypeError("fusedops.nn.TransformerDecoder: decoder_layer must be a "
                            f"fusedops.nn.TransformerDecoderLayer, got {type(decoder_layer).__name__}")
        if type(num_layers) is not int or num_layers < 1:
            raise ValueError(f"fusedops.nn.TransformerDecoder: num_layers must be a positive "
                             f"integer, got {num_layers!r}")
        super().__init__(decoder_layer, num_layers, norm)

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor,
                tgt_mask: Optional[torch.Tensor] = None,
                memory_mask: Optional[torch.Tensor] = None,
                tgt_key_padding_mask: Optional[torch.Tensor] = None,
                memory_key_padding_mask: Optional[torch.Tensor] = None,
                tgt_is_causal: Optional[bool] = None,
                memory_is_causal: bool = False) -> torch.Tensor:
        first = self.layers[0]
        seq = tgt.shape[1] if first.self_attn.batch_first and tgt.dim() == 3 else tgt.shape[0]
        tgt_is_causal = _causal_hint(tgt_mask, tgt_is_causal, seq)
        out = tgt
        for layer in self.layers:
            out = layer(out, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                        tgt_key_padding_mask=tgt_key_padding_mask,
                        memory_key_padding_mask=memory_key_padding_mask,
                        tgt_is_causal=tgt_is_causal, memory_is_causal=memory_is_causal)
        return out if self.norm is None else self.norm(out)


class Transformer(torch.nn.Transformer):
    """``torch.nn.Transformer`` over fusedops layers: same constructor (``custom_encoder`` and
    ``custom_decoder`` included), parameters, Xavier initialisation of every matrix, state_dict
    and ``forward``; the final encoder and decoder norms are ``fusedops.nn.LayerNorm``."""

    def __init__(self, d_model: int = 512, nhead: int = 8, num_encoder_layers: int = 6,
                 num_decoder_layers: int = 6, dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation=F.relu, custom_encoder=None, custom_decoder=None,
                 layer_norm_eps: float = 1e-5, batch_first: bool = False,
                 norm_first: bool = False, bias: bool = True, device=None, dtype=None) -> None:
        _check_heads("Transformer", d_model, nhead)
        torch.nn.Module.__init__(self)
        factory = {"device": device, "dtype": dtype}
        if custom_encoder is not None:
            self.encoder = custom_encoder
        else:
            layer = TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout, activation,
                                            layer_norm_eps, batch_first, norm_first, bias,
                                            **factory)
            norm = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory)
            self.encoder = TransformerEncoder(layer, num_encoder_layers, norm)
        if custom_decoder is not None:
            self.decoder = custom_decoder
        else:
            layer = TransformerDecoderLayer(d_model, nhead, dim_feedforward, dropout, activation,
                                            layer_norm_eps, batch_first, norm_first, bias,
                                            **factory)
            norm = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory)
            self.decoder = TransformerDecoder(layer, num_decoder_layers, norm)
        self._reset_parameters()
        self.d_model = d_model
        self.nhead = nhead
        self.batch_first = batch_first
