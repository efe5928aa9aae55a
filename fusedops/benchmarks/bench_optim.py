"""Optimizer step and gradient clipping (fp32) over GPT-2 124M's parameter shapes:
fusedops.optim.AdamW against torch.optim.AdamW with foreach=True ("torch") and fused=True
("torch-fused"); fusedops.optim.clip_grad_norm_ against torch.nn.utils.clip_grad_norm_
(foreach).

Parameters: wte 50257x768, wpe 1024x768, 12 blocks of (ln_1, attn.c_attn 2304x768 + bias,
attn.c_proj 768x768 + bias, ln_2, mlp.c_fc 3072x768 + bias, mlp.c_proj 768x3072 + bias),
ln_f: 124.4M parameters in 148 tensors. --quick: 2 blocks of width 384, vocabulary 8192.

Bytes per step (memory-bound): AdamW reads p, g, m, v and writes p, m, v: 28 bytes per
parameter; clipping reads every gradient for the norm, then reads and writes it to scale: 12
bytes per parameter. The gradients are fixed random tensors shared by the peers (read only);
each peer steps its own parameters and state. The learning rate is small (1e-5) so that peers
that took different numbers of steps during timing still agree on the returned parameters.
"""
import torch

import fusedops.optim

from .harness import Case

PEERS = ("fusedops", "torch", "torch-fused")
LR = 1e-5
_ADAMW = "AdamW step 124.4M params (GPT-2 124M)"
GOALS = {(_ADAMW, "step", "torch"): 1.5, (_ADAMW, "step", "torch-fused"): 1.0}


def gpt2_shapes(n_layer=12, n_embd=768, vocab=50257, ctx=1024):
    shapes = [(vocab, n_embd), (ctx, n_embd)]
    for _ in range(n_layer):
        shapes += [(n_embd,), (n_embd,),                          # ln_1
                   (3 * n_embd, n_embd), (3 * n_embd,),           # attn.c_attn
                   (n_embd, n_embd), (n_embd,),                   # attn.c_proj
                   (n_embd,), (n_embd,),                          # ln_2
                   (4 * n_embd, n_embd), (4 * n_embd,),           # mlp.c_fc
                   (n_embd, 4 * n_embd), (n_embd,)]               # mlp.c_proj
    return shapes + [(n_embd,), (n_embd,)]                        # ln_f


def model_shapes(quick):
    return gpt2_shapes(2, 384, 8192, 256) if quick else gpt2_shapes()


def cases(quick: bool):
    shapes = model_shapes(quick)
    n = sum(torch.Size(s).numel() for s in shapes)
    label = f"{n / 1e6:.1f}M params" + (" (GPT-2 124M)" if not quick else "")
    return [
        Case(f"AdamW step {label}", "step", lambda: adamw_setup(shapes), bytes=28 * n),
        Case(f"clip_grad_norm_ {label}", "step", lambda: clip_setup(shapes), bytes=12 * n),
    ]


def _params_and_grads(shapes, peers):
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(s, generator=gen) * 1e-2 for s in shapes]
    base = [torch.randn(s, generator=gen) for s in shapes]
    sets = {}
    for peer in peers:
        ps = [torch.nn.Parameter(b.clone()) for b in base]
        for p, g in zip(ps, grads):
            p.grad = g  # shared, read only
        sets[peer] = ps
    return sets


def adamw_setup(shapes):
    sets = _params_and_grads(shapes, PEERS)
    kw = dict(lr=LR, weight_decay=0.1)
    opts = {
        "fusedops": fusedops.optim.AdamW(sets["fusedops"], **kw),
        "torch": torch.optim.AdamW(sets["torch"], foreach=True, **kw),
        "torch-fused": torch.optim.AdamW(sets["torch-fused"], fused=True, **kw),
    }
    for opt in opts.values():  # the state exists (touched) before timing
        opt.step()

    def stepper(peer):
        opt, first = opts[peer], sets[peer][0]

        def step():
            opt.step()
            return first[:64].detach()

        return step

    return {peer: stepper(peer) for peer in PEERS}


def clip_setup(shapes):
    # max_norm far above the norm: the scale is 1 and the gradients keep their values, so
    # every call sees the same input (both libraries still multiply every gradient)
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.empty(s)) for s in shapes]  # never touched
    for p, s in zip(params, shapes):
        p.grad = torch.randn(s, generator=gen)
    max_norm = 1e30
    return {
        "fusedops": lambda: fusedops.optim.clip_grad_norm_(params, max_norm),
        "torch": lambda: torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True),
    }
