"""Drop-in modules: the constructor signature, parameters, init and state_dict of their
torch.nn counterparts, with the forward pass in fusedops kernels."""
from .activation import GELU, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
from .attention import MultiheadAttention
from .batch_norm import BatchNorm1d, BatchNorm2d
from .conv import Conv2d, MaxPool2d
from .dropout import Dropout
from .embedding import Embedding
from .linear import Linear
from .loss import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss
from .norm import LayerNorm, RMSNorm
from .rnn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell

__all__ = [
    "Linear", "Conv2d", "MaxPool2d", "MultiheadAttention", "LayerNorm", "RMSNorm",
    "GELU", "ReLU", "Sigmoid", "Tanh", "Softmax", "LogSoftmax",
    "CrossEntropyLoss", "MSELoss", "BCEWithLogitsLoss",
    "RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell",
    "Dropout", "Embedding", "BatchNorm1d", "BatchNorm2d",
]
from .transformer import (  # noqa: E402
    Transformer, TransformerDecoder, TransformerDecoderLayer, TransformerEncoder,
    TransformerEncoderLayer,
)

__all__ += [
    "TransformerEncoderLayer", "TransformerDecoderLayer", "TransformerEncoder",
    "TransformerDecoder", "Transformer",
]
