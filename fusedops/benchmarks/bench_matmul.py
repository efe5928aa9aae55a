"""matmul (fp32): fusedops.ops.matmul against torch.matmul and numpy's a @ b.

Cases are named M x K x N (a [M, K] @ b [K, N]): square sizes, then the GEMMs of a GPT-2 124M
step over 4096 tokens (batch x sequence): the attention's qkv projection, the MLP's fc and
proj, and the tied lm_head. The GPT-2 GEMMs also run forward + backward (the gradients of both
operands for a fixed random output gradient), against torch only.
FLOPs: 2 M K N forward, 3 times that forward + backward.
"""
import torch

import fusedops

from .harness import Case, numpy_blas

PEERS = ("fusedops", "torch", "numpy")
SQUARE = (256, 512, 1024, 2048, 4096)
GPT2 = {"qkv": (768, 2304), "fc": (768, 3072), "proj": (3072, 768), "lm_head": (768, 50304)}
TOKENS = 4096
QUICK_TOKENS = 512  # --quick: an eighth of the tokens, and no 4096 square or lm_head


def cases(quick: bool):
    m = QUICK_TOKENS if quick else TOKENS
    squares = [n for n in SQUARE if not (quick and n > 2048)]
    gpt2 = [(name, k, n) for name, (k, n) in GPT2.items() if not (quick and name == "lm_head")]
    return ([forward(f"square {n}", n, n, n) for n in squares]
            + [forward(f"{name} {m}x{k}x{n}", m, k, n) for name, k, n in gpt2]
            + [forward_backward(f"{name} {m}x{k}x{n}", m, k, n) for name, k, n in gpt2])


def forward(name: str, m: int, k: int, n: int) -> Case:
    def setup():
        torch.manual_seed(0)
        a, b = torch.randn(m, k), torch.randn(k, n)
        fns = {"fusedops": lambda: fusedops.ops.matmul(a, b), "torch": lambda: torch.matmul(a, b)}
        if numpy_blas():
            a_np, b_np = a.numpy(), b.numpy()
            fns["numpy"] = lambda: a_np @ b_np
        return fns

    return Case(name, "fwd", setup, flops=2 * m * k * n)


def forward_backward(name: str, m: int, k: int, n: int) -> Case:
    def setup():
        torch.manual_seed(0)
        a = torch.randn(m, k, requires_grad=True)
        b = torch.randn(k, n, requires_grad=True)
        grad = torch.randn(m, n)

        def step(matmul):
            out = matmul(a, b)
            return (out, *torch.autograd.grad(out, (a, b), grad))

        return {"fusedops": lambda: step(fusedops.ops.matmul), "torch": lambda: step(torch.matmul)}

    return Case(name, "fwd+bwd", setup, flops=3 * 2 * m * k * n)
