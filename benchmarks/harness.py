"""The benchmark harness: this machine's limits, timing of peers in alternating blocks, the
printed table, and the CSV / JSON / PNG results.

A family is one module, benchmarks/bench_<family>.py, that defines

    PEERS = ("fusedops", "torch", ...)      # the table's time columns, fusedops first
    def cases(quick: bool) -> list[Case]

Each Case's setup() builds the inputs and returns {peer: zero-argument callable}. A callable
returns its result (a tensor, a numpy array, or a tuple of them), which is compared with the
torch peer's result; timing discards it.
"""
import contextlib
import csv
import json
import math
import os
import platform
import statistics
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

import fusedops

REFERENCE = "torch"  # every case has it; errors are measured against it
ERR_TOLERANCE = 1e-3  # relative error above which a result is flagged as wrong
BF16_ERR_TOLERANCE = 3e-2  # the same for bf16 cases (a few of bf16's 2^-8 roundings)
# A call this long is its own warm-up (one-time costs are small next to it); when every peer's
# first call is, those first calls are the first round, which saves a round of the largest cases.
LONG_CALL_S = 0.5
# OpenBLAS worker threads busy-wait for about 2^28 cycles (~0.1 s) after a call before they
# sleep; measured here: whatever ran within that window after numpy took 2-3x longer. The
# block after numpy's therefore waits this long.
OPENBLAS_SPIN_S = 0.25


@dataclass
class Case:
    name: str  # what is computed and its shape, e.g. "fc 4096x768x3072" (M x K x N)
    mode: str  # "fwd" or "fwd+bwd"
    setup: Callable[[], Dict[str, Callable[[], object]]]
    flops: Optional[float] = None  # per call, analytic: compute-bound cases
    bytes: Optional[float] = None  # per call, moved to or from memory: memory-bound cases
    bf16: bool = False  # a bf16 case: its %peak is of the bf16 peak, its error budget bf16's

    @property
    def unit(self) -> str:
        return "GFLOP/s" if self.flops else "GB/s"

    def rate(self, seconds: float) -> float:
        return (self.flops or self.bytes) / seconds / 1e9


@dataclass(frozen=True)
class Settings:
    block_s: float  # length of one block of back-to-back calls to one peer
    pause_s: float  # sleep before each block, so the last peer's worker threads stop spinning
    budget_s: float  # time for the timed rounds of one case at one thread count
    min_rounds: int
    max_rounds: int
    peak_s: float  # length of each of the 3 FMA peak measurements
    stream_max_mib: int  # largest memory bandwidth array


FULL = Settings(block_s=0.1, pause_s=0.1, budget_s=3.0, min_rounds=3, max_rounds=20,
                peak_s=0.5, stream_max_mib=1024)
QUICK = Settings(block_s=0.05, pause_s=0.05, budget_s=0.5, min_rounds=3, max_rounds=5,
                 peak_s=0.2, stream_max_mib=256)


# ---- threads ----------------------------------------------------------------------------------


def numpy_blas() -> Optional[dict]:
    """numpy's BLAS as threadpoolctl sees it (library, version, kernel, threads), or None when
    numpy or threadpoolctl is missing: without threadpoolctl numpy's thread count cannot follow
    the run's, so the numpy peer is left out."""
    try:
        import numpy  # noqa: F401  (loads the BLAS that threadpoolctl then finds)
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    blas = [lib for lib in threadpool_info() if lib["user_api"] == "blas"]
    return next((lib for lib in blas if "numpy" in lib["filepath"]), blas[0] if blas else None)


def use_threads(n: int):
    """torch's OpenMP pool (which our kernels share) and numpy's BLAS pool at n threads, for
    the duration of the returned context."""
    torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=n, user_api="blas")


# ---- machine limits ---------------------------------------------------------------------------


def measure_limits(thread_counts: List[int], s: Settings) -> dict:
    """fp32 FMA peak (widest vectors the kernels use; best of 3) and memory bandwidth, per
    thread count. Bandwidth is STREAM-style: best of 5 of a copy (a = b, 2 arrays moved) and a triad
    (a = b + 3 c, 3 arrays), each array 4 x L3, within [256 MiB, stream_max_mib]."""
    l3 = fusedops.cpu_info()["l3"]
    nbytes = min(max(4 * l3, 256 << 20), s.stream_max_mib << 20)
    a, b, c = (torch.ones(nbytes // 4) for _ in range(3))  # touched now: no page faults later
    limits = {"fma_gflops": {}, "bf16_gflops": {}, "copy_gbs": {}, "triad_gbs": {}}
    for t in thread_counts:
        torch.set_num_threads(t)
        limits["fma_gflops"][t] = max(fusedops._C._fma_peak_gflops(t, s.peak_s) for _ in range(3))
        limits["bf16_gflops"][t] = max(fusedops._C._bf16_peak_gflops(t, s.peak_s) for _ in range(3))
        copy_s = _best_of(lambda: a.copy_(b), 5)
        triad_s = _best_of(lambda: torch.add(b, c, alpha=3.0, out=a), 5)
        limits["copy_gbs"][t] = 2 * nbytes / copy_s / 1e9
        limits["triad_gbs"][t] = 3 * nbytes / triad_s / 1e9
    return limits


def _best_of(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _size(nbytes: int) -> str:
    return f"{nbytes >> 20} MiB" if nbytes >= 1 << 20 else f"{nbytes >> 10} KiB"


def peak(limits: dict, unit: str, threads: int, bf16: bool = False) -> float:
    if bf16 and unit == "GFLOP/s":
        return limits["bf16_gflops"][threads]
    return limits["fma_gflops" if unit == "GFLOP/s" else "triad_gbs"][threads]


def tolerance(case) -> float:
    return BF16_ERR_TOLERANCE if case.bf16 else ERR_TOLERANCE


def print_header(info: dict, limits: dict, s: Settings, removed_env: str) -> None:
    print(f"machine   {info['model']} · {os.cpu_count()} cores · ISA {info['isa']} "
          f"(best {info['best_isa']}) · L1d {_size(info['l1d'])}, L2 {_size(info['l2'])}, "
          f"L3 {_size(info['l3'])} · GEMM tiles fp32 {info['gemm_f32']}, fp64 {info['gemm_f64']}")
    blas = numpy_blas()
    if blas:
        import numpy
        np_text = (f"numpy {numpy.__version__} on {blas['internal_api']} {blas['version']} "
                   f"({blas.get('architecture', '?')} kernels, {blas.get('threading_layer', '?')})")
    else:
        np_text = "numpy peer skipped (needs numpy and threadpoolctl: pip install threadpoolctl)"
    print(f"software  python {platform.python_version()} · torch {torch.__version__} · "
          f"fusedops {fusedops.__version__} · {np_text}")
    if removed_env:
        print(f"          removed from the environment before numpy loaded: {removed_env} "
              "(they slow numpy's OpenBLAS)")
    load = os.getloadavg()[0]
    busy = " (other processes are using the CPU: timings will be noisy)" if load > 0.5 else ""
    print(f"load      1-minute load average {load:.2f} at start{busy}")
    print(f"timing    median per peer over >= {s.min_rounds} rounds of alternating blocks "
          f"(~{s.block_s * 1e3:.0f} ms of calls to one peer, {s.pause_s * 1e3:.0f} ms pause "
          "before each block)")
    print(f"bf16      {info.get('bf16', '?')}")
    print("limits    threads  fp32 FMA peak     bf16 peak         copy        triad")
    for t in limits["fma_gflops"]:
        print(f"          {t:>7}  {limits['fma_gflops'][t]:7.1f} GFLOP/s  "
              f"{limits['bf16_gflops'][t]:7.1f} GFLOP/s  "
              f"{limits['copy_gbs'][t]:5.1f} GB/s  {limits['triad_gbs'][t]:5.1f} GB/s")
    print()


# ---- timing -----------------------------------------------------------------------------------


def time_peers(fns: Dict[str, Callable], s: Settings):
    """Seconds per call of each peer, one sample per round. A round runs one block per peer,
    in turn (A A A, pause, B B B, pause, ...): OpenMP and OpenBLAS worker threads keep spinning
    for a while after a call and slow whichever library runs next, so single calls must not
    interleave, and each block starts after a pause. Returns (samples, warm-up outputs, calls
    per block)."""
    outputs, per_call, warm_up_calls = {}, {}, {}
    def pause(previous):
        time.sleep(OPENBLAS_SPIN_S if previous == "numpy" else s.pause_s)

    previous = None
    for name, fn in fns.items():
        pause(previous)
        outputs[name], per_call[name], warm_up_calls[name] = _warm_up(fn, s.block_s)
        previous = name
    calls = {name: max(1, round(s.block_s / per_call[name])) for name in fns}
    round_s = sum(calls[name] * per_call[name] + s.pause_s for name in fns)
    rounds = min(s.max_rounds, max(s.min_rounds, int(s.budget_s / round_s)))
    samples = {name: [] for name in fns}
    if all(n == 1 for n in warm_up_calls.values()):  # every call is long: warm-up was round 1
        samples = {name: [per_call[name]] for name in fns}
        rounds -= 1
    for _ in range(rounds):
        for name, fn in fns.items():
            pause(previous)
            previous = name
            t0 = time.perf_counter()
            for _ in range(calls[name]):
                fn()
            samples[name].append((time.perf_counter() - t0) / calls[name])
    return samples, outputs, calls


def _warm_up(fn: Callable, block_s: float):
    """Calls fn until warm: twice and for block_s, or once if that took over LONG_CALL_S.
    Returns the last output, the fastest call's time (a time slice lost to another process
    must not shrink the blocks) and the number of calls."""
    start, fastest, calls = time.perf_counter(), math.inf, 0
    while True:
        t0 = time.perf_counter()
        out = fn()
        seconds = time.perf_counter() - t0
        fastest, calls = min(fastest, seconds), calls + 1
        if seconds > LONG_CALL_S or (calls >= 2 and time.perf_counter() - start >= block_s):
            return out, fastest, calls


def rel_err(out, ref) -> float:
    """max |out - ref| / max |ref|, the worst over the tensors of a result."""
    outs = [torch.as_tensor(o).detach() for o in (out if isinstance(out, tuple) else (out,))]
    refs = [r.detach() for r in (ref if isinstance(ref, tuple) else (ref,))]
    if len(outs) != len(refs) or any(o.shape != r.shape for o, r in zip(outs, refs)):
        return math.inf
    return max(((o - r).abs().max() / r.abs().max().clamp_min(1e-30)).item()
               for o, r in zip(outs, refs))


# ---- a family ---------------------------------------------------------------------------------


def run_family(family: str, module, thread_counts: List[int], info: dict, limits: dict,
               s: Settings, quick: bool, case_filter: str = "") -> List[dict]:
    """Times every case of a family at every thread count, printing the table row by row.
    Returns one row per (case, threads, peer)."""
    cases = [c for c in module.cases(quick) if case_filter in f"{c.name} {c.mode}"]
    if not cases:
        return []
    table = _Table(module.PEERS, "/".join(sorted({c.unit for c in cases})),
                   max(len(c.name) for c in cases))
    start = time.perf_counter()
    print(f"== {family} · {info['model']} · {info['isa']} ==")
    print(table.header())
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    rows = []
    for case in cases:
        fns = case.setup()
        for t in thread_counts:
            with use_threads(t):
                samples, outputs, calls = time_peers(fns, s)
            new = _rows(family, case, t, samples, outputs, calls, info, limits, stamp)
            print(table.row(case, t, new))
            rows += new
        del fns
    print(table.footer(rows))
    print(f"{family}: {len(cases)} cases at {len(thread_counts)} thread count(s) in "
          f"{time.perf_counter() - start:.0f} s")
    return rows


def _rows(family, case, threads, samples, outputs, calls, info, limits, stamp) -> List[dict]:
    median = {name: statistics.median(v) for name, v in samples.items()}
    fastest_peer = min(t for name, t in median.items() if name != "fusedops")
    rows = []
    for name, v in samples.items():
        rate = case.rate(median[name])
        rows.append({
            "timestamp": stamp, "machine": info["model"], "isa": info["isa"],
            "best_isa": info["best_isa"], "family": family, "case": case.name,
            "mode": case.mode, "threads": threads, "peer": name,
            "ms": _round(median[name] * 1e3), "rate": _round(rate), "unit": case.unit,
            "pct_peak": _round(100 * rate / peak(limits, case.unit, threads, case.bf16)),
            "vs_fusedops": _round(median[name] / median["fusedops"]),
            "vs_best": _round(fastest_peer / median["fusedops"]) if name == "fusedops" else None,
            "rel_err": _round(rel_err(outputs[name], outputs[REFERENCE])), "tolerance": tolerance(case),
            "rounds": len(v), "calls_per_block": calls[name],
            "samples_ms": [_round(x * 1e3) for x in v],
        })
    return rows


class _Table:
    """The printed table: peer times, then fusedops' rate, % of peak, ratios and error."""

    def __init__(self, peers, unit: str, name_width: int):
        self.peers = list(peers)
        self.cols = ([("case", max(4, name_width)), ("mode", 7), ("thr", 3)]
                     + [(f"{p} ms", max(9, len(p) + 3)) for p in self.peers]
                     + [(unit, 8), ("%peak", 5), ("vs best", 7), ("vs torch", 8), ("err", 7)])

    def _line(self, values) -> str:
        return "  ".join(f"{v:<{w}}" if i < 2 else f"{v:>{w}}"
                         for i, (v, (_, w)) in enumerate(zip(values, self.cols)))

    def header(self) -> str:
        return self._line([name for name, _ in self.cols])

    def row(self, case: Case, threads: int, rows: List[dict]) -> str:
        by_peer = {r["peer"]: r for r in rows}
        ours = by_peer["fusedops"]
        err = ours["rel_err"]
        times = [_ms(by_peer[p]["ms"]) if p in by_peer else "-" for p in self.peers]
        return self._line([case.name, case.mode, threads, *times, f"{ours['rate']:.1f}",
                           f"{ours['pct_peak']:.0f}%", f"{ours['vs_best']:.2f}x",
                           f"{by_peer[REFERENCE]['vs_fusedops']:.2f}x",
                           f"{err:.0e}" + (" !" if err > tolerance(case) else "")])

    def footer(self, rows: List[dict]) -> str:
        lines = ["vs X = X's time / fusedops' time (> 1: fusedops is faster); best = the fastest "
                 "peer; rate and %peak are fusedops'; err = max|fusedops - torch| / max|torch|"]
        for t in sorted({r["threads"] for r in rows}):
            best = [r["vs_best"] for r in rows if r["threads"] == t and r["peer"] == "fusedops"]
            ref = [r["vs_fusedops"] for r in rows if r["threads"] == t and r["peer"] == REFERENCE]
            lines.append(f"geometric mean at {t} thread(s): vs best {_geomean(best):.2f}x, "
                         f"vs torch {_geomean(ref):.2f}x")
        wrong = sorted({f"{r['case']} {r['mode']}" for r in rows
                        if r["peer"] == "fusedops" and r["rel_err"] > r["tolerance"]})
        if wrong:
            lines.append(f"WRONG RESULTS (err > {ERR_TOLERANCE:g}, bf16 {BF16_ERR_TOLERANCE:g}): "
                         + ", ".join(wrong))
        return "\n".join(lines)


def _round(x: float) -> float:
    return float(f"{x:.5g}")


def _ms(ms: float) -> str:
    return f"{ms:.3f}" if ms < 10 else f"{ms:.2f}" if ms < 100 else f"{ms:.1f}"


def _geomean(xs) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


# ---- results files ----------------------------------------------------------------------------

CSV_FIELDS = ["timestamp", "machine", "isa", "best_isa", "family", "case", "mode", "threads",
              "peer", "ms", "rate", "unit", "pct_peak", "vs_fusedops", "vs_best", "rel_err",
              "rounds", "calls_per_block"]


def write_results(out_dir: Path, stem: str, rows: List[dict], info: dict, limits: dict,
                  s: Settings) -> None:
    """<stem>.csv (one row per case, threads and peer), <stem>.json (the same rows with every
    sample, plus the machine, its limits and the timing settings) and <stem>.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / f"{stem}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    blas = numpy_blas()
    doc = {"machine": {**info, "cores": os.cpu_count(), **limits},
           "software": {"python": platform.python_version(), "torch": torch.__version__,
                        "fusedops": fusedops.__version__, "numpy_blas": blas},
           "settings": s.__dict__, "rows": rows}
    (out_dir / f"{stem}.json").write_text(json.dumps(doc, indent=1) + "\n")
    written = [f"{stem}.csv", f"{stem}.json"]
    if _plot(out_dir / f"{stem}.png", stem, rows, info, limits):
        written.append(f"{stem}.png")
    print(f"wrote {', '.join(str(out_dir / w) for w in written)}\n")


def _plot(path: Path, title: str, rows: List[dict], info: dict, limits: dict) -> bool:
    """Horizontal bars of each peer's rate per case, one panel per thread count, with the
    measured peak as a dashed line."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
        return False
    labels = list(dict.fromkeys(f"{r['case']} {r['mode']}" for r in rows))
    peers = list(dict.fromkeys(r["peer"] for r in rows))
    counts = sorted({r["threads"] for r in rows})
    units = sorted({r["unit"] for r in rows})
    fig, axes = plt.subplots(1, len(counts), squeeze=False, sharey=True,
                             figsize=(5.5 * len(counts), 1.5 + 0.45 * len(labels)))
    height = 0.8 / len(peers)
    for ax, t in zip(axes[0], counts):
        for i, p in enumerate(peers):
            rate = {f"{r['case']} {r['mode']}": r["rate"] for r in rows
                    if r["threads"] == t and r["peer"] == p}
            ax.barh([j - 0.4 + (i + 0.5) * height for j in range(len(labels))],
                    [rate.get(label, 0.0) for label in labels], height=height, label=p)
        if len(units) == 1:
            ax.axvline(peak(limits, units[0], t), color="k", ls="--", lw=1, label="peak")
        ax.set_title(f"{t} thread{'s' if t > 1 else ''}")
        ax.set_xlabel("/".join(units))
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(range(len(labels)), labels)
    axes[0][0].invert_yaxis()
    axes[0][-1].legend(loc="lower right", fontsize="small")
    fig.suptitle(f"{title}: {info['model']} ({info['isa']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
