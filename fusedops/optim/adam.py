"""Adam and AdamW with one fused multi-tensor step per param group (fusedops::adam_step_).

Constructor signatures, defaults, param_groups and state (`step` a float32 scalar tensor,
`exp_avg`, `exp_avg_sq`, `max_exp_avg_sq`) are those of torch.optim.Adam / AdamW, so a
state_dict moves between the two in both directions.
"""
import torch
from torch.optim import Optimizer

from ..ops import optim as optim_ops
from ._common import (as_float, check_dense_grad, fit_state, real_view, scalar_dtype, state_like,
                      unsupported_differentiable)


class Adam(Optimizer):
    """torch.optim.Adam's interface; each step is one fused pass over every tensor (read p, g,
    m, v; write p, m, v) per param group, device and dtype.

    foreach and fused are accepted and kept in the param groups (the step is always fused);
    capturable keeps `step` on the parameters' device as torch does (its value is read on the
    host each step); differentiable=True is not supported. A Tensor lr or betas is read as a
    float each step.
    """

    _decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 amsgrad=False, *, foreach=None, maximize=False, capturable=False,
                 differentiable=False, fused=None, decoupled_weight_decay=False):
        name = type(self).__name__
        if isinstance(lr, torch.Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= betas[0] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
        if not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if differentiable:
            raise unsupported_differentiable(name)
        if fused and foreach:
            raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
        betas = tuple(as_float(b, "betas", name) if isinstance(b, torch.Tensor) else b
                      for b in betas)
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": amsgrad,
            "maximize": maximize,
            "foreach": foreach,
            "capturable": capturable,
            "differentiable": differentiable,
            "fused": fused,
            "decoupled_weight_decay": decoupled_weight_decay,
        }
        super().__init__(params, defaults)

    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("amsgrad", False)
            group.setdefault("maximize", False)
            group.setdefault("foreach", None)
            group.setdefault("capturable", False)
            group.setdefault("differentiable", False)
            group.setdefault("decoupled_weight_decay", self._decoupled)
            group.setdefault("fused", None)
            if self._decoupled:
                group["decoupled_weight_decay"] = True
            for p in group["params"]:
                p_state = self.state.get(p, [])
                if len(p_state) != 0 and not torch.is_tensor(p_state["step"]):
                    self._set_step(p_state, group, p, float(p_state["step"]))

    @staticmethod
    def _set_step(state, group, p, value=0.0):
        if group["capturable"] or group["fused"]:
            state["step"] = torch.tensor(value, dtype=scalar_dtype(group["fused"]),
                                         device=p.device)
        else:
            state["step"] = torch.tensor(value, dtype=scalar_dtype())

    def _buckets(self, group):
        """The group's params with a grad and their state, as lists per (device, dtype)."""
        buckets = {}
        for p in group["params"]:
            if p.grad is None:
                continue
            check_dense_grad(p, type(self).__name__)
            state = self.state[p]
            if len(state) == 0:
                self._set_step(state, group, p)
                state["exp_avg"] = state_like(p)
                state["exp_avg_sq"] = state_like(p)
            if group["amsgrad"] and "max_exp_avg_sq" not in state:
                state["max_exp_avg_sq"] = state_like(p)
            lists = buckets.setdefault((p.device, p.dtype), ([], [], [], [], [], []))
            lists[0].append(real_view(p))
            lists[1].append(real_view(p.grad))
            lists[2].append(real_view(fit_state(state, "exp_avg", p)))
            lists[3].append(real_view(fit_state(state, "exp_avg_sq", p)))
            if group["amsgrad"]:
                lists[4].append(real_view(fit_state(state, "max_exp_avg_sq", p)))
            lists[5].append(state["step"])
        return buckets.values()

    @torch.no_grad()
    def step(self, closure=None):
        """One optimization step; closure re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        name = type(self).__name__
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for params, grads, exp_avgs, exp_avg_sqs, max_sqs, steps in self._buckets(group):
                optim_ops.adam_step_(
                    params, grads, exp_avgs, exp_avg_sqs, max_sqs, steps,
                    lr=as_float(group["lr"], "lr", name),
                    beta1=as_float(beta1, "betas", name), beta2=as_float(beta2, "betas", name),
                    weight_decay=as_float(group["weight_decay"], "weight_decay", name),
                    eps=group["eps"], amsgrad=group["amsgrad"], maximize=group["maximize"],
                    decoupled_weight_decay=group["decoupled_weight_decay"],
                )
        return loss


class AdamW(Adam):
    """torch.optim.AdamW's interface (Adam with decoupled weight decay, weight_decay 1e-2 by
    default); see Adam."""

    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False, foreach=None, capturable=False,
                 differentiable=False, fused=None):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach,
                         maximize=maximize, capturable=capturable,
                         differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True)
