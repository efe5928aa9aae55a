"""Hugging Face transformers models in ``fusedops.patch``: GPT-2 and the Llama family.

What is recognised (each only when the module's class is the library's own, or a class of
another model whose method has the very same bytecode, e.g. Mistral's copies of Llama's blocks):

- attention: a function registered in transformers' ``AttentionInterface`` (and the boolean
  ``sdpa`` mask in ``AttentionMaskInterface``) under the name ``"fusedops"``, and the model's
  ``config._attn_implementation`` set to it. The library's attention modules then call
  ``fusedops.ops.scaled_dot_product_attention`` (causal, masks, grouped-query heads) without any
  of their code copied here; unpatch sets the previous implementation back.
- GPT-2: ``GPT2Block`` fuses the residual add after attention into ``ln_2``
  (``fusedops.ops.add_layer_norm``); ``Conv1D`` runs ``fusedops.ops.linear`` on ``weight.t()``,
  a strided view read in place by the GEMM packing (no copy of the weight; its gradient
  arrives as [out, in] and autograd transposes it into the [in, out] ``.grad``); ``GPT2MLP``
  runs c_fc with the tanh-GELU in the GEMM epilogue; ``NewGELUActivation``/``GELUTanh``/
  ``GELUActivation`` run ``fusedops.ops.gelu``.
- Llama: ``LlamaRMSNorm`` runs ``fusedops.ops.rms_norm``; ``LlamaMLP`` ``fusedops.ops.swiglu``;
  ``LlamaAttention`` the rotary embedding with ``fusedops.ops.rotary_embedding``;
  ``LlamaDecoderLayer`` fuses the residual add into the RMSNorm after attention
  (``fusedops.ops.add_rms_norm``). A piece whose op is not in this build is left, with why.
- causal LMs (``GPT2LMHeadModel``, ``LlamaForCausalLM``): the loss with labels runs
  ``fusedops.ops.cross_entropy`` on the logits (the same outputs as before), or, with
  ``fused_head_loss=True``, ``fusedops.ops.linear_cross_entropy`` on the last hidden states
  (the [tokens, vocab] logits never exist; ``logits`` is None in the output).
"""
import inspect
from typing import List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import ops
from .patch import PatchReport, Rule, _has_hooks, original_class

NAME = "fusedops"
_SAVED_IMPL = "_fusedops_attn_implementation"
_FUSED_HEAD = "_fusedops_fused_head_loss"


# ---- attention through the library's interface ---------------------------------------------------


def attention_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None,
                      is_causal=None, **kwargs):
    """transformers' attention-function contract: query [B, Hq, T, D], key/value [B, Hk, S, D],
    a boolean (True attends) or additive mask broadcastable to [B, Hq, T, S] or None; returns
    ([B, T, Hq, D], None). Cases our kernel has no answer for (attention weights requested, a
    position bias, logit soft-capping, attention sinks) run the library's sdpa function."""
    if (kwargs.get("output_attentions") or kwargs.get("position_bias") is not None
            or kwargs.get("softcap") is not None or kwargs.get("s_aux") is not None):
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, is_causal=is_causal, **kwargs)
    q_len, kv_len = query.shape[2], key.shape[2]
    causal = getattr(module, "is_causal", True) if is_causal is None else is_causal
    causal = bool(q_len > 1 and attention_mask is None and causal)
    if causal and kv_len > q_len:  # an empty static cache's tail: top-left causal ignores it
        key, value = key[:, :, :q_len], value[:, :, :q_len]
    if attention_mask is not None and attention_mask.dtype not in (torch.bool, query.dtype):
        attention_mask = attention_mask.to(query.dtype)
    out = ops.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, is_causal=causal,
        scale=scaling, enable_gqa=key.shape[1] != query.shape[1])
    return out.transpose(1, 2).contiguous(), None


def register_attention() -> str:
    """Register the "fusedops" attention implementation (and its mask kind, the boolean sdpa
    mask) with transformers; returns the name. ``model.set_attn_implementation("fusedops")``
    or ``from_pretrained(..., attn_implementation="fusedops")`` then work too."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, attention_forward)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    return NAME


def _configs(model) -> list:
    from transformers import PreTrainedModel

    seen, out = set(), []
    for m in model.modules():
        if isinstance(m, PreTrainedModel) and id(m.config) not in seen:
            seen.add(id(m.config))
            out.append((m, m.config))
    return out


def _switch_attention(model, options, report) -> None:
    current = model.config._attn_implementation
    if current == NAME:
        report.notes.append(f"attention: already {NAME!r}")
        return
    why = None
    if not options["attention"]:
        why = "attention=False"
    elif not all(type(m)._can_set_attn_implementation() for m, _ in _configs(model)):
        why = "the model does not call transformers' AttentionInterface"
    else:
        p = next(model.parameters(), None)
        if p is not None and p.dtype not in (torch.float32, torch.float64):
            dtype = str(p.dtype).replace("torch.", "")
            why = f"parameters are {dtype} (kernels for float32, float64)"
    if why:
        report.notes.append(f"attention: left as {current!r} ({why})")
        return
    register_attention()
    saved = []
    for _, config in _configs(model):
        saved.append((config, config._attn_implementation))
        config._attn_implementation = NAME
    model.__dict__[_SAVED_IMPL] = saved
    report.notes.append(f"attention: config._attn_implementation {current!r} -> {NAME!r} "
                        "(fusedops.ops.scaled_dot_product_attention via transformers' "
                        "AttentionInterface)")


# ---- GPT-2 -------------------------------------------------------------------------------------


class _Conv1D:
    _fusedops_describe = "fusedops linear on weight.t() (no copy)"

    def forward(self, x):
        return ops.linear(x, self.weight.t(), self.bias)


class _GELUTanh:
    _fusedops_describe = "fusedops gelu (tanh)"

    def forward(self, input):
        return ops.gelu(input, approximate="tanh")


class _GELUErf:
    _fusedops_describe = "fusedops gelu"

    def forward(self, input):
        return ops.gelu(input)


class _GPT2MLP:
    _fusedops_describe = "c_fc as fusedops linear with the tanh-GELU epilogue, then c_proj"

    def forward(self, hidden_states):
        fc = self.c_fc
        h = ops.linear(hidden_states, fc.weight.t(), fc.bias, activation="gelu_tanh")
        return self.dropout(self.c_proj(h))


class _GPT2Block:
    _fusedops_describe = "residual add fused into ln_2 (fusedops.ops.add_layer_norm)"

    def forward(self, hidden_states, cache=None, attention_mask=None, encoder_hidden_states=None,
                encoder_attention_mask=None, use_cache=False, **kwargs):
        if encoder_hidden_states is not None:  # cross-attention sits between: the block's own
            return original_class(self).forward(
                self, hidden_states, cache, attention_mask, encoder_hidden_states,
                encoder_attention_mask=encoder_attention_mask, use_cache=use_cache, **kwargs)
        attn, _ = self.attn(self.ln_1(hidden_states), cache=cache,
                            attention_mask=attention_mask, use_cache=use_cache, **kwargs)
        ln = self.ln_2
        h, hidden_states = ops.add_layer_norm(attn, hidden_states, ln.normalized_shape,
                                              ln.weight, ln.bias, ln.eps)
        return hidden_states + self.mlp(h)


def _gpt2_block_check(block) -> Optional[str]:
    if original_class(block.ln_2) is not nn.LayerNorm:
        return "ln_2 is not a torch LayerNorm"
    if _has_hooks(block.ln_2):
        return "hooks on ln_2 (the fused forward does not call it)"
    return None


def _tanh_gelu(act) -> bool:
    from transformers import activations as A

    cls = original_class(act)
    if cls is nn.GELU:
        return act.approximate == "tanh"
    return cls is A.NewGELUActivation or cls is A.GELUTanh


def _gelu_check(act) -> Optional[str]:
    from transformers import activations as A

    if original_class(act) is A.GELUActivation and act.act is not F.gelu:
        return "use_gelu_python=True"
    return None


def _gpt2_mlp_check(mlp) -> Optional[str]:
    from transformers.pytorch_utils import Conv1D

    if original_class(mlp.c_fc) is not Conv1D:
        return "c_fc is not transformers' Conv1D"
    if not _tanh_gelu(mlp.act):
        return f"activation {type(mlp.act).__name__} is not a tanh GELU"
    if _has_hooks(mlp.c_fc) or _has_hooks(mlp.act):
        return "hooks on c_fc or act (the fused forward does not call them)"
    return None


# ---- Llama family ------------------------------------------------------------------------------


class _RMSNorm:
    _fusedops_describe = "fusedops.ops.rms_norm"

    def forward(self, hidden_states):
        return ops.rms_norm(hidden_states, self.weight, self.variance_epsilon)


class _LlamaMLP:
    _fusedops_describe = "fusedops.ops.swiglu between the projections"

    def forward(self, x):
        return self.down_proj(ops.swiglu(self.gate_proj(x), self.up_proj(x)))


class _LlamaAttention:
    _fusedops_describe = "fusedops.ops.rotary_embedding on q/k, attention via the interface"

    def forward(self, hidden_states, position_embeddings=None, attention_mask=None, cache=None,
                **kwargs):
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        input_shape = hidden_states.shape[:-1]
        shape = (*input_shape, -1, self.head_dim)
        q = self.q_proj(hidden_states).view(shape).transpose(1, 2)
        k = self.k_proj(hidden_states).view(shape).transpose(1, 2)
        v = self.v_proj(hidden_states).view(shape).transpose(1, 2)
        cos, sin = position_embeddings
        q, k = ops.rotary_embedding(q, k, cos, sin)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx, kwargs=kwargs)
        attend = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation,
                                                       _llama_eager())
        out, weights = attend(self, q, k, v, attention_mask,
                              dropout=self.attention_dropout if self.training else 0.0,
                              scaling=self.scaling, **kwargs)
        return self.o_proj(out.reshape(*input_shape, -1).contiguous()), weights


def _llama_eager():
    from transformers.models.llama.modeling_llama import eager_attention_forward

    return eager_attention_forward


class _LlamaDecoderLayer:
    _fusedops_describe = "residual add fused into post_attention_layernorm (fusedops.ops.add_rms_norm)"

    def forward(self, hidden_states, attention_mask=None, position_ids=None, cache=None,
                use_cache=False, position_embeddings=None, **kwargs):
        residual = hidden_states
        h = self.input_layernorm(hidden_states)
        h, _ = self.self_attn(hidden_states=h, attention_mask=attention_mask,
                              position_ids=position_ids, cache=cache, use_cache=use_cache,
                              position_embeddings=position_embeddings, **kwargs)
        norm = self.post_attention_layernorm
        h, residual = ops.add_rms_norm(h, residual, norm.weight, norm.variance_epsilon)
        return residual + self.mlp(h)


def _silu(act) -> bool:
    from transformers import activations as A

    return original_class(act) in (nn.SiLU, A.SiLUActivation)


def _missing(*names) -> Optional[str]:
    gone = [n for n in names if not hasattr(ops, n)]
    return f"fusedops.ops.{gone[0]} is not in this build" if gone else None


def _mlp_check(mlp):
    if not _silu(mlp.act_fn):
        return f"activation {type(mlp.act_fn).__name__} is not SiLU"
    return _missing("swiglu")


def _layer_check(layer):
    norm = layer.post_attention_layernorm
    if not _same_code(original_class(norm), _llama("LlamaRMSNorm")):
        return "post_attention_layernorm is not an RMSNorm of Llama's kind"
    if _has_hooks(norm):
        return "hooks on post_attention_layernorm (the fused forward does not call it)"
    return _missing("add_rms_norm")


def _llama(name):
    from transformers.models.llama import modeling_llama

    return getattr(modeling_llama, name)


def _same_code(cls, reference, method="forward") -> bool:
    """Whether ``cls.method`` is ``reference.method`` or has the very same bytecode and names
    (another model's copy of it)."""
    a, b = getattr(cls, method, None), getattr(reference, method, None)
    if a is None or b is None:
        return False
    if a is b:
        return True
    a, b = inspect.unwrap(a), inspect.unwrap(b)
    ca, cb = getattr(a, "__code__", None), getattr(b, "__code__", None)
    return (ca is not None and cb is not None and ca.co_code == cb.co_code
            and ca.co_names == cb.co_names and ca.co_varnames == cb.co_varnames)


# ---- causal LM head and loss --------------------------------------------------------------------


class _CausalLM:
    _fusedops_describe = "loss in fusedops.ops.cross_entropy"

    @property
    def loss_function(self):
        if "_loss_function" in self.__dict__:  # set after the patch: the user's wins
            return self._loss_function
        if self.__dict__.get(_FUSED_HEAD):
            return _fused_head_loss(self)
        return _causal_lm_loss

    @loss_function.setter
    def loss_function(self, value):
        self._loss_function = value

    def forward(self, *args, **kwargs):
        if not self.__dict__.get(_FUSED_HEAD):
            return super().forward(*args, **kwargs)
        named = _bound(self, args, kwargs)
        if named.get("labels") is None:
            return super().forward(*args, **kwargs)
        return _fused_head_forward(self, named)


class _CausalLMFused(_CausalLM):
    _fusedops_describe = "loss from the last hidden states in fusedops.ops.linear_cross_entropy (no logits)"


def _bound(model, args, kwargs) -> dict:
    sig = inspect.signature(original_class(model).forward)
    bound = sig.bind(model, *args, **kwargs)
    named = dict(bound.arguments)
    named.pop("self", None)
    for name, p in sig.parameters.items():
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            named.update(named.pop(name, {}))
    return named


def _shifted(labels, ignore_index, shift_labels):
    if shift_labels is None:
        shift_labels = F.pad(labels, (0, 1), value=ignore_index)[..., 1:]
    return shift_labels.reshape(-1)


def _reduce(loss_sum_or_mean, num_items_in_batch):
    if num_items_in_batch is None:
        return loss_sum_or_mean
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(loss_sum_or_mean.device)
    return loss_sum_or_mean / num_items_in_batch


def _causal_lm_loss(logits, labels, vocab_size, num_items_in_batch=None, ignore_index=-100,
                    shift_labels=None, **kwargs):
    """transformers' ForCausalLMLoss (shift, ignore -100, mean or sum / num_items_in_batch)
    with fusedops.ops.cross_entropy."""
    target = _shifted(labels, ignore_index, shift_labels).to(logits.device)
    reduction = "mean" if num_items_in_batch is None else "sum"
    loss = ops.cross_entropy(logits.float().reshape(-1, vocab_size), target,
                             ignore_index=ignore_index, reduction=reduction)
    return _reduce(loss, num_items_in_batch)


def _fused_head_loss(model):
    head = model.get_output_embeddings()

    def loss(logits, labels, vocab_size, num_items_in_batch=None, ignore_index=-100,
             shift_labels=None, **kwargs):  # here `logits` are the last hidden states
        target = _shifted(labels, ignore_index, shift_labels).to(logits.device)
        reduction = "mean" if num_items_in_batch is None else "sum"
        out = ops.linear_cross_entropy(logits.reshape(-1, logits.shape[-1]), head.weight, target,
                                       head.bias, ignore_index=ignore_index, reduction=reduction)
        return _reduce(out, num_items_in_batch)

    return loss


def _fused_head_forward(model, named):
    from transformers.modeling_outputs import CausalLMOutputWithPast

    labels = named.pop("labels")
    named.pop("logits_to_keep", None)
    loss_kwargs = {k: named.pop(k) for k in ("num_items_in_batch", "shift_labels", "ignore_index")
                   if k in named}
    as_tuple = named.pop("return_dict", None) is False
    base = getattr(model, model.base_model_prefix)
    out = base(**named)
    loss = _fused_head_loss(model)(out.last_hidden_state, labels, model.config.vocab_size,
                                   **loss_kwargs)
    result = CausalLMOutputWithPast(loss=loss, logits=None, cache=getattr(out, "cache", None),
                                    hidden_states=out.hidden_states, attentions=out.attentions)
    return result.to_tuple() if as_tuple else result


def _causal_lm_check(model, options):
    if "_loss_function" in model.__dict__:
        return "a loss_function of the user's is set"
    head = model.get_output_embeddings()
    if not isinstance(head, nn.Linear) or _has_hooks(head):
        return "the output embedding is not a plain Linear without hooks"
    if options["fused_head_loss"]:
        return _missing("linear_cross_entropy")
    return None


# ---- the rules for a model --------------------------------------------------------------------


def _gpt2_rules(cls):
    from transformers import activations as A
    from transformers.models.gpt2 import modeling_gpt2 as G
    from transformers.pytorch_utils import Conv1D

    table = [
        (Conv1D, "linear", _Conv1D, None),
        (A.NewGELUActivation, "activation", _GELUTanh, None),
        (A.GELUTanh, "activation", _GELUTanh, None),
        (A.GELUActivation, "activation", _GELUErf, _gelu_check),
        (G.GPT2MLP, ("linear", "activation"), _GPT2MLP, _gpt2_mlp_check),
        (G.GPT2Block, "norm", _GPT2Block, _gpt2_block_check),
    ]
    return [(c, f, m, k) for c, f, m, k in table if cls is c]


def _llama_rules(cls):
    table = [
        ("LlamaRMSNorm", "norm", _RMSNorm, lambda m: _missing("rms_norm")),
        ("LlamaMLP", ("linear", "activation"), _LlamaMLP, _mlp_check),
        ("LlamaAttention", "attention", _LlamaAttention, lambda m: _missing("rotary_embedding")),
        ("LlamaDecoderLayer", "norm", _LlamaDecoderLayer, _layer_check),
    ]
    return [(cls, f, m, k) for name, f, m, k in table if _same_code(cls, _llama(name))]


def _lm_rules(cls, options):
    from transformers.models.gpt2.modeling_gpt2 import GPT2LMHeadModel

    if not (cls is GPT2LMHeadModel or _same_code(cls, _llama("LlamaForCausalLM"))):
        return []
    mixin = _CausalLMFused if options["fused_head_loss"] else _CausalLM
    return [(cls, "loss", mixin, lambda m: _causal_lm_check(m, options))]


def _roots(model) -> list:
    """The library's models in ``model`` (itself, or inside a model of the user's) that no
    other of them contains."""
    from transformers import PreTrainedModel

    roots, inner = [], set()
    for m in model.modules():
        if isinstance(m, PreTrainedModel) and id(m) not in inner:
            roots.append(m)
            inner.update(id(s) for s in m.modules())
    return roots


def rules(model, options, report: PatchReport) -> List[Rule]:
    """The rules for the library's classes found in ``model``; switches the attention of each
    of the library's models in it."""
    for root in _roots(model):
        _switch_attention(root, options, report)
    found, out = set(), []
    for m in model.modules():
        cls = original_class(m)
        lm = _lm_rules(cls, options)
        if lm and options["fused_head_loss"]:
            m.__dict__[_FUSED_HEAD] = True
        if cls in found:
            continue
        found.add(cls)
        for c, flag, mixin, check in _gpt2_rules(cls) + _llama_rules(cls) + lm:
            out.append(_rule(c, flag, mixin, check, options))
    return out


def _rule(cls, flag, mixin, check, options) -> Rule:
    if isinstance(flag, tuple):  # needs every one of these options
        first, rest = flag[0], flag[1:]

        def gated(m, check=check, rest=rest):
            off = [f for f in rest if not options[f]]
            return f"{off[0]}=False" if off else (check(m) if check else None)

        return Rule(cls, first, mixin, gated, exact=True)
    return Rule(cls, flag, mixin, check, exact=True)


def unpatch(model, report: PatchReport) -> None:
    for m in model.modules():
        saved = m.__dict__.pop(_SAVED_IMPL, None)
        if saved:
            for config, impl in saved:
                config._attn_implementation = impl
            report.notes.append(f"attention: config._attn_implementation -> {saved[0][1]!r}")
        m.__dict__.pop(_FUSED_HEAD, None)
