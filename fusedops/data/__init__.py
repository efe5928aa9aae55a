"""Data for the model zoo and the training program: the embedded text corpus (no downloads),
loaders for user files, tokenizers (characters, byte-level BPE, GPT-2's), token folders that
training memory-maps (`python -m fusedops.data prepare`), and batch sampling."""
from .text import CharTokenizer, TextData, load_text, stdlib_corpus
from .tokenizer import KINDS, BPETokenizer, from_state_dict, train_bpe
from .tokens import TokenData, prepare

__all__ = ["CharTokenizer", "BPETokenizer", "KINDS", "TextData", "TokenData", "from_state_dict",
           "load_text", "prepare", "stdlib_corpus", "train_bpe"]
