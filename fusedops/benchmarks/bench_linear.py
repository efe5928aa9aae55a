"""linear + GELU (fp32): fusedops.ops.linear(x, w, b, activation) against
F.gelu(F.linear(x, w, b)), for the erf GELU ("gelu") and its tanh approximation ("gelu_tanh",
torch's approximate="tanh").

The GPT-2 124M MLP's first layer over 4096 tokens: x [4096, 768], w [3072, 768], b [3072];
cases are named M x K x N. Forward, and forward + backward (the gradients of x, w and b for a
fixed random output gradient; in fusedops that is linear_act, which keeps the
pre-activation, then linear_backward). FLOPs: 2 M K N forward, 3 times that forward +
backward (the bias and GELU are not counted).
"""
import torch
import torch.nn.functional as F

import fusedops

from .harness import Case

PEERS = ("fusedops", "torch")
TOKENS, IN, OUT = 4096, 768, 3072
QUICK_TOKENS = 512  # --quick: an eighth of the tokens
APPROXIMATE = {"gelu": "none", "gelu_tanh": "tanh"}  # fusedops activation -> torch's F.gelu


def cases(quick: bool):
    m = QUICK_TOKENS if quick else TOKENS
    return [case(act, m, backward) for act in APPROXIMATE for backward in (False, True)]


def case(activation: str, m: int, backward: bool) -> Case:
    def setup():
        torch.manual_seed(0)
        x = torch.randn(m, IN).requires_grad_(backward)
        w = (torch.randn(OUT, IN) / IN**0.5).requires_grad_(backward)
        b = torch.randn(OUT).requires_grad_(backward)

        def ours():
            return fusedops.ops.linear(x, w, b, activation=activation)

        def theirs():
            return F.gelu(F.linear(x, w, b), approximate=APPROXIMATE[activation])

        if not backward:
            return {"fusedops": ours, "torch": theirs}
        grad = torch.randn(m, OUT)

        def step(fn):
            out = fn()
            return (out, *torch.autograd.grad(out, (x, w, b), grad))

        return {"fusedops": lambda: step(ours), "torch": lambda: step(theirs)}

    flops = 2 * m * IN * OUT * (3 if backward else 1)
    return Case(f"{activation} {m}x{IN}x{OUT}", "fwd+bwd" if backward else "fwd", setup, flops)
