"""The model zoo: models built only from fusedops layers (plus torch glue such as embeddings)."""
from .gpt import GPT, PRESETS, GPTConfig, KVCache

__all__ = ["GPT", "GPTConfig", "KVCache", "PRESETS"]
