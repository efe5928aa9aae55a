"""Text data for language models: the embedded corpus, user files, a character tokenizer and
random training batches.

The embedded corpus needs no download: it is the prose of the Python standard library's
docstrings (every module, class and function docstring of at least a few lines in the
top-level stdlib modules), gathered from the interpreter's own files on first use and cached.
About 0.7 MB of English technical text, ~100 distinct characters.
"""
import ast
import hashlib
import os
import sys
import sysconfig
import tempfile
from typing import Iterable, List, Optional, Tuple

import torch

MIN_DOCSTRING = 200  # characters: one-liners teach little


def _cache_dir() -> str:
    root = os.environ.get("FUSEDOPS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "fusedops",
    )
    return root


def _stdlib_docstrings() -> Iterable[str]:
    stdlib = sysconfig.get_paths()["stdlib"]
    for name in sorted(os.listdir(stdlib)):
        if not name.endswith(".py"):
            continue
        try:
            with open(os.path.join(stdlib, name), encoding="utf-8") as f:
                tree = ast.parse(f.read())
        except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= MIN_DOCSTRING:
                    yield doc


def stdlib_corpus(cache: bool = True) -> str:
    """The embedded corpus (see the module docstring). Cached per Python version under
    $FUSEDOPS_CACHE (default ~/.cache/fusedops); the cache is written atomically, and
    rebuilt when unreadable."""
    path = os.path.join(_cache_dir(), f"stdlib-docstrings-py{sys.version_info[0]}{sys.version_info[1]}.txt")
    if cache and os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
            if text:
                return text
        except (OSError, UnicodeDecodeError):
            pass
    text = "\n\n".join(_stdlib_docstrings())
    if not text:
        raise RuntimeError("fusedops.data: found no docstrings in the standard library at "
                           f"{sysconfig.get_paths()['stdlib']}; pass a text file instead")
    if cache:
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only home: the corpus still works, uncached
    return text


def load_text(path: str, encoding: Optional[str] = None) -> str:
    """A text file, with a clear error when it is missing, not text, or too short to train on.

    Without `encoding` the file must be valid UTF-8 without NUL bytes: anything else (random
    bytes, UTF-16, Latin-1) is an error naming `--encoding`, instead of a model trained on
    replacement characters. With it, the bytes are decoded as asked (strictly)."""
    if os.path.isdir(path):
        raise ValueError(f"fusedops.data: {path!r} is a directory, not a text file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"fusedops.data: no such text file: {path!r}")
    with open(path, "rb") as f:
        raw = f.read()
    if encoding is None:
        if b"\0" in raw:
            raise ValueError(f"fusedops.data: {path!r} holds NUL bytes at offset {raw.index(0)}: "
                             "binary data or UTF-16/32, not UTF-8 text (pass --encoding, e.g. "
                             "--encoding utf-16, if it is text)")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"fusedops.data: {path!r} is not valid UTF-8 (byte 0x{raw[e.start]:02x} "
                             f"at offset {e.start}); pass --encoding (e.g. --encoding latin-1) "
                             "if it is text in another encoding") from None
    else:
        try:
            text = raw.decode(encoding)
        except LookupError:
            raise ValueError(f"fusedops.data: unknown encoding {encoding!r}") from None
        except UnicodeDecodeError as e:
            raise ValueError(f"fusedops.data: {path!r} is not valid {encoding} (at byte offset "
                             f"{e.start}: {e.reason})") from None
    if len(text) < 1000:
        raise ValueError(f"fusedops.data: {path!r} has {len(text)} characters; at least 1000 "
                         "are needed to train and evaluate")
    return text


class CharTokenizer:
    """One token per distinct character of the training text (sorted, so the same text always
    gives the same ids). Characters never seen map to the most frequent one on encode."""

    def __init__(self, chars: Iterable[str], fallback: Optional[str] = None):
        self.chars: List[str] = sorted(set(chars))
        if not self.chars:
            raise ValueError("fusedops.data.CharTokenizer: empty alphabet")
        self.index = {c: i for i, c in enumerate(self.chars)}
        self.fallback = self.index.get(fallback, 0) if fallback is not None else 0

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        counts = {}
        for c in text:
            counts[c] = counts.get(c, 0) + 1
        return cls(counts, fallback=max(counts, key=counts.get))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> torch.Tensor:
        return torch.tensor(self.encode_ids([text])[0], dtype=torch.long)

    def encode_ids(self, texts: List[str]) -> List[List[int]]:
        get, fallback = self.index.get, self.fallback
        return [[get(c, fallback) for c in text] for text in texts]

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    kind = "char"
    eot = None  # no end-of-text token

    def state_dict(self) -> dict:
        return {"kind": "char", "chars": "".join(self.chars), "fallback": self.chars[self.fallback]}

    @classmethod
    def from_state_dict(cls, state: dict) -> "CharTokenizer":
        return cls(state["chars"], fallback=state["fallback"])


class TextData:
    """Token ids split into train (first 90%) and validation (last 10%) parts, with random
    [batch, block] windows drawn by a torch.Generator (its state goes into checkpoints, so a
    resumed run sees the batches an uninterrupted one would). The tokenizer is any of
    fusedops.data's (characters, BPE, GPT-2's)."""

    def __init__(self, text: str, tokenizer, val_fraction: float = 0.1):
        ids = tokenizer.encode(text)
        n_val = max(1, int(len(ids) * val_fraction))
        self.train, self.val = ids[:-n_val], ids[-n_val:]
        self.fingerprint = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def batch(self, split: str, batch_size: int, block_size: int,
              generator: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
        ids = self.train if split == "train" else self.val
        if len(ids) <= block_size + 1:
            raise ValueError(f"fusedops.data: the {split} split has {len(ids)} tokens, fewer than "
                             f"block_size + 2 = {block_size + 2}; use a smaller --block-size or "
                             "more text")
        start = torch.randint(0, len(ids) - block_size - 1, (batch_size,), generator=generator)
        offsets = torch.arange(block_size + 1)
        windows = ids[start[:, None] + offsets].long()  # token files hold uint16/uint32
        return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()
