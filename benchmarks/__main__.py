"""python -m benchmarks [FAMILY ... | all] [--threads 1,2] [--quick] [-k TEXT] [--out DIR]

Measures this machine's limits, then times every case of each family against its peers and
prints a table per family; results go to benchmarks/results/<family>.{csv,json,png}
(<family>-quick.* with --quick). A family is a file benchmarks/bench_<family>.py.
"""
import os
import sys

# numpy's OpenBLAS reads these when it loads, and they slow it down. torch imports numpy, so
# they are removed by running this program again without them, before anything is imported.
# Only OpenBLAS reads them: torch uses MKL and fusedops its own kernels.
_SLOW_NUMPY_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
_REMOVED = "FUSEDOPS_BENCH_REMOVED_ENV"
if any(name in os.environ for name in _SLOW_NUMPY_ENV):
    env = {k: v for k, v in os.environ.items() if k not in _SLOW_NUMPY_ENV}
    env[_REMOVED] = ", ".join(f"{k}={os.environ[k]}" for k in _SLOW_NUMPY_ENV if k in os.environ)
    os.execve(sys.executable, [sys.executable, "-m", "benchmarks", *sys.argv[1:]], env)

import argparse  # noqa: E402
import importlib  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

import fusedops  # noqa: E402

from . import harness  # noqa: E402

HERE = Path(__file__).parent
FAMILIES = sorted(p.stem[len("bench_"):] for p in HERE.glob("bench_*.py"))


def parse_args():
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("families", nargs="*", default=["all"], metavar="FAMILY",
                   help=f"'all' or any of: {', '.join(FAMILIES)} (default: all)")
    p.add_argument("--threads", default=str(torch.get_num_threads()),
                   help="comma-separated thread counts; each case runs at each "
                   "(default: %(default)s)")
    p.add_argument("--quick", action="store_true",
                   help="short smoke run: fewer and smaller cases, fewer repeats (CI)")
    p.add_argument("-k", dest="filter", default="", metavar="TEXT",
                   help="only the cases whose 'name mode' contains TEXT")
    p.add_argument("--out", type=Path, default=HERE / "results", help="results folder")
    args = p.parse_args()
    unknown = set(args.families) - {"all", *FAMILIES}
    if unknown:
        p.error(f"unknown family {', '.join(sorted(unknown))}; "
                f"choose from all, {', '.join(FAMILIES)}")
    args.families = FAMILIES if "all" in args.families else list(dict.fromkeys(args.families))
    args.threads = [int(t) for t in args.threads.split(",")]
    if min(args.threads) < 1:
        p.error("--threads: thread counts must be at least 1")
    return args


def main():
    args = parse_args()
    start = time.perf_counter()
    settings = harness.QUICK if args.quick else harness.FULL
    info = fusedops.cpu_info()
    limits = harness.measure_limits(sorted({1, 2, *args.threads}), settings)
    harness.print_header(info, limits, settings, os.environ.get(_REMOVED, ""))
    for family in args.families:
        module = importlib.import_module(f"{__package__}.bench_{family}")
        rows = harness.run_family(family, module, args.threads, info, limits, settings,
                                  args.quick, args.filter)
        if rows:
            stem = f"{family}-quick" if args.quick else family
            harness.write_results(args.out, stem, rows, info, limits, settings)
    print(f"done in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
