"""Embedding and BatchNorm2d (fp32): fusedops against torch in the same run.

- batch_norm2d N32 C64 56x56 (a ResNet stage's activation), training mode: fusedops.ops.batch_norm
  against F.batch_norm (both updating running statistics). Bytes: forward reads x and writes y
  (2 NCHW), backward reads g and x and writes dx (3 NCHW).
- embedding backward 50304x768 over 8192 tokens (GPT-2's table): the weight gradient alone,
  ours (`embedding_backward`: counting sort, row-parallel, each row written once) against
  torch's (`aten.embedding_dense_backward`, what torch's autograd runs for F.embedding). Bytes:
  the dense gradient written (V D) and the token gradients read (n D).
Dropout is left out: its masks differ from torch's by design, so the outputs cannot be
compared, and its speed is that of a pointwise pass.
"""
import torch
import torch.nn.functional as F

import fusedops

from .harness import Case

PEERS = ("fusedops", "torch")
BN_SHAPE = (32, 64, 56, 56)
QUICK_BN_SHAPE = (8, 64, 56, 56)
VOCAB, EMBD, TOKENS = 50304, 768, 8192
QUICK_VOCAB = 8192
GOALS = {(f"batch_norm2d {'x'.join(map(str, BN_SHAPE))}", "fwd+bwd", "torch"): 1.5,
         (f"embedding_backward {VOCAB}x{EMBD} {TOKENS} tokens", "bwd", "torch"): 2.0}


def cases(quick: bool):
    bn = QUICK_BN_SHAPE if quick else BN_SHAPE
    return [
        batch_norm_case(bn, backward=False),
        batch_norm_case(bn, backward=True),
        embedding_backward_case(QUICK_VOCAB if quick else VOCAB),
    ]


def batch_norm_case(shape, backward: bool) -> Case:
    N, C, H, W = shape

    def setup():
        torch.manual_seed(0)
        x = torch.randn(shape).requires_grad_(backward)
        w = torch.rand(C).requires_grad_(backward)
        b = torch.randn(C).requires_grad_(backward)
        stats = {p: (torch.zeros(C), torch.ones(C)) for p in PEERS}
        g = torch.randn(shape)

        def run(fn, peer):
            out = fn(x, *stats[peer], w, b, True, 0.1, 1e-5)
            if not backward:
                return out
            return (out, *torch.autograd.grad(out, (x, w, b), g))

        return {"fusedops": lambda: run(fusedops.ops.batch_norm, "fusedops"),
                "torch": lambda: run(F.batch_norm, "torch")}

    n = N * C * H * W
    return Case(f"batch_norm2d {N}x{C}x{H}x{W}", "fwd+bwd" if backward else "fwd", setup,
                bytes=(5 if backward else 2) * n * 4)


def embedding_backward_case(vocab: int) -> Case:
    def setup():
        torch.manual_seed(0)
        idx = torch.randint(0, vocab, (TOKENS,))
        g = torch.randn(TOKENS, EMBD)
        return {
            "fusedops": lambda: torch.ops.fusedops.embedding_backward(g, idx, vocab, None, False),
            "torch": lambda: torch.ops.aten.embedding_dense_backward(g, idx, vocab, -1, False),
        }

    return Case(f"embedding_backward {vocab}x{EMBD} {TOKENS} tokens", "bwd", setup,
                bytes=(vocab + TOKENS) * EMBD * 4)
