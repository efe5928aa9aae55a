"""A recurrent sequence model over RNN, LSTM or GRU layers (``cell="lstm"``), as a classifier
(one label per sequence, from the last step's top hidden state) or a next-token model (logits
at every step, greedy generation carrying the recurrent state)."""
from typing import Optional

import torch
from torch import nn

from ._layers import check_labels, check_positive, layers

CELLS = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}
TASKS = ("classify", "next_token")


class RNN(nn.Module):
    """Input: token ids [B, T] when ``vocab_size`` is given (an Embedding of ``input_size``
    dims), else features [B, T, input_size]. ``task="classify"``: logits [B, num_classes];
    ``task="next_token"``: logits [B, T, num_classes] (num_classes is the output vocabulary).
    Parameters: `embed` (with vocab_size), `rnn` (torch's layer names), `head`."""

    def __init__(self, input_size: int, hidden_size: int, num_classes: int, cell: str = "lstm",
                 num_layers: int = 1, vocab_size: Optional[int] = None, task: str = "classify",
                 dropout: float = 0.0, backend: str = "fusedops"):
        super().__init__()
        check_positive("RNN", input_size=input_size, hidden_size=hidden_size,
                       num_classes=num_classes, num_layers=num_layers)
        if cell not in CELLS:
            raise ValueError(f"fusedops.models.RNN: cell must be one of {tuple(CELLS)}, got {cell!r}")
        if task not in TASKS:
            raise ValueError(f"fusedops.models.RNN: task must be one of {TASKS}, got {task!r}")
        if vocab_size is not None:
            check_positive("RNN", vocab_size=vocab_size)
        self.kn = layers(backend, "RNN")
        self.backend, self.cell, self.task, self.num_classes = backend, cell, task, num_classes
        self.input_size, self.vocab_size = input_size, vocab_size
        self.embed = self.kn.Embedding(vocab_size, input_size) if vocab_size is not None else None
        self.rnn = getattr(self.kn, CELLS[cell])(input_size, hidden_size, num_layers,
                                                 batch_first=True, dropout=dropout)
        self.head = self.kn.Linear(hidden_size, num_classes)

    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        if self.embed is not None:
            if x.dim() != 2 or x.dtype.is_floating_point:
                raise ValueError(f"fusedops.models.RNN: input must be token ids [B, T], got "
                                 f"{x.dtype} of shape {list(x.shape)}")
            check_labels(x, self.vocab_size, "RNN")
            return self.embed(x)
        if x.dim() != 3 or x.shape[2] != self.input_size:
            raise ValueError(f"fusedops.models.RNN: input must be [B, T, {self.input_size}], got "
                             f"shape {list(x.shape)}")
        return x

    def features(self, x: torch.Tensor, state=None) -> torch.Tensor:
        """The top layer's hidden states the head reads: [B, H] (classify: the last step's) or
        [B, T, H] (next_token); `state` is the initial state (None: zeros)."""
        out, _ = self.rnn(self._inputs(x), state)
        return out[:, -1] if self.task == "classify" else out

    def forward(self, x: torch.Tensor, state=None) -> torch.Tensor:
        """Logits; `state` is the recurrent layer's initial state (None: zeros)."""
        return self.kn.linear(self.features(x, state), self.head)

    def step(self, x: torch.Tensor, state=None):
        """(logits [B, T, classes], new state): the next-token model continued from `state`."""
        out, state = self.rnn(self._inputs(x), state)
        return self.kn.linear(out, self.head), state

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cross entropy. classify: y [B] labels; next_token: y [B, T] next tokens, -100 where
        no loss is taken."""
        h = self.features(x)
        if self.task == "classify":
            check_labels(y, self.num_classes, "RNN")
            if y.shape != h.shape[:1]:
                raise ValueError(f"fusedops.models.RNN: labels must have shape [{h.shape[0]}], "
                                 f"got {list(y.shape)}")
            return self.kn.head_loss(h, self.head, y)
        if y.shape != h.shape[:2]:
            raise ValueError(f"fusedops.models.RNN: targets must be [B, T] = "
                             f"{list(h.shape[:2])}, got {list(y.shape)}")
        check_labels(y[y != -100], self.num_classes, "RNN")
        return self.kn.head_loss(h.flatten(0, 1), self.head, y.flatten())

    @torch.no_grad()
    def generate(self, prefix: torch.Tensor, steps: int) -> torch.Tensor:
        """Greedy continuation of token prefixes [B, T0] by `steps` tokens -> [B, steps]."""
        if self.task != "next_token" or self.embed is None:
            raise ValueError("fusedops.models.RNN: generate needs task='next_token' and vocab_size")
        if self.num_classes > self.vocab_size:
            raise ValueError("fusedops.models.RNN: generate needs num_classes <= vocab_size")
        logits, state = self.step(prefix)
        out = []
        for _ in range(steps):
            tok = logits[:, -1].argmax(-1, keepdim=True)
            out.append(tok)
            logits, state = self.step(tok, state)
        return torch.cat(out, 1)
