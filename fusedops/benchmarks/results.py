"""The results file of a family: benchmarks/results/<family>.csv, one row per comparison.

A row compares fusedops with one peer on one case at one thread count, in one run, and says
where it was measured. Runs append rows; nothing is overwritten, so a file holds every run of
every machine kind, and `python -m fusedops.benchmarks report` reads the newest row of each
comparison per machine kind. Fields left empty are unknown (rows converted from older files
lack the memory, the load and the commit), never guessed.
"""
import csv
import math
import statistics
from pathlib import Path
from typing import Dict, Iterable, List, Sequence

# What each field holds (the header of every results file, in this order).
FIELDS = {
    "timestamp": "UTC start of the run (ISO 8601)",
    "machine_kind": "CPU kind and instruction set in force, e.g. 'AMD Zen5 (avx512)': the report groups by it",
    "cpu": "CPU model name (/proc/cpuinfo)",
    "cpu_id": "vendor, family, model and stepping (/proc/cpuinfo)",
    "cores": "logical CPUs the process may use",
    "isa": "instruction set the kernels use (FUSEDOPS_ISA caps it)",
    "best_isa": "best instruction set the CPU has",
    "bf16_path": "bf16 products: AMX tiles, vdpbf16ps or widened (fusedops.cpu_info()['bf16'])",
    "fp32_peak_gflops": "measured fp32 FMA peak at this row's thread count",
    "bf16_peak_gflops": "measured peak of the bf16 path in force at this row's thread count",
    "triad_gbs": "measured STREAM-style triad bandwidth at this row's thread count",
    "load": "1-minute load average at the start of the run",
    "torch": "torch version",
    "fusedops": "fusedops version",
    "commit": "git commit of the fusedops source ('-dirty' with uncommitted changes); empty when unknown",
    "numpy_blas": "numpy's BLAS, where numpy is the peer",
    "family": "benchmark family",
    "case": "what is computed and its shape",
    "mode": "fwd, fwd+bwd or step",
    "threads": "threads of torch's pool (ours) and of numpy's BLAS",
    "peer": "the library fusedops is compared with in this row",
    "unit": "GFLOP/s (analytic FLOPs) or GB/s (bytes that must move)",
    "fusedops_ms": "fusedops' median milliseconds per call over the rounds",
    "fusedops_p20_ms": "20th percentile of fusedops' per-round times",
    "fusedops_p80_ms": "80th percentile of fusedops' per-round times",
    "peer_ms": "the peer's median milliseconds per call",
    "peer_p20_ms": "20th percentile of the peer's per-round times",
    "peer_p80_ms": "80th percentile of the peer's per-round times",
    "ratio": "peer_ms / fusedops_ms: above 1, fusedops is faster",
    "ratio_p20": "peer_p20_ms / fusedops_p80_ms: the low end of the ratio's spread",
    "ratio_p80": "peer_p80_ms / fusedops_p20_ms: the high end of the ratio's spread",
    "fusedops_rate": "fusedops' GFLOP/s or GB/s at its median",
    "peer_rate": "the peer's GFLOP/s or GB/s at its median",
    "fusedops_pct_peak": "fusedops_rate as a percentage of the peak that applies (fp32, bf16 or triad)",
    "peer_pct_peak": "peer_rate as a percentage of the same peak",
    "fusedops_mem_mib": "peak resident-set growth over one call of fusedops (MiB), outputs included",
    "peer_mem_mib": "the same for the peer",
    "rel_err": "max |out - torch| / max |torch| of the peer's result (fusedops' result when the peer is torch)",
    "tolerance": "the error above which a result is wrong",
    "rounds": "rounds of alternating blocks",
    "fusedops_samples_ms": "fusedops' time per call in each round, space-separated",
    "peer_samples_ms": "the peer's time per call in each round, space-separated",
}
HEADER = list(FIELDS)


def percentiles(samples: Sequence[float]):
    """(p20, median, p80) of the samples, interpolated between the sorted values."""
    if len(samples) == 1:
        return samples[0], samples[0], samples[0]
    cuts = statistics.quantiles(samples, n=5, method="inclusive")
    return cuts[0], statistics.median(samples), cuts[3]


def comparison(ours: Sequence[float], theirs: Sequence[float]) -> dict:
    """The timing fields of a row from per-round seconds per call of fusedops and a peer (the
    same rounds, in order). The ratio's spread runs from the peer's p20 over our p80 to the
    peer's p80 over our p20, so it always holds the ratio of the medians."""
    o20, o50, o80 = percentiles(ours)
    p20, p50, p80 = percentiles(theirs)
    return {"fusedops_ms": rnd(o50 * 1e3), "fusedops_p20_ms": rnd(o20 * 1e3),
            "fusedops_p80_ms": rnd(o80 * 1e3), "peer_ms": rnd(p50 * 1e3),
            "peer_p20_ms": rnd(p20 * 1e3), "peer_p80_ms": rnd(p80 * 1e3),
            "ratio": rnd(p50 / o50), "ratio_p20": rnd(p20 / o80), "ratio_p80": rnd(p80 / o20),
            "fusedops_samples_ms": " ".join(str(rnd(x * 1e3)) for x in ours),
            "peer_samples_ms": " ".join(str(rnd(x * 1e3)) for x in theirs)}


def rnd(x: float) -> float:
    """Five significant digits."""
    return float(f"{x:.5g}") if math.isfinite(x) else x


def append(path: Path, rows: Iterable[dict]) -> int:
    """Appends rows to a results file, writing the header first if the file is new. Refuses a
    file whose header is another format. Returns the number of rows written."""
    rows = list(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    if not new:
        with open(path, newline="") as f:
            header = next(csv.reader(f), [])
        if header != HEADER:
            raise SystemExit(f"{path}: its header is not this results format ({len(header)} "
                             f"fields, expected {len(HEADER)}: {', '.join(HEADER[:4])}, ...); "
                             "move it away or pass --out to write elsewhere")
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, HEADER, extrasaction="raise")
        if new:
            writer.writeheader()
        writer.writerows({k: _cell(row.get(k)) for k in HEADER} for row in rows)
    return len(rows)


def _cell(value):
    return "" if value is None else value


NUMERIC = {"cores", "fp32_peak_gflops", "bf16_peak_gflops", "triad_gbs", "load", "threads",
           "fusedops_ms", "fusedops_p20_ms", "fusedops_p80_ms", "peer_ms", "peer_p20_ms",
           "peer_p80_ms", "ratio", "ratio_p20", "ratio_p80", "fusedops_rate", "peer_rate",
           "fusedops_pct_peak", "peer_pct_peak", "fusedops_mem_mib", "peer_mem_mib", "rel_err",
           "tolerance", "rounds"}


def read(path: Path) -> List[Dict[str, object]]:
    """The rows of a results file, numbers as int or float and empty fields as None."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames != HEADER:
            raise ValueError(f"{path}: not this results format (header {reader.fieldnames})")
        return [{k: _parse(k, v) for k, v in row.items()} for row in reader]


def _parse(key: str, value: str):
    if value == "":
        return None
    if key in NUMERIC:
        number = float(value)
        return int(number) if key in ("threads", "rounds", "cores") else number
    return value
