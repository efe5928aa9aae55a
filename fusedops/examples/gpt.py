"""The GPT, as the training program trains it (fusedops.train), on the embedded text corpus
(the standard library's docstrings, characters as tokens): the tiny preset for a short run."""
import os

from .report import Result

GOAL = 2.7  # nats per character; the untrained model (a uniform guess) starts near 4.6


def gpt(args):
    from ..train import parse_args, train

    steps = args.epochs or (10 if args.quick else 300)
    argv = ["--preset", "tiny", "--steps", str(steps), "--batch-size", "16", "--block-size",
            "64", "--lr", "3e-3", "--backend", args.backend, "--seed", str(args.seed),
            "--out", f"{args.out}/gpt", "--sample-chars", "120", "--eval-iters", "5"]
    if args.no_progress:
        argv.append("--no-progress")
    result = train(parse_args(argv))
    # fusedops.train draws its own loss plot (loss.png, or says why not) in that folder
    return [Result("validation loss (nats/char)", result["best_val_loss"], GOAL,
                   higher_is_better=False, note="the best evaluation")], os.path.join(args.out, "gpt")
