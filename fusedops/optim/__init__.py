"""Fused optimizers and gradient clipping, drop-in for torch.optim's:

    opt = fusedops.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)
    fusedops.optim.clip_grad_norm_(model.parameters(), 1.0)

Same constructor signatures, param_groups and state as torch.optim's (a state_dict moves both
ways); each step is one fused multi-tensor op per param group (fusedops.ops.optim).
"""
from .adam import Adam, AdamW
from .clip import clip_grad_norm_
from .sgd import SGD

__all__ = ["Adam", "AdamW", "SGD", "clip_grad_norm_"]
