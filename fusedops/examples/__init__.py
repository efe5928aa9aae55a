"""Each model of the set trained on real data, one command each:

    python -m fusedops.examples NAME        (or: fusedops-examples NAME)

Every example shows a progress bar, prints its metric against the goal, and writes a loss plot
under runs/examples/NAME/ (a CSV when matplotlib is not installed). The exit status is 0 when
every goal is met, 1 when one is missed, 2 for bad arguments or data.
"""
import argparse
import os
import sys
import time

import torch

# name: (module, function, what it trains on)
EXAMPLES = {
    "linreg": ("classic", "linreg", "LinearRegression on diabetes: test R^2 within 0.01 of "
                                    "closed-form least squares"),
    "logreg": ("classic", "logreg", "LogisticRegression on breast cancer: test accuracy >= 0.95"),
    "mlp": ("classic", "mlp", "MLP on digits (8x8): test accuracy >= 0.96"),
    "cnn": ("classic", "cnn", "CNN.small() and CNN.mnist() on digits (or MNIST with --data "
                              "DIR): test accuracy >= 0.98 each"),
    "rnn": ("sequence", "rnn", "RNN (LSTM) next-token model sorting digit strings: held-out "
                               "exact match >= 0.99"),
    "transformer": ("sequence", "transformer", "Transformer encoder-decoder reversing digit "
                                               "strings: held-out exact match >= 0.99"),
    "gpt": ("gpt", "gpt", "GPT (tiny) on the embedded text corpus: validation loss <= 2.7 "
                          "nats per character"),
}


def parse_args(argv=None):
    listing = "\n".join(f"  {name:<12} {desc}" for name, (_, _, desc) in EXAMPLES.items())
    p = argparse.ArgumentParser(
        prog="python -m fusedops.examples",
        description="Train a model of the fusedops model set on real data and check its metric.",
        epilog=f"examples:\n{listing}", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", choices=list(EXAMPLES), metavar="NAME",
                   help=f"one of: {', '.join(EXAMPLES)}")
    p.add_argument("--backend", choices=("fusedops", "torch"), default="fusedops",
                   help="layers to build the model from (default: fusedops)")
    p.add_argument("--seed", type=int, default=0, help="(default: 0)")
    p.add_argument("--epochs", type=int, help="epochs or steps (default: the example's own)")
    p.add_argument("--data", metavar="DIR", help="cnn: an MNIST folder with the four IDX files "
                   "(train-images-idx3-ubyte, ..., gzip or not) instead of digits")
    p.add_argument("--arch", choices=("small", "mnist", "both"), default="both",
                   help="cnn: which architecture (default: both)")
    p.add_argument("--out", default=os.path.join("runs", "examples"),
                   help="folder for the loss plots (default: runs/examples)")
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's)")
    p.add_argument("--quick", action="store_true",
                   help="a few steps only, to see it run (the goal is not checked)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        p.error("--epochs must be >= 1")
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be >= 1")
    if args.data and args.name != "cnn":
        p.error("--data is for the cnn example (MNIST IDX files)")
    return args


def run(args):
    """Runs one example; returns its list of Result."""
    import importlib

    module, func, desc = EXAMPLES[args.name]
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"fusedops.examples {args.name} ({args.backend} layers, {torch.get_num_threads()} "
          f"threads): {desc}", flush=True)
    start = time.perf_counter()
    results, log = getattr(importlib.import_module(f"{__name__}.{module}"), func)(args)
    elapsed = time.perf_counter() - start
    for r in results:
        print(r.line(checked=not args.quick))
    if isinstance(log, str):  # the example wrote its own plot into this folder
        print(f"loss plot and metrics: {log}")
    else:
        print(log.save(os.path.join(args.out, args.name), f"{args.name} ({args.backend})"))
    print(f"done in {elapsed:.1f} s")
    return results


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        results = run(args)
    except (FileNotFoundError, ValueError) as e:
        msg = " ".join(str(e).splitlines())
        if not msg.startswith("fusedops"):
            raise
        print(msg, file=sys.stderr, flush=True)
        sys.exit(2)
    sys.exit(0 if args.quick or all(r.met for r in results) else 1)
