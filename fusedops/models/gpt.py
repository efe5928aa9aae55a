"""GPT (GPT-2 architecture: pre-LayerNorm blocks, causal self-attention, GELU(tanh) MLP, tied
token embedding and LM head) built from fusedops layers, with the same model on torch's
layers for side-by-side runs (`backend="torch"`).

What runs in fusedops kernels with the default backend: every Linear (the MLP's first layer
with its GELU fused into the GEMM epilogue), LayerNorm (the residual add fused into the
second one of each block), causal flash attention reading q, k, v as strided views of the qkv
projection, and the LM head fused with the cross-entropy loss (the [tokens, vocab] logits
never exist in full). The token/position embeddings are torch glue (a gather).
"""
import math
from dataclasses import asdict, dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

PRESETS = {
    # name: (n_layer, n_head, n_embd, block_size)
    "tiny": (4, 4, 128, 128),
    "small": (6, 6, 384, 256),
    "gpt2": (12, 12, 768, 1024),  # GPT-2 124M (with a 50257-token vocabulary)
}


@dataclass
class GPTConfig:
    vocab_size: int
    block_size: int = 128
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = True

    @classmethod
    def preset(cls, name: str, vocab_size: int, **overrides) -> "GPTConfig":
        if name not in PRESETS:
            raise ValueError(f"fusedops.models.GPT: unknown preset {name!r}; choose from "
                             f"{', '.join(PRESETS)}")
        n_layer, n_head, n_embd, block_size = PRESETS[name]
        cfg = dict(vocab_size=vocab_size, n_layer=n_layer, n_head=n_head, n_embd=n_embd,
                   block_size=block_size)
        cfg.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**cfg)

    def validate(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) < 1:
                raise ValueError(f"fusedops.models.GPT: {name} must be >= 1, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise ValueError(f"fusedops.models.GPT: n_embd ({self.n_embd}) must be divisible by "
                             f"n_head ({self.n_head})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"fusedops.models.GPT: dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict:
        return asdict(self)


class _TorchKernels:
    """The reference: torch's own layers and functions."""

    name = "torch"
    Linear = nn.Linear
    LayerNorm = nn.LayerNorm

    @staticmethod
    def fc_gelu(x, fc):
        return F.gelu(fc(x), approximate="tanh")

    @staticmethod
    def attention(q, k, v, dropout_p):
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)

    @staticmethod
    def add_layer_norm(x, residual, ln):
        s = x + residual
        return ln(s), s

    @staticmethod
    def head_loss(x, weight, targets):
        return F.cross_entropy(F.linear(x, weight), targets)

    @staticmethod
    def logits(x, weight):
        return F.linear(x, weight)


class _FusedKernels:
    name = "fusedops"

    def __init__(self):
        import fusedops

        self.ops = fusedops.ops
        self.Linear = fusedops.nn.Linear
        self.LayerNorm = fusedops.nn.LayerNorm

    def fc_gelu(self, x, fc):
        return self.ops.linear(x, fc.weight, fc.bias, activation="gelu_tanh")

    def attention(self, q, k, v, dropout_p):
        return self.ops.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)

    def add_layer_norm(self, x, residual, ln):
        return self.ops.add_layer_norm(x, residual, ln.normalized_shape, ln.weight, ln.bias, ln.eps)

    def head_loss(self, x, weight, targets):
        return self.ops.linear_cross_entropy(x, weight, targets)

    def logits(self, x, weight):
        return self.ops.linear(x, weight)


def kernels(backend: str):
    if backend == "torch":
        return _TorchKernels()
    if backend == "fusedops":
        return _FusedKernels()
    raise ValueError(f"fusedops.models.GPT: backend must be 'fusedops' or 'torch', got {backend!r}")


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig, kn):
        super().__init__()
        self.kn, self.n_head, self.dropout = kn, cfg.n_head, cfg.dropout
        self.c_attn = kn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = kn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(self, x):
        B, T, C = x.shape
        H = self.n_head
        # q, k, v: [B, H, T, D] strided views of the projection (no copies)
        q, k, v = self.c_attn(x).view(B, T, 3, H, C // H).permute(2, 0, 3, 1, 4).unbind(0)
        y = self.kn.attention(q, k, v, self.dropout if self.training else 0.0)
        return self.resid_drop(self.c_proj(y.transpose(1, 2).reshape(B, T, C)))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig, kn):
        super().__init__()
        self.kn = kn
        self.c_fc = kn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = kn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x):
        return self.drop(self.c_proj(self.kn.fc_gelu(x, self.c_fc)))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig, kn):
        super().__init__()
        self.kn = kn
        self.ln_1 = kn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg, kn)
        self.ln_2 = kn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg, kn)

    def forward(self, x):
        h, x = self.kn.add_layer_norm(self.attn(self.ln_1(x)), x, self.ln_2)  # x += attn; ln_2(x)
        return x + self.mlp(h)


class GPT(nn.Module):
    """A GPT-2-style language model. `forward(idx, targets)` returns (logits, loss): with
    targets, the loss and no logits (the head runs fused with the loss); without, the logits
    of the last position only (what generation needs)."""

    def __init__(self, cfg: GPTConfig, backend: str = "fusedops"):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.kn = kernels(backend)
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg, self.kn) for _ in range(cfg.n_layer))
        self.ln_f = self.kn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2: residual projections scaled by depth
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @property
    def backend(self) -> str:
        return self.kn.name

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters()) - self.wpe.weight.numel()

    def forward(self, idx: torch.Tensor, targets: Optional[torch.Tensor] = None):
        if idx.dim() != 2:
            raise ValueError(f"fusedops.models.GPT: idx must be [batch, time], got shape {list(idx.shape)}")
        B, T = idx.shape
        if T > self.cfg.block_size:
            raise ValueError(f"fusedops.models.GPT: sequence length {T} exceeds block_size "
                             f"{self.cfg.block_size}")
        pos = torch.arange(T, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for block in self.blocks:
            x = block(x)
        x = self.ln_f(x)
        if targets is None:
            return self.kn.logits(x[:, -1, :], self.wte.weight), None
        loss = self.kn.head_loss(x.reshape(B * T, -1), self.wte.weight, targets.reshape(B * T))
        return None, loss

    def param_groups(self, weight_decay: float):
        """AdamW groups: decay on matrices (Linear and embedding weights), none on biases and
        LayerNorm parameters."""
        decay = [p for p in self.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.parameters() if p.dim() < 2]
        return [{"params": decay, "weight_decay": weight_decay},
                {"params": no_decay, "weight_decay": 0.0}]

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: Optional[int] = None, generator: Optional[torch.Generator] = None):
        """Samples max_new_tokens continuations of idx [batch, time] (the context is cut to the
        last block_size tokens)."""
        if temperature <= 0:
            raise ValueError(f"fusedops.models.GPT.generate: temperature must be > 0, got {temperature}")
        for _ in range(max_new_tokens):
            logits, _ = self(idx[:, -self.cfg.block_size:])
            logits = logits.float() / temperature
            if top_k is not None:
                kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            nxt = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)
            idx = torch.cat([idx, nxt], dim=1)
        return idx
