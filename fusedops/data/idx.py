"""MNIST-style IDX files (the format of yann.lecun.com's MNIST and of Fashion-MNIST), plain or
gzip-compressed, read into tensors with every size and byte checked.

An IDX file: two zero bytes, a type byte (0x08 unsigned byte ... 0x0E double), the number of
dimensions, one big-endian uint32 per dimension, then the data in row-major order (big-endian).
"""
import gzip
import os
import struct
from typing import Dict, Tuple

import numpy as np
import torch

_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
# the four files of MNIST: (split, kind) -> file stem
MNIST_FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}


class IDXError(ValueError):
    """A file that is not a well-formed IDX file of the expected shape."""


def read_idx(path: str) -> torch.Tensor:
    """The array an IDX file holds, as a tensor (uint8 data stays uint8). Files ending in .gz,
    or starting with gzip's magic bytes, are decompressed."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise IDXError(f"fusedops.data: {path}: not a readable gzip file ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _TYPES:
        raise IDXError(f"fusedops.data: {path}: not an IDX file (it must start with two zero "
                       f"bytes, a type byte in {sorted(_TYPES)} and the number of dimensions)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IDXError(f"fusedops.data: {path}: truncated header ({len(raw)} bytes, {ndim} "
                       f"dimensions need {header})")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_TYPES[raw[2]])
    want = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    got = len(raw) - header
    if got != want:
        what = "truncated" if got < want else "longer than its header says"
        raise IDXError(f"fusedops.data: {path}: {what}: shape {list(shape)} needs {want} data "
                       f"bytes, the file holds {got}")
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return torch.from_numpy(data.astype(dtype.newbyteorder("=")).copy())


def _find(folder: str, stem: str) -> str:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"fusedops.data: {folder} has no {stem} (or {stem}.gz): an MNIST "
                            f"folder holds {', '.join(MNIST_FILES.values())}")


def load_mnist(folder: str) -> Dict[str, Tuple[torch.Tensor, torch.Tensor]]:
    """{"train": (images, labels), "test": (images, labels)} from the four IDX files of an
    MNIST folder: images float32 [N, 1, H, W] scaled to [0, 1], labels int64 [N]."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"fusedops.data: {folder} is not a folder")
    out = {}
    for split in ("train", "test"):
        ipath = _find(folder, MNIST_FILES[(split, "images")])
        lpath = _find(folder, MNIST_FILES[(split, "labels")])
        images, labels = read_idx(ipath), read_idx(lpath)
        if images.dim() != 3 or images.dtype != torch.uint8:
            raise IDXError(f"fusedops.data: {ipath}: expected unsigned bytes [N, rows, columns], "
                           f"got {images.dtype} of shape {list(images.shape)}")
        if labels.dim() != 1 or labels.dtype != torch.uint8:
            raise IDXError(f"fusedops.data: {lpath}: expected unsigned bytes [N], got "
                           f"{labels.dtype} of shape {list(labels.shape)}")
        if labels.shape[0] != images.shape[0]:
            raise IDXError(f"fusedops.data: {split}: {images.shape[0]} images but "
                           f"{labels.shape[0]} labels")
        if labels.numel() and int(labels.max()) > 9:
            raise IDXError(f"fusedops.data: {lpath}: labels must be digits 0-9, found "
                           f"{int(labels.max())}")
        out[split] = (images.unsqueeze(1).float() / 255.0, labels.long())
    return out


def write_idx(path: str, array, compress: bool = None) -> None:
    """Writes an array as an IDX file (gzip when the name ends in .gz or compress=True):
    for tests and for preparing data."""
    a = np.asarray(array)
    code = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int16): 0x0B,
            np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E}
    if a.dtype not in code:
        raise ValueError(f"fusedops.data.write_idx: unsupported dtype {a.dtype}")
    raw = (bytes([0, 0, code[a.dtype], a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape)
           + a.astype(a.dtype.newbyteorder(">")).tobytes())
    if compress or (compress is None and path.endswith(".gz")):
        raw = gzip.compress(raw)
    with open(path, "wb") as f:
        f.write(raw)
