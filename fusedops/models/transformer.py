"""A Transformer encoder-decoder for sequence-to-sequence tasks: token embeddings scaled by
sqrt(d_model), fixed sinusoidal positions, the Transformer layers (fusedops.nn.Transformer on
the fusedops backend), a linear head, padding masks from `pad_idx`, a causal mask on the
target, and greedy decoding."""
import math

import torch
from torch import nn

from ._layers import check_activation, check_labels, check_positive, layers


def sinusoidal_positions(length: int, d_model: int) -> torch.Tensor:
    """[length, d_model]: sin on even features, cos on odd, wavelengths 2pi .. 10000*2pi."""
    pos = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32)
                     * (-math.log(10000.0) / d_model))
    pe = torch.zeros(length, d_model)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq[: d_model // 2])
    return pe


class Transformer(nn.Module):
    """Encoder-decoder over token ids: `forward(src [B, S], tgt [B, T])` gives logits
    [B, T, tgt_vocab] for the next target token at each position (the target attends causally
    to itself and to the non-padding source). `loss(src, tgt)` is teacher-forced cross
    entropy of tgt[:, 1:] given tgt[:, :-1] (padding ignored); `greedy_decode` generates.
    Parameters: `src_embed`, `tgt_embed`, `transformer` (torch.nn.Transformer's names), `head`."""

    def __init__(self, src_vocab: int, tgt_vocab: int, d_model: int = 128, nhead: int = 4,
                 num_encoder_layers: int = 2, num_decoder_layers: int = 2,
                 dim_feedforward: int = 512, dropout: float = 0.1, activation: str = "relu",
                 norm_first: bool = False, max_len: int = 512, pad_idx: int = 0,
                 backend: str = "fusedops"):
        super().__init__()
        check_positive("Transformer", src_vocab=src_vocab, tgt_vocab=tgt_vocab, d_model=d_model,
                       nhead=nhead, num_encoder_layers=num_encoder_layers,
                       num_decoder_layers=num_decoder_layers, dim_feedforward=dim_feedforward,
                       max_len=max_len)
        check_activation(activation, "Transformer")
        if d_model % nhead:
            raise ValueError(f"fusedops.models.Transformer: d_model ({d_model}) must be divisible "
                             f"by nhead ({nhead})")
        if d_model % 2:
            raise ValueError(f"fusedops.models.Transformer: d_model must be even (sinusoidal "
                             f"positions), got {d_model}")
        self.kn = layers(backend, "Transformer")
        self.backend, self.d_model, self.pad_idx = backend, d_model, pad_idx
        self.src_vocab, self.tgt_vocab, self.max_len = src_vocab, tgt_vocab, max_len
        self.src_embed = self.kn.Embedding(src_vocab, d_model)
        self.tgt_embed = self.kn.Embedding(tgt_vocab, d_model)
        for table in (self.src_embed, self.tgt_embed):
            # std 1/sqrt(d_model): scaled by sqrt(d_model), the tokens start as large as the
            # positions (torch's N(0, 1) would drown them) and positions are learned at once
            nn.init.normal_(table.weight, std=d_model ** -0.5)
        self.transformer = self.kn.Transformer(d_model, nhead, num_encoder_layers,
                                               num_decoder_layers, dim_feedforward, dropout,
                                               activation, batch_first=True,
                                               norm_first=norm_first)
        self.head = self.kn.Linear(d_model, tgt_vocab)
        self.register_buffer("positions", sinusoidal_positions(max_len, d_model), persistent=False)
        self.drop = self.kn.Dropout(dropout)

    def _embed(self, ids, table, vocab, what):
        if ids.dim() != 2 or ids.dtype.is_floating_point:
            raise ValueError(f"fusedops.models.Transformer: {what} must be token ids [B, L], got "
                             f"{ids.dtype} of shape {list(ids.shape)}")
        if ids.shape[1] > self.max_len:
            raise ValueError(f"fusedops.models.Transformer: {what} is {ids.shape[1]} tokens long, "
                             f"more than max_len={self.max_len}")
        check_labels(ids, vocab, "Transformer")
        x = table(ids) * math.sqrt(self.d_model) + self.positions[: ids.shape[1]]
        return self.drop(x)

    def encode(self, src: torch.Tensor):
        """(memory [B, S, d_model], source padding mask [B, S], True at padding)."""
        pad = src == self.pad_idx
        memory = self.transformer.encoder(self._embed(src, self.src_embed, self.src_vocab, "src"),
                                          src_key_padding_mask=pad)
        return memory, pad

    def decode(self, tgt: torch.Tensor, memory: torch.Tensor, src_pad: torch.Tensor):
        """Logits [B, T, tgt_vocab] for the next token after each target position."""
        return self.kn.linear(self._decode(tgt, memory, src_pad), self.head)

    def _decode(self, tgt, memory, src_pad):
        T = tgt.shape[1]
        causal = torch.ones(T, T, dtype=torch.bool, device=tgt.device).triu(1)
        if tgt.shape[0] != memory.shape[0]:
            raise ValueError(f"fusedops.models.Transformer: src and tgt batch sizes differ "
                             f"({memory.shape[0]} and {tgt.shape[0]})")
        return self.transformer.decoder(self._embed(tgt, self.tgt_embed, self.tgt_vocab, "tgt"),
                                        memory, tgt_mask=causal, tgt_is_causal=True,
                                        memory_key_padding_mask=src_pad)

    def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        memory, pad = self.encode(src)
        return self.decode(tgt, memory, pad)

    def loss(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        """Cross entropy of predicting tgt[:, 1:] from tgt[:, :-1] (tgt starts with BOS);
        positions whose target is pad_idx are ignored."""
        memory, pad = self.encode(src)
        h = self._decode(tgt[:, :-1], memory, pad)
        target = tgt[:, 1:].masked_fill(tgt[:, 1:] == self.pad_idx, -100)
        return self.kn.head_loss(h.flatten(0, 1), self.head, target.flatten())

    @torch.no_grad()
    def greedy_decode(self, src: torch.Tensor, bos: int, steps: int) -> torch.Tensor:
        """[B, steps] tokens, each the most likely given the source and those before it
        (starting from `bos`); the encoder runs once."""
        if 1 + steps > self.max_len:
            raise ValueError(f"fusedops.models.Transformer: 1 + steps ({1 + steps}) exceeds "
                             f"max_len={self.max_len}")
        memory, pad = self.encode(src)
        out = torch.full((src.shape[0], 1), bos, dtype=torch.long, device=src.device)
        for _ in range(steps):
            nxt = self.decode(out, memory, pad)[:, -1].argmax(-1, keepdim=True)
            out = torch.cat([out, nxt], 1)
        return out[:, 1:]
