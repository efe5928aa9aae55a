"""One command for a GPU machine: the CUDA tests, then the CUDA kernel families (GEMM, linear,
attention, convolution, recurrent layers) against torch (cuBLAS / cuDNN) in the same run, with TFLOP/s and ratios, written to
benchmarks/results/gpu_report.{csv,json} and a PNG.

    python benchmarks/gpu_report.py [--skip-tests] [--sanitizer]

Needs a CUDA build of fusedops (`pip install --no-build-isolation -e .` with a CUDA torch and
nvcc). --sanitizer also runs the CUDA tests under compute-sanitizer (memcheck).
"""
import argparse
import csv
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def cuda_time_ms(fn, reps=20, warmup=5):
    """Median milliseconds per call, timed with CUDA events around each call."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]


def gemm_cases():
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        for M, K, N in ((4096, 4096, 4096), (8192, 8192, 8192), (4096, 768, 2304),
                        (4096, 768, 3072), (4096, 3072, 768), (4096, 768, 50304)):
            yield f"matmul {M}x{K}x{N}", dtype, M, K, N


def run_benchmarks():
    import fusedops

    rows = []
    for tf32 in (False, True):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        for name, dtype, M, K, N in gemm_cases():
            if tf32 and dtype != torch.float32:
                continue
            a = torch.randn(M, K, device="cuda", dtype=dtype)
            b = torch.randn(K, N, device="cuda", dtype=dtype)
            ours = cuda_time_ms(lambda: fusedops.ops.matmul(a, b))
            ref = cuda_time_ms(lambda: torch.matmul(a, b))
            err = ((fusedops.ops.matmul(a, b).float() - torch.matmul(a, b).float()).abs().max()
                   / torch.matmul(a, b).float().abs().max()).item()
            label = f"{dtype}".replace("torch.", "") + (" tf32" if tf32 else "")
            rows.append(dict(case=name, dtype=label, fusedops_ms=ours, torch_ms=ref,
                             tflops=2 * M * N * K / ours / 1e9, ratio=ref / ours, rel_err=err))
        # linear + bias + GELU, forward and forward+backward
        for dtype in (torch.float16, torch.bfloat16):
            x = torch.randn(4096, 768, device="cuda", dtype=dtype, requires_grad=True)
            w = torch.randn(3072, 768, device="cuda", dtype=dtype, requires_grad=True)
            bias = torch.randn(3072, device="cuda", dtype=dtype, requires_grad=True)
            g = torch.randn(4096, 3072, device="cuda", dtype=dtype)
            ins = (x, w, bias)

            def ours_fb():
                torch.autograd.grad(fusedops.ops.linear(x, w, bias, "gelu"), ins, g)

            def ref_fb():
                torch.autograd.grad(F.gelu(F.linear(x, w, bias)), ins, g)

            flops = 3 * 2 * 4096 * 768 * 3072
            t_ours, t_ref = cuda_time_ms(ours_fb), cuda_time_ms(ref_fb)
            rows.append(dict(case="linear+gelu fwd+bwd 4096x768x3072",
                             dtype=str(dtype).replace("torch.", ""), fusedops_ms=t_ours,
                             torch_ms=t_ref, tflops=flops / t_ours / 1e9, ratio=t_ref / t_ours,
                             rel_err=float("nan")))
    torch.backends.cuda.matmul.allow_tf32 = False
    rows += family_benchmarks(fusedops)
    return rows


def _fwd_bwd_row(case, dtype, ours, ref, flops):
    """One row: forward+backward of `ours` and `ref` (callables returning a loss-ready tensor)."""
    def run(fn):
        out = fn()
        out.backward(torch.ones_like(out))
    t_ours, t_ref = cuda_time_ms(lambda: run(ours)), cuda_time_ms(lambda: run(ref))
    with torch.no_grad():
        a, b = ours().float(), ref().float()
        err = ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()
    return dict(case=case, dtype=str(dtype).replace("torch.", ""), fusedops_ms=t_ours, torch_ms=t_ref,
                tflops=flops / t_ours / 1e9, ratio=t_ref / t_ours, rel_err=err)


def family_benchmarks(fusedops):
    """Attention, convolution and recurrent layers, forward+backward (about 3x the forward FLOPs)."""
    rows = []
    dev = "cuda"
    for dtype in (torch.float16, torch.bfloat16):
        for B, H, T, D, causal in ((4, 12, 1024, 64, True), (2, 16, 2048, 128, False)):
            q, k, v = (torch.randn(B, H, T, D, device=dev, dtype=dtype, requires_grad=True) for _ in range(3))
            flops = 3 * 4 * B * H * T * T * D / (2 if causal else 1)
            rows.append(_fwd_bwd_row(
                f"attention {'causal ' if causal else ''}{B}x{H}x{T}x{D}", dtype,
                lambda: fusedops.ops.scaled_dot_product_attention(q, k, v, is_causal=causal),
                lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal), flops))
    for dtype in (torch.float16, torch.float32):
        N, C, HW, K = 32, 64, 56, 64
        x = torch.randn(N, C, HW, HW, device=dev, dtype=dtype, requires_grad=True)
        w = torch.randn(K, C, 3, 3, device=dev, dtype=dtype, requires_grad=True)
        rows.append(_fwd_bwd_row(f"conv {N}x{C}x{HW}x{HW}->{K} 3x3", dtype,
                                 lambda: fusedops.ops.conv2d(x, w, padding=1),
                                 lambda: F.conv2d(x, w, padding=1), 3 * 2 * N * K * HW * HW * C * 9))
    for cls, G in (("LSTM", 4), ("GRU", 3)):
        for dtype in (torch.float16, torch.float32):
            B, I, Hd, T = 64, 256, 512, 64
            ref_m = getattr(torch.nn, cls)(I, Hd).to(dev, dtype)
            ours_m = getattr(fusedops.nn, cls)(I, Hd).to(dev, dtype)
            ours_m.load_state_dict(ref_m.state_dict())
            x = torch.randn(T, B, I, device=dev, dtype=dtype, requires_grad=True)
            flops = 3 * 2 * T * B * G * Hd * (I + Hd)
            rows.append(_fwd_bwd_row(f"{cls} B{B} I{I} H{Hd} T{T}", dtype, lambda: ours_m(x)[0],
                                     lambda: ref_m(x)[0], flops))
    return rows


def print_table(rows):
    print(f"\n{torch.cuda.get_device_name()} | torch {torch.__version__} | CUDA {torch.version.cuda}")
    print(f"{'case':36} {'dtype':14} {'fusedops ms':>11} {'torch ms':>9} {'TFLOP/s':>8} "
          f"{'vs torch':>8} {'rel err':>8}")
    for r in rows:
        print(f"{r['case']:36} {r['dtype']:14} {r['fusedops_ms']:11.3f} {r['torch_ms']:9.3f} "
              f"{r['tflops']:8.1f} {r['ratio']:7.2f}x {r['rel_err']:8.1e}")


def write(rows):
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = dict(device=torch.cuda.get_device_name(), torch=torch.__version__,
                cuda=torch.version.cuda, time=time.strftime("%Y-%m-%d %H:%M:%S"))
    with open(RESULTS / "gpu_report.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]) + list(meta))
        w.writeheader()
        for r in rows:
            w.writerow({**r, **meta})
    (RESULTS / "gpu_report.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no PNG")
        return
    fig, ax = plt.subplots(figsize=(10, 0.35 * len(rows) + 1.5))
    labels = [f"{r['case']} {r['dtype']}" for r in rows]
    ax.barh(labels, [r["ratio"] for r in rows])
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_xlabel("torch time / fusedops time (> 1: fusedops faster)")
    ax.set_title(meta["device"])
    fig.tight_layout()
    fig.savefig(RESULTS / "gpu_report.png", dpi=110)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--skip-tests", action="store_true")
    p.add_argument("--sanitizer", action="store_true")
    args = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_report: no GPU visible to torch")
    rc = 0
    if not args.skip_tests:
        files = ["test_cuda.py", "test_rnn_cuda.py", "test_attention.py", "test_conv.py", "test_activation.py",
                 "test_loss.py", "test_norm.py", "test_optim.py"]  # every file with a "cuda" backend
        cmd = [sys.executable, "-m", "pytest", "-q", *(str(ROOT / "tests" / f) for f in files)]
        rc = subprocess.call(cmd, cwd=ROOT)
        if args.sanitizer and shutil.which("compute-sanitizer"):
            rc |= subprocess.call(["compute-sanitizer", "--tool", "memcheck", *cmd], cwd=ROOT)
    rows = run_benchmarks()
    print_table(rows)
    write(rows)
    sys.exit(rc)


if __name__ == "__main__":
    main()
