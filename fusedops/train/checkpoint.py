"""Checkpoints that survive crashes and never run code.

Writing: to a temporary file in the same folder, flushed to disk, renamed over the old one, and
the folder flushed too (a crash, a full disk or a kill mid-write leaves the previous checkpoint
intact; a run removes the temporaries a killed one left). `metrics.json` is written the same way;
`best.pt` and `ckpt-<step>.pt` are second names (hard links, or copies) of a written checkpoint,
made the same way.

Reading: `torch.load(weights_only=True)`, and nothing else. A checkpoint holds tensors and
plain data only (dicts, lists, numbers, strings), so a user can read one without this program;
a file that the restricted loader refuses is an error, never loaded another way (a pickle can
run any code while it loads). Every way a file can be broken gives a one-line error naming the
file and what is wrong.
"""
import glob
import os
import pickle
import re
import secrets
import shutil
import warnings

import torch

# what `load` guarantees: the keys the training program reads back
REQUIRED = {"model": dict, "optimizer": dict, "step": int, "args": dict, "generators": list,
            "config": dict, "tokenizer": dict, "history": list}


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message is one line naming the file."""


def _temp_prefix(path: str) -> str:
    return f".{os.path.basename(path)}-"


def _fsync_dir(folder: str) -> None:
    # the rename itself lives in the folder: without this a power loss can undo it
    if not hasattr(os, "O_DIRECTORY"):
        return  # Windows: folders cannot be opened for fsync
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str, write) -> None:
    """Calls write(f) on a binary file that becomes `path` only once complete and on disk."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f"{_temp_prefix(path)}{os.getpid()}-{secrets.token_hex(4)}.tmp")
    # os.open, not mkstemp: the file gets the umask's permissions, as an ordinary open's would
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)


def save_atomic(state: dict, path: str) -> None:
    write_atomic(path, lambda f: torch.save(state, f))


def link_atomic(src: str, dst: str) -> None:
    """Makes `dst` a second name of the file `src` (a hard link: no copy, and `src` replaced by a
    later write leaves `dst` as it was), or a copy where links are not possible; atomically."""
    folder = os.path.dirname(os.path.abspath(dst))
    tmp = os.path.join(folder, f"{_temp_prefix(dst)}{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)


def keep_last(path: str, step: int, k: int) -> list:
    """Keeps the checkpoint `path` of `step` also as <name>-<step>.pt, and only the k newest of
    those; returns the ones removed."""
    stem, ext = os.path.splitext(path)
    link_atomic(path, f"{stem}-{step}{ext}")
    pattern = re.compile(re.escape(os.path.basename(stem)) + r"-(\d+)" + re.escape(ext) + "$")
    folder = os.path.dirname(os.path.abspath(path))
    kept = sorted((int(m.group(1)), name) for name in os.listdir(folder)
                  for m in [pattern.match(name)] if m)
    removed = [os.path.join(folder, name) for _, name in kept[:-k]]
    for f in removed:
        os.unlink(f)
    return removed


def remove_stale(path: str) -> list:
    """Removes the temporaries that a run killed while writing `path` left behind."""
    folder = os.path.dirname(os.path.abspath(path))
    stale = glob.glob(os.path.join(glob.escape(folder), glob.escape(_temp_prefix(path)) + "*.tmp"))
    for f in stale:
        try:
            os.unlink(f)
        except OSError:
            pass
    return stale


def load(path: str) -> dict:
    """The checkpoint at `path` as a dict with at least the keys of REQUIRED; CheckpointError
    (FileNotFoundError when there is no file) with a one-line message otherwise."""
    if os.path.isdir(path):
        raise CheckpointError(f"fusedops.train: checkpoint {path!r} is a directory, not a file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"fusedops.train: no checkpoint at {path!r}")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"fusedops.train: checkpoint {path!r} is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the loader's notes on foreign pickle protocols
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if found:  # a pickle that would build objects (and can run code) while loading
            raise CheckpointError(
                f"fusedops.train: checkpoint {path!r} holds {found.group(1)}, not only tensors and "
                "plain data; refusing to load it") from None
        raise CheckpointError(f"fusedops.train: {path!r} is not a checkpoint (not a file "
                              "written by torch.save, or damaged)") from None
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        reason = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise CheckpointError(f"fusedops.train: cannot read checkpoint {path!r}: truncated or "
                              f"damaged ({reason})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"fusedops.train: checkpoint {path!r} holds a "
                              f"{type(state).__name__}, not a checkpoint dict")
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise CheckpointError(f"fusedops.train: checkpoint {path!r} lacks "
                              f"{', '.join(map(repr, missing))} (not a fusedops.train checkpoint?)")
    wrong = [f"{k!r} is a {type(state[k]).__name__}" for k, t in REQUIRED.items()
             if not isinstance(state[k], t) or (t is int and isinstance(state[k], bool))]
    if not wrong and state["step"] < 0:
        wrong.append(f"'step' is {state['step']}")
    if not wrong and not all(isinstance(h, dict) for h in state["history"]):
        wrong.append("'history' holds other things than dicts")
    if wrong:
        raise CheckpointError(f"fusedops.train: checkpoint {path!r} is malformed: {'; '.join(wrong)}")
    return state
