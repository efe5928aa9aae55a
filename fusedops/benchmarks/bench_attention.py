"""scaled_dot_product_attention (fp32, and bf16): fusedops.ops.scaled_dot_product_attention
against torch.nn.functional.scaled_dot_product_attention (torch's own CPU flash kernel), forward
and forward + backward (the gradients of q, k and v for a fixed random output gradient). The
bf16 cases ("causal bf16 ...") give both peers bf16 q, k, v and output gradient; their %peak is
of the bf16 peak of the path in force.

Cases are named B x H x T x D (q, k, v [B, H, T, D], self-attention, L = S = T), causal or not.
FLOPs are torch's flop-counter formulas (torch.utils.flop_counter): forward 2 products
(4 B H T^2 D), backward 5 (the recomputed scores, dP, dV, dQ, dK: 10 B H T^2 D); for causal
cases those counts are scaled by the fraction of (query, key) pairs that are visible,
(T + 1) / (2 T), so GFLOP/s and % of peak measure arithmetic actually needed.

`python -m fusedops.benchmarks.bench_attention --memory` prints the peak memory of one forward +
backward at B=1 H=8 T=2048 D=128 (causal and not) for both peers: each runs in a fresh
process, and the number is the growth of the process's peak resident set (ru_maxrss) over the
resident set just before the step, with the inputs and the output gradient already allocated
and a small warm-up step done (so libraries and thread stacks are not counted).
"""
import os
import subprocess
import sys

import torch
import torch.nn.functional as F

import fusedops

from .harness import Case

PEERS = ("fusedops", "torch")
# forward + backward against torch's flash kernel (the report marks each met or missed)
GOALS = {("causal 4x12x256x64", "fwd+bwd", "torch"): 1.5, ("full 4x12x256x64", "fwd+bwd", "torch"): 1.2,
         ("causal 2x12x1024x64", "fwd+bwd", "torch"): 1.5, ("full 2x12x1024x64", "fwd+bwd", "torch"): 1.2,
         ("causal 1x8x2048x128", "fwd+bwd", "torch"): 1.3,
         ("causal bf16 4x12x256x64", "fwd+bwd", "torch"): 1.5,
         ("causal bf16 2x12x1024x64", "fwd+bwd", "torch"): 1.5}
BF16_SHAPES = [(4, 12, 256, 64), (2, 12, 1024, 64)]
SHAPES = [(4, 12, 256, 64), (2, 12, 1024, 64), (1, 8, 2048, 128)]
QUICK_SHAPES = [(4, 12, 256, 64), (1, 4, 512, 64)]


def cases(quick: bool):
    out = []
    for shape in QUICK_SHAPES if quick else SHAPES:
        for causal in (True, False):
            if shape == (1, 8, 2048, 128) and not causal and not quick:
                continue  # the goal is causal; the non-causal run is long
            out += [case(shape, causal, False), case(shape, causal, True)]
    for shape in QUICK_SHAPES[:1] if quick else BF16_SHAPES:
        out += [case(shape, True, False, torch.bfloat16), case(shape, True, True, torch.bfloat16)]
    return out


def flops(shape, causal, backward):
    B, H, T, D = shape
    f = (14 if backward else 4) * B * H * T * T * D
    return f * (T + 1) / (2 * T) if causal else f


def case(shape, causal, backward, dtype=torch.float32) -> Case:
    B, H, T, D = shape

    def setup():
        torch.manual_seed(0)
        q, k, v = (torch.randn(B, H, T, D, dtype=dtype).requires_grad_(backward) for _ in range(3))

        def ours():
            return fusedops.ops.scaled_dot_product_attention(q, k, v, is_causal=causal)

        def theirs():
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

        if not backward:
            return {"fusedops": ours, "torch": theirs}
        grad = torch.randn(B, H, T, D, dtype=dtype)

        def step(fn):
            out = fn()
            return (out, *torch.autograd.grad(out, (q, k, v), grad))

        return {"fusedops": lambda: step(ours), "torch": lambda: step(theirs)}

    bf16 = dtype == torch.bfloat16
    name = f"{'causal' if causal else 'full'}{' bf16' if bf16 else ''} {B}x{H}x{T}x{D}"
    return Case(name, "fwd+bwd" if backward else "fwd", setup, flops(shape, causal, backward), bf16=bf16)


_MEMORY_SNIPPET = """
import sys, torch, torch.nn.functional as F
import fusedops
peer, causal = sys.argv[1], sys.argv[2] == "1"
torch.set_num_threads(2)
B, H, T, D = 1, 8, 2048, 128
q, k, v = (torch.randn(B, H, T, D, requires_grad=True) for _ in range(3))
g = torch.randn(B, H, T, D)
fn = fusedops.ops.scaled_dot_product_attention if peer == "fusedops" else F.scaled_dot_product_attention
def status(key):  # bytes
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith(key))
def step():
    out = fn(q, k, v, is_causal=causal)
    return out, torch.autograd.grad(out, (q, k, v), g)
w = torch.randn(1, 2, 64, 16, requires_grad=True)  # libraries, threads, code pages
torch.autograd.grad(fn(w, w, w, is_causal=causal).sum(), w)
before = status("VmRSS")
r = step()
del r
retained = status("VmRSS") - before  # kept after the first step: scratch, allocator pools
open("/proc/self/clear_refs", "w").write("5")  # resets VmHWM to the current RSS
base = status("VmRSS")
r = step()
print(status("VmHWM") - base, retained)
"""


def memory_report():
    """Peak memory of one forward + backward in a training loop: a fresh process per peer, the
    C allocator told to return every freed block of 64 KiB or more to the system at once
    (MALLOC_MMAP_THRESHOLD_), so that the resident set follows the memory in use; one step to
    warm up, then the growth of the peak resident set (VmHWM, reset just before) over the
    resident set before the second step. Also printed: what the first step left resident."""
    inputs = 4 * 1 * 8 * 2048 * 128 * 4
    print(f"peak memory of one fwd+bwd, B=1 H=8 T=2048 D=128 fp32 (each of q, k, v, out, grad: "
          f"{inputs / 4 / 2**20:.0f} MiB; out + 3 gradients = 32 MiB at the least)")
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    for causal in (True, False):
        row = []
        for peer in PEERS:
            r = subprocess.run([sys.executable, "-c", _MEMORY_SNIPPET, peer, str(int(causal))],
                               capture_output=True, text=True, check=True, env=env)
            peak, kept = (int(x) / 2**20 for x in r.stdout.split())
            row.append((peer, peak, kept))
        print(f"  {'causal' if causal else 'full  '}: "
              + ", ".join(f"{p} peak {mib:5.1f} MiB (first step left {kept:4.1f} MiB)" for p, mib, kept in row))



if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m fusedops.benchmarks.bench_attention",
        description="--memory prints the peak memory of one attention forward + backward (B=1 H=8 T=2048 D=128, causal and full) for each peer, each in a fresh process. The timed cases run with "
        "`python -m fusedops.benchmarks attention`.")
    parser.add_argument("--memory", action="store_true", help="print the peak memory (required)")
    if not parser.parse_args().memory:
        parser.error("nothing to do without --memory")
    memory_report()
