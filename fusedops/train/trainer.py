"""Train a GPT on text: the embedded corpus by default (Python standard-library docstrings, no
download), any text file with --data, or a token folder from `python -m fusedops.data prepare`
(memory-mapped: a corpus larger than memory trains). Tokens: characters (default), a
byte-level BPE trained on the text (--tokenizer bpe --vocab-size N), or GPT-2's
(--tokenizer gpt2 --tokenizer-dir DIR). Presets from tiny to GPT-2 124M (--preset gpt2 with
GPT-2 tokens is that model exactly), or a Hugging Face GPT-2 folder to fine-tune
(--init-from DIR).

    python -m fusedops.train                        # tiny GPT, a couple of minutes on 2 cores
    python -m fusedops.train --backend torch        # the same model on torch's layers
    python -m fusedops.train --resume               # continue from <out>/ckpt.pt
    python -m fusedops.train --tokenizer bpe --grad-accum 4 --dtype bf16 --patience 3
    python -m fusedops.train --init-from gpt2/ --data my.txt --lr 1e-4   # fine-tune GPT-2
    torchrun --nproc-per-node 2 -m fusedops.train   # data parallel (gloo on CPU, nccl on GPU)

Prints a progress bar (loss, tokens/s, model FLOP/s and the fraction of this machine's
measured peak), the train/validation loss at every evaluation, and a text sample at the end;
writes <out>/ckpt.pt (atomically, at every evaluation and on Ctrl-C / SIGTERM), <out>/best.pt
(the checkpoint of the best validation loss so far), <out>/metrics.json and <out>/loss.png.
A resumed run takes every setting not given from its checkpoint. Sample from a run with
`python -m fusedops.sample --ckpt <out>`.

Exit codes: 0 when the run ends, has nothing left to train, or is stopped by Ctrl-C / SIGTERM
(the step in flight finishes and is saved); 2 with one line on stderr for bad arguments, data
or checkpoints, and for a non-finite step (never applied, never saved).
"""
import argparse
import contextlib
import json
import math
import os
import signal
import sys
import threading
import time
from typing import Optional

import torch

from ..data import (KINDS, BPETokenizer, CharTokenizer, TextData, TokenData, from_state_dict,
                    load_text, stdlib_corpus, train_bpe)
from ..models import GPT, PRESETS, GPTConfig
from . import checkpoint

DEFAULTS = {  # preset: (steps, batch size, learning rate)
    "tiny": (500, 32, 2e-3),
    "small": (2000, 32, 1e-3),
    "gpt2": (5000, 8, 6e-4),
}
# flags whose default does not depend on others (None: derived in parse_args)
FLAG_DEFAULTS = dict(preset="tiny", data=None, encoding=None, backend="fusedops", steps=None,
                     batch_size=None, block_size=None, n_layer=None, n_head=None, n_embd=None,
                     dropout=0.0, lr=None, min_lr_ratio=0.1, warmup=None, weight_decay=0.1,
                     grad_clip=1.0, eval_interval=None, eval_iters=10, sample_chars=400,
                     prompt="The ", out=None, resume=None, seed=1337, threads=None,
                     device="auto", no_progress=False, tokenizer="char", vocab_size=4096,
                     tokenizer_dir=None, init_from=None, grad_accum=1, dtype="fp32",
                     compile=False, patience=0, keep_last=0)
# what a resumed run takes from the checkpoint unless given on the command line (the model's
# sizes and tokens come from the checkpoint's config and tokenizer; out, resume, threads,
# device, no_progress, compile and init_from are about this invocation only)
RESUMED = ("data", "encoding", "preset", "backend", "steps", "batch_size", "lr", "min_lr_ratio",
           "warmup", "weight_decay", "grad_clip", "eval_interval", "eval_iters", "seed",
           "sample_chars", "prompt", "grad_accum", "dtype", "patience", "keep_last")
PAD = 64  # BPE and GPT-2 vocabularies are padded to a multiple of this (GPT-2: 50257 -> 50304)
MODEL_FLAGS = ("block_size", "n_layer", "n_head", "n_embd", "dropout")


class _Parser(argparse.ArgumentParser):
    """argparse with the program's error format: one line on stderr, exit code 2."""

    def error(self, message):
        self.exit(2, f"fusedops.train: {message} (see --help)\n")


def parse_args(argv=None):
    """The run's settings as a Namespace; `given` lists those set on the command line (a
    resumed run takes the others from its checkpoint)."""
    # no argparse defaults: what is absent from the parse was not given
    p = _Parser(prog="python -m fusedops.train", description=__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter,
                argument_default=argparse.SUPPRESS)
    p.add_argument("--preset", choices=sorted(PRESETS), help="model size (default: tiny)")
    p.add_argument("--data", metavar="FILE_OR_DIR", help="a text file, or a token folder from "
                   "`python -m fusedops.data prepare` (default: the embedded corpus)")
    p.add_argument("--encoding", help="the text file's encoding (default: UTF-8, checked)")
    p.add_argument("--tokenizer", choices=KINDS, help="char (default), bpe (trained on the "
                   "text, cached beside it) or gpt2 (GPT-2's, from --tokenizer-dir)")
    p.add_argument("--vocab-size", type=int, help="tokens of the BPE (default: 4096)")
    p.add_argument("--tokenizer-dir", metavar="DIR", help="folder with GPT-2's vocab.json and "
                   "merges.txt (default: --init-from's folder)")
    p.add_argument("--init-from", metavar="DIR", help="start from the weights of a Hugging "
                   "Face GPT-2 folder (config.json, model.safetensors); its tokens by default")
    p.add_argument("--backend", choices=("fusedops", "torch"),
                   help="whose layers run the model (default: fusedops)")
    p.add_argument("--steps", type=int, help="optimizer steps in total (preset default)")
    p.add_argument("--batch-size", type=int, help="sequences per micro-batch and process "
                   "(preset default)")
    p.add_argument("--grad-accum", type=int, metavar="N", help="micro-batches per optimizer step (default: 1)")
    p.add_argument("--block-size", type=int, help="context length (preset default)")
    p.add_argument("--n-layer", type=int)
    p.add_argument("--n-head", type=int)
    p.add_argument("--n-embd", type=int)
    p.add_argument("--dropout", type=float, help="(default: 0)")
    p.add_argument("--lr", type=float, help="peak learning rate (preset default)")
    p.add_argument("--min-lr-ratio", type=float, help="final lr / peak lr (cosine; default: 0.1)")
    p.add_argument("--warmup", type=int, help="warmup steps (default: steps/20)")
    p.add_argument("--weight-decay", type=float, help="(default: 0.1)")
    p.add_argument("--grad-clip", type=float, help="max gradient norm (0: off; default: 1)")
    p.add_argument("--eval-interval", type=int, help="steps between evaluations "
                   "and checkpoints (default: steps/5)")
    p.add_argument("--eval-iters", type=int, help="batches per evaluation (default: 10)")
    p.add_argument("--patience", type=int, metavar="P", help="stop after this many evaluations without a "
                   "better validation loss, and end with the best weights (default: 0, off)")
    p.add_argument("--keep-last", type=int, metavar="K", help="also keep the checkpoints of the last K "
                   "evaluations as ckpt-<step>.pt (default: 0)")
    p.add_argument("--sample-chars", type=int, help="tokens sampled at the end (characters with "
                   "--tokenizer char; default: 400)")
    p.add_argument("--prompt", help="start of the final sample (default: 'The ')")
    p.add_argument("--out", help="output folder (default: runs/gpt-<preset>-<backend>, or the "
                   "folder of --resume CKPT)")
    p.add_argument("--resume", nargs="?", const="", metavar="CKPT",
                   help="continue from CKPT (default: <out>/ckpt.pt); settings not given "
                   "come from the checkpoint")
    p.add_argument("--seed", type=int, help="(default: 1337)")
    p.add_argument("--threads", type=int, help="CPU threads per process (default: torch's; under "
                   "torchrun, each process its share of the cores)")
    p.add_argument("--device", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--dtype", choices=("fp32", "bf16"), help="fp32 (default), or bf16 autocast "
                   "with float32 weights and optimizer")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    given = vars(p.parse_args(argv))
    args = argparse.Namespace(**{**FLAG_DEFAULTS, **given})
    args.given = sorted(given)
    steps, batch, lr = DEFAULTS[args.preset]
    args.steps = steps if args.steps is None else args.steps
    args.batch_size = batch if args.batch_size is None else args.batch_size
    args.lr = lr if args.lr is None else args.lr
    args.warmup = max(1, args.steps // 20) if args.warmup is None else args.warmup
    args.eval_interval = args.eval_interval or max(1, args.steps // 5)
    if args.init_from and "tokenizer" not in given:
        args.tokenizer = "gpt2"  # the checkpoint's own tokens
    if args.out is None:
        if args.resume:  # --resume CKPT: continue next to it
            args.out = os.path.dirname(args.resume) or "."
        else:
            args.out = os.path.join("runs", f"gpt-{args.preset}-{args.backend}")
    problem = _problem(args)
    if not problem and args.init_from is not None and args.resume is not None:
        problem = "--init-from starts a run and --resume continues one: pass one of them"
    if problem:
        p.error(problem)
    return args


_COUNTS = ("steps", "batch_size", "eval_interval", "eval_iters", "threads", "block_size",
           "n_layer", "n_head", "n_embd", "grad_accum")  # >= 1
_OPTIONAL = ("threads", "block_size", "n_layer", "n_head", "n_embd")  # None: a default applies
_SIZES = ("warmup", "sample_chars", "patience", "keep_last")  # >= 0
_NUMBERS = {"lr": (0, math.inf, "> 0"), "dropout": (0, 1, "in [0, 1)"),
            "min_lr_ratio": (0, 1, "in [0, 1]"), "grad_clip": (0, math.inf, ">= 0"),
            "weight_decay": (0, math.inf, ">= 0")}


def _problem(args) -> Optional[str]:
    """What is wrong with the settings (from the command line or a checkpoint), or None."""
    for name in _COUNTS + _SIZES + ("seed",):
        v = getattr(args, name)
        if v is None and name in _OPTIONAL:
            continue
        low = 1 if name in _COUNTS else 0 if name in _SIZES else -math.inf
        if type(v) is not int or v < low:
            return f"{_flag(name)} must be an integer" + (f" >= {low}" if low > -math.inf else "")
    for name, (low, high, what) in _NUMBERS.items():
        v = getattr(args, name)
        ok = type(v) in (int, float) and low <= v <= high and math.isfinite(v)
        if not ok or (name == "lr" and v == 0) or (name == "dropout" and v == 1):
            return f"{_flag(name)} must be {what}"
    if args.backend not in ("fusedops", "torch") or args.preset not in PRESETS:
        return f"unknown --backend {args.backend!r} or --preset {args.preset!r}"
    if args.tokenizer not in KINDS or args.dtype not in ("fp32", "bf16"):
        return f"unknown --tokenizer {args.tokenizer!r} or --dtype {args.dtype!r}"
    if type(args.vocab_size) is not int or args.vocab_size < 257:
        return "--vocab-size must be an integer >= 257 (256 bytes and the end-of-text token)"
    for name in ("data", "encoding", "prompt", "tokenizer_dir", "init_from"):
        if getattr(args, name) is not None and type(getattr(args, name)) is not str:
            return f"{_flag(name)} must be a string"
    return None


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def lr_at(step: int, args) -> float:
    """Linear warmup, then cosine decay to min_lr_ratio * lr at the last step."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    t = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * (args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


class _Dist:
    """torchrun data parallelism: one process per rank, gradients averaged by DDP. The ranks
    agree on when to stop (a signal may reach only some of them) and each saves its own
    random states into the one checkpoint rank 0 writes."""

    def __init__(self, device: torch.device):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.device = device
        if self.world > 1:
            import torch.distributed as dist

            if device.type == "cuda" and device.index is not None:
                torch.cuda.set_device(device)  # NCCL collectives of objects use the current device
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            self.dist = dist

    @property
    def main(self) -> bool:
        return self.rank == 0

    def wrap(self, model):
        if self.world == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model)

    def any(self, flag: bool) -> bool:
        """Whether flag is true on any rank."""
        if self.world == 1:
            return flag
        t = torch.tensor([float(flag)], device=self.device)
        self.dist.all_reduce(t, op=self.dist.ReduceOp.MAX)
        return bool(t.item())

    def mean(self, t: torch.Tensor) -> float:
        """The mean over ranks of a scalar (NaN anywhere gives NaN everywhere)."""
        t = t.detach().float().reshape(1).clone()
        if self.world > 1:
            self.dist.all_reduce(t)
            t /= self.world
        return t.item()

    def gather(self, obj) -> list:
        """obj of every rank, in rank order."""
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        self.dist.all_gather_object(out, obj)
        return out

    def barrier(self):
        if self.world > 1:
            self.dist.barrier()

    def close(self):
        if self.world > 1:
            self.dist.destroy_process_group()


def _device(name: str) -> torch.device:
    from .. import build_info

    if name == "auto" and torch.cuda.is_available() and not build_info()["cuda"]:
        # auto never picks a device that has none of our kernels
        print("fusedops.train: a GPU is present, but this build of fusedops has no CUDA kernels "
              "(see fusedops.build_info()): training on the CPU", file=sys.stderr)
        return torch.device("cpu")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"fusedops.train: --device {name!r} is not a device "
                         "(cpu, cuda, cuda:N or auto)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"fusedops.train: --device {name}: CUDA is not available here")
    return device


def _optimizer(model: GPT, args):
    groups = model.param_groups(args.weight_decay)
    if args.backend == "fusedops":
        from ..optim import AdamW, clip_grad_norm_
    else:
        from torch.optim import AdamW
        from torch.nn.utils import clip_grad_norm_
    return AdamW(groups, lr=args.lr, betas=(0.9, 0.95), eps=1e-8), clip_grad_norm_


def _autocast(args, device: torch.device):
    """bf16: autocast (the weights, gradients and optimizer stay float32); fp32: nothing."""
    if args.dtype == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def evaluate(model: GPT, data: TextData, args, device) -> dict:
    model.eval()
    g = torch.Generator().manual_seed(args.seed + 1)  # the same batches at every evaluation
    out = {}
    for split in ("train", "val"):
        losses = []
        for _ in range(args.eval_iters):
            x, y = data.batch(split, args.batch_size, model.cfg.block_size, g)
            with _autocast(args, device):
                losses.append(model(x.to(device), y.to(device))[1].item())
        out[split] = sum(losses) / len(losses)
    model.train()
    return out


def _threads(args) -> Optional[str]:
    """Applies --threads; under torchrun without it, gives each process its share of the cores
    (torchrun sets OMP_NUM_THREADS=1) and returns a note saying so."""
    if args.threads:
        torch.set_num_threads(args.threads)
        return None
    local = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    if local <= 1 or os.environ.get("OMP_NUM_THREADS", "1") != "1":
        return None  # one process, or a thread count the user chose
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    share = max(1, cores // local)
    torch.set_num_threads(share)
    return (f"{local} processes on {cores} cores: {share} thread(s) each" +
            (" (not torchrun's OMP_NUM_THREADS=1" if share > 1 else " (") +
            "; --threads N sets another count)")


def _peak_flops(device: torch.device) -> Optional[float]:
    """This process's measured fp32 FMA peak in FLOP/s at its thread count (CPU only)."""
    if device.type != "cpu":
        return None
    from .. import _C

    return _C._fma_peak_gflops(torch.get_num_threads(), 0.1) * 1e9


def _tokens(args, text: str, inform):
    """The tokenizer of a new run on text (a resumed run has its checkpoint's, a token folder
    its own)."""
    if args.tokenizer == "char":
        return CharTokenizer.from_text(text)
    if args.tokenizer == "bpe":
        tok, path, trained = train_bpe(text, args.vocab_size, args.data)
        if path:
            inform(f"{'trained a BPE of' if trained else 'using the BPE of'} {tok.vocab_size} "
                   f"tokens cached in {path}")
        return tok
    folder = args.tokenizer_dir or args.init_from
    if not folder:
        raise ValueError("fusedops.train: --tokenizer gpt2 needs --tokenizer-dir DIR, a folder "
                         "holding GPT-2's vocab.json and merges.txt (nothing is downloaded)")
    return BPETokenizer.from_dir(folder)


def _describe(tok) -> str:
    what = {"char": "characters", "bpe": "BPE tokens", "gpt2": "GPT-2 tokens"}[tok.kind]
    return f"{tok.vocab_size:,} {what}"


def _plot(history: list, path: str, title: str, unit: str = "character") -> Optional[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    steps = [h["step"] for h in history if "loss" in h]
    ax.plot(steps, [h["loss"] for h in history if "loss" in h], lw=0.8, alpha=0.6, label="train (batch)")
    ev = [h for h in history if "val" in h]
    if ev:
        ax.plot([h["step"] for h in ev], [h["train"] for h in ev], "o-", label="train (eval)")
        ax.plot([h["step"] for h in ev], [h["val"] for h in ev], "s-", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel(f"cross-entropy (nats / {unit})")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _resume_settings(args, state: dict, warn) -> dict:
    """Fills the settings not given on the command line from the checkpoint, and names in a
    warning those given that differ from it; returns the model config to build (the
    checkpoint's, with the sizes given applied)."""
    given = set(getattr(args, "given", vars(args)))
    saved = state["args"]
    for name in RESUMED:
        if name not in saved:
            continue
        ours, theirs = getattr(args, name), saved[name]
        if name not in given:
            setattr(args, name, theirs)
        elif (os.path.abspath(ours) if name == "data" and ours else ours) != theirs:
            warn(f"{_flag(name)} {ours} differs from the checkpoint's {theirs}; this run uses {ours}")
    kind = state["tokenizer"].get("kind", "char")
    if "tokenizer" in given and args.tokenizer != kind:
        raise checkpoint.CheckpointError(f"fusedops.train: --tokenizer {args.tokenizer}: the "
                                         f"checkpoint's model reads {kind} tokens (a resumed run "
                                         "keeps its vocabulary)")
    args.tokenizer = kind
    for name in ("vocab_size", "tokenizer_dir"):
        if name in given and name in saved and getattr(args, name) != saved[name]:
            warn(f"{_flag(name)} is ignored: a resumed run keeps the checkpoint's vocabulary")
        if name in saved:
            setattr(args, name, saved[name])
    cfg = dict(state["config"])
    if "preset" in given and args.preset != saved.get("preset"):
        cfg.update(zip(("n_layer", "n_head", "n_embd", "block_size"), PRESETS[args.preset]))
    for name in MODEL_FLAGS:
        if name in given and getattr(args, name) != cfg.get(name):
            warn(f"{_flag(name)} {getattr(args, name)} differs from the checkpoint's "
                 f"{cfg.get(name)}; this run uses {getattr(args, name)}")
            cfg[name] = getattr(args, name)
    return cfg


@contextlib.contextmanager
def _checkpoint_fits(path: str):
    """Turns what a checkpoint of the right keys but wrong contents raises into one line."""
    try:
        yield
    except checkpoint.CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as e:
        reason = (str(e).splitlines() or [""])[0][:200]
        raise checkpoint.CheckpointError(f"fusedops.train: checkpoint {path!r} does not fit this "
                                         f"run: {type(e).__name__}: {reason}") from None


def _check_weights(model: GPT, weights: dict, path: str) -> None:
    own = model.state_dict()
    for name, t in own.items():
        if name not in weights:
            raise checkpoint.CheckpointError(f"fusedops.train: checkpoint {path!r} lacks the "
                                             f"model's {name}")
        w = weights[name]
        if not torch.is_tensor(w) or w.shape != t.shape:
            shape = list(w.shape) if torch.is_tensor(w) else type(w).__name__
            raise checkpoint.CheckpointError(
                f"fusedops.train: checkpoint {path!r} holds a model of another shape: {name} is "
                f"{shape} there, {list(t.shape)} here")
        if w.is_floating_point() and not torch.isfinite(w).all():
            raise checkpoint.CheckpointError(f"fusedops.train: checkpoint {path!r} holds "
                                             f"non-finite weights ({name})")
    extra = sorted(set(weights) - set(own))
    if extra:
        raise checkpoint.CheckpointError(f"fusedops.train: checkpoint {path!r} holds weights this "
                                         f"model lacks ({', '.join(extra[:3])})")


def train(args) -> dict:
    """Runs the training described by args (see parse_args); returns the final metrics.

    SIGINT and SIGTERM (caught while it runs, in the main thread) finish the step in flight,
    save and return. A step with a non-finite loss or gradient norm is never applied: it
    raises FloatingPointError naming the last good checkpoint."""
    stop = {"signal": None}

    def on_signal(signum, _frame):
        stop["signal"] = signum  # finish the step in flight, save, then leave; repeats change nothing

    handlers = {}
    if threading.current_thread() is threading.main_thread():
        handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _train(args, stop)
    finally:  # only now: a second Ctrl-C during the final save must not cut it short
        for s, h in handlers.items():
            signal.signal(s, h)


def _train(args, stop: dict) -> dict:
    threads_note = _threads(args)
    device = _device(args.device)
    dist = _Dist(device)

    def say(*parts, file=sys.stdout, end="\n"):
        if dist.main:
            print(*parts, file=file, end=end, flush=True)

    notes = []  # printed once the run is sure to start: an error stays the only line
    inform = notes.append

    def warn(note):
        notes.append(f"warning: {note}")

    ckpt_path = os.path.join(args.out, "ckpt.pt")
    best_path = os.path.join(args.out, "best.pt")
    metrics_path = os.path.join(args.out, "metrics.json")
    resume_from = None
    if args.resume is not None:
        resume_from = args.resume or ckpt_path
    state = checkpoint.load(resume_from) if resume_from else None
    step, history = 0, []
    given = set(getattr(args, "given", vars(args)))
    if state:
        model_cfg = _resume_settings(args, state, warn)
        problem = _problem(args)
        if problem:
            raise checkpoint.CheckpointError(f"fusedops.train: checkpoint {resume_from!r} holds "
                                             f"bad settings: {problem}")
        step, history = state["step"], state["history"]
        best = _best(history)
        if step >= args.steps or (args.patience and best["waited"] >= args.patience):
            why, more = f"--steps is {args.steps}", "--steps"
            if step < args.steps:
                why, more = (f"it stopped early: {best['waited']} evaluations without a better "
                             f"validation loss than step {best['step']}'s (--patience "
                             f"{args.patience})"), "--patience"
            say(f"fusedops.train: {resume_from} is at step {step} and {why}: nothing to train "
                f"(pass a larger {more} to continue)")
            dist.close()
            return {"step": step, "stopped": False}
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise ValueError(f"fusedops.train: --out {args.out!r} is a file, not a folder")
    if dist.main:
        stale = sum((checkpoint.remove_stale(p) for p in (ckpt_path, best_path, metrics_path)), [])
        if stale:
            say(f"removed {len(stale)} temporary file(s) a killed run left in {args.out}")

    # ---- data and tokens: a token folder carries its tokenizer, a checkpoint its own -------
    if args.data and os.path.isdir(args.data):
        data, text = TokenData(args.data), None
        src = f"{args.data} (token folder of {data.meta.get('source', '?')})"
    else:
        text = load_text(args.data, args.encoding) if args.data else stdlib_corpus()
        src = args.data or "the embedded corpus (Python standard-library docstrings)"
    if state:
        with _checkpoint_fits(resume_from):
            tok = from_state_dict(state["tokenizer"])
            cfg = GPTConfig(**model_cfg)
    elif text is None:
        tok = data.tokenizer
        if "tokenizer" in given and args.tokenizer != tok.kind:
            raise ValueError(f"fusedops.train: --tokenizer {args.tokenizer}: the token folder "
                             f"{args.data!r} holds {tok.kind} tokens")
        args.tokenizer = tok.kind
    else:
        tok = _tokens(args, text, inform)
    if text is None and tok.state_dict() != data.tokenizer.state_dict():
        raise ValueError(f"fusedops.train: the token folder {args.data!r} was made with other "
                         "tokens than the model reads (prepare it with the checkpoint's tokenizer)")
    init = None
    if not state and args.init_from:
        init = GPT.from_pretrained(args.init_from, args.backend, args.dropout)
        cfg = init.cfg
        changed = [n for n in ("n_layer", "n_head", "n_embd") if getattr(args, n) is not None
                   and getattr(args, n) != getattr(cfg, n)]
        if changed:
            raise ValueError(f"fusedops.train: {_flag(changed[0])} {getattr(args, changed[0])}: "
                             f"--init-from {args.init_from} fixes the model's sizes")
        if args.block_size and args.block_size != cfg.block_size:
            if args.block_size > cfg.block_size:
                raise ValueError(f"fusedops.train: --block-size {args.block_size} exceeds the "
                                 f"{cfg.block_size} positions of --init-from {args.init_from}")
            init.crop_block_size(args.block_size)
        if tok.vocab_size != cfg.vocab_size:
            raise ValueError(f"fusedops.train: the tokens have {tok.vocab_size:,} ids, the model of "
                             f"--init-from {args.init_from} reads {cfg.vocab_size:,} (pass "
                             "--tokenizer gpt2 with its vocab.json and merges.txt)")
    elif not state:
        padded = -(-tok.vocab_size // PAD) * PAD if tok.kind != "char" else None
        cfg = GPTConfig.preset(args.preset, tok.vocab_size, block_size=args.block_size,
                               n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd,
                               dropout=args.dropout,
                               padded_vocab_size=padded if padded != tok.vocab_size else None)
    try:
        cfg.validate()
    except (ValueError, TypeError) as e:  # the sizes given, or a checkpoint's config
        raise ValueError("fusedops.train: " + str(e).split(": ", 1)[-1] +
                         (f" (the model of checkpoint {resume_from!r})" if state else "")) from None
    if state and cfg.vocab_size != tok.vocab_size:
        raise checkpoint.CheckpointError(f"fusedops.train: checkpoint {resume_from!r} holds a model "
                                         f"of {cfg.vocab_size} tokens and a tokenizer of "
                                         f"{tok.vocab_size}")
    if text is not None:
        data = TextData(text, tok)
    if state and state.get("data_fingerprint") != data.fingerprint:
        warn(f"the text of {src} differs from the text the checkpoint was trained on; continuing")
    torch.manual_seed(args.seed)
    model = init if init is not None else GPT(cfg, backend=args.backend)
    model.to(device)
    opt, clip = _optimizer(model, args)
    gen = torch.Generator().manual_seed(args.seed + 1000 * (dist.rank + 1))
    if state:
        _check_weights(model, state["model"], resume_from)
        with _checkpoint_fits(resume_from):
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            opt.param_groups[0]["weight_decay"] = args.weight_decay  # loading restored the old one
            # each rank continues its own batch sampling and its own dropout (torch's default
            # generators: the fused attention draws its dropout seed and offset from the CPU one)
            gens, rngs = state["generators"], state.get("torch_rng") or []
            if len(gens) != dist.world:
                warn(f"the checkpoint holds the batch sampling of {len(gens)} process(es), this "
                     f"run has {dist.world}: batches differ from an uninterrupted run")
            if dist.rank < len(gens):
                gen.set_state(gens[dist.rank])
            else:  # a rank the checkpoint lacks: fresh batches, not a replay of its first steps
                gen.manual_seed(args.seed + 1000 * (dist.rank + 1) + step)
            if dist.rank < len(rngs):
                torch.set_rng_state(rngs[dist.rank]["cpu"])
                if device.type == "cuda" and "cuda" in rngs[dist.rank]:
                    torch.cuda.set_rng_state(rngs[dist.rank]["cuda"], device)
    if threads_note:
        inform(threads_note)
    for note in notes:
        say(f"fusedops.train: {note}", file=sys.stderr)
    ddp = dist.wrap(model)
    step_fn = torch.compile(ddp) if args.compile else ddp
    last_good, saved_at = resume_from, step

    def save():
        """Collective: every rank hands its random states to rank 0, which writes."""
        nonlocal last_good, saved_at
        rng = {"cpu": torch.get_rng_state()}
        if device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(device)
        every = dist.gather((gen.get_state(), rng))
        if dist.main:
            run_args = {k: v for k, v in vars(args).items() if k != "given"}
            run_args["data"] = os.path.abspath(args.data) if args.data else None
            checkpoint.save_atomic(
                {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                 "config": cfg.to_dict(), "tokenizer": tok.state_dict(), "history": history,
                 "args": run_args, "generators": [g for g, _ in every],
                 "torch_rng": [r for _, r in every], "data_fingerprint": data.fingerprint,
                 "backend": args.backend}, ckpt_path)
            if args.keep_last:
                checkpoint.keep_last(ckpt_path, step, args.keep_last)
        last_good, saved_at = ckpt_path, step

    def evaluated(ev: dict):
        """Records an evaluation; best.pt follows the best validation loss (after the save)."""
        history.append({"step": step, **ev})
        save()
        if dist.main and _best(history)["step"] == step:
            checkpoint.link_atomic(ckpt_path, best_path)

    tokens_per_step = args.batch_size * cfg.block_size * args.grad_accum * dist.world
    flops_per_token = model.flops_per_token()
    peak = _peak_flops(device)
    total_peak = peak * dist.world if peak else None
    padding = f" (padded to {cfg.rows:,})" if cfg.rows != cfg.vocab_size else ""
    say(f"fusedops.train: GPT {cfg.name()} ({cfg.n_layer} layers, {cfg.n_head} heads, "
        f"{cfg.n_embd} wide, context {cfg.block_size}) · {model.num_params(positions=True):,} "
        f"parameters · vocabulary {_describe(tok)}{padding} · backend {args.backend} · "
        f"{args.dtype}{' · compiled' if args.compile else ''} · {device} · "
        f"{torch.get_num_threads()} threads x {dist.world} process(es)")
    unit = "characters" if tok.kind == "char" else "tokens"
    say(f"data: {src}: {len(data.train):,} training / {len(data.val):,} validation {unit}")
    if args.grad_accum > 1:
        say(f"{args.grad_accum} micro-batches of {args.batch_size} per step: {tokens_per_step:,} "
            "tokens per step")
    if init is not None:
        say(f"initialized from {args.init_from}")
    if state:
        say(f"resumed from {resume_from} at step {step}")
        first_eval = next((h for h in history if "val" in h), None)
    else:
        first_eval = evaluate(model, data, args, device)
        say(f"step {0:>6}  train {first_eval['train']:.4f}  val {first_eval['val']:.4f}")
        evaluated(first_eval)  # from here on a crash always leaves a checkpoint to resume from

    progress = None
    if dist.main and not args.no_progress:
        try:
            from tqdm import tqdm

            progress = tqdm(total=args.steps, initial=step, desc="train", unit="step",
                            dynamic_ncols=True, file=sys.stdout)
        except ImportError:
            progress = None
    train_time, train_tokens, t_log = 0.0, 0, time.perf_counter()
    stopped_early = False

    def rates() -> dict:
        tok_s = train_tokens / train_time if train_time else 0.0
        out = {"tok_s": f"{tok_s:,.0f}", "GFLOP/s": f"{tok_s * flops_per_token / 1e9:,.1f}"}
        if total_peak:
            out["peak"] = f"{100 * tok_s * flops_per_token / total_peak:.0f}%"
        return out

    try:
        # the ranks agree before every step, so a signal that reached one stops them all
        while step < args.steps and not dist.any(stop["signal"] is not None):
            t0 = time.perf_counter()
            lr = lr_at(step, args)
            for group in opt.param_groups:
                group["lr"] = lr
            loss_sum = 0.0
            for micro in range(args.grad_accum):
                x, y = data.batch("train", args.batch_size, cfg.block_size, gen)
                # DDP averages the gradients once, after the last micro-batch
                sync = ddp.no_sync() if dist.world > 1 and micro < args.grad_accum - 1 else \
                    contextlib.nullcontext()
                with sync:
                    with _autocast(args, device):
                        _, loss = step_fn(x.to(device), y.to(device))
                    (loss / args.grad_accum).backward()
                loss_sum = loss_sum + loss.detach()
            loss = loss_sum / args.grad_accum
            # the norm the clipping computes (of the averaged gradients, so every rank sees the
            # same) is also the check: a non-finite step is never applied, so never saved
            norm = float(clip(model.parameters(), args.grad_clip if args.grad_clip > 0 else math.inf))
            loss_v = dist.mean(loss)
            if not (math.isfinite(loss_v) and math.isfinite(norm)):
                raise FloatingPointError(
                    f"fusedops.train: step {step + 1} gave loss {loss_v} and gradient norm {norm}; "
                    f"the step was not applied; the last good checkpoint is {last_good} "
                    "(try a lower --lr)")
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            dt = time.perf_counter() - t0
            train_time += dt
            train_tokens += tokens_per_step
            history.append({"step": step, "loss": loss_v, "lr": lr, "grad_norm": norm})
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f"{loss_v:.3f}", **rates())
            elif time.perf_counter() - t_log > 10:
                t_log = time.perf_counter()
                r = rates()
                say(f"step {step:>6}  loss {loss_v:.4f}  {r['tok_s']} tokens/s  "
                    f"{r['GFLOP/s']} GFLOP/s" + (f" ({r['peak']} of peak)" if "peak" in r else ""))
            if step % args.eval_interval == 0 or step == args.steps:
                ev = evaluate(model, data, args, device)
                msg = f"step {step:>6}  train {ev['train']:.4f}  val {ev['val']:.4f}  lr {lr:.2e}"
                if progress is not None:
                    progress.write(msg)
                else:
                    say(msg)
                evaluated(ev)
                best = _best(history)
                # every rank saw the same evaluation; agreeing costs nothing and is sure
                if dist.any(bool(args.patience) and best["waited"] >= args.patience):
                    stopped_early = True
                    say(f"early stop at step {step}: {best['waited']} evaluations without a "
                        f"better validation loss than step {best['step']}'s {best['val']:.4f}")
                    break
    finally:
        if progress is not None:
            progress.close()
    if step < args.steps and not stopped_early:  # stopped by a signal
        if saved_at != step:
            save()
        why = signal.Signals(stop["signal"]).name if stop["signal"] else "a signal to another rank"
        say(f"stopped by {why} at step {step}; checkpoint saved to {ckpt_path} (continue with "
            "--resume)")
        dist.close()
        return {"step": step, "stopped": True}

    best = _best(history)
    tok_s = train_tokens / train_time if train_time else None
    result = {"step": step, "backend": args.backend, "preset": args.preset, "model": cfg.name(),
              "params": model.num_params(), "params_total": model.num_params(positions=True),
              "tokenizer": tok.kind, "vocab_size": tok.vocab_size, "dtype": args.dtype,
              "threads": torch.get_num_threads(), "processes": dist.world, "tokens_per_s": tok_s,
              "flops_per_token": flops_per_token,
              "model_flops_per_s": tok_s * flops_per_token if tok_s else None,
              "peak_flops_per_s": total_peak,
              "peak_fraction": tok_s * flops_per_token / total_peak if tok_s and total_peak else None,
              "stopped_early": stopped_early, "best_step": best["step"], "best_val_loss": best["val"]}
    last = next((h for h in reversed(history) if "val" in h), None)
    if last:
        result.update(train_loss=last["train"], val_loss=last["val"])
    if first_eval:
        result["initial_val_loss"] = first_eval["val"]
    if dist.main:
        if args.patience and best["step"] is not None and best["step"] != step:
            model.load_state_dict(checkpoint.load(best_path)["model"])  # end with the best weights
            say(f"restored the weights of step {best['step']} (validation loss {best['val']:.4f}) "
                f"from {best_path}")
        g = torch.Generator().manual_seed(args.seed)
        model.eval()  # no dropout while sampling
        prompt = tok.encode(args.prompt or "\n")[None, :].to(device)
        sample = tok.decode(model.generate(prompt, args.sample_chars, temperature=0.8, top_k=20,
                                           generator=g)[0].tolist())
        result["sample"] = sample
        say("\n---- sample " + "-" * 60)
        say(sample)
        say("-" * 72)
        metrics = json.dumps({**result, "history": history}, indent=1).encode()
        checkpoint.write_atomic(metrics_path, lambda f: f.write(metrics))
        png = _plot(history, os.path.join(args.out, "loss.png"),
                    f"GPT {cfg.name()} on {'--data' if args.data else 'stdlib docstrings'} "
                    f"({args.backend})", unit[:-1])
        if last and first_eval:
            say(f"validation loss {first_eval['val']:.3f} -> {last['val']:.3f} nats/{unit[:-1]} "
                f"in {step} steps", end="")
            if tok_s:
                r = rates()
                say(f" · {r['tok_s']} tokens/s · {r['GFLOP/s']} GFLOP/s" +
                    (f" ({r['peak']} of this machine's peak)" if "peak" in r else ""), end="")
            say()
        say(f"checkpoint {ckpt_path} · best {best_path}" + (f" · loss plot {png}" if png else "") +
            f" · metrics {metrics_path}")
    dist.barrier()
    dist.close()
    return result


def _best(history: list) -> dict:
    """The evaluation of the lowest validation loss (the first of equals): its step and loss,
    and how many evaluations came after it."""
    evals = [h for h in history if "val" in h]
    if not evals:
        return {"step": None, "val": None, "waited": 0}
    i = min(range(len(evals)), key=lambda j: (evals[j]["val"], j))
    return {"step": evals[i]["step"], "val": evals[i]["val"], "waited": len(evals) - 1 - i}


def main(argv=None) -> None:
    """The command line. Exit codes: 0 when the run ends, has nothing left to do, or is stopped
    by SIGINT/SIGTERM (after saving); 2, with one line on stderr, for bad arguments, data or
    checkpoints and for a non-finite step."""
    args = parse_args(argv)
    try:
        train(args)
    except (OSError, ValueError, RuntimeError, FloatingPointError) as e:
        msg = " ".join(str(e).splitlines())
        if isinstance(e, OSError) and not msg.startswith("fusedops"):
            msg = f"fusedops.train: {msg}"  # an unwritable --out, a full disk, ...
        if not msg.startswith(("fusedops.train:", "fusedops.data:")):
            raise  # not the user's input: a bug, keep its traceback
        print(msg, file=sys.stderr, flush=True)
        sys.exit(2)
