"""Token folders: a corpus tokenized once (`python -m fusedops.data prepare`) and memory-mapped
by training, so a corpus larger than memory trains.

A token folder holds
- `tokens.bin`: every token id of the corpus in order, little-endian uint16 (vocabularies of up
  to 65,536 tokens) or uint32; the files of a folder in sorted order, separated by the
  end-of-text token where the tokenizer has one;
- `meta.json`: {"format", "dtype", "tokens", "val_tokens", "tokenizer" (its plain state),
  "fingerprint" (of the text's bytes), "source", "files"}, written last: a folder without it
  is incomplete.
The last `val_tokens` ids (10%) are the validation split, as for a text file.

Preparing streams the text in pieces of about a megabyte (cut where cutting changes no token),
so neither the text nor its tokens are ever in memory whole; a BPE is trained in a first pass
over the same pieces.
"""
import codecs
import collections
import hashlib
import json
import os
import sys
from typing import Iterator, List, Optional, Tuple

import numpy as np
import torch

from .text import CharTokenizer, TextData
from .tokenizer import BPETokenizer, from_state_dict, last_cut

FORMAT = "fusedops-tokens-1"
CHUNK = 1 << 20  # bytes read at a time
MAX_PIECE = 64 << 20  # characters: a text without a safe cut is cut here anyway
DTYPES = {"uint16": (torch.uint16, 2), "uint32": (torch.uint32, 4)}


def corpus_files(path: str) -> List[str]:
    """`path` itself, or every file under the folder `path` (sorted, hidden names skipped)."""
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise FileNotFoundError(f"fusedops.data: no such file or folder: {path!r}")
    files = []
    for root, dirs, names in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files += [os.path.join(root, n) for n in sorted(names) if not n.startswith(".")]
    if not files:
        raise ValueError(f"fusedops.data: the folder {path!r} holds no files")
    return files


def read_pieces(files: List[str], encoding: Optional[str], progress=None) -> Iterator[Tuple[int, str]]:
    """(file index, piece of its text) for every file in turn, decoded strictly (UTF-8 without
    NUL bytes unless `encoding` is given); `progress.update(bytes)` as it reads."""
    try:
        factory = codecs.getincrementaldecoder(encoding or "utf-8")
    except LookupError:
        raise ValueError(f"fusedops.data: unknown encoding {encoding!r}") from None
    for index, path in enumerate(files):
        decoder, carry, offset = factory(errors="strict"), "", 0
        with open(path, "rb") as f:
            while True:
                raw = f.read(CHUNK)
                if encoding is None and b"\0" in raw:
                    raise ValueError(f"fusedops.data: {path!r} holds NUL bytes at offset "
                                     f"{offset + raw.index(0)}: binary data or UTF-16/32, not "
                                     "UTF-8 text (pass --encoding if it is text)")
                try:
                    text = carry + decoder.decode(raw, final=not raw)
                except UnicodeDecodeError as e:
                    raise ValueError(f"fusedops.data: {path!r} is not valid {encoding or 'UTF-8'} "
                                     f"(near byte offset {offset + max(0, e.start)}: {e.reason}); "
                                     "pass --encoding if it is text in another encoding") from None
                offset += len(raw)
                if progress is not None:
                    progress.update(len(raw))
                if not raw:
                    if text:
                        yield index, text
                    break
                end = last_cut(text) if len(text) < MAX_PIECE else len(text)
                if end:
                    yield index, text[:end]
                carry = text[end:]


def _bar(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    # on stdout, as the training program's: stderr keeps only an error's one line
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, dynamic_ncols=True,
                file=sys.stdout)


def make_tokenizer(kind: str, files: List[str], encoding: Optional[str], vocab_size: int,
                   tokenizer_dir: Optional[str], progress: bool):
    """The tokenizer of `kind` for the corpus: characters and BPE from a pass over it."""
    if kind == "gpt2":
        if not tokenizer_dir:
            raise ValueError("fusedops.data: --tokenizer gpt2 needs --tokenizer-dir, a folder "
                             "holding GPT-2's vocab.json and merges.txt (nothing is downloaded)")
        return BPETokenizer.from_dir(tokenizer_dir)
    size = sum(os.path.getsize(f) for f in files)
    bar = _bar(size, "vocabulary" if kind == "char" else f"bpe {vocab_size}", progress)
    texts = (text for _, text in read_pieces(files, encoding, bar))
    try:
        if kind == "char":
            counts = collections.Counter()
            for text in texts:
                counts.update(text)
            if not counts:
                raise ValueError("fusedops.data: the corpus is empty")
            return CharTokenizer(counts, fallback=max(counts, key=counts.get))
        if kind == "bpe":
            return BPETokenizer.train(texts, vocab_size)
    finally:
        if bar is not None:
            bar.close()
    raise ValueError(f"fusedops.data: unknown tokenizer {kind!r}; choose from char, bpe, gpt2")


def default_out(data: str, kind: str, vocab_size: int) -> str:
    stem = os.path.splitext(os.path.normpath(data))[0]
    return f"{stem}-{kind}{vocab_size if kind == 'bpe' else ''}"


def prepare(data: str, tokenizer: str = "char", vocab_size: int = 4096,
            tokenizer_dir: Optional[str] = None, encoding: Optional[str] = None,
            out: Optional[str] = None, val_fraction: float = 0.1, progress: bool = True) -> dict:
    """Tokenizes the file or folder `data` into the token folder `out` (default: beside the
    data, `<name>-<tokenizer>`); returns its meta (with "out")."""
    files = corpus_files(data)
    tok = make_tokenizer(tokenizer, files, encoding, vocab_size, tokenizer_dir, progress)
    dtype = "uint16" if tok.vocab_size <= 1 << 16 else "uint32"
    out = out or default_out(data, tokenizer, vocab_size)
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"fusedops.data: --out {out!r} is a file, not a folder")
    os.makedirs(out, exist_ok=True)
    meta_path, bin_path = os.path.join(out, "meta.json"), os.path.join(out, "tokens.bin")
    if os.path.exists(meta_path):
        os.unlink(meta_path)  # the folder is incomplete until the new meta is written
    tmp = bin_path + ".tmp"
    sha, count = hashlib.sha256(), 0  # the fingerprint: of the text's UTF-8, as TextData's
    bar = _bar(sum(os.path.getsize(f) for f in files), "tokens", progress)
    try:
        with open(tmp, "wb") as f:
            batch, last = [], 0
            for index, text in read_pieces(files, encoding, bar):
                sha.update(text.encode("utf-8"))
                if tok.eot is not None and index != last:  # documents separated by end-of-text
                    batch.append(None)
                    last = index
                batch.append(text)
                if sum(len(t) for t in batch if t) > 4 * CHUNK or len(batch) > 256:
                    count += _write_ids(f, tok, batch, dtype)
                    batch = []
            count += _write_ids(f, tok, batch, dtype)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, bin_path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    finally:
        if bar is not None:
            bar.close()
    if count < 2:
        raise ValueError(f"fusedops.data: {data!r} gave {count} token(s); nothing to train on")
    meta = {"format": FORMAT, "dtype": dtype, "tokens": count,
            "val_tokens": max(1, int(count * val_fraction)), "tokenizer": tok.state_dict(),
            "fingerprint": sha.hexdigest()[:16], "source": os.path.abspath(data),
            "files": len(files)}
    with open(meta_path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(meta, f, ensure_ascii=False)
    os.replace(meta_path + ".tmp", meta_path)
    return {**meta, "out": out}


def _write_ids(f, tok, batch: list, dtype: str) -> int:
    texts = [t for t in batch if t is not None]
    encoded = iter(tok.encode_ids(texts))
    ids = []
    for t in batch:
        ids += [tok.eot] if t is None else next(encoded)
    np.asarray(ids, dtype="<u2" if dtype == "uint16" else "<u4").tofile(f)
    return len(ids)


class TokenData(TextData):
    """A token folder's ids, memory-mapped (read from disk as batches touch them), split and
    sampled as TextData; `tokenizer` is the one that wrote them."""

    def __init__(self, folder: str):
        meta_path, bin_path = os.path.join(folder, "meta.json"), os.path.join(folder, "tokens.bin")
        if not os.path.isfile(meta_path):
            raise ValueError(f"fusedops.data: {folder!r} is a directory but not a token folder (no "
                             "meta.json); make one with `python -m fusedops.data prepare --data "
                             f"{folder}`, or pass a text file")
        try:
            with open(meta_path, encoding="utf-8") as f:
                meta = json.load(f)
            dtype, itemsize = DTYPES[meta["dtype"]]
            n, n_val = meta["tokens"], meta["val_tokens"]
            ok = meta["format"] == FORMAT and type(n) is int and type(n_val) is int
            if not (ok and 0 < n_val < n and isinstance(meta["fingerprint"], str)):
                raise ValueError("bad sizes or format")
            self.tokenizer = from_state_dict(meta["tokenizer"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"fusedops.data: {meta_path!r} is not a token folder's meta.json "
                             f"({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})"
                             ) from None
        size = os.path.getsize(bin_path) if os.path.isfile(bin_path) else -1
        if size != n * itemsize:
            raise ValueError(f"fusedops.data: {bin_path!r} has {max(size, 0)} bytes, meta.json "
                             f"says {n} {meta['dtype']} tokens ({n * itemsize} bytes): truncated "
                             "or replaced; prepare it again")
        ids = torch.from_file(bin_path, shared=False, size=n, dtype=dtype)  # a private mmap
        self.train, self.val = ids[:-n_val], ids[-n_val:]
        self.fingerprint, self.meta, self.path = meta["fingerprint"], meta, bin_path

    def batch(self, split, batch_size, block_size, generator):
        x, y = super().batch(split, batch_size, block_size, generator)
        top = max(int(x.max()), int(y.max()))  # a damaged file must not reach the embedding
        if top >= self.tokenizer.vocab_size:
            raise ValueError(f"fusedops.data: {self.path!r} holds token id {top}, beyond its "
                             f"vocabulary of {self.tokenizer.vocab_size}; prepare it again")
        return x, y
