"""Helpers shared by the op families: autocast rules for the ops."""
import torch

_LIB = torch.library.Library("fusedops", "IMPL")
_AUTOCAST_KEYS = torch._C.DispatchKeySet(torch._C.DispatchKey.AutocastCPU)


def _to_float32(x):
    if isinstance(x, torch.Tensor) and x.is_floating_point() and x.dtype != torch.float64:
        return x.float()
    if isinstance(x, (list, tuple)):
        return type(x)(_to_float32(v) for v in x)
    return x


def register_autocast_cpu_lowp(name):
    """Under CPU autocast, compute `name` in float32 and return the autocast dtype, as torch
    does for its matmul-like ops (linear, matmul, conv)."""
    op = getattr(torch.ops.fusedops, name).default

    def autocast_impl(*args):
        dtype = torch.get_autocast_dtype("cpu")
        with torch._C._ExcludeDispatchKeyGuard(_AUTOCAST_KEYS):
            out = op(*_to_float32(args))
        def cast(o):  # float64 is not autocast-eligible: such results stay float64
            if isinstance(o, torch.Tensor) and o.dtype == torch.float32:
                return o.to(dtype)
            return o

        return tuple(cast(o) for o in out) if isinstance(out, tuple) else cast(out)

    _LIB.impl(name, autocast_impl, "AutocastCPU")


def register_autocast_cpu_fp32(name):
    """Under CPU autocast, compute `name` in float32 and return float32, as torch does for its
    losses (cross_entropy, nll_loss)."""
    op = getattr(torch.ops.fusedops, name).default

    def autocast_impl(*args):
        with torch._C._ExcludeDispatchKeyGuard(_AUTOCAST_KEYS):
            return op(*_to_float32(args))

    _LIB.impl(name, autocast_impl, "AutocastCPU")
