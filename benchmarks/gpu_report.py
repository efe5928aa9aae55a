"""One command for a GPU machine: the CUDA tests, then the CUDA kernel families (GEMM, linear,
attention, convolution, recurrent layers) against torch (cuBLAS / cuDNN) in the same run, with
TFLOP/s and ratios with their spread, APPENDED to benchmarks/results/gpu.csv in the results
format of `python -m fusedops.benchmarks` (machine kind = the GPU; `report` draws gpu.png).

    python benchmarks/gpu_report.py [--skip-tests] [--sanitizer] [--out DIR]

Peers are timed as on the CPU: rounds of alternating blocks (a block = back-to-back calls of
one peer between two CUDA events), median and p20/p80 of the per-call times; memory is the
growth of torch's CUDA allocator peak over one call. Needs a CUDA build of fusedops
(`pip install --no-build-isolation -e .` with a CUDA torch and nvcc). --sanitizer also runs
the CUDA tests under compute-sanitizer (memcheck).
"""
import argparse
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
ROUNDS, CALLS, WARMUP = 10, 5, 3


def time_blocks(fns, rounds=ROUNDS, calls=CALLS, warmup=WARMUP):
    """{peer: seconds per call in each round}: every peer warmed up, then rounds of one block
    of `calls` back-to-back calls per peer in turn, each block timed by CUDA events."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    torch.cuda.synchronize()
    samples = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(calls):
                fn()
            end.record()
            end.synchronize()
            samples[name].append(start.elapsed_time(end) / 1e3 / calls)
    return samples


def peak_memory_mib(fn):
    """Growth of the CUDA allocator's peak over one call (MiB), its outputs included."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out = fn()
    torch.cuda.synchronize()
    grown = torch.cuda.max_memory_allocated() - base
    del out
    return round(grown / 2**20, 1)


def run_info():
    """The fields every row of this run shares."""
    import fusedops
    from fusedops.benchmarks import harness

    props = torch.cuda.get_device_properties(0)
    return {"timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine_kind": f"{props.name} (sm_{props.major}{props.minor})",
            "cpu": props.name, "cpu_id": f"CUDA {torch.version.cuda}, {props.multi_processor_count} SMs",
            "cores": props.multi_processor_count, "isa": f"sm_{props.major}{props.minor}",
            "torch": torch.__version__, "fusedops": fusedops.__version__,
            "commit": harness.fusedops_commit()}


def make_row(info, case, mode, dtype, flops, samples, memory, err):
    """One results row: fusedops against torch on one case (per-round seconds per call)."""
    from fusedops.benchmarks import results

    ours, theirs = sorted(samples["fusedops"])[len(samples["fusedops"]) // 2], sorted(samples["torch"])[len(samples["torch"]) // 2]
    return {**info, "family": "gpu", "case": f"{case} {dtype}", "mode": mode, "threads": 1,
            "peer": "torch", "unit": "GFLOP/s",
            **results.comparison(samples["fusedops"], samples["torch"]),
            "fusedops_rate": results.rnd(flops / ours / 1e9), "peer_rate": results.rnd(flops / theirs / 1e9),
            "fusedops_mem_mib": memory["fusedops"], "peer_mem_mib": memory["torch"],
            "rel_err": results.rnd(err), "tolerance": 1e-3 if dtype in ("float32", "float32 tf32") else 3e-2,
            "rounds": len(samples["fusedops"])}


def measure(info, case, mode, dtype, flops, ours, ref):
    """Times and memory of fusedops (ours) and torch (ref), zero-argument callables returning
    a tensor or a tuple, and the relative error of ours against ref."""
    fns = {"fusedops": ours, "torch": ref}
    samples = time_blocks(fns)
    memory = {name: peak_memory_mib(fn) for name, fn in fns.items()}
    with torch.no_grad():
        a, b = (fn() for fn in (ours, ref))
        a, b = (x if isinstance(x, tuple) else (x,) for x in (a, b))
        err = max(((x.float() - y.float()).abs().max() / y.float().abs().max().clamp_min(1e-30)).item()
                  for x, y in zip(a, b))
    return make_row(info, case, mode, dtype, flops, samples, memory, err)


def gemm_cases():
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        for M, K, N in ((4096, 4096, 4096), (8192, 8192, 8192), (4096, 768, 2304),
                        (4096, 768, 3072), (4096, 3072, 768), (4096, 768, 50304)):
            yield f"matmul {M}x{K}x{N}", dtype, M, K, N


def run_benchmarks(info):
    import fusedops

    rows = []
    for tf32 in (False, True):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        for name, dtype, M, K, N in gemm_cases():
            if tf32 and dtype != torch.float32:
                continue
            a = torch.randn(M, K, device="cuda", dtype=dtype)
            b = torch.randn(K, N, device="cuda", dtype=dtype)
            label = f"{dtype}".replace("torch.", "") + (" tf32" if tf32 else "")
            rows.append(measure(info, name, "fwd", label, 2 * M * N * K,
                                lambda: fusedops.ops.matmul(a, b), lambda: torch.matmul(a, b)))
        # linear + bias + GELU, forward and forward+backward
        for dtype in (torch.float16, torch.bfloat16):
            x = torch.randn(4096, 768, device="cuda", dtype=dtype, requires_grad=True)
            w = torch.randn(3072, 768, device="cuda", dtype=dtype, requires_grad=True)
            bias = torch.randn(3072, device="cuda", dtype=dtype, requires_grad=True)
            g = torch.randn(4096, 3072, device="cuda", dtype=dtype)
            rows.append(measure(
                info, "linear+gelu 4096x768x3072", "fwd+bwd", str(dtype).replace("torch.", ""),
                3 * 2 * 4096 * 768 * 3072,
                _step(lambda: fusedops.ops.linear(x, w, bias, "gelu"), (x, w, bias), g),
                _step(lambda: F.gelu(F.linear(x, w, bias)), (x, w, bias), g)))
    torch.backends.cuda.matmul.allow_tf32 = False
    return rows + family_benchmarks(fusedops, info)


def _step(fn, leaves, grad=None):
    """Forward + backward: the output and the gradients of leaves (for a fixed output
    gradient, ones by default)."""
    def step():
        out = fn()
        return (out, *torch.autograd.grad(out, leaves, torch.ones_like(out) if grad is None else grad))
    return step


def family_benchmarks(fusedops, info):
    """Attention, convolution and recurrent layers, forward+backward (about 3x the forward FLOPs)."""
    rows = []
    dev = "cuda"
    for dtype in (torch.float16, torch.bfloat16):
        for B, H, T, D, causal in ((4, 12, 1024, 64, True), (2, 16, 2048, 128, False)):
            q, k, v = (torch.randn(B, H, T, D, device=dev, dtype=dtype, requires_grad=True) for _ in range(3))
            flops = 3 * 4 * B * H * T * T * D / (2 if causal else 1)
            rows.append(measure(
                info, f"attention {'causal ' if causal else ''}{B}x{H}x{T}x{D}", "fwd+bwd",
                str(dtype).replace("torch.", ""), flops,
                _step(lambda: fusedops.ops.scaled_dot_product_attention(q, k, v, is_causal=causal), (q, k, v)),
                _step(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal), (q, k, v))))
    for dtype in (torch.float16, torch.float32):
        N, C, HW, K = 32, 64, 56, 64
        x = torch.randn(N, C, HW, HW, device=dev, dtype=dtype, requires_grad=True)
        w = torch.randn(K, C, 3, 3, device=dev, dtype=dtype, requires_grad=True)
        rows.append(measure(info, f"conv {N}x{C}x{HW}x{HW}->{K} 3x3", "fwd+bwd",
                            str(dtype).replace("torch.", ""), 3 * 2 * N * K * HW * HW * C * 9,
                            _step(lambda: fusedops.ops.conv2d(x, w, padding=1), (x, w)),
                            _step(lambda: F.conv2d(x, w, padding=1), (x, w))))
    for cls, G in (("LSTM", 4), ("GRU", 3)):
        for dtype in (torch.float16, torch.float32):
            B, I, Hd, T = 64, 256, 512, 64
            ref_m = getattr(torch.nn, cls)(I, Hd).to(dev, dtype)
            ours_m = getattr(fusedops.nn, cls)(I, Hd).to(dev, dtype)
            ours_m.load_state_dict(ref_m.state_dict())
            x = torch.randn(T, B, I, device=dev, dtype=dtype, requires_grad=True)
            flops = 3 * 2 * T * B * G * Hd * (I + Hd)
            rows.append(measure(info, f"{cls} B{B} I{I} H{Hd} T{T}", "fwd+bwd",
                                str(dtype).replace("torch.", ""), flops,
                                _step(lambda: ours_m(x)[0], (x, *ours_m.parameters())),
                                _step(lambda: ref_m(x)[0], (x, *ref_m.parameters()))))
    return rows


def print_table(rows):
    print(f"\n{torch.cuda.get_device_name()} | torch {torch.__version__} | CUDA {torch.version.cuda}")
    print(f"{'case':44} {'mode':8} {'fusedops ms':>11} {'torch ms':>9} {'TFLOP/s':>8} "
          f"{'vs torch (p20-p80)':>20} {'MiB ours/torch':>15} {'rel err':>8}")
    for r in rows:
        print(f"{r['case']:44} {r['mode']:8} {r['fusedops_ms']:11.3f} {r['peer_ms']:9.3f} "
              f"{r['fusedops_rate'] / 1e3:8.1f} {r['ratio']:6.2f}x ({r['ratio_p20']:.2f}-{r['ratio_p80']:.2f}) "
              f"{r['fusedops_mem_mib']:7.0f}/{r['peer_mem_mib']:<7.0f} {r['rel_err']:8.1e}")


def main():
    p = argparse.ArgumentParser(prog="python benchmarks/gpu_report.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--skip-tests", action="store_true", help="only the benchmarks")
    p.add_argument("--sanitizer", action="store_true",
                   help="also run the CUDA tests under compute-sanitizer (memcheck)")
    p.add_argument("--out", type=Path, default=RESULTS,
                   help="results folder; rows are appended to gpu.csv (default: %(default)s)")
    args = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_report: no GPU visible to torch")
    rc = 0
    if not args.skip_tests:
        # every op family's test file runs each backend through one parametrisation: the
        # cases whose id names cuda (the GPU, and the simulator beside it) are the CUDA tests
        cmd = [sys.executable, "-m", "pytest", "-q", "-k", "cuda", str(ROOT / "tests")]
        rc = subprocess.call(cmd, cwd=ROOT)
        if args.sanitizer and shutil.which("compute-sanitizer"):
            rc |= subprocess.call(["compute-sanitizer", "--tool", "memcheck", *cmd], cwd=ROOT)
    from fusedops.benchmarks import results

    start = time.perf_counter()
    rows = run_benchmarks(run_info())
    print_table(rows)
    path = args.out / "gpu.csv"
    print(f"appended {results.append(path, rows)} rows to {path} in {time.perf_counter() - start:.0f} s")
    sys.exit(rc)


if __name__ == "__main__":
    main()
