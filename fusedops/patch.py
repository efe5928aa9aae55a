"""fusedops.patch / fusedops.unpatch: run an existing model's layers in fusedops kernels, in place.

    report = fusedops.patch(model)     # swaps what it can prove equivalent, says what it left
    print(report)
    fusedops.unpatch(model)            # back to the original classes, outputs bit-exact

How a module is swapped: its ``__class__`` becomes a class generated once per original class,
a subclass of both the fusedops layer and the original class, whose ``forward`` runs our ops.
Nothing else about the module changes: the same Parameter objects in the same order (an
optimizer built before keeps working), buffers, hooks, training/eval mode, attributes, repr,
class name and state_dict keys. ``isinstance(m, OriginalClass)`` still holds, and unpatch sets
the original class back.

A module is swapped only when its arguments are ones our kernel computes (padding_mode,
inplace, max_norm, ...), its parameters have a dtype and device with a kernel, and its class is
the torch class itself or a subclass that overrides nothing but ``__init__`` (a subclass with
its own ``forward`` cannot be proven equivalent). Everything else is left as it was and the
report says why.

Fusion: inside an ``nn.Sequential`` (whose forward is torch's), a Linear directly followed by
a ReLU or GELU, each appearing once in the model and without hooks, runs as one Linear with the
activation in the GEMM epilogue; the activation module stays (identity in forward) so that
unpatch restores it. A hook registered on either of them after the patch sees the fused value.

Hugging Face transformers models are recognised too (GPT-2 and the Llama family): see
``fusedops.patch_hf``.
"""
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from . import nn as fnn
from . import ops

FLAGS = ("linear", "conv", "pool", "attention", "rnn", "norm", "activation", "loss", "embedding",
         "dropout", "fused_head_loss")

# the marker on every generated class: the class it was made from
_ORIGINAL = "_fusedops_original"
# the epilogue a patched Linear runs (set on the instance by the Sequential fusion)
_EPILOGUE = "_fusedops_epilogue"
# methods a subclass may define and still be the torch layer in forward
_HARMLESS = frozenset({"__init__", "__repr__", "extra_repr", "reset_parameters", "__setstate__",
                       "_get_name", "__doc__", "__module__", "__qualname__", "__dict__",
                       "__weakref__", "__annotations__", "__constants__", "_version",
                       "__firstlineno__", "__static_attributes__", "__orig_bases__",
                       "__parameters__"})
_FLOAT_DTYPES = (torch.float32, torch.float64)


# ---- the report ------------------------------------------------------------------------------


@dataclass
class Entry:
    """One module the patch looked at: its path in the model, its original type, what it
    runs as now (``became``) or why it was left as it was (``reason``)."""

    path: str
    original: str
    became: Optional[str] = None
    reason: Optional[str] = None

    @property
    def swapped(self) -> bool:
        return self.became is not None


class PatchReport:
    """What ``fusedops.patch`` (or ``unpatch``) did: ``entries`` (one per module looked at),
    ``swapped`` and ``left`` (lists of entries), ``notes`` (model-wide changes such as the
    attention implementation or the fused head + loss). ``print(report)`` draws a table."""

    def __init__(self, title: str):
        self.title = title
        self.entries: List[Entry] = []
        self.notes: List[str] = []

    @property
    def swapped(self) -> List[Entry]:
        return [e for e in self.entries if e.swapped]

    @property
    def left(self) -> List[Entry]:
        return [e for e in self.entries if not e.swapped]

    def __getitem__(self, path: str) -> Entry:
        for e in self.entries:
            if e.path == path:
                return e
        raise KeyError(path)

    def __contains__(self, path: str) -> bool:
        return any(e.path == path for e in self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __str__(self) -> str:
        rows = [("module", "type", "now")]
        rows += [(e.path or "(model)", e.original, e.became if e.swapped else f"left: {e.reason}")
                 for e in self.entries]
        w0 = max(len(r[0]) for r in rows)
        w1 = max(len(r[1]) for r in rows)
        if self.title.endswith("unpatch"):
            lines = [f"{self.title}: {len(self.swapped)} restored"]
        else:
            lines = [f"{self.title}: {len(self.swapped)} swapped, {len(self.left)} left"]
        for i, (a, b, c) in enumerate(rows):
            lines.append(f"  {a:<{w0}}  {b:<{w1}}  {c}")
            if i == 0:
                lines.append(f"  {'-' * w0}  {'-' * w1}  {'-' * 3}")
        lines += [f"  * {n}" for n in self.notes]
        return "\n".join(lines)

    __repr__ = __str__


# ---- rules: which torch class becomes which fusedops class, and when ----------------------------


@dataclass
class Rule:
    """``base`` (a torch or library class) runs as ``mixin``'s forward when option ``flag`` is
    on and ``check(module)`` returns no reason to leave it."""

    base: type
    flag: str
    mixin: type
    check: Optional[Callable[[nn.Module], Optional[str]]] = None
    # a subclass of base is accepted only when it overrides nothing; exact=True: base only
    exact: bool = False


class _PatchedLinear(fnn.Linear):
    """torch.nn.Linear, with the epilogue a Sequential fusion gave it."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return ops.linear(input, self.weight, self.bias, activation=self.__dict__.get(_EPILOGUE))


class _Epilogue:
    """An activation that a preceding Linear now computes in its epilogue: identity here."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return input


class _PatchedEncoderLayer(fnn.TransformerEncoderLayer):
    """torch.nn.TransformerEncoderLayer in our kernels; a nested tensor (torch's encoder fast
    path in inference) runs the original forward, which takes torch's fast path for it."""

    def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal=False):
        if src.is_nested:
            return getattr(type(self), _ORIGINAL).forward(self, src, src_mask,
                                                          src_key_padding_mask, is_causal)
        return super().forward(src, src_mask, src_key_padding_mask, is_causal)


def _no_inplace(m):
    if getattr(m, "inplace", False):
        return ("inplace=True (the kernel computes out of place; code may read the input it "
                "modifies)")
    return None


def _conv_check(m):
    if m.padding_mode != "zeros":
        return f"padding_mode={m.padding_mode!r} (only 'zeros' has a kernel)"
    if m.padding == "same" and tuple(m.stride) != (1, 1):
        return "padding='same' with a stride"
    return None


def _embedding_check(m):
    if m.max_norm is not None:
        return f"max_norm={m.max_norm} (renormalising rows in forward has no kernel)"
    if m.sparse:
        return "sparse=True (sparse gradients have no kernel)"
    return None


def _gelu_name(approximate: str) -> str:
    return "gelu" if approximate == "none" else "gelu_tanh"


def _rules() -> List[Rule]:
    return [
        Rule(nn.Linear, "linear", _PatchedLinear),
        Rule(nn.Conv2d, "conv", fnn.Conv2d, _conv_check),
        Rule(nn.MaxPool2d, "pool", fnn.MaxPool2d),
        Rule(nn.BatchNorm1d, "norm", fnn.BatchNorm1d),
        Rule(nn.BatchNorm2d, "norm", fnn.BatchNorm2d),
        Rule(nn.LayerNorm, "norm", fnn.LayerNorm),
        *([Rule(nn.RMSNorm, "norm", fnn.RMSNorm)] if hasattr(fnn, "RMSNorm") else []),
        Rule(nn.ReLU, "activation", fnn.ReLU, _no_inplace),
        Rule(nn.GELU, "activation", fnn.GELU),
        Rule(nn.Sigmoid, "activation", fnn.Sigmoid),
        Rule(nn.Tanh, "activation", fnn.Tanh),
        Rule(nn.Softmax, "activation", fnn.Softmax),
        Rule(nn.LogSoftmax, "activation", fnn.LogSoftmax),
        Rule(nn.Dropout, "dropout", fnn.Dropout, _no_inplace),
        Rule(nn.Embedding, "embedding", fnn.Embedding, _embedding_check),
        Rule(nn.CrossEntropyLoss, "loss", fnn.CrossEntropyLoss),
        Rule(nn.MSELoss, "loss", fnn.MSELoss),
        Rule(nn.BCEWithLogitsLoss, "loss", fnn.BCEWithLogitsLoss),
        Rule(nn.LSTM, "rnn", fnn.LSTM),
        Rule(nn.GRU, "rnn", fnn.GRU),
        Rule(nn.RNN, "rnn", fnn.RNN),
        Rule(nn.LSTMCell, "rnn", fnn.LSTMCell),
        Rule(nn.GRUCell, "rnn", fnn.GRUCell),
        Rule(nn.RNNCell, "rnn", fnn.RNNCell),
        Rule(nn.MultiheadAttention, "attention", fnn.MultiheadAttention),
        Rule(nn.TransformerEncoderLayer, "attention", _PatchedEncoderLayer, _layer_hooks),
        Rule(nn.TransformerDecoderLayer, "attention", fnn.TransformerDecoderLayer, _layer_hooks),
    ]


def _has_hooks(m: nn.Module) -> bool:
    return bool(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
                or getattr(m, "_backward_pre_hooks", None))


def _layer_hooks(m):
    hooked = [n for n, s in m.named_modules() if n and _has_hooks(s)]
    if hooked:
        return (f"hooks on {', '.join(hooked)}: the fused layer computes them without calling "
                "those modules")
    return None


# ---- generated classes ------------------------------------------------------------------------

_GENERATED: Dict[Tuple[type, type], type] = {}


def _generated(original: type, mixin: type) -> type:
    """The class a module of class ``original`` becomes: ``mixin``'s forward first, then
    ``original``; same name (the repr and name-based checks stay), marked for unpatch."""
    key = (original, mixin)
    cls = _GENERATED.get(key)
    if cls is None:
        cls = type(original.__name__, (mixin, original), {
            _ORIGINAL: original,
            "__reduce_ex__": _reduce_ex,
            # the original's module and name: name- and source-based checks (Hugging Face's
            # among them) see the class they know
            "__module__": original.__module__,
            "__qualname__": original.__qualname__,
            "__doc__": f"{original.__qualname__} running fusedops' {_describe(mixin)}.",
        })
        _GENERATED[key] = cls
    return cls


def _reduce_ex(self, protocol):
    """Pickling and deepcopy: the instance is rebuilt through the generated class of the
    same (original, mixin) pair, which is not importable by its name."""
    cls = type(self)
    mixin = cls.__bases__[0]
    rv = super(cls, self).__reduce_ex__(protocol)
    return (_new_patched, (cls.__dict__[_ORIGINAL], mixin)) + tuple(rv[2:])


def _new_patched(original: type, mixin: type):
    cls = _generated(original, mixin)
    return cls.__new__(cls)


def _describe(mixin: type) -> str:
    name = mixin.__name__
    if name.startswith("_Patched") and mixin.__module__ == __name__:
        base = mixin.__mro__[1]
        return f"{base.__module__.split('.')[0]}.nn.{base.__name__}"
    if mixin.__module__.startswith("fusedops.nn"):
        return f"fusedops.nn.{name}"
    return getattr(mixin, "_fusedops_describe", name)


def is_patched(m: nn.Module) -> bool:
    return _ORIGINAL in type(m).__dict__


def original_class(m: nn.Module) -> type:
    return type(m).__dict__.get(_ORIGINAL, type(m))


def swap(m: nn.Module, mixin: type) -> None:
    m.__class__ = _generated(original_class(m), mixin)


def _overrides(cls: type, base: type) -> List[str]:
    """Methods that ``cls`` (a subclass of ``base``) defines beyond harmless ones."""
    names = []
    for k in cls.__mro__:
        if k is base:
            break
        for name, v in vars(k).items():
            if name in _HARMLESS:
                continue
            if callable(v) or isinstance(v, (property, staticmethod, classmethod)):
                names.append(name)
    return names


# ---- dtype and device ------------------------------------------------------------------------


def _devices() -> Tuple[str, ...]:
    from . import build_info

    return ("cpu", "meta", "cuda") if build_info()["cuda"] else ("cpu", "meta")


def tensor_reason(m: nn.Module, dtypes=_FLOAT_DTYPES) -> Optional[str]:
    """Why the module's own parameters and floating buffers have no kernel, or None."""
    devices = _devices()
    for name, t in list(m.named_parameters(recurse=False)) + list(m.named_buffers(recurse=False)):
        if t is None:
            continue
        if t.device.type not in devices:
            return f"{name} is on {t.device.type} (kernels for {', '.join(devices)})"
        if t.is_floating_point() and t.dtype not in dtypes:
            names = ", ".join(str(d).replace("torch.", "") for d in dtypes)
            return f"{name} is {str(t.dtype).replace('torch.', '')} (kernels for {names})"
    return None


# ---- patch and unpatch -----------------------------------------------------------------------


def _leaves_to_report(m: nn.Module) -> bool:
    """A module worth a line when nothing swapped it: a layer of torch.nn or one holding
    parameters of its own (containers and plain user modules are not listed)."""
    if isinstance(m, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
        return False
    if type(m).__module__.startswith("torch.nn.modules"):
        return not isinstance(m, (nn.Identity, nn.Flatten, nn.Unflatten)) and (
            type(m) not in (nn.TransformerEncoder, nn.TransformerDecoder, nn.Transformer))
    return any(True for _ in m.parameters(recurse=False))


def _decide(m: nn.Module, rules: List[Rule], options: dict) -> Tuple[Optional[Rule], Optional[str]]:
    """(rule to apply, None) or (None, reason to leave) or (None, None) for a module no rule
    is about."""
    cls = original_class(m)
    rule = next((r for r in rules if issubclass(cls, r.base)), None)
    if rule is None:
        return None, None
    if cls.__module__.startswith("fusedops."):
        return None, "already a fusedops layer"
    if not options[rule.flag]:
        return None, f"{rule.flag}=False"
    if cls is not rule.base:
        if rule.exact:
            return None, f"a subclass of {rule.base.__name__}: cannot prove it equivalent"
        own = _overrides(cls, rule.base)
        if own:
            return None, (f"{cls.__name__} overrides {', '.join(sorted(own))} of "
                          f"{rule.base.__name__}: cannot prove it equivalent")
    if isinstance(m, nn.modules.lazy.LazyModuleMixin) and m.has_uninitialized_params():
        return None, "lazy module not initialised yet (run one forward before patching)"
    reason = tensor_reason(m) or (rule.check(m) if rule.check else None)
    if reason:
        return None, reason
    return rule, None


def _fuse_sequentials(model: nn.Module, report: PatchReport) -> None:
    counts: Dict[int, int] = {}
    for _, m in model.named_modules(remove_duplicate=False):
        counts[id(m)] = counts.get(id(m), 0) + 1
    for path, seq in model.named_modules():
        if not isinstance(seq, nn.Sequential) or type(seq).forward is not nn.Sequential.forward:
            continue
        children = list(seq.named_children())
        for (_, lin), (name, act) in zip(children, children[1:]):
            if not (isinstance(lin, _PatchedLinear) and is_patched(lin)):
                continue
            cls = original_class(act)
            if cls is nn.ReLU:
                epilogue = "relu"
            elif cls is nn.GELU:
                epilogue = _gelu_name(act.approximate)
            else:
                continue
            if counts[id(lin)] != 1 or counts[id(act)] != 1 or _has_hooks(lin) or _has_hooks(act):
                continue
            if lin.__dict__.get(_EPILOGUE) is not None or isinstance(act, _Epilogue):
                continue
            if tensor_reason(lin) is not None:
                continue
            lin.__dict__[_EPILOGUE] = epilogue
            swap(act, _Epilogue)
            lpath = f"{path}.{_child_name(seq, lin)}" if path else _child_name(seq, lin)
            apath = f"{path}.{name}" if path else name
            for e in report.entries:
                if e.path == lpath:
                    e.became = f"fusedops.nn.Linear (+{epilogue} epilogue)"
                elif e.path == apath:
                    e.became, e.reason = f"fused into {lpath}'s epilogue", None


def _child_name(parent: nn.Module, child: nn.Module) -> str:
    return next(n for n, c in parent.named_children() if c is child)


def patch(model: nn.Module, *, linear: bool = True, conv: bool = True, pool: bool = True,
          attention: bool = True, rnn: bool = True, norm: bool = True, activation: bool = True,
          loss: bool = True, embedding: bool = True, dropout: bool = True,
          fused_head_loss: bool = False) -> PatchReport:
    """Swap the layers of ``model`` that fusedops computes, in place; returns a PatchReport.

    Each option turns a family on or off: ``linear`` (Linear, and Hugging Face's Conv1D),
    ``conv`` (Conv2d), ``pool`` (MaxPool2d), ``attention`` (MultiheadAttention, Transformer
    encoder/decoder layers, Hugging Face attention), ``rnn`` (RNN/LSTM/GRU and cells), ``norm``
    (BatchNorm1d/2d, LayerNorm, RMSNorm), ``activation``, ``loss`` (loss modules, a Hugging Face
    LM's loss), ``embedding``, ``dropout``. ``fused_head_loss`` (Hugging Face causal LMs): a
    forward with ``labels`` computes the loss with ``fusedops.ops.linear_cross_entropy`` from
    the last hidden states, so the [tokens, vocab] logits never exist, and returns no logits.

    The same Parameter objects stay in the same order, so an optimizer built before keeps
    working; hooks, buffers, training/eval mode and state_dict keys are unchanged. Patching
    twice changes nothing more. Works on a model on the meta device, under torch.no_grad,
    after load_state_dict and before torch.compile. Patch after moving the model to its final
    device and dtype (the checks are made now). ``fusedops.unpatch`` restores the model.

    Dropout modules draw their masks from fusedops' counter-based generator, so in training
    with p > 0 the masks differ from torch's (same distribution); in eval mode nothing changes.
    """
    if not isinstance(model, nn.Module):
        raise TypeError("fusedops.patch: model must be a torch.nn.Module, got "
                        f"{type(model).__name__}")
    options = dict(linear=linear, conv=conv, pool=pool, attention=attention, rnn=rnn, norm=norm,
                   activation=activation, loss=loss, embedding=embedding, dropout=dropout,
                   fused_head_loss=fused_head_loss)
    report = PatchReport("fusedops.patch")
    rules = _rules()
    hf = _hf_module(model)
    if hf is not None:
        rules = hf.rules(model, options, report) + rules
    for path, m in model.named_modules():
        if is_patched(m):
            report.entries.append(Entry(path, original_class(m).__name__, "already patched"))
            continue
        rule, reason = _decide(m, rules, options)
        if rule is not None:
            swap(m, rule.mixin)
            report.entries.append(Entry(path, type(m).__name__, _describe(rule.mixin)))
        elif reason is not None or _leaves_to_report(m):
            report.entries.append(Entry(path, type(m).__name__,
                                        reason=reason or "no fusedops kernel for this layer"))
    if linear and activation:
        _fuse_sequentials(model, report)
    return report


def unpatch(model: nn.Module) -> PatchReport:
    """Restore every module that ``patch`` swapped to its original class (and a Hugging Face
    model's attention implementation); outputs are then bit-exact to the unpatched model's.
    Returns a report of what was restored."""
    report = PatchReport("fusedops.unpatch")
    for path, m in model.named_modules():
        if is_patched(m):
            original = original_class(m)
            report.entries.append(Entry(path, type(m).__name__, f"restored {original.__name__}"))
            m.__class__ = original
            m.__dict__.pop(_EPILOGUE, None)
    hf = _hf_module(model)
    if hf is not None:
        hf.unpatch(model, report)
    return report


def _hf_module(model: nn.Module):
    import sys

    if "transformers" not in sys.modules:  # a model of theirs implies the library is imported
        return None
    from transformers import PreTrainedModel

    if not any(isinstance(m, PreTrainedModel) for m in model.modules()):
        return None
    from . import patch_hf

    return patch_hf
