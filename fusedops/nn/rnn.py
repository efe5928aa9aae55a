"""Recurrent modules: ``RNN``, ``LSTM``, ``GRU`` and their cells, computed by fusedops kernels.

Each is a subclass of its torch.nn counterpart: the same constructor, parameters (names and
registration order: ``weight_ih_l0``, ``weight_hh_l0``, ``bias_ih_l0``, ``bias_hh_l0``,
``weight_hr_l0``, ``..._reverse``), initialisation, state_dict and repr; only ``forward``
differs. A layer's direction runs in one ``fusedops.ops.rnn_layer`` call (all input projections
as one GEMM, then one recurrent GEMM and one fused gate kernel per step); layers, directions,
dropout between layers, batch_first, unbatched input and PackedSequence are arranged here.
Packed sequences stay packed: the op walks ``batch_sizes`` directly, so no padding is computed.
CPU tensors run the CPU kernels, CUDA tensors the CUDA ones (cuda/rnn_impl.h).
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import PackedSequence

from .. import ops


class _FusedRNNBase:
    """The forward pass shared by RNN, LSTM and GRU (mixed into the torch.nn classes)."""

    _name = "RNN"

    def _mode(self) -> str:
        raise NotImplementedError

    def _weights(self, layer: int, reverse: bool):
        sfx = f"_l{layer}" + ("_reverse" if reverse else "")
        get = lambda n: getattr(self, n + sfx)
        b_ih, b_hh = (get("bias_ih"), get("bias_hh")) if self.bias else (None, None)
        w_hr = get("weight_hr") if self.proj_size > 0 else None
        return get("weight_ih"), get("weight_hh"), b_ih, b_hh, w_hr

    def _check_state(self, h, want, what, batched):
        if tuple(h.shape) != tuple(want):
            raise RuntimeError(
                f"fusedops.nn.{self._name}: expected {what} of shape {list(want)}"
                f"{'' if batched else ' (unbatched input)'}, got {list(h.shape)}"
            )

    def _fused_forward(self, input, hx):
        mode = self._mode()
        lstm = mode == "lstm"
        packed = isinstance(input, PackedSequence)
        if packed:
            data, batch_sizes, sorted_indices, unsorted_indices = input
            batch = int(batch_sizes[0]) if batch_sizes.numel() else 0
            batched = True
        else:
            if input.dim() not in (2, 3):
                raise ValueError(
                    f"fusedops.nn.{self._name}: expected input to be 2-D (unbatched) or 3-D, "
                    f"got {input.dim()}-D tensor"
                )
            batched = input.dim() == 3
            data = input if batched else input.unsqueeze(1)
            if batched and self.batch_first:
                data = data.transpose(0, 1)
            batch_sizes = sorted_indices = unsorted_indices = None
            batch = data.shape[1]
        if data.shape[-1] != self.input_size:
            raise RuntimeError(
                f"fusedops.nn.{self._name}: input.size(-1) must be equal to input_size. "
                f"Expected {self.input_size}, got {data.shape[-1]}"
            )
        dirs = 2 if self.bidirectional else 1
        P = self.proj_size if self.proj_size > 0 else self.hidden_size
        h_shape = (self.num_layers * dirs, batch, P)
        c_shape = (self.num_layers * dirs, batch, self.hidden_size)
        if hx is None:
            h0 = data.new_zeros(h_shape)
            c0 = data.new_zeros(c_shape) if lstm else None
        else:
            if lstm:
                if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                    raise RuntimeError(f"fusedops.nn.{self._name}: hx must be a tuple (h_0, c_0)")
                h0, c0 = hx
            else:
                h0, c0 = hx, None
            for h in (h0, c0):
                if h is not None and h.dim() != (3 if batched else 2):
                    raise RuntimeError(
                        f"fusedops.nn.{self._name}: for {'batched 3-D' if batched else 'unbatched 2-D'} "
                        f"input, hx should be {'3-D' if batched else '2-D'}, got {h.dim()}-D tensor"
                    )
            if not batched:
                h0 = h0.unsqueeze(1)
                c0 = c0.unsqueeze(1) if lstm else None
            self._check_state(h0, h_shape, "hidden state h_0", batched)
            if lstm:
                self._check_state(c0, c_shape, "cell state c_0", batched)
            if sorted_indices is not None:
                h0 = h0.index_select(1, sorted_indices)
                c0 = c0.index_select(1, sorted_indices) if lstm else None

        x = data
        h_n, c_n = [], []
        for layer in range(self.num_layers):
            outs = []
            for d in range(dirs):
                i = layer * dirs + d
                out, hy, cy = ops.rnn_layer(mode, x, h0[i], c0[i] if lstm else None,
                                            *self._weights(layer, d == 1), batch_sizes=batch_sizes,
                                            reverse=d == 1)
                outs.append(out)
                h_n.append(hy)
                c_n.append(cy)
            x = outs[0] if dirs == 1 else torch.cat(outs, -1)
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, True)
        hy = torch.stack(h_n)
        cy = torch.stack(c_n) if lstm else None
        if unsorted_indices is not None:
            hy = hy.index_select(1, unsorted_indices)
            cy = cy.index_select(1, unsorted_indices) if lstm else None
        if packed:
            output = PackedSequence(x, batch_sizes, sorted_indices, unsorted_indices)
        elif not batched:
            output = x.squeeze(1)
            hy = hy.squeeze(1)
            cy = cy.squeeze(1) if lstm else None
        else:
            output = x.transpose(0, 1) if self.batch_first else x
        return output, ((hy, cy) if lstm else hy)

    def forward(self, input, hx=None):
        return self._fused_forward(input, hx)


class RNN(_FusedRNNBase, torch.nn.RNN):
    """``torch.nn.RNN`` (tanh or relu) computed by fusedops kernels."""

    _name = "RNN"

    def _mode(self):
        return "rnn_" + self.nonlinearity


class LSTM(_FusedRNNBase, torch.nn.LSTM):
    """``torch.nn.LSTM`` (with ``proj_size``) computed by fusedops kernels."""

    _name = "LSTM"

    def _mode(self):
        return "lstm"


class GRU(_FusedRNNBase, torch.nn.GRU):
    """``torch.nn.GRU`` computed by fusedops kernels."""

    _name = "GRU"

    def _mode(self):
        return "gru"


class RNNCell(torch.nn.RNNCell):
    """``torch.nn.RNNCell`` computed by fusedops kernels (batched ``[B, I]`` or unbatched ``[I]``)."""

    def forward(self, input: torch.Tensor, hx: Optional[torch.Tensor] = None) -> torch.Tensor:
        return ops.rnn_cell(input, hx, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh,
                            self.nonlinearity)


class LSTMCell(torch.nn.LSTMCell):
    """``torch.nn.LSTMCell`` computed by fusedops kernels; returns ``(h', c')``."""

    def forward(self, input: torch.Tensor, hx=None):
        return ops.lstm_cell(input, hx, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)


class GRUCell(torch.nn.GRUCell):
    """``torch.nn.GRUCell`` computed by fusedops kernels."""

    def forward(self, input: torch.Tensor, hx: Optional[torch.Tensor] = None) -> torch.Tensor:
        return ops.gru_cell(input, hx, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
