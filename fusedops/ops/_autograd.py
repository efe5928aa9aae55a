"""Helpers every op family's autograd formula uses (one copy for all of fusedops.ops)."""
import torch


def needs_grad(ctx, n):
    """ctx.needs_input_grad for the first n inputs; trailing arguments left at their defaults may
    be missing from it (then False)."""
    nig = tuple(ctx.needs_input_grad)
    return [bool(nig[i]) if i < len(nig) else False for i in range(n)]


def composite_grads(fn, inputs, needs, grad):
    """Gradients of fn(*inputs) for the inputs flagged in `needs`, through torch's differentiable
    ops and keeping the graph: the double-backward path (create_graph=True). Inputs flagged but
    not requiring grad (a gradient asked of a constant) are differentiated through a detached
    copy."""
    with torch.enable_grad():
        ins = [t if not n or t.requires_grad else t.detach().requires_grad_() for t, n in zip(inputs, needs)]
        out = fn(*ins)
        wrt = [t for t, n in zip(ins, needs) if n]
        got = iter(torch.autograd.grad(out, wrt, grad, create_graph=True, allow_unused=True))
    return [next(got) if n else None for n in needs]
