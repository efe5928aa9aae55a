"""Sample text from a trained GPT, with a KV cache.

    python -m fusedops.sample --ckpt runs/gpt-tiny-fusedops --prompt "The " --max-new-tokens 300
    python -m fusedops.sample --ckpt gpt2/ --prompt "Hello" --temperature 0   # greedy
    python -m fusedops.sample --bench              # KV cache against recomputation, GPT-2 124M

--ckpt is a training run's folder (its best.pt, the best validation loss, when there is one,
else ckpt.pt), a checkpoint file, or a Hugging Face GPT-2 folder (config.json,
model.safetensors, vocab.json, merges.txt). Checkpoints load with torch.load(weights_only=True)
and safetensors: loading never runs code, and nothing is downloaded.

Generation runs the prompt once (causal attention, keeping every layer's keys and values),
then each new token alone against the cached keys, so a token costs about the same at any
context length. When the context reaches the model's block size, the cache is refilled from
the last half block. --no-cache reruns the whole context for every token instead (the same
tokens while the context fits the block). --temperature 0 is greedy; --top-k keeps the k
most likely tokens; --seed makes sampling repeatable.

--bench times one new token at contexts 64 to 512, with the cache and by recomputation, on
the --ckpt model or a randomly initialized one of --preset's shape (default: gpt2, GPT-2
124M with its 50257-token vocabulary padded to 50304), and prints the ratio.

Exit codes: 0; 2 with one line on stderr for bad arguments or checkpoints.
"""
import argparse
import os
import sys
import time

import torch

from .data import BPETokenizer, from_state_dict
from .models import GPT, PRESETS, GPTConfig
from .train import checkpoint


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"fusedops.sample: {message} (see --help)\n")


def parse_args(argv=None):
    p = _Parser(prog="python -m fusedops.sample", description=__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", metavar="PATH", help="run folder, checkpoint file or Hugging Face "
                   "GPT-2 folder (required unless --bench)")
    p.add_argument("--prompt", default="The ", help="start of the text (default: 'The ')")
    p.add_argument("--max-new-tokens", type=int, default=200, help="(default: 200)")
    p.add_argument("--temperature", type=float, default=0.8, help="0: greedy (default: 0.8)")
    p.add_argument("--top-k", type=int, default=200, help="0: all tokens (default: 200)")
    p.add_argument("--seed", type=int, default=1337, help="(default: 1337)")
    p.add_argument("--no-cache", action="store_true", help="recompute the context per token")
    p.add_argument("--backend", choices=("fusedops", "torch"),
                   help="whose layers run the model (default: the checkpoint's, or fusedops)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's)")
    p.add_argument("--bench", action="store_true", help="time the cache against recomputation")
    p.add_argument("--preset", choices=sorted(PRESETS), default="gpt2",
                   help="the --bench model's shape without --ckpt (default: gpt2)")
    args = p.parse_args(argv)
    if not args.ckpt and not args.bench:
        p.error("--ckpt is required (a run folder, checkpoint or GPT-2 folder)")
    if args.max_new_tokens < 0 or args.top_k < 0 or not args.temperature >= 0:
        p.error("--max-new-tokens, --top-k and --temperature must be >= 0")
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be >= 1")
    return args


def load(path: str, backend=None):
    """(model in eval mode, tokenizer, where it came from) for a run folder, a checkpoint file
    or a Hugging Face GPT-2 folder."""
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, "config.json")):
        model = GPT.from_pretrained(path, backend or "fusedops")
        return model.eval(), BPETokenizer.from_dir(path), path
    if os.path.isdir(path):
        found = [os.path.join(path, n) for n in ("best.pt", "ckpt.pt")
                 if os.path.isfile(os.path.join(path, n))]
        if not found:
            raise FileNotFoundError(f"fusedops.sample: {path!r} holds no best.pt, ckpt.pt or "
                                    "config.json (not a run or GPT-2 folder)")
        path = found[0]
    state = checkpoint.load(path)
    try:
        cfg = GPTConfig(**state["config"])
        tok = from_state_dict(state["tokenizer"])
        model = GPT(cfg, backend or state.get("backend", "fusedops"))
        model.load_state_dict(state["model"])
    except (TypeError, ValueError, KeyError, RuntimeError) as e:
        raise ValueError(f"fusedops.sample: checkpoint {path!r} does not hold a GPT: "
                         f"{type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
    return model.eval(), tok, f"{path} (step {state['step']})"


def _per_token_s(model: GPT, context: int, use_cache: bool, n: int) -> float:
    """Seconds per new token after a context of `context` tokens."""
    prompt = torch.randint(0, model.cfg.vocab_size, (1, context))

    def gen(k):
        t = time.perf_counter()
        model.generate(prompt, k, temperature=0, use_cache=use_cache)
        return time.perf_counter() - t

    if not use_cache:
        gen(1)  # warm-up
        return min(gen(1) for _ in range(n))
    gen(2)
    return min(gen(n + 1) - gen(1) for _ in range(2)) / n  # without the prompt's own pass


def bench(model: GPT, contexts=(64, 128, 256, 512)) -> dict:
    """Per-token seconds with the cache and by recomputation at each context; prints a table."""
    contexts = [c for c in contexts if c < model.cfg.block_size]
    print(f"one new token after a context of T tokens: GPT {model.cfg.name()} "
          f"({model.num_params(positions=True):,} parameters), backend {model.backend}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'T':>6} {'cache ms':>10} {'recompute ms':>13} {'ratio':>7}")
    out = {}
    for c in contexts:
        cached, full = _per_token_s(model, c, True, 16), _per_token_s(model, c, False, 3)
        out[c] = (cached, full)
        print(f"{c:>6} {cached * 1e3:>10.1f} {full * 1e3:>13.1f} {full / cached:>6.1f}x", flush=True)
    first, last = out[contexts[0]][0], out[contexts[-1]][0]
    print(f"with the cache, T={contexts[-1]} costs {last / first:.2f}x T={contexts[0]}; at "
          f"T={contexts[-1]} the cache is {out[contexts[-1]][1] / last:.1f}x faster than "
          "recomputation")
    return out


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"fusedops.sample: --device {args.device}: CUDA is not available here")
        if args.ckpt:
            model, tok, where = load(args.ckpt, args.backend)
        else:
            vocab = 50257 if args.preset == "gpt2" else 256
            cfg = GPTConfig.preset(args.preset, vocab, padded_vocab_size=-(-vocab // 64) * 64)
            model, tok, where = GPT(cfg, args.backend or "fusedops").eval(), None, None
        model.to(device)
        if args.bench:
            with torch.no_grad():
                bench(model)
            return
        ids = tok.encode(args.prompt)
        if len(ids) == 0:
            raise ValueError("fusedops.sample: --prompt is empty (give at least one character)")
        g = torch.Generator(device=device).manual_seed(args.seed)
        out = model.generate(ids[None, :].to(device), args.max_new_tokens, args.temperature,
                             args.top_k or None, g, use_cache=not args.no_cache)
    except (OSError, ValueError, RuntimeError) as e:
        msg = " ".join(str(e).splitlines())
        if isinstance(e, OSError) and not msg.startswith("fusedops."):
            msg = f"fusedops.sample: {msg}"  # an unreadable file, ...
        msg = msg.replace("fusedops.train:", "fusedops.sample:", 1)  # the checkpoint's errors
        if not msg.startswith("fusedops."):
            raise  # not the user's input: a bug, keep its traceback
        print(msg, file=sys.stderr, flush=True)
        sys.exit(2)
    print(f"# {where}", file=sys.stderr)
    print(tok.decode(out[0].tolist()))


if __name__ == "__main__":
    main()
