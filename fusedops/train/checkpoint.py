"""Checkpoints that survive crashes: written to a temporary file in the same folder, flushed to
disk, then renamed over the old one (a crash or a full disk mid-write leaves the previous
checkpoint intact)."""
import os
import tempfile

import torch


def save_atomic(state: dict, path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".ckpt-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load(path: str) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"fusedops.train: no checkpoint at {path!r}")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a truncated or foreign file
        raise RuntimeError(f"fusedops.train: cannot read checkpoint {path!r}: {e}") from e
