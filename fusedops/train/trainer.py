"""Train a GPT on text: the embedded corpus by default (Python standard-library docstrings, no
download), or any text file with --data. Character tokens; presets from tiny to GPT-2 124M.

    python -m fusedops.train                        # tiny GPT, a couple of minutes on 2 cores
    python -m fusedops.train --backend torch        # the same model on torch's layers
    python -m fusedops.train --resume               # continue from <out>/ckpt.pt
    torchrun --nproc-per-node 2 -m fusedops.train   # data parallel (gloo on CPU, nccl on GPU)

Prints a progress bar (loss, tokens/s), the train/validation loss at every evaluation, and
a text sample at the end; writes <out>/ckpt.pt (atomically, at every evaluation and on
Ctrl-C / SIGTERM), <out>/metrics.json and <out>/loss.png.
"""
import argparse
import json
import math
import os
import signal
import sys
import time
from typing import Optional

import torch

from ..data import CharTokenizer, TextData, load_text, stdlib_corpus
from ..models import GPT, PRESETS, GPTConfig
from . import checkpoint

DEFAULTS = {  # preset: (steps, batch size, learning rate)
    "tiny": (500, 32, 2e-3),
    "small": (2000, 32, 1e-3),
    "gpt2": (5000, 8, 6e-4),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m fusedops.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS), help="model size (default: tiny)")
    p.add_argument("--data", metavar="FILE", help="a UTF-8 text file (default: the embedded corpus)")
    p.add_argument("--backend", default="fusedops", choices=("fusedops", "torch"),
                   help="whose layers run the model (default: fusedops)")
    p.add_argument("--steps", type=int, help="optimizer steps in total (preset default)")
    p.add_argument("--batch-size", type=int, help="sequences per step and process (preset default)")
    p.add_argument("--block-size", type=int, help="context length (preset default)")
    p.add_argument("--n-layer", type=int)
    p.add_argument("--n-head", type=int)
    p.add_argument("--n-embd", type=int)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--lr", type=float, help="peak learning rate (preset default)")
    p.add_argument("--min-lr-ratio", type=float, default=0.1, help="final lr / peak lr (cosine)")
    p.add_argument("--warmup", type=int, default=None, help="warmup steps (default: steps/20)")
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--grad-clip", type=float, default=1.0, help="max gradient norm (0: off)")
    p.add_argument("--eval-interval", type=int, default=None, help="steps between evaluations "
                   "and checkpoints (default: steps/5)")
    p.add_argument("--eval-iters", type=int, default=10, help="batches per evaluation")
    p.add_argument("--sample-chars", type=int, default=400, help="characters sampled at the end")
    p.add_argument("--prompt", default="The ", help="start of the final sample")
    p.add_argument("--out", default=None, help="output folder (default: runs/gpt-<preset>-<backend>)")
    p.add_argument("--resume", nargs="?", const="", default=None, metavar="CKPT",
                   help="continue from CKPT (default: <out>/ckpt.pt)")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    args = p.parse_args(argv)
    steps, batch, lr = DEFAULTS[args.preset]
    args.steps = steps if args.steps is None else args.steps
    args.batch_size = batch if args.batch_size is None else args.batch_size
    args.lr = lr if args.lr is None else args.lr
    args.warmup = max(1, args.steps // 20) if args.warmup is None else args.warmup
    args.eval_interval = args.eval_interval or max(1, args.steps // 5)
    args.out = args.out or os.path.join("runs", f"gpt-{args.preset}-{args.backend}")
    for name in ("steps", "batch_size", "eval_interval", "eval_iters"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.lr <= 0:
        p.error("--lr must be > 0")
    return args


def lr_at(step: int, args) -> float:
    """Linear warmup, then cosine decay to min_lr_ratio * lr at the last step."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    t = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * (args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


class _Dist:
    """torchrun data parallelism: one process per rank, gradients averaged by DDP."""

    def __init__(self, device: torch.device):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        if self.world > 1:
            import torch.distributed as dist

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

    def barrier(self):
        if self.world > 1:
            self.dist.barrier()

    def close(self):
        if self.world > 1:
            self.dist.destroy_process_group()


def _device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    return torch.device(name)


def _optimizer(model: GPT, args):
    groups = model.param_groups(args.weight_decay)
    if args.backend == "fusedops":
        from ..optim import AdamW, clip_grad_norm_
    else:
        from torch.optim import AdamW
        from torch.nn.utils import clip_grad_norm_
    return AdamW(groups, lr=args.lr, betas=(0.9, 0.95), eps=1e-8), clip_grad_norm_


@torch.no_grad()
def evaluate(model: GPT, data: TextData, args, device) -> dict:
    model.eval()
    g = torch.Generator().manual_seed(args.seed + 1)  # the same batches at every evaluation
    out = {}
    for split in ("train", "val"):
        losses = []
        for _ in range(args.eval_iters):
            x, y = data.batch(split, args.batch_size, model.cfg.block_size, g)
            losses.append(model(x.to(device), y.to(device))[1].item())
        out[split] = sum(losses) / len(losses)
    model.train()
    return out


def _plot(history: list, path: str, title: str) -> Optional[str]:
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
    ax.set_ylabel("cross-entropy (nats / character)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def train(args) -> dict:
    """Runs the training described by args (see parse_args); returns the final metrics."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = _device(args.device)
    dist = _Dist(device)
    ckpt_path = os.path.join(args.out, "ckpt.pt")
    resume_from = None
    if args.resume is not None:
        resume_from = args.resume or ckpt_path
    state = checkpoint.load(resume_from) if resume_from else None

    text = load_text(args.data) if args.data else stdlib_corpus()
    tok = CharTokenizer.from_state_dict(state["tokenizer"]) if state else CharTokenizer.from_text(text)
    data = TextData(text, tok)
    if state:
        cfg = GPTConfig(**state["config"])
        if state.get("data_fingerprint") != data.fingerprint and dist.main:
            print("warning: resuming on different text than the checkpoint was trained on")
    else:
        cfg = GPTConfig.preset(args.preset, tok.vocab_size, block_size=args.block_size,
                               n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd,
                               dropout=args.dropout)
    torch.manual_seed(args.seed)
    model = GPT(cfg, backend=args.backend).to(device)
    opt, clip = _optimizer(model, args)
    gen = torch.Generator().manual_seed(args.seed + 1000 * (dist.rank + 1))
    step, history = 0, []
    if state:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, history = state["step"], state["history"]
        gen.set_state(state["generators"][dist.rank % len(state["generators"])])
    ddp = dist.wrap(model)

    def snapshot() -> dict:
        return {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                "config": cfg.to_dict(), "tokenizer": tok.state_dict(), "history": history,
                "generators": [gen.get_state()], "args": vars(args),
                "data_fingerprint": data.fingerprint, "backend": args.backend}

    def save():
        if dist.main:
            checkpoint.save_atomic(snapshot(), ckpt_path)

    stop = {"signal": None}

    def on_signal(signum, _frame):
        stop["signal"] = signum  # finish the step in flight, save, then leave

    old_handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    tokens_per_step = args.batch_size * cfg.block_size * dist.world
    if dist.main:
        print(f"fusedops.train: GPT {args.preset} ({cfg.n_layer} layers, {cfg.n_head} heads, "
              f"{cfg.n_embd} wide, context {cfg.block_size}) · {model.num_params() / 1e6:.2f}M "
              f"parameters · vocabulary {tok.vocab_size} characters · backend {args.backend} · "
              f"{device} · {torch.get_num_threads()} threads x {dist.world} process(es)")
        src = args.data or "the embedded corpus (Python standard-library docstrings)"
        print(f"data: {src}: {len(data.train):,} training / {len(data.val):,} validation characters")
        if state:
            print(f"resumed from {resume_from} at step {step}")
    first_eval = None
    if step == 0:
        first_eval = evaluate(model, data, args, device)
        history.append({"step": 0, **first_eval})
        if dist.main:
            print(f"step {0:>6}  train {first_eval['train']:.4f}  val {first_eval['val']:.4f}")
        save()  # from here on a crash always leaves a checkpoint to resume from
    else:
        first_eval = next((h for h in history if "val" in h), None)

    progress = None
    if dist.main and not args.no_progress:
        try:
            from tqdm import tqdm

            progress = tqdm(total=args.steps, initial=step, desc="train", unit="step",
                            dynamic_ncols=True, file=sys.stdout)
        except ImportError:
            progress = None
    train_time, train_tokens, t_log = 0.0, 0, time.perf_counter()
    try:
        while step < args.steps and stop["signal"] is None:
            t0 = time.perf_counter()
            lr = lr_at(step, args)
            for group in opt.param_groups:
                group["lr"] = lr
            x, y = data.batch("train", args.batch_size, cfg.block_size, gen)
            _, loss = ddp(x.to(device), y.to(device))
            loss.backward()
            norm = clip(model.parameters(), args.grad_clip) if args.grad_clip > 0 else None
            opt.step()
            opt.zero_grad(set_to_none=True)
            loss_v = loss.item()
            if not math.isfinite(loss_v):
                raise FloatingPointError(
                    f"fusedops.train: the loss became {loss_v} at step {step}; the last good "
                    f"checkpoint is {ckpt_path} (try a lower --lr)")
            step += 1
            dt = time.perf_counter() - t0
            train_time += dt
            train_tokens += tokens_per_step
            rec = {"step": step, "loss": loss_v, "lr": lr}
            if norm is not None:
                rec["grad_norm"] = float(norm)
            history.append(rec)
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f"{loss_v:.3f}", tok_s=f"{train_tokens / train_time:,.0f}")
            elif dist.main and time.perf_counter() - t_log > 10:
                t_log = time.perf_counter()
                print(f"step {step:>6}  loss {loss_v:.4f}  {train_tokens / train_time:,.0f} tokens/s")
            if step % args.eval_interval == 0 or step == args.steps:
                ev = evaluate(model, data, args, device)
                history.append({"step": step, **ev})
                msg = f"step {step:>6}  train {ev['train']:.4f}  val {ev['val']:.4f}  lr {lr:.2e}"
                if progress is not None:
                    progress.write(msg)
                elif dist.main:
                    print(msg)
                save()
    finally:
        if progress is not None:
            progress.close()
        for s, h in old_handlers.items():
            signal.signal(s, h)
    if stop["signal"] is not None:
        save()
        if dist.main:
            print(f"stopped by signal {stop['signal']} at step {step}; checkpoint saved to "
                  f"{ckpt_path} (continue with --resume)")
        dist.close()
        return {"step": step, "stopped": True}

    result = {"step": step, "backend": args.backend, "preset": args.preset,
              "params": model.num_params(), "threads": torch.get_num_threads(),
              "processes": dist.world,
              "tokens_per_s": train_tokens / train_time if train_time else None}
    last = next((h for h in reversed(history) if "val" in h), None)
    if last:
        result.update(train_loss=last["train"], val_loss=last["val"])
    if first_eval:
        result["initial_val_loss"] = first_eval["val"]
    if dist.main:
        g = torch.Generator().manual_seed(args.seed)
        prompt = tok.encode(args.prompt or "\n")[None, :].to(device)
        sample = tok.decode(model.generate(prompt, args.sample_chars, temperature=0.8, top_k=20,
                                           generator=g)[0].tolist())
        result["sample"] = sample
        print("\n---- sample " + "-" * 60)
        print(sample)
        print("-" * 72)
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "metrics.json"), "w") as f:
            json.dump({**result, "history": history}, f, indent=1)
        png = _plot(history, os.path.join(args.out, "loss.png"),
                    f"GPT {args.preset} on {'--data' if args.data else 'stdlib docstrings'} "
                    f"({args.backend})")
        if last and first_eval:
            print(f"validation loss {first_eval['val']:.3f} -> {last['val']:.3f} nats/char in "
                  f"{step} steps", end="")
            if result["tokens_per_s"]:
                print(f" · {result['tokens_per_s']:,.0f} tokens/s", end="")
            print()
        print(f"checkpoint {ckpt_path}" + (f" · loss plot {png}" if png else "") +
              f" · metrics {os.path.join(args.out, 'metrics.json')}")
    dist.barrier()
    dist.close()
    return result


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        train(args)
    except (FileNotFoundError, ValueError, RuntimeError, FloatingPointError) as e:
        msg = str(e)
        if msg.startswith("fusedops"):
            print(msg, file=sys.stderr)
            sys.exit(2)
        raise
