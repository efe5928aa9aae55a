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


def _has_float64(args):
    return any(
        (isinstance(a, torch.Tensor) and a.dtype == torch.float64)
        or (isinstance(a, (list, tuple)) and _has_float64(a))
        for a in args
    )


def register_autocast_cpu_lowp(name, bf16_args=None):
    """Under CPU autocast, return the autocast dtype, as torch does for its matmul-like ops
    (linear, matmul, conv). With bfloat16 and an op that has bf16 kernels (`bf16_args`: the
    positions of its activations), the activations are cast to bfloat16 and the rest (weights,
    biases) go in as they are: the kernels read float32 masters in place, rounding them while
    they pack them, so no bfloat16 copy of a weight is made. Otherwise the op computes in
    float32 and its result is cast."""
    op = getattr(torch.ops.fusedops, name).default

    def autocast_impl(*args):
        dtype = torch.get_autocast_dtype("cpu")
        if bf16_args is not None and dtype == torch.bfloat16 and not _has_float64(args):
            args = tuple(
                a.to(dtype) if i in bf16_args and isinstance(a, torch.Tensor) and a.is_floating_point() else a
                for i, a in enumerate(args)
            )
            with torch._C._ExcludeDispatchKeyGuard(_AUTOCAST_KEYS):
                return op(*args)
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


_KERNEL_DTYPES = (torch.float32, torch.float64, torch.bfloat16)


def register_autocast_cpu_keep(name, activations=(0,), params=()):
    """Under CPU autocast, compute `name` in its input's dtype and return that dtype, as torch
    does for its norms, activations, softmax and pooling. `activations`: the positions of the
    tensors the op streams; when their dtypes differ they are promoted to a common one (as
    `x + r` would be). A bfloat16 input runs the bf16 kernels directly; its `params` (weights,
    biases) go in as they are, since the kernels read float32 masters in place; otherwise the
    params take the input's dtype. A float16 input (no float16 kernels) computes in float32 and
    the results of the input's shape come back in float16."""
    op = getattr(torch.ops.fusedops, name).default

    def autocast_impl(*args):
        acts = [args[i] for i in activations if isinstance(args[i], torch.Tensor)]
        dtype = acts[0].dtype
        for a in acts[1:]:
            dtype = torch.promote_types(dtype, a.dtype)
        if dtype not in _KERNEL_DTYPES:
            with torch._C._ExcludeDispatchKeyGuard(_AUTOCAST_KEYS):
                out = op(*_to_float32(args))
            shape = acts[0].shape
            back = lambda t: t.to(dtype) if isinstance(t, torch.Tensor) and t.shape == shape else t  # noqa: E731
            return tuple(back(t) for t in out) if isinstance(out, tuple) else back(out)

        def fit(i, a):
            if not isinstance(a, torch.Tensor) or not a.is_floating_point():
                return a
            if i in activations:
                return a.to(dtype)
            if i in params:
                if dtype == torch.bfloat16:
                    return a if a.dtype in (torch.float32, torch.bfloat16) else a.float()
                return a.to(dtype)
            return a

        args = tuple(fit(i, a) for i, a in enumerate(args))
        with torch._C._ExcludeDispatchKeyGuard(_AUTOCAST_KEYS):
            return op(*args)

    _LIB.impl(name, autocast_impl, "AutocastCPU")
