"""clip_grad_norm_ with torch.nn.utils.clip_grad_norm_'s signature and semantics: the total
norm of all gradients in one fused pass (fusedops::total_norm, double accumulation), then one
fused scaling pass (fusedops::clip_scale_) by min(max_norm / (total + 1e-6), 1)."""
import warnings

import torch

from ..ops import optim as optim_ops


def _by_device_and_dtype(tensors):
    groups = {}
    for t in tensors:
        groups.setdefault((t.device, t.dtype), []).append(t)
    return groups


@torch.no_grad()
def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False,
                    foreach=None):
    """Scales the gradients of `parameters` in place so that their total `norm_type`-norm
    (the norm of all gradients viewed as one vector; 'inf' for the largest magnitude) is at
    most `max_norm`; returns the total norm before clipping. `foreach` is accepted and ignored
    (both passes are always fused)."""
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    else:
        is_generator = not isinstance(parameters, (list, tuple))
        parameters = list(parameters)
        if is_generator and len(parameters) == 0:
            warnings.warn("`parameters` is an empty generator, no gradient clipping will occur.",
                          stacklevel=2)
    grads = [p.grad for p in parameters if p.grad is not None]
    norm_type = float(norm_type)
    max_norm = float(max_norm)
    if len(grads) == 0:
        return torch.tensor(0.0)
    for g in grads:
        if g.layout != torch.strided:
            raise RuntimeError(
                f"fusedops.optim.clip_grad_norm_: gradients must be dense (strided), got "
                f"layout {g.layout}")
    groups = _by_device_and_dtype(grads)
    norms = []
    for (_, dtype), ts in groups.items():
        if dtype.is_complex:  # |z| is not elementwise on the real view: torch's own norm
            norms.extend(torch.linalg.vector_norm(t, norm_type) for t in ts)
        else:
            norms.append(optim_ops.total_norm(ts, norm_type))
    if len(norms) == 1:
        total = norms[0]
    else:
        first = grads[0].device
        total = torch.linalg.vector_norm(torch.stack([n.to(first) for n in norms]), norm_type)
    if error_if_nonfinite and torch.logical_or(total.isnan(), total.isinf()):
        raise RuntimeError(
            f"The total norm of order {norm_type} for gradients from `parameters` is "
            "non-finite, so it cannot be clipped. To disable this error and scale the "
            "gradients by the non-finite norm anyway, set `error_if_nonfinite=False`")
    for (device, dtype), ts in groups.items():
        if dtype.is_complex:
            coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
            torch._foreach_mul_(ts, coef.to(device))
        else:
            optim_ops.clip_scale_(ts, total.to(device), max_norm)
    return total
