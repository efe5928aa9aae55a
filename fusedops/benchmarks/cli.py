"""python -m fusedops.benchmarks [FAMILY ... | all] [--threads 1,2] [--quick] [-k TEXT] [--out DIR]
python -m fusedops.benchmarks report [--help]

Measures this machine's limits, then times every case of each family against its peers in
alternating blocks, prints a table per family and APPENDS one row per case, thread count and
peer to <out>/<family>.csv (<family>-quick.csv with --quick), with the machine, its measured
peaks, the software versions and commit, the spread of the times and the peak memory of a
call. `report` draws those files as PNGs and writes the README's result tables.

In a checkout of the repository `python -m benchmarks ...` is the same program, and results
go to benchmarks/results/ of that checkout; elsewhere --out defaults to ./benchmark-results.

examples:
  python -m fusedops.benchmarks matmul --threads 1,2     one family at 1 and at 2 threads
  python -m fusedops.benchmarks all -k lm_head           every case whose 'name mode' has 'lm_head'
  python -m fusedops.benchmarks conv -k fwd+bwd          only the forward + backward cases
  python -m fusedops.benchmarks all --quick --out /tmp/r smoke run, results kept apart
"""
import argparse
import importlib
import os
import sys
import time
from pathlib import Path
from typing import List, Optional

# numpy's OpenBLAS reads these when it loads, and they slow it down. torch imports numpy, so
# the program runs itself again without them before it measures anything. Only OpenBLAS reads
# them: torch uses MKL and fusedops its own kernels.
_SLOW_NUMPY_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
_REMOVED = "FUSEDOPS_BENCH_REMOVED_ENV"


def default_results() -> Path:
    """benchmarks/results of the checkout fusedops was imported from, else ./benchmark-results."""
    import fusedops

    checkout = Path(fusedops.__file__).resolve().parent.parent / "benchmarks" / "results"
    return checkout if checkout.is_dir() else Path.cwd() / "benchmark-results"


def parse_args(argv: List[str], prog: str):
    import torch

    from . import FAMILIES

    p = argparse.ArgumentParser(prog=f"python -m {prog}", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("families", nargs="*", default=["all"], metavar="FAMILY",
                   help=f"'all' or any of: {', '.join(FAMILIES)} (default: all); "
                   "'report' as the first word runs the report instead")
    p.add_argument("--threads", default=str(torch.get_num_threads()),
                   help="comma-separated thread counts; each case runs at each, and the "
                   "fraction of peak is given at each (default: %(default)s)")
    p.add_argument("--quick", action="store_true",
                   help="short smoke run: fewer and smaller cases, fewer repeats (CI)")
    p.add_argument("-k", dest="filter", default="", metavar="TEXT",
                   help="only the cases whose 'name mode' contains TEXT, e.g. -k 'fc 4096' "
                   "or -k fwd+bwd")
    p.add_argument("--out", type=Path, default=None,
                   help=f"results folder (default: {default_results()})")
    p.add_argument("--list", action="store_true",
                   help="list the selected cases (after -k and --quick) and exit")
    args = p.parse_args(argv)
    unknown = set(args.families) - {"all", *FAMILIES}
    if unknown:
        p.error(f"unknown family {', '.join(sorted(unknown))}; "
                f"choose from all, {', '.join(FAMILIES)}")
    args.families = FAMILIES if "all" in args.families else list(dict.fromkeys(args.families))
    try:
        args.threads = [int(t) for t in args.threads.split(",")]
    except ValueError:
        p.error(f"--threads: expected comma-separated integers, got {args.threads!r}")
    if min(args.threads) < 1:
        p.error("--threads: thread counts must be at least 1")
    args.out = args.out or default_results()
    return args


def main(prog: str = "fusedops.benchmarks", argv: Optional[List[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["report"]:
        from . import report
        report.main(argv[1:], f"python -m {prog} report")
        return
    if any(name in os.environ for name in _SLOW_NUMPY_ENV):
        env = {k: v for k, v in os.environ.items() if k not in _SLOW_NUMPY_ENV}
        env[_REMOVED] = ", ".join(f"{k}={os.environ[k]}" for k in _SLOW_NUMPY_ENV if k in os.environ)
        os.execve(sys.executable, [sys.executable, "-m", prog, *argv], env)
    args = parse_args(argv, prog)
    run(args)


def run(args) -> None:
    import fusedops

    from . import harness, results

    modules = {f: importlib.import_module(f"{__package__}.bench_{f}") for f in args.families}
    if args.list:
        for family, module in modules.items():
            for case in harness.select(module, args.quick, args.filter):
                print(f"{family:10} {case.name} {case.mode}")
        return
    selected = {f: m for f, m in modules.items() if harness.select(m, args.quick, args.filter)}
    if not selected:
        sys.exit(f"no case of {', '.join(args.families)} matches -k {args.filter!r} "
                 "(--list shows the cases)")
    start = time.perf_counter()
    settings = harness.QUICK if args.quick else harness.FULL
    info = fusedops.cpu_info()
    limits = harness.measure_limits(sorted(set(args.threads)), settings)
    run_info = harness.provenance(info, limits)
    harness.print_header(run_info, info, limits, settings, os.environ.get(_REMOVED, ""))
    for family, module in selected.items():
        rows = harness.run_family(family, module, args.threads, run_info, settings,
                                  args.quick, args.filter)
        path = args.out / (f"{family}-quick.csv" if args.quick else f"{family}.csv")
        print(f"appended {results.append(path, rows)} rows to {path}\n")
    print(f"done in {time.perf_counter() - start:.0f} s")
