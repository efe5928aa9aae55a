"""The Llama-family fused ops (fp32 and bf16): fusedops against torch's eager composites, forward
+ backward (gradients of every input for a fixed random output gradient).

- rms_norm TxC: fusedops.ops.rms_norm against F.rms_norm (torch) and Hugging Face's LlamaRMSNorm
  composite, x.float().pow(2).mean(-1) ... (hf); add_rms_norm against x + r then F.rms_norm.
- rope: fusedops.ops.rotary_embedding against Hugging Face's apply_rotary_pos_emb
  (q * cos + rotate_half(q) * sin, k likewise) on q and k as attention gets them: [B, T, H * D]
  projections viewed as [B, H, T, D], cos/sin [B, T, D].
- swiglu TxH: fusedops.ops.swiglu against F.silu(a) * b on two [T, H] tensors (LlamaMLP's
  gate_proj and up_proj outputs).
Shapes: a small Llama (B8 T256 = 2048 tokens, width 384, 6 heads of 64 with 2 KV heads, MLP
1024) and 4096-wide rows (Llama-7B's width; its 32 heads of 128 with 8 KV heads).
Bytes are the tensors each call must read and write once at the storage dtype's size:
rms_norm x, y, g, dx (4 TC; the backward rereads x: 5 TC counted); add_rms_norm x, r, sum, y,
g, g_sum, dx (8 TC); rope q, k and their outputs and gradients (4 (Hq + Hk) T D per batch) plus
cos/sin; swiglu a, b, y, g, da, db (6 TH, a and b reread: 8 TH counted).
"""
import torch
import torch.nn.functional as F

import fusedops

from .harness import Case

PEERS = ("fusedops", "torch", "hf")
TOKENS, WIDTH, HEADS, KV_HEADS, HEAD_DIM, HIDDEN = 2048, 384, 6, 2, 64, 1024
BATCH, SEQ = 8, 256
WIDE = 4096
WIDE_ROPE = (2, 512, 32, 8, 128)  # B, T, Hq, Hk, D: 4096-wide q rows
QUICK_TOKENS = 256


def _name(dtype):
    return "bf16" if dtype == torch.bfloat16 else "fp32"


def _goals():
    out = {}
    for dt in ("fp32", "bf16"):
        for w in (WIDTH, WIDE):
            out[(f"rms_norm {TOKENS}x{w} {dt}", "fwd+bwd", "torch")] = 1.5
            out[(f"rms_norm {TOKENS}x{w} {dt}", "fwd+bwd", "hf")] = 1.5
        out[(f"rope B{BATCH} T{SEQ} {HEADS}/{KV_HEADS}x{HEAD_DIM} {dt}", "fwd+bwd", "torch")] = 1.5
        out[(f"swiglu {TOKENS}x{HIDDEN} {dt}", "fwd+bwd", "torch")] = 1.5
    return out


GOALS = _goals()


def cases(quick: bool):
    t = QUICK_TOKENS if quick else TOKENS
    out = []
    for dtype in (torch.float32, torch.bfloat16):
        for w in (WIDTH, WIDE):
            out.append(rms_norm_case(t, w, dtype))
        out.append(add_rms_norm_case(t, WIDTH, dtype))
        out.append(rope_case(1 if quick else BATCH, SEQ, HEADS, KV_HEADS, HEAD_DIM, dtype))
        if not quick:
            out.append(rope_case(*WIDE_ROPE, dtype))
        for h in (HIDDEN, WIDE):
            out.append(swiglu_case(t, h, dtype))
    return out


def _run(fn, leaves, grads):
    out = fn()
    outs = out if isinstance(out, tuple) else (out,)
    return (*outs, *torch.autograd.grad(outs, leaves, grads))


def hf_rms_norm(x, w, eps):
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return w * xf.to(x.dtype)


def rms_norm_case(t: int, w: int, dtype) -> Case:
    def setup():
        torch.manual_seed(0)
        x = torch.randn(t, w).to(dtype).requires_grad_()
        wt = torch.rand(w).to(dtype).requires_grad_()
        g = torch.randn(t, w).to(dtype)
        return {"fusedops": lambda: _run(lambda: fusedops.ops.rms_norm(x, wt, 1e-6), (x, wt), g),
                "torch": lambda: _run(lambda: F.rms_norm(x, (w,), wt, 1e-6), (x, wt), g),
                "hf": lambda: _run(lambda: hf_rms_norm(x, wt, 1e-6), (x, wt), g)}

    return Case(f"rms_norm {t}x{w} {_name(dtype)}", "fwd+bwd", setup, bytes=5 * t * w * dtype.itemsize,
                bf16=dtype == torch.bfloat16)


def add_rms_norm_case(t: int, w: int, dtype) -> Case:
    def setup():
        torch.manual_seed(0)
        x = torch.randn(t, w).to(dtype).requires_grad_()
        r = torch.randn(t, w).to(dtype).requires_grad_()
        wt = torch.rand(w).to(dtype).requires_grad_()
        g, gs = torch.randn(t, w).to(dtype), torch.randn(t, w).to(dtype)

        def theirs():
            s = x + r
            return F.rms_norm(s, (w,), wt, 1e-6), s

        return {"fusedops": lambda: _run(lambda: fusedops.ops.add_rms_norm(x, r, wt, 1e-6), (x, r, wt), (g, gs)),
                "torch": lambda: _run(theirs, (x, r, wt), (g, gs))}

    return Case(f"add_rms_norm {t}x{w} {_name(dtype)}", "fwd+bwd", setup, bytes=8 * t * w * dtype.itemsize,
                bf16=dtype == torch.bfloat16)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def hf_rope(q, k, cos, sin):
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


def rope_case(b: int, t: int, hq: int, hk: int, d: int, dtype) -> Case:
    def setup():
        torch.manual_seed(0)
        qp = torch.randn(b, t, hq * d).to(dtype).requires_grad_()  # the projections' outputs
        kp = torch.randn(b, t, hk * d).to(dtype).requires_grad_()
        inv = 1.0 / (10000 ** (torch.arange(0, d, 2).float() / d))
        freqs = torch.arange(t).float()[:, None] * inv
        emb = torch.cat((freqs, freqs), -1)[None].expand(b, t, d)
        cos, sin = emb.cos().to(dtype), emb.sin().to(dtype)
        gq, gk = torch.randn(b, hq, t, d).to(dtype), torch.randn(b, hk, t, d).to(dtype)

        def views():
            return qp.view(b, t, hq, d).transpose(1, 2), kp.view(b, t, hk, d).transpose(1, 2)

        return {"fusedops": lambda: _run(lambda: fusedops.ops.rotary_embedding(*views(), cos, sin), (qp, kp),
                                         (gq, gk)),
                "torch": lambda: _run(lambda: hf_rope(*views(), cos, sin), (qp, kp), (gq, gk))}

    n = b * t * (hq + hk) * d
    return Case(f"rope B{b} T{t} {hq}/{hk}x{d} {_name(dtype)}", "fwd+bwd", setup,
                bytes=(4 * n + 2 * b * t * d) * dtype.itemsize, bf16=dtype == torch.bfloat16)


def swiglu_case(t: int, h: int, dtype) -> Case:
    def setup():
        torch.manual_seed(0)
        a = (torch.randn(t, h) * 2).to(dtype).requires_grad_()
        bb = torch.randn(t, h).to(dtype).requires_grad_()
        g = torch.randn(t, h).to(dtype)
        return {"fusedops": lambda: _run(lambda: fusedops.ops.swiglu(a, bb), (a, bb), g),
                "torch": lambda: _run(lambda: F.silu(a) * bb, (a, bb), g)}

    return Case(f"swiglu {t}x{h} {_name(dtype)}", "fwd+bwd", setup, bytes=8 * t * h * dtype.itemsize,
                bf16=dtype == torch.bfloat16)
