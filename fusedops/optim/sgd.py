"""SGD (momentum, dampening, Nesterov, weight decay, maximize) with one fused multi-tensor step
per param group (fusedops::sgd_step_); torch.optim.SGD's interface, param_groups and state
(`momentum_buffer`, created on the first step with momentum as a copy of the gradient)."""
import torch
from torch.optim import Optimizer

from ..ops import optim as optim_ops
from ._common import as_float, check_dense_grad, fit_state, real_view, state_like, unsupported_differentiable


class SGD(Optimizer):
    """torch.optim.SGD's interface; one fused pass per param group, device and dtype.
    foreach and fused are accepted and kept in the param groups (the step is always fused);
    differentiable=True and sparse gradients are not supported."""

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0,
                 nesterov=False, *, maximize=False, foreach=None, differentiable=False,
                 fused=None):
        if isinstance(lr, torch.Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if differentiable:
            raise unsupported_differentiable("SGD")
        if fused and foreach:
            raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "maximize": maximize,
            "foreach": foreach,
            "differentiable": differentiable,
            "fused": fused,
        }
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, defaults)

    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("nesterov", False)
            group.setdefault("maximize", False)
            group.setdefault("foreach", None)
            group.setdefault("differentiable", False)
            group.setdefault("fused", False)

    @torch.no_grad()
    def step(self, closure=None):
        """One optimization step; closure re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            momentum = as_float(group["momentum"], "momentum", "SGD")
            buckets = {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                check_dense_grad(p, "SGD")
                lists = buckets.setdefault((p.device, p.dtype), ([], [], [], []))
                lists[0].append(real_view(p))
                lists[1].append(real_view(p.grad))
                if momentum != 0:
                    state = self.state[p]
                    buf = state.get("momentum_buffer")
                    fresh = buf is None
                    if fresh:  # filled with the gradient by the step, as torch's clone
                        buf = state_like(p)  # (fp32 for a bf16 param)
                        state["momentum_buffer"] = buf
                    else:
                        buf = fit_state(state, "momentum_buffer", p)
                    lists[2].append(real_view(buf))
                    lists[3].append(fresh)
            for params, grads, bufs, fresh in buckets.values():
                optim_ops.sgd_step_(
                    params, grads, bufs, fresh,
                    lr=as_float(group["lr"], "lr", "SGD"), momentum=momentum,
                    dampening=as_float(group["dampening"], "dampening", "SGD"),
                    weight_decay=as_float(group["weight_decay"], "weight_decay", "SGD"),
                    nesterov=group["nesterov"], maximize=group["maximize"],
                )
        return loss
