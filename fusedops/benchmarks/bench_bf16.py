"""bf16 (CPU): fusedops' bf16 GEMM against torch's bf16 (oneDNN), same shapes as the fp32 matmul
family, and a Linear + bias + GELU(tanh) forward + backward under torch.autocast (bf16) against
torch.nn.Linear + GELU under the same autocast (our linear reads the fp32 master weight in
place; torch casts it).

Cases are M x K x N. FLOPs: 2 M K N forward, 3 times that forward + backward. %peak is of the
bf16 peak of the path in force (AMX tiles, vdpbf16ps, or the fp32 FMA when bf16 is widened),
measured at start like the fp32 one.
"""
import torch

import fusedops

from .harness import Case

PEERS = ("fusedops", "torch")
SQUARE = (1024, 2048, 4096)
GPT2 = {"qkv": (768, 2304), "fc": (768, 3072), "proj": (3072, 768), "lm_head": (768, 50304)}
TOKENS = 4096
QUICK_TOKENS = 512
# issue 19's goals against torch (the full-size cases): the bf16 GEMM >= 1.0x torch's bf16
# matmul; Linear + bias + GELU forward + backward under autocast >= 1.2x torch under autocast
GOALS = {(f"square {n}", "fwd", "torch"): 1.0 for n in SQUARE}
GOALS.update({(f"{name} {TOKENS}x{k}x{n}", "fwd", "torch"): 1.0 for name, (k, n) in GPT2.items()})
GOALS[(f"linear+gelu {TOKENS}x{GPT2['fc'][0]}x{GPT2['fc'][1]}", "fwd+bwd", "torch")] = 1.2


def cases(quick: bool):
    m = QUICK_TOKENS if quick else TOKENS
    squares = [n for n in SQUARE if not (quick and n > 1024)]
    gpt2 = [(name, k, n) for name, (k, n) in GPT2.items() if not (quick and name == "lm_head")]
    return ([matmul(f"square {n}", n, n, n) for n in squares]
            + [matmul(f"{name} {m}x{k}x{n}", m, k, n) for name, k, n in gpt2]
            + [linear_gelu_autocast(f"linear+gelu {m}x{k}x{n}", m, k, n)
               for name, k, n in gpt2 if name == "fc"]
            + [linear_autocast(f"linear {m}x{k}x{n}", m, k, n) for name, k, n in gpt2
               if name in ("qkv", "proj")])


def matmul(name: str, m: int, k: int, n: int) -> Case:
    def setup():
        torch.manual_seed(0)
        a, b = torch.randn(m, k).bfloat16(), torch.randn(k, n).bfloat16()
        return {"fusedops": lambda: fusedops.ops.matmul(a, b), "torch": lambda: torch.matmul(a, b)}

    return Case(name, "fwd", setup, flops=2 * m * k * n, bf16=True)


class _LinearGelu(fusedops.nn.Linear):
    """Linear + bias + GELU(tanh) in one fusedops op (the activation in the GEMM's epilogue)."""

    def forward(self, input):
        return fusedops.ops.linear(input, self.weight, self.bias, activation="gelu_tanh")


def _autocast_step(layer, x, grad):
    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = layer(x)
        return (out, *torch.autograd.grad(out, (x, *layer.parameters()), grad))
    return step


def linear_gelu_autocast(name: str, m: int, k: int, n: int) -> Case:
    def setup():
        torch.manual_seed(0)
        ours = _LinearGelu(k, n)
        ref = torch.nn.Linear(k, n)
        ref.load_state_dict(ours.state_dict())
        theirs = torch.nn.Sequential(ref, torch.nn.GELU(approximate="tanh"))
        x = torch.randn(m, k, requires_grad=True)
        grad = torch.randn(m, n).bfloat16()
        return {"fusedops": _autocast_step(ours, x, grad), "torch": _autocast_step(theirs, x, grad)}

    return Case(name, "fwd+bwd", setup, flops=3 * 2 * m * k * n, bf16=True)


def linear_autocast(name: str, m: int, k: int, n: int) -> Case:
    def setup():
        torch.manual_seed(0)
        ours = fusedops.nn.Linear(k, n)
        ref = torch.nn.Linear(k, n)
        ref.load_state_dict(ours.state_dict())
        x = torch.randn(m, k, requires_grad=True)
        grad = torch.randn(m, n).bfloat16()
        return {"fusedops": _autocast_step(ours, x, grad), "torch": _autocast_step(ref, x, grad)}

    return Case(name, "fwd+bwd", setup, flops=3 * 2 * m * k * n, bf16=True)
