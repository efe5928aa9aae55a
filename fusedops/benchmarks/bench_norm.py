"""LayerNorm and GELU (fp32): fusedops against torch, the memory-bound ops of a GPT-2 block.

- layer_norm 8192x768 (GPT-2 124M's width over 8192 tokens): fusedops.ops.layer_norm against
  F.layer_norm; add_layer_norm against x + r followed by F.layer_norm (the residual add fused).
- gelu 8192x3072 (the GPT-2 MLP's hidden activation): fusedops.ops.gelu against F.gelu, tanh
  approximation and erf.
Forward, and forward + backward (gradients of every input for a fixed random output gradient).
Bytes are the tensors each call must read and write once, 4 bytes an element: LayerNorm
forward x, y (2 MN), backward also g, x, dx (5 MN in all); add_layer_norm forward x, r, sum, y,
backward g, g_sum, sum, dx (8 MN); GELU forward x, y (2 MN), backward g, x, dx (5 MN).
The weight, bias and per-row statistics are left out (under 1%).
"""
import torch
import torch.nn.functional as F

import fusedops

from .harness import Case

PEERS = ("fusedops", "torch")
TOKENS, WIDTH, HIDDEN = 8192, 768, 3072
QUICK_TOKENS = 1024  # --quick: an eighth of the tokens
GOALS = {(f"layer_norm {TOKENS}x{WIDTH}", "fwd+bwd", "torch"): 1.3,
         (f"gelu_tanh {TOKENS}x{HIDDEN}", "fwd+bwd", "torch"): 3.0}


def cases(quick: bool):
    m = QUICK_TOKENS if quick else TOKENS
    out = []
    for backward in (False, True):
        out.append(layer_norm_case(m, backward))
    out.append(add_layer_norm_case(m))
    for approximate in ("tanh", "none"):
        for backward in (False, True):
            out.append(gelu_case(m, approximate, backward))
    return out


def _step(fn, leaves, grad):
    out = fn()
    return (out, *torch.autograd.grad(out, leaves, grad))


def layer_norm_case(m: int, backward: bool) -> Case:
    def setup():
        torch.manual_seed(0)
        x = torch.randn(m, WIDTH).requires_grad_(backward)
        w = torch.randn(WIDTH).requires_grad_(backward)
        b = torch.randn(WIDTH).requires_grad_(backward)

        def ours():
            return fusedops.ops.layer_norm(x, (WIDTH,), w, b)

        def theirs():
            return F.layer_norm(x, (WIDTH,), w, b)

        if not backward:
            return {"fusedops": ours, "torch": theirs}
        g = torch.randn(m, WIDTH)
        return {"fusedops": lambda: _step(ours, (x, w, b), g), "torch": lambda: _step(theirs, (x, w, b), g)}

    return Case(f"layer_norm {m}x{WIDTH}", "fwd+bwd" if backward else "fwd", setup,
                bytes=(5 if backward else 2) * m * WIDTH * 4)


def add_layer_norm_case(m: int) -> Case:
    def setup():
        torch.manual_seed(0)
        x = torch.randn(m, WIDTH, requires_grad=True)
        r = torch.randn(m, WIDTH, requires_grad=True)
        w = torch.randn(WIDTH, requires_grad=True)
        b = torch.randn(WIDTH, requires_grad=True)
        g, gs = torch.randn(m, WIDTH), torch.randn(m, WIDTH)

        def run(fn):
            out, s = fn()
            return (out, s, *torch.autograd.grad((out, s), (x, r, w, b), (g, gs)))

        def ours():
            return fusedops.ops.add_layer_norm(x, r, (WIDTH,), w, b)

        def theirs():
            s = x + r
            return F.layer_norm(s, (WIDTH,), w, b), s

        return {"fusedops": lambda: run(ours), "torch": lambda: run(theirs)}

    return Case(f"add_layer_norm {m}x{WIDTH}", "fwd+bwd", setup, bytes=8 * m * WIDTH * 4)


def gelu_case(m: int, approximate: str, backward: bool) -> Case:
    def setup():
        torch.manual_seed(0)
        x = torch.randn(m, HIDDEN).requires_grad_(backward)

        def ours():
            return fusedops.ops.gelu(x, approximate=approximate)

        def theirs():
            return F.gelu(x, approximate=approximate)

        if not backward:
            return {"fusedops": ours, "torch": theirs}
        g = torch.randn(m, HIDDEN)
        return {"fusedops": lambda: _step(ours, (x,), g), "torch": lambda: _step(theirs, (x,), g)}

    name = "gelu_tanh" if approximate == "tanh" else "gelu"
    return Case(f"{name} {m}x{HIDDEN}", "fwd+bwd" if backward else "fwd", setup,
                bytes=(5 if backward else 2) * m * HIDDEN * 4)
