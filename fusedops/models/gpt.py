"""GPT (GPT-2 architecture: pre-LayerNorm blocks, causal self-attention, GELU(tanh) MLP, tied
token embedding and LM head) built from fusedops layers, with the same model on torch's
layers for side-by-side runs (`backend="torch"`).

What runs in fusedops kernels with the default backend: every Linear (the MLP's first layer
with its GELU fused into the GEMM epilogue), LayerNorm (the residual add fused into the
second one of each block), causal flash attention reading q, k, v as strided views of the qkv
projection, and the LM head fused with the cross-entropy loss (the [tokens, vocab] logits
never exist in full), and the token and position embeddings (a gather forward, a deterministic
row-parallel backward).

Generation keeps a KV cache (`KVCache`): the prompt runs once as ordinary causal attention,
storing every layer's keys and values; each new token then runs alone, attending to the cached
keys with no mask, so a token costs the same at any context length. Weights come from and go
to Hugging Face GPT-2 folders (`from_pretrained`, `save_pretrained`; see hf.py).
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
    vocab_size: int  # the tokenizer's
    block_size: int = 128
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = True
    # rows of the embedding (and tied head) when more than vocab_size (GPT-2: 50257 -> 50304, a
    # multiple of 64); the extra rows are never a target, never in the softmax, never sampled
    padded_vocab_size: Optional[int] = None

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

    @property
    def rows(self) -> int:
        """Rows of the token embedding: the vocabulary with its padding."""
        return self.padded_vocab_size or self.vocab_size

    def name(self) -> str:
        """The preset these sizes are (GPT-2's vocabulary on the gpt2 shape: "GPT-2 124M"), or
        "custom"."""
        sizes = (self.n_layer, self.n_head, self.n_embd, self.block_size)
        found = next((n for n, p in PRESETS.items() if p == sizes), "custom")
        return "GPT-2 124M" if found == "gpt2" and self.vocab_size == 50257 else found

    def validate(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if type(getattr(self, name)) is not int:
                raise ValueError(f"fusedops.models.GPT: {name} must be an integer, got "
                                 f"{getattr(self, name)!r}")
            if getattr(self, name) < 1:
                raise ValueError(f"fusedops.models.GPT: {name} must be >= 1, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise ValueError(f"fusedops.models.GPT: n_embd ({self.n_embd}) must be divisible by "
                             f"n_head ({self.n_head})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"fusedops.models.GPT: dropout must be in [0, 1), got {self.dropout}")
        if self.padded_vocab_size is not None and (type(self.padded_vocab_size) is not int or
                                                   self.padded_vocab_size < self.vocab_size):
            raise ValueError(f"fusedops.models.GPT: padded_vocab_size ({self.padded_vocab_size}) "
                             f"must be an integer >= vocab_size ({self.vocab_size})")

    def to_dict(self) -> dict:
        return asdict(self)


class _TorchKernels:
    """The reference: torch's own layers and functions."""

    name = "torch"
    Linear = nn.Linear
    LayerNorm = nn.LayerNorm
    Embedding = nn.Embedding

    @staticmethod
    def linear(x, fc):
        return fc(x)

    @staticmethod
    def fc_gelu(x, fc):
        return F.gelu(fc(x), approximate="tanh")

    @staticmethod
    def attention(q, k, v, dropout_p, is_causal=True):
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=is_causal)

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
        self.Embedding = fusedops.nn.Embedding

    @staticmethod
    def linear(x, fc):
        return fc(x)

    def fc_gelu(self, x, fc):
        return self.ops.linear(x, fc.weight, fc.bias, activation="gelu_tanh")

    def attention(self, q, k, v, dropout_p, is_causal=True):
        return self.ops.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p,
                                                     is_causal=is_causal)

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

    def forward(self, x, kv=None):
        B, T, C = x.shape
        H = self.n_head
        # q, k, v: [B, H, T, D] strided views of the projection (no copies)
        qkv = self.kn.linear(x, self.c_attn)
        q, k, v = qkv.view(B, T, 3, H, C // H).permute(2, 0, 3, 1, 4).unbind(0)
        causal = True
        if kv is not None:  # generation: (k_cache, v_cache, start), [B, H, block_size, D] each
            k_cache, v_cache, start = kv
            k_cache[:, :, start:start + T] = k
            v_cache[:, :, start:start + T] = v
            k, v = k_cache[:, :, :start + T], v_cache[:, :, :start + T]
            causal = T > 1  # the prompt (cache empty: top-left causal); one new token sees all
        y = self.kn.attention(q, k, v, self.dropout if self.training else 0.0, causal)
        return self.resid_drop(self.kn.linear(y.transpose(1, 2).reshape(B, T, C), self.c_proj))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig, kn):
        super().__init__()
        self.kn = kn
        self.c_fc = kn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = kn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x):
        return self.drop(self.kn.linear(self.kn.fc_gelu(x, self.c_fc), self.c_proj))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig, kn):
        super().__init__()
        self.kn = kn
        self.ln_1 = kn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg, kn)
        self.ln_2 = kn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg, kn)

    def forward(self, x, kv=None):
        h, x = self.kn.add_layer_norm(self.attn(self.ln_1(x), kv), x, self.ln_2)  # x += attn; ln_2(x)
        return x + self.mlp(h)


class KVCache:
    """Every layer's keys and values for generation: [n_layer, B, H, block_size, D] buffers,
    filled from position 0; `length` positions hold entries."""

    def __init__(self, cfg: GPTConfig, batch: int, device, dtype):
        shape = (cfg.n_layer, batch, cfg.n_head, cfg.block_size, cfg.n_embd // cfg.n_head)
        self.k = torch.empty(shape, device=device, dtype=dtype)
        self.v = torch.empty(shape, device=device, dtype=dtype)
        self.length = 0


class GPT(nn.Module):
    """A GPT-2-style language model. `forward(idx, targets)` returns (logits, loss): with
    targets, the loss and no logits (the head runs fused with the loss); without, the logits
    of the last position only, [B, vocab_size] (what generation needs). `logits(idx)` gives
    every position's."""

    def __init__(self, cfg: GPTConfig, backend: str = "fusedops"):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.kn = kernels(backend)
        self.wte = self.kn.Embedding(cfg.rows, cfg.n_embd)
        self.wpe = self.kn.Embedding(cfg.block_size, cfg.n_embd)
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

    def num_params(self, positions: bool = False) -> int:
        """Parameters, without the position embedding unless `positions` (GPT-2 124M: 124.4M
        with them and its 50257-token vocabulary, 124.5M padded to 50304)."""
        n = sum(p.numel() for p in self.parameters())
        return n if positions else n - self.wpe.weight.numel()

    def crop_block_size(self, block_size: int) -> None:
        """Keeps the first block_size positions (a shorter context than the weights had)."""
        if not 1 <= block_size <= self.cfg.block_size:
            raise ValueError(f"fusedops.models.GPT: cannot crop block_size {self.cfg.block_size} "
                             f"to {block_size}")
        self.cfg.block_size = block_size
        self.wpe.weight = nn.Parameter(self.wpe.weight.detach()[:block_size].clone())
        self.wpe.num_embeddings = block_size

    def flops_per_token(self) -> int:
        """Model FLOPs of training one token at full context, forward and backward (the
        PaLM/nanoGPT count: 6 per weight of the body and head, 12 L T C for attention)."""
        c = self.cfg
        return 6 * self.num_params() + 12 * c.n_layer * c.block_size * c.n_embd

    def _head(self) -> torch.Tensor:
        w = self.wte.weight
        return w if self.cfg.padded_vocab_size is None else w[:self.cfg.vocab_size]

    def _hidden(self, idx: torch.Tensor, cache: Optional[KVCache] = None) -> torch.Tensor:
        """The final LayerNorm's output [B, T, C] for tokens idx [B, T] (at positions
        cache.length... with a cache, whose keys and values they extend)."""
        if idx.dim() != 2:
            raise ValueError(f"fusedops.models.GPT: idx must be [batch, time], got shape {list(idx.shape)}")
        B, T = idx.shape
        start = cache.length if cache is not None else 0
        if start + T > self.cfg.block_size:
            raise ValueError(f"fusedops.models.GPT: sequence length {start + T} exceeds block_size "
                             f"{self.cfg.block_size}")
        pos = torch.arange(start, start + T, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for i, block in enumerate(self.blocks):
            x = block(x, None if cache is None else (cache.k[i], cache.v[i], start))
        if cache is not None:
            cache.length += T
        return self.ln_f(x)

    def forward(self, idx: torch.Tensor, targets: Optional[torch.Tensor] = None):
        x = self._hidden(idx)
        if targets is None:
            return self.kn.logits(x[:, -1, :], self._head()), None
        B, T = idx.shape
        loss = self.kn.head_loss(x.reshape(B * T, -1), self._head(), targets.reshape(B * T))
        return None, loss

    def logits(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits of every position, [B, T, vocab_size]."""
        return self.kn.logits(self._hidden(idx), self._head())

    def param_groups(self, weight_decay: float):
        """AdamW groups: decay on matrices (Linear and embedding weights), none on biases and
        LayerNorm parameters."""
        decay = [p for p in self.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.parameters() if p.dim() < 2]
        return [{"params": decay, "weight_decay": weight_decay},
                {"params": no_decay, "weight_decay": 0.0}]

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: Optional[int] = None, generator: Optional[torch.Generator] = None,
                 use_cache: bool = True):
        """Samples max_new_tokens continuations of idx [batch, time]; temperature 0 takes the
        most likely token (greedy). With the KV cache (default) the prompt runs once and each
        new token alone; when the context reaches block_size, the cache is refilled from the
        last block_size / 2 tokens. Without it every token reruns the whole context, cut to the
        last block_size tokens. Both give the same tokens while the context fits the block."""
        if not temperature >= 0:
            raise ValueError(f"fusedops.models.GPT.generate: temperature must be >= 0 (0: greedy), "
                             f"got {temperature}")
        if idx.dim() != 2 or idx.size(1) == 0:
            raise ValueError("fusedops.models.GPT.generate: idx must be [batch, time] with at "
                             f"least one token, got shape {list(idx.shape)}")
        block = self.cfg.block_size
        cache = None
        if use_cache:
            cache = KVCache(self.cfg, idx.size(0), idx.device, self.wte.weight.dtype)
        todo = idx[:, -block:]  # what the next forward runs: the prompt, then one token
        for _ in range(max_new_tokens):
            if cache is None:
                x = self._hidden(idx[:, -block:])
            else:
                if cache.length + todo.size(1) > block:  # full: refill from the last half block
                    cache.length, todo = 0, idx[:, -max(1, block // 2):]
                x = self._hidden(todo, cache)
            logits = self.kn.logits(x[:, -1, :], self._head()).float()
            todo = _pick(logits, temperature, top_k, generator)
            idx = torch.cat([idx, todo], dim=1)
        return idx

    @classmethod
    def from_pretrained(cls, folder: str, backend: str = "fusedops", dropout: float = 0.0) -> "GPT":
        """A Hugging Face GPT-2 folder (config.json and model.safetensors, or its shards) as
        a GPT with that checkpoint's vocabulary; see hf.py."""
        from .hf import check_weights, load_gpt2

        cfg, weights = load_gpt2(folder, dropout)
        model = cls(cfg, backend)
        check_weights(model, weights, folder)
        model.load_state_dict(weights)
        return model

    def save_pretrained(self, folder: str) -> None:
        """Writes config.json and model.safetensors that transformers' GPT2LMHeadModel loads."""
        from .hf import save_gpt2

        save_gpt2(self, folder)


def _pick(logits: torch.Tensor, temperature: float, top_k: Optional[int], generator) -> torch.Tensor:
    """The next token [B, 1] from logits [B, V]."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)
