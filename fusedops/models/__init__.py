"""The model zoo: models built only from fusedops layers (plus torch glue such as embeddings)."""
from .gpt import GPT, PRESETS, GPTConfig, KVCache

__all__ = ["GPT", "GPTConfig", "KVCache", "PRESETS"]
from .cnn import CNN  # noqa: E402
from .linear_regression import LinearRegression  # noqa: E402
from .logistic_regression import LogisticRegression  # noqa: E402
from .mlp import MLP  # noqa: E402
from .rnn import RNN  # noqa: E402
from .training import EarlyStopping, l1_penalty, l2_penalty, make_optimizer  # noqa: E402
from .transformer import Transformer  # noqa: E402

__all__ += [
    "LinearRegression", "LogisticRegression", "MLP", "CNN", "RNN", "Transformer",
    "EarlyStopping", "l1_penalty", "l2_penalty", "make_optimizer",
]
