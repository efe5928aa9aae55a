"""Losses (fp32): fusedops.ops.cross_entropy against F.cross_entropy, and the fused LM head
fusedops.ops.linear_cross_entropy against F.cross_entropy(F.linear(...)).

- "ce N x V": GPT-2's classifier, 4096 tokens over the 50304-entry (padded) vocabulary.
  Forward (no gradient wanted): bytes = the logits read once. Forward + backward (loss, then
  the gradient of the logits): bytes = the logits read once and the gradient written once,
  the least any implementation moves.
- "linear+ce N x C x V": 4096 tokens, 768 features, vocabulary 50304; forward + backward
  (gradients of input and weight); FLOPs = 3 GEMMs of 2 N C V.
- `python -m fusedops.benchmarks.bench_loss --memory` prints the peak extra memory of one
  linear+ce forward + backward in a fresh process per peer (the first call, cold; the table's
  memory column is a warm call's): the kernel's peak-RSS counter (VmHWM) is reset through
  /proc/self/clear_refs once the inputs exist, and the peak after the call minus the resident
  size before it is printed (ru_maxrss alone would keep the peak of importing torch).
"""
import json
import subprocess
import sys

import torch
import torch.nn.functional as F

import fusedops

from .harness import Case

PEERS = ("fusedops", "torch")
TOKENS, VOCAB, FEATURES = 4096, 50304, 768
QUICK_TOKENS, QUICK_VOCAB = 512, 8192
GOALS = {(f"ce {TOKENS}x{VOCAB}", "fwd", "torch"): 5.0, (f"ce {TOKENS}x{VOCAB}", "fwd+bwd", "torch"): 3.0,
         (f"linear+ce {TOKENS}x{FEATURES}x{VOCAB}", "fwd+bwd", "torch"): 1.0}


def cases(quick: bool):
    n, v = (QUICK_TOKENS, QUICK_VOCAB) if quick else (TOKENS, VOCAB)
    return [ce_case(n, v, False), ce_case(n, v, True), lce_case(n, FEATURES, v)]


def ce_case(n: int, v: int, backward: bool) -> Case:
    def setup():
        torch.manual_seed(0)
        x = (torch.randn(n, v) * 2).requires_grad_(backward)
        t = torch.randint(0, v, (n,))

        def run(fn):
            if not backward:
                with torch.no_grad():
                    return fn(x, t)
            loss = fn(x, t)
            return (loss.detach(), *torch.autograd.grad(loss, x))

        return {"fusedops": lambda: run(fusedops.ops.cross_entropy),
                "torch": lambda: run(F.cross_entropy)}

    nbytes = 4 * n * v * (2 if backward else 1)
    return Case(f"ce {n}x{v}", "fwd+bwd" if backward else "fwd", setup, bytes=nbytes)


def lce_case(n: int, c: int, v: int) -> Case:
    def setup():
        torch.manual_seed(0)
        x = torch.randn(n, c, requires_grad=True)
        w = (torch.randn(v, c) / c**0.5).requires_grad_()
        t = torch.randint(0, v, (n,))

        def ours():
            loss = fusedops.ops.linear_cross_entropy(x, w, t)
            return (loss.detach(), *torch.autograd.grad(loss, (x, w)))

        def theirs():
            loss = F.cross_entropy(F.linear(x, w), t)
            return (loss.detach(), *torch.autograd.grad(loss, (x, w)))

        return {"fusedops": ours, "torch": theirs}

    return Case(f"linear+ce {n}x{c}x{v}", "fwd+bwd", setup, flops=3 * 2 * n * c * v)


_MEMORY_SNIPPET = r"""
import json, sys, torch, torch.nn.functional as F, fusedops
torch.set_num_threads(2)
peer, n, c, v = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
x = torch.randn(n, c, requires_grad=True)
w = (torch.randn(v, c) / c**0.5).requires_grad_()
t = torch.randint(0, v, (n,))
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])  # kB
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset VmHWM to the current resident size
before = status("VmRSS")
if peer == "fusedops":
    loss = fusedops.ops.linear_cross_entropy(x, w, t)
else:
    loss = F.cross_entropy(F.linear(x, w), t)
gx, gw = torch.autograd.grad(loss, (x, w))
after = status("VmHWM")
print(json.dumps({"extra_mib": (after - before) / 1024}))
"""


def peak_extra_mib(peer: str, n: int, c: int, v: int) -> float:
    """Peak resident memory one forward + backward adds, in a fresh process (MiB)."""
    out = subprocess.run([sys.executable, "-c", _MEMORY_SNIPPET, peer, str(n), str(c), str(v)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["extra_mib"]


def print_memory(n: int, c: int, v: int) -> None:
    ours, theirs = peak_extra_mib("fusedops", n, c, v), peak_extra_mib("torch", n, c, v)
    grads = 4 * (n * c + v * c) / 2**20
    print(f"linear+ce {n}x{c}x{v} fwd+bwd peak extra memory (VmHWM, fresh process): "
          f"fusedops {ours:.0f} MiB, torch {theirs:.0f} MiB, ratio {ours / theirs:.3f} "
          f"(both include the {grads:.0f} MiB of gradients they return)")



if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m fusedops.benchmarks.bench_loss",
        description="--memory prints the peak extra memory of one linear + cross-entropy forward + backward (4096x768x50304) for each peer, each in a fresh process. The timed cases run with "
        "`python -m fusedops.benchmarks loss`.")
    parser.add_argument("--memory", action="store_true", help="print the peak memory (required)")
    if not parser.parse_args().memory:
        parser.error("nothing to do without --memory")
    print_memory(TOKENS, FEATURES, VOCAB)
