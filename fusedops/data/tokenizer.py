"""Byte-level BPE tokens (GPT-2's scheme), and the tokenizer of any kind from its saved state.

Three kinds of tokens for the training program:
- `char`: one token per distinct character of the training text (`CharTokenizer`, text.py).
- `bpe`: a byte-level BPE trained on the training text by the `tokenizers` package, with the
  vocabulary size asked for; trained once and cached beside the data (`train_bpe`).
- `gpt2`: GPT-2's own vocabulary and merges, read from a folder holding `vocab.json` and
  `merges.txt` (a Hugging Face GPT-2 folder); nothing is downloaded.

Byte-level BPE maps every byte to a printable character and splits text into words with
GPT-2's pattern before merging, so any text round-trips exactly and no character is unknown.
A tokenizer's state (`state_dict`) is plain data (dicts, lists, strings), so checkpoints that
hold it load with `torch.load(weights_only=True)`; tokenizer files are JSON and text, never
pickles.
"""
import hashlib
import json
import os
import re
import tempfile
from typing import Iterable, List, Optional

import torch

from .text import CharTokenizer, _cache_dir

KINDS = ("char", "bpe", "gpt2")
EOT = "<|endoftext|>"  # GPT-2's end-of-text token; a trained BPE gets it too, as token 0


def _tokenizers():
    try:
        import tokenizers
    except ImportError:
        raise ValueError("fusedops.data: BPE and GPT-2 tokens need the `tokenizers` package "
                         "(pip install tokenizers)") from None
    return tokenizers


class BPETokenizer:
    """Byte-level BPE: `vocab` maps token strings to ids, `merges` lists the merged pairs
    ("a b") in rank order, as GPT-2's vocab.json and merges.txt. `kind` says where they came
    from ("bpe": trained here, "gpt2": GPT-2's files). The `tokenizers` package runs it."""

    def __init__(self, vocab: dict, merges: List[str], kind: str = "bpe"):
        tk = _tokenizers()
        if not isinstance(vocab, dict) or not vocab or not all(
                isinstance(t, str) and type(i) is int and 0 <= i < 2**32 for t, i in vocab.items()):
            raise ValueError("fusedops.data: a BPE vocabulary must map token strings to ids")
        if len(set(vocab.values())) != len(vocab):
            raise ValueError("fusedops.data: a BPE vocabulary gives two tokens the same id")
        if not isinstance(merges, list) or not all(isinstance(m, str) and len(m.split(" ")) == 2
                                                   for m in merges):
            raise ValueError("fusedops.data: BPE merges must be lines of two tokens ('a b')")
        if kind not in ("bpe", "gpt2"):
            raise ValueError(f"fusedops.data: a BPE tokenizer's kind is 'bpe' or 'gpt2', not {kind!r}")
        self.kind, self.vocab, self.merges = kind, dict(vocab), list(merges)
        try:
            model = tk.models.BPE(vocab=self.vocab, merges=[tuple(m.split(" ")) for m in merges])
        except Exception as e:  # the Rust side's own exception types: a merge of unknown tokens
            raise ValueError(f"fusedops.data: inconsistent BPE vocabulary and merges ({e})") from None
        self._tok = tk.Tokenizer(model)
        self._tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
        self._tok.decoder = tk.decoders.ByteLevel()
        if EOT in self.vocab:
            self._tok.add_special_tokens([EOT])
        self.eot: Optional[int] = self.vocab.get(EOT)

    @property
    def vocab_size(self) -> int:
        return max(self.vocab.values()) + 1

    def encode_ids(self, texts: List[str]) -> List[List[int]]:
        # encode_batch_fast (tokenizers >= 0.20) skips the character offsets: a third the memory
        encode = getattr(self._tok, "encode_batch_fast", self._tok.encode_batch)
        return [e.ids for e in encode(texts)]

    def encode(self, text: str) -> torch.Tensor:
        ids = [i for piece in self.encode_ids(list(pieces(text))) for i in piece]
        return torch.tensor(ids, dtype=torch.long)

    def decode(self, ids) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def state_dict(self) -> dict:
        return {"kind": self.kind, "vocab": self.vocab, "merges": self.merges}

    @classmethod
    def from_state_dict(cls, state: dict) -> "BPETokenizer":
        return cls(state["vocab"], state["merges"], state["kind"])

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> "BPETokenizer":
        """A byte-level BPE of at most vocab_size tokens (the 256 bytes, EOT, and merges)
        trained on the pieces of text `texts` yields."""
        tk = _tokenizers()
        if vocab_size < 257:
            raise ValueError(f"fusedops.data: --vocab-size must be >= 257 (256 bytes and "
                             f"{EOT}), got {vocab_size}")
        tok = tk.Tokenizer(tk.models.BPE())
        tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
        trainer = tk.trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT],
                                         initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(),
                                         show_progress=False)
        tok.train_from_iterator(texts, trainer)
        model = json.loads(tok.to_str())["model"]
        merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
        return cls(model["vocab"], merges, "bpe")

    @classmethod
    def from_dir(cls, folder: str) -> "BPETokenizer":
        """GPT-2's tokens from `folder`'s vocab.json and merges.txt (a Hugging Face GPT-2
        folder, or any tokenizer saved in that format)."""
        paths = [os.path.join(folder, n) for n in ("vocab.json", "merges.txt")]
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            raise ValueError(f"fusedops.data: --tokenizer gpt2 reads vocab.json and merges.txt "
                             f"from --tokenizer-dir; {missing[0]!r} is missing")
        try:
            with open(paths[0], encoding="utf-8") as f:
                vocab = json.load(f)
            with open(paths[1], encoding="utf-8") as f:
                merges = [line.rstrip("\r\n") for line in f]
        except (OSError, ValueError) as e:
            raise ValueError(f"fusedops.data: cannot read GPT-2 tokens from {folder!r} "
                             f"({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
        merges = [m for m in merges if m and not m.startswith("#version")]
        return cls(vocab, merges, "gpt2")

    def save(self, folder: str) -> None:
        """Writes vocab.json and merges.txt (GPT-2's format: what `from_dir` and
        transformers' GPT2Tokenizer read)."""
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
            json.dump(self.vocab, f, ensure_ascii=False)
        with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n" + "".join(m + "\n" for m in self.merges))


def from_state_dict(state: dict):
    """The tokenizer a checkpoint or token folder holds (no "kind": characters, as before
    the other kinds existed)."""
    kind = state.get("kind", "char")
    if kind == "char":
        return CharTokenizer.from_state_dict(state)
    if kind in ("bpe", "gpt2"):
        return BPETokenizer.from_state_dict(state)
    raise ValueError(f"fusedops.data: unknown tokenizer kind {kind!r}")


# where text can be cut without changing its tokens: after a newline between two non-space
# characters (GPT-2's pattern makes that newline a word of its own; merges never cross words)
_CUT = re.compile(r"\S\n(?=\S)")


def last_cut(text: str) -> int:
    """The last place in text where it can be cut without changing its tokens (0: none)."""
    for window in (1 << 16, len(text)):
        ends = [m.end() for m in _CUT.finditer(text, max(0, len(text) - window))]
        if ends:
            return ends[-1]
    return 0


def pieces(text: str, size: int = 1 << 20) -> Iterable[str]:
    """text in pieces of about `size` characters or more that tokenize as the whole does."""
    start = 0
    while start < len(text):
        m = _CUT.search(text, start + size - 1) if len(text) - start > size else None
        end = m.end() if m else len(text)
        yield text[start:end]
        start = end


def _write_json(path: str, obj) -> None:
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, ensure_ascii=False)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def train_bpe(text: str, vocab_size: int, data_path: Optional[str]):
    """(tokenizer, cache file, trained now) for a byte-level BPE of vocab_size tokens trained
    on `text`. The tokenizer is cached beside the data (`<data>.bpe<N>.json`; the embedded
    corpus's, or a folder we cannot write, in the cache folder) and reused while the text is
    the same (the file holds the text's hash)."""
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    fallback = os.path.join(_cache_dir(), f"bpe{vocab_size}-{digest}.json")
    paths = [f"{data_path}.bpe{vocab_size}.json", fallback] if data_path else [fallback]
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                cached = json.load(f)
            if cached.get("text_sha256") == digest and cached.get("vocab_size") == vocab_size:
                return BPETokenizer.from_state_dict(cached["tokenizer"]), path, False
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass  # absent, unreadable or stale: train anew
    tok = BPETokenizer.train(pieces(text), vocab_size)
    record = {"text_sha256": digest, "vocab_size": vocab_size, "tokenizer": tok.state_dict()}
    for path in paths:
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            _write_json(path, record)
            return tok, path, True
        except OSError:
            continue
    return tok, None, True
