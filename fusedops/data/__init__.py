"""Data for the model zoo and the training program: the embedded text corpus (no downloads),
loaders for user files, a character tokenizer and batch sampling."""
from .text import CharTokenizer, TextData, load_text, stdlib_corpus

__all__ = ["CharTokenizer", "TextData", "load_text", "stdlib_corpus"]
