"""conv2d (fp32, NCHW): fusedops.ops.conv2d against F.conv2d, the four shapes of issue 5.

Cases are named N x C x H x W -> K, 3x3 kernels, stride 1, no padding (the MNIST-like first
layer, a second small layer, two ResNet-like layers with padding 1). Forward, and forward +
backward (the gradients of input, weight and bias for a fixed output gradient; the first layer
has no input gradient, as in a network whose input needs none). FLOPs: 2 N K OH OW C R S per
product, times 1 forward, 3 forward + backward (2 for the first layer).
"""
import torch
import torch.nn.functional as F

import fusedops

from .harness import Case

PEERS = ("fusedops", "torch")
# forward + backward against torch, issue 5's goals (the report marks each met or missed)
GOALS = {("64x1x28x28->32", "fwd+bwd", "torch"): 2.0, ("64x32x13x13->64", "fwd+bwd", "torch"): 1.2,
         ("32x64x56x56->64", "fwd+bwd", "torch"): 1.0, ("32x128x28x28->128", "fwd+bwd", "torch"): 1.0}
# (N, C, H, W, K, padding, input needs grad)
SHAPES = [
    (64, 1, 28, 28, 32, 0, False),
    (64, 32, 13, 13, 64, 0, True),
    (32, 64, 56, 56, 64, 1, True),
    (32, 128, 28, 28, 128, 1, True),
]


def cases(quick: bool):
    out = []
    for shape in SHAPES:
        n = shape[0] // 4 if quick else shape[0]
        for backward in (False, True):
            out.append(case(n, *shape[1:], backward))
    return out


def case(n, c, h, w, k, padding, input_grad, backward) -> Case:
    oh, ow = h + 2 * padding - 2, w + 2 * padding - 2

    def setup():
        torch.manual_seed(0)
        x = torch.randn(n, c, h, w).requires_grad_(backward and input_grad)
        wt = (torch.randn(k, c, 3, 3) / (9 * c) ** 0.5).requires_grad_(backward)
        b = torch.randn(k).requires_grad_(backward)

        def ours():
            return fusedops.ops.conv2d(x, wt, b, padding=padding)

        def theirs():
            return F.conv2d(x, wt, b, padding=padding)

        if not backward:
            return {"fusedops": ours, "torch": theirs}
        grad = torch.randn(n, k, oh, ow)
        wrt = (x, wt, b) if input_grad else (wt, b)

        def step(fn):
            out = fn()
            return (out, *torch.autograd.grad(out, wrt, grad))

        return {"fusedops": lambda: step(ours), "torch": lambda: step(theirs)}

    flops = 2 * n * k * oh * ow * c * 9 * ((3 if input_grad else 2) if backward else 1)
    return Case(f"{n}x{c}x{h}x{w}->{k}", "fwd+bwd" if backward else "fwd", setup, flops)
