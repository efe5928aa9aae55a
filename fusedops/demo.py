"""A first look: train the same small MLP with fusedops.nn.Linear and with torch.nn.Linear,
side by side, on a generated 3-class spiral (no downloads), and print loss, accuracy and
time per step for both.

    python -m fusedops.demo [--steps 300] [--hidden 256]
"""
import argparse
import copy
import math
import time

import torch

import fusedops


def spirals(n_per_class=1000, classes=3, noise=0.35, seed=0):
    g = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    for c in range(classes):
        r = torch.linspace(0.05, 1.0, n_per_class)
        t = torch.linspace(c * 2 * math.pi / classes, c * 2 * math.pi / classes + 6.0, n_per_class)
        t = t + noise * torch.randn(n_per_class, generator=g)
        xs.append(torch.stack([r * torch.sin(t), r * torch.cos(t)], dim=1))
        ys.append(torch.full((n_per_class,), c))
    return torch.cat(xs), torch.cat(ys)


def mlp(linear, hidden, classes=3):
    return torch.nn.Sequential(
        linear(2, hidden), torch.nn.GELU(),
        linear(hidden, hidden), torch.nn.GELU(),
        linear(hidden, classes),
    )


def train(model, x, y, steps, lr=3e-3):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    log, t0 = [], time.perf_counter()
    for step in range(1, steps + 1):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % max(1, steps // 6) == 0 or step == steps:
            with torch.no_grad():
                acc = (model(x).argmax(1) == y).float().mean().item()
            log.append((step, loss.item(), acc))
    return log, (time.perf_counter() - t0) / steps


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--hidden", type=int, default=256)
    args = p.parse_args(argv)

    info = fusedops.cpu_info()
    print(f"fusedops {fusedops.__version__} | torch {torch.__version__} | {info['model']} | "
          f"ISA {info['isa']} (GEMM tile {info['gemm_f32']}) | {torch.get_num_threads()} threads")
    x, y = spirals()
    torch.manual_seed(0)
    ours = mlp(fusedops.nn.Linear, args.hidden)
    ref = mlp(torch.nn.Linear, args.hidden)
    ref.load_state_dict(copy.deepcopy(ours.state_dict()))  # same start, bit for bit

    log_ours, t_ours = train(ours, x, y, args.steps)
    log_ref, t_ref = train(ref, x, y, args.steps)
    print(f"\nMLP 2-{args.hidden}-{args.hidden}-3 on {len(x)} spiral points, Adam, full batch")
    print(f"{'step':>6} | {'fusedops loss':>13} {'acc':>6} | {'torch loss':>10} {'acc':>6}")
    for (s, l1, a1), (_, l2, a2) in zip(log_ours, log_ref):
        print(f"{s:>6} | {l1:>13.4f} {a1:>6.1%} | {l2:>10.4f} {a2:>6.1%}")
    print(f"\ntime per step: fusedops {t_ours * 1e3:.2f} ms, torch {t_ref * 1e3:.2f} ms "
          f"(ratio {t_ref / t_ours:.2f}x)")


if __name__ == "__main__":
    main()
