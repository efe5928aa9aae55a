"""Embedding: a subclass of torch.nn.Embedding (same constructor, init, parameters, state_dict
and repr), with the gather and its backward in fusedops kernels."""
import torch

from .. import ops
from ..ops.embedding import check_supported


class Embedding(torch.nn.Embedding):
    """``torch.nn.Embedding(num_embeddings, embedding_dim, padding_idx=None, max_norm=None,
    norm_type=2.0, scale_grad_by_freq=False, sparse=False, _weight=None, _freeze=False,
    device=None, dtype=None)``. ``max_norm`` and ``sparse=True`` are not supported: the
    constructor raises NotImplementedError (so does ``from_pretrained``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        check_supported(self.max_norm, self.sparse)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return ops.embedding(input, self.weight, self.padding_idx, self.max_norm, self.norm_type,
                             self.scale_grad_by_freq, self.sparse)
