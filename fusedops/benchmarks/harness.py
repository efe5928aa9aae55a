"""The benchmark harness: this machine's limits and provenance, timing of peers in alternating
blocks, the peak memory of a call, the printed table, and the rows appended to the results.

A family is one module, fusedops/benchmarks/bench_<family>.py, that defines

    PEERS = ("fusedops", "torch", ...)      # the table's time columns, fusedops first
    def cases(quick: bool) -> list[Case]
    GOALS = {("case name", "mode"): 1.2}    # optional: the ratio against torch each case aims at

Each Case's setup() builds the inputs and returns {peer: zero-argument callable}. A callable
returns its result (a tensor, a numpy array, or a tuple of them), which is compared with the
torch peer's result; timing discards it.
"""
import contextlib
import ctypes
import ctypes.util
import gc
import math
import os
import platform
import statistics
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

import fusedops

from . import results

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


# ---- where the numbers come from ---------------------------------------------------------------


def _cpuinfo() -> Dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read().split("\n\n")[0]
    except OSError:
        return {}
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


# AMD family 0x19 models by microarchitecture (the others of family 0x19 are Zen4)
_ZEN3_MODELS = set(range(0x00, 0x10)) | set(range(0x20, 0x60))


def machine(info: dict) -> dict:
    """CPU model, identity and kind: the kind names the microarchitecture where the CPU's
    family and model tell it (AMD Zen2-Zen5, Intel with AMX) and the instruction set in force,
    e.g. 'AMD Zen5 (avx512)'; otherwise the model name and the instruction set."""
    cpu = _cpuinfo()
    name = cpu.get("model name") or info.get("model") or platform.processor() or "unknown CPU"
    vendor, family, model = cpu.get("vendor_id", ""), cpu.get("cpu family"), cpu.get("model")
    cpu_id = (f"{vendor} family {family} model {model} stepping {cpu.get('stepping', '?')}"
              if family and model else "")
    flags = set(cpu.get("flags", "").split())
    kind = " ".join(name.replace("(R)", "").replace("(TM)", "").split())
    if vendor == "AuthenticAMD" and family and model:
        fam, mod = int(family), int(model)
        zen = {0x17: "Zen2" if mod >= 0x30 else "Zen", 0x1A: "Zen5",
               0x19: "Zen3" if mod in _ZEN3_MODELS else "Zen4"}.get(fam)
        kind = f"AMD {zen}" if zen else kind
    elif vendor == "GenuineIntel" and "amx_bf16" in flags:
        kind += " with AMX"
    return {"cpu": name, "cpu_id": cpu_id, "machine_kind": f"{kind} ({info['isa']})"}


def fusedops_commit() -> Optional[str]:
    """The git commit of the fusedops being measured ('-dirty' when tracked files changed), or
    None when it was not imported from a git checkout."""
    package = Path(fusedops.__file__).resolve().parent
    def git(*args):
        return subprocess.run(["git", "-C", str(package), *args], capture_output=True,
                              text=True, timeout=30).stdout.strip()
    try:
        if Path(git("rev-parse", "--show-toplevel") or "/nonexistent").resolve() != package.parent:
            return None
        commit = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return (commit + ("-dirty" if dirty else "")) or None


def provenance(info: dict, limits: dict) -> dict:
    """The fields every row of this run shares (the per-thread-count peaks are added per row)."""
    blas = numpy_blas()
    return {**machine(info), "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "isa": info["isa"], "best_isa": info["best_isa"], "bf16_path": info.get("bf16"),
            "load": round(os.getloadavg()[0], 2), "torch": torch.__version__,
            "fusedops": fusedops.__version__, "commit": fusedops_commit(),
            "numpy_blas": (f"{blas['internal_api']} {blas['version']} "
                           f"({blas.get('architecture', '?')})") if blas else None,
            "limits": limits}


# ---- peak memory of a call ----------------------------------------------------------------------

_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or None)


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))


def call_memory_mib(fn: Callable) -> Optional[float]:
    """How far one call raises the process's resident set (MiB), its outputs included: the
    allocator's free memory handed back first (torch's CPU tensors, numpy arrays and our
    scratch all come from malloc; fusedops.empty_cache() drops our idle scratch, malloc_trim
    the allocator's), then the peak resident set (VmHWM) reset to the current one and read
    after the call. Linux only (None elsewhere). Memory the call reuses from blocks the
    allocator kept despite the trim is not counted; pages it touches for the first time are."""
    if not os.path.exists("/proc/self/clear_refs"):
        return None
    gc.collect()
    fusedops.empty_cache()
    if hasattr(_LIBC, "malloc_trim"):
        _LIBC.malloc_trim(0)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # VmHWM := VmRSS
        base = _status_kib("VmRSS")
        out = fn()
        grown = _status_kib("VmHWM") - base
    except OSError:
        return None
    del out
    return max(grown, 0) / 1024


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


NUMPY_MISSING = ("numpy/OpenBLAS peer NOT MEASURED: threadpoolctl is missing, so numpy's threads "
                 "cannot follow --threads (pip install threadpoolctl, or fusedops[bench])")


def print_header(run: dict, info: dict, limits: dict, s: Settings, removed_env: str) -> None:
    print(f"machine   {run['machine_kind']} · {run['cpu']} ({run['cpu_id'] or 'no cpuinfo'}) · "
          f"{run['cores']} cores · ISA {info['isa']} (best {info['best_isa']}) · "
          f"L1d {_size(info['l1d'])}, L2 {_size(info['l2'])}, L3 {_size(info['l3'])} · "
          f"GEMM tiles fp32 {info['gemm_f32']}, fp64 {info['gemm_f64']}")
    blas = numpy_blas()
    if blas:
        import numpy
        np_text = (f"numpy {numpy.__version__} on {blas['internal_api']} {blas['version']} "
                   f"({blas.get('architecture', '?')} kernels, {blas.get('threading_layer', '?')})")
    else:
        np_text = "no numpy peer"
    print(f"software  python {platform.python_version()} · torch {torch.__version__} · "
          f"fusedops {fusedops.__version__} ({run['commit'] or 'no git commit'}) · {np_text}")
    if not blas:
        print(f"WARNING   {NUMPY_MISSING}")
    if removed_env:
        print(f"          removed from the environment before numpy loaded: {removed_env} "
              "(they slow numpy's OpenBLAS)")
    busy = " (other processes are using the CPU: timings will be noisy)" if run["load"] > 0.5 else ""
    print(f"load      1-minute load average {run['load']:.2f} at start{busy}")
    print(f"timing    median and p20-p80 per peer over >= {s.min_rounds} rounds of alternating "
          f"blocks (~{s.block_s * 1e3:.0f} ms of calls to one peer, {s.pause_s * 1e3:.0f} ms "
          "pause before each block); memory: resident-set growth over one call")
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


def select(module, quick: bool, case_filter: str = "") -> List[Case]:
    """The family's cases whose 'name mode' contains case_filter."""
    return [c for c in module.cases(quick) if case_filter in f"{c.name} {c.mode}"]


def run_family(family: str, module, thread_counts: List[int], run: dict, s: Settings,
               quick: bool, case_filter: str = "") -> List[dict]:
    """Times every selected case of a family at every thread count, then measures the peak
    memory of one call of each peer, printing the table row by row. Returns the results rows:
    one per case, thread count and peer other than fusedops."""
    cases = select(module, quick, case_filter)
    if not cases:
        return []
    table = _Table(module.PEERS, "/".join(sorted({c.unit for c in cases})),
                   max(len(c.name) for c in cases))
    start = time.perf_counter()
    print(f"== {family} · {run['machine_kind']} ==")
    if "numpy" in module.PEERS and numpy_blas() is None:
        print(f"WARNING: {NUMPY_MISSING}")
    print(table.header())
    rows = []
    for case in cases:
        fns = case.setup()
        for t in thread_counts:
            with use_threads(t):
                samples, outputs, _ = time_peers(fns, s)
                memory = {name: call_memory_mib(fn) for name, fn in fns.items()}
            new = _rows(family, case, t, samples, outputs, memory, run)
            print(table.row(case, t, samples, new))
            rows += new
        del fns
    print(table.footer(rows))
    print(f"{family}: {len(cases)} cases at {len(thread_counts)} thread count(s) in "
          f"{time.perf_counter() - start:.0f} s")
    return rows


def _rows(family, case, threads, samples, outputs, memory, run) -> List[dict]:
    limits = run["limits"]
    top = peak(limits, case.unit, threads, case.bf16)
    ours = statistics.median(samples["fusedops"])
    shared = {k: v for k, v in run.items() if k in results.FIELDS}
    shared.update(
        fp32_peak_gflops=results.rnd(limits["fma_gflops"][threads]),
        bf16_peak_gflops=results.rnd(limits["bf16_gflops"][threads]),
        triad_gbs=results.rnd(limits["triad_gbs"][threads]),
        family=family, case=case.name, mode=case.mode, threads=threads, unit=case.unit,
        fusedops_rate=results.rnd(case.rate(ours)),
        fusedops_pct_peak=results.rnd(100 * case.rate(ours) / top),
        fusedops_mem_mib=_mib(memory["fusedops"]),
        rel_err=results.rnd(rel_err(outputs["fusedops"], outputs[REFERENCE])),
        tolerance=tolerance(case), rounds=len(samples["fusedops"]))
    rows = []
    for name, v in samples.items():
        if name == "fusedops":
            continue
        theirs = statistics.median(v)
        rows.append({**shared, "peer": name, **results.comparison(samples["fusedops"], v),
                     "peer_rate": results.rnd(case.rate(theirs)),
                     "peer_pct_peak": results.rnd(100 * case.rate(theirs) / top),
                     "peer_mem_mib": _mib(memory[name]),
                     "numpy_blas": shared.get("numpy_blas") if name == "numpy" else None})
    return rows


def _mib(x: Optional[float]) -> Optional[float]:
    return None if x is None else round(x, 1)


class _Table:
    """The printed table: peer times, then fusedops' rate, % of peak, ratios, error, memory."""

    def __init__(self, peers, unit: str, name_width: int):
        self.peers = list(peers)
        self.cols = ([("case", max(4, name_width)), ("mode", 7), ("thr", 3)]
                     + [(f"{p} ms", max(9, len(p) + 3)) for p in self.peers]
                     + [(unit, 8), ("%peak", 5), ("vs best", 7), ("vs torch (p20-p80)", 18),
                        ("err", 7), ("MiB ours/torch", 14)])

    def _line(self, values) -> str:
        return "  ".join(f"{v:<{w}}" if i < 2 else f"{v:>{w}}"
                         for i, (v, (_, w)) in enumerate(zip(values, self.cols)))

    def header(self) -> str:
        return self._line([name for name, _ in self.cols])

    def row(self, case: Case, threads: int, samples: dict, rows: List[dict]) -> str:
        ref = next(r for r in rows if r["peer"] == REFERENCE)
        times = [_ms(statistics.median(samples[p]) * 1e3) if p in samples else "-"
                 for p in self.peers]
        best = min(r["ratio"] for r in rows)
        err = ref["rel_err"]
        mem = "/".join("-" if x is None else f"{x:.0f}"
                       for x in (ref["fusedops_mem_mib"], ref["peer_mem_mib"]))
        return self._line([case.name, case.mode, threads, *times, f"{ref['fusedops_rate']:.1f}",
                           f"{ref['fusedops_pct_peak']:.0f}%", f"{best:.2f}x",
                           f"{ref['ratio']:.2f}x ({ref['ratio_p20']:.2f}-{ref['ratio_p80']:.2f})",
                           f"{err:.0e}" + (" !" if err > tolerance(case) else ""), mem])

    def footer(self, rows: List[dict]) -> str:
        lines = ["vs X = X's time / fusedops' time (> 1: fusedops is faster); best = the fastest "
                 "peer; rate and %peak are fusedops'; err = max|fusedops - torch| / max|torch|; "
                 "MiB = resident-set growth over one call"]
        for t in sorted({r["threads"] for r in rows}):
            at = [r for r in rows if r["threads"] == t]
            cases = {(r["case"], r["mode"]) for r in at}
            best = [min(r["ratio"] for r in at if (r["case"], r["mode"]) == c) for c in cases]
            ref = [r["ratio"] for r in at if r["peer"] == REFERENCE]
            pct = [r["fusedops_pct_peak"] for r in at if r["peer"] == REFERENCE]
            lines.append(f"at {t} thread(s): geometric mean vs best {_geomean(best):.2f}x, "
                         f"vs torch {_geomean(ref):.2f}x; fusedops at {statistics.median(pct):.0f}% "
                         f"of peak (median over cases, {min(pct):.0f}-{max(pct):.0f}%)")
        wrong = sorted({f"{r['case']} {r['mode']}" for r in rows if r["rel_err"] > r["tolerance"]})
        if wrong:
            lines.append(f"WRONG RESULTS (err > {ERR_TOLERANCE:g}, bf16 {BF16_ERR_TOLERANCE:g}): "
                         + ", ".join(wrong))
        return "\n".join(lines)


def _ms(ms: float) -> str:
    return f"{ms:.3f}" if ms < 10 else f"{ms:.2f}" if ms < 100 else f"{ms:.1f}"


def _geomean(xs) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs))
