"""Functional API: each function mirrors the torch function it replaces and calls the
operator of the same name in torch.ops.fusedops (autograd and fake registrations live beside
each family)."""
from .activation import gelu, log_softmax, relu, sigmoid, softmax, swiglu, tanh
from .attention import scaled_dot_product_attention
from .batch_norm import batch_norm
from .conv import conv2d, max_pool2d
from .dropout import dropout
from .embedding import embedding
from .linear import linear, matmul
from .loss import binary_cross_entropy_with_logits, cross_entropy, linear_cross_entropy, mse_loss
from .norm import add_layer_norm, add_rms_norm, layer_norm, rms_norm
from .rnn import gru_cell, lstm_cell, rnn_cell, rnn_layer
from .rotary import rotary_embedding, rotary_embedding_

__all__ = [
    "linear", "matmul",
    "conv2d", "max_pool2d",
    "scaled_dot_product_attention",
    "rnn_layer", "rnn_cell", "lstm_cell", "gru_cell",
    "layer_norm", "add_layer_norm", "rms_norm", "add_rms_norm",
    "rotary_embedding", "rotary_embedding_", "swiglu",
    "gelu", "relu", "sigmoid", "tanh", "softmax", "log_softmax",
    "cross_entropy", "linear_cross_entropy", "mse_loss", "binary_cross_entropy_with_logits",
    "dropout", "embedding", "batch_norm",
]
