"""The training program against hostile and unlucky input: a checkpoint never runs code and
never holds a non-finite step, a broken checkpoint or bad argument is one line on stderr with
exit code 2, a resumed run continues exactly on every rank and with the settings it was
started with, non-text data is refused, and SIGINT/SIGTERM always end in a good checkpoint.
Each test is the attack or accident it guards against, on small generated text."""
import json
import math
import os
import random
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest
import torch

import fusedops  # noqa: F401
from fusedops.data import load_text
from fusedops.train import checkpoint, main, parse_args, train
from fusedops.train import trainer

from conftest import REPO_ROOT  # tests/ is on sys.path under pytest

TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16",
        "--batch-size", "4", "--eval-iters", "2", "--sample-chars", "10", "--no-progress",
        "--threads", "1"]
WORDS = ("the of and to in is that for it as with was on be by this are an or from at which "
         "but not have one all were when there can more if no out so what up about into").split()
ENV = dict(os.environ, PYTHONPATH=REPO_ROOT, PYTHONUNBUFFERED="1")


def _text(n_words=3000, seed=0) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text(_text())
    return str(path)


def _cli_error(capsys, argv) -> str:
    """Runs the command line in-process; it must exit 2 with one line on stderr."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(("fusedops.train:", "fusedops.data:")), err
    return lines[0]


def _finite(state: dict) -> bool:
    return all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())


# ---- loading never runs code; the format is plain -------------------------------------------


class _Payload:
    """What an attacker pickles: loading it calls open(marker, 'w'), creating the file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_malicious_checkpoint_never_runs_code(tmp_path, capsys, data):
    marker = str(tmp_path / "pwned")
    evil = str(tmp_path / "evil.pt")
    torch.save({"model": {}, "step": 1, "args": {}, "generators": [], "x": _Payload(marker)}, evil)
    line = _cli_error(capsys, TINY + ["--data", data, "--resume", evil])
    assert "refusing to load" in line and evil in line
    assert not os.path.exists(marker)
    torch.load(evil, weights_only=False)  # the attack is real: the unrestricted loader runs it
    assert os.path.exists(marker)


def test_checkpoint_format_is_plain_data(tmp_path, data):
    train(parse_args(TINY + ["--data", data, "--steps", "2", "--out", str(tmp_path / "run")]))
    path = str(tmp_path / "run" / "ckpt.pt")
    raw = torch.load(path, weights_only=True)  # what a user can do without this program
    state = checkpoint.load(path)
    assert raw.keys() == state.keys()
    assert state["step"] == 2 and isinstance(state["args"], dict)
    assert state["args"]["data"] == os.path.abspath(data) and state["args"]["steps"] == 2
    assert len(state["generators"]) == len(state["torch_rng"]) == 1  # one per rank
    assert state["generators"][0].dtype == torch.uint8
    assert set(state["model"]) == set(trainer.GPT(trainer.GPTConfig(**state["config"])).state_dict())


# ---- a non-finite step never reaches the checkpoint ------------------------------------------


class _InfGradGPT(trainer.GPT):
    """A model whose 4th training step has a finite loss and infinite gradients."""

    calls = 0

    def forward(self, idx, targets=None):
        logits, loss = super().forward(idx, targets)
        if self.training:
            type(self).calls += 1
            if type(self).calls == 4:
                loss.register_hook(lambda g: g * math.inf)
        return logits, loss


@pytest.mark.parametrize("grad_clip", ["1.0", "0"])
def test_infinite_gradients_on_an_eval_boundary_never_reach_the_checkpoint(
        tmp_path, capsys, monkeypatch, data, grad_clip):
    monkeypatch.setattr(trainer, "GPT", _InfGradGPT)
    monkeypatch.setattr(_InfGradGPT, "calls", 0)
    out = tmp_path / "run"
    argv = TINY + ["--data", data, "--steps", "8", "--eval-interval", "2", "--grad-clip", grad_clip,
                   "--out", str(out)]
    with pytest.raises(FloatingPointError, match="step 4 .*not applied"):
        train(parse_args(argv))  # the function raises; it never exits the interpreter
    state = checkpoint.load(str(out / "ckpt.pt"))
    assert state["step"] == 2 and _finite(state)  # step 4 (an eval boundary) was never saved
    assert all(math.isfinite(v) for h in state["history"] for k, v in h.items() if k != "step")

    monkeypatch.setattr(_InfGradGPT, "calls", 0)
    line = _cli_error(capsys, argv)  # the command line: exit code 2, the last good checkpoint
    assert f"the last good checkpoint is {out / 'ckpt.pt'}" in line
    assert checkpoint.load(str(out / "ckpt.pt"))["step"] == 2


# ---- broken checkpoints and bad arguments: one line, exit code 2 -----------------------------


@pytest.fixture
def good_ckpt(tmp_path, data):
    train(parse_args(TINY + ["--data", data, "--steps", "2", "--out", str(tmp_path / "good")]))
    return str(tmp_path / "good" / "ckpt.pt")


def _break(kind: str, good: str, path: str) -> list:
    """Writes a checkpoint broken in the way `kind` says at `path`; returns extra arguments."""
    raw = open(good, "rb").read()
    if kind == "truncated":
        open(path, "wb").write(raw[: len(raw) * 2 // 3])
    elif kind == "random bytes":
        open(path, "wb").write(random.Random(1).randbytes(5000))
    elif kind == "empty":
        open(path, "wb").close()
    elif kind == "directory":
        os.mkdir(path)
    elif kind == "not a dict":
        torch.save([1, 2, 3], path)
    elif kind == "missing keys":
        state = torch.load(good, weights_only=True)
        del state["generators"], state["optimizer"]
        torch.save(state, path)
    elif kind == "another shape":
        shutil.copy(good, path)
        return ["--n-embd", "32"]
    elif kind == "bad settings":
        state = torch.load(good, weights_only=True)
        state["args"]["lr"] = "fast"
        torch.save(state, path)
    elif kind == "non-finite weights":
        state = torch.load(good, weights_only=True)
        state["model"]["ln_f.weight"][0] = math.nan
        torch.save(state, path)
    return []


@pytest.mark.parametrize("kind, says", [
    ("truncated", "truncated or damaged"), ("random bytes", "not a checkpoint"),
    ("empty", "is empty"), ("directory", "is a directory"), ("not a dict", "holds a list"),
    ("missing keys", "lacks 'optimizer', 'generators'"),
    ("another shape", "model of another shape: wte.weight is [{V}, 16] there, [{V}, 32] here"),
    ("bad settings", "bad settings: --lr must be > 0"),
    ("non-finite weights", "non-finite weights (ln_f.weight)")])
def test_a_broken_checkpoint_is_a_one_line_error(tmp_path, capsys, data, good_ckpt, kind, says):
    path = str(tmp_path / "broken.pt")
    extra = _break(kind, good_ckpt, path)
    line = _cli_error(capsys, TINY + ["--data", data, "--resume", path, "--steps", "4"] + extra)
    assert repr(path) in line and says.format(V=len(set(_text()))) in line, line


@pytest.mark.parametrize("argv, says", [
    (["--steps", "0"], "--steps must be an integer >= 1"),
    (["--steps", "ten"], "invalid int value"),
    (["--preset", "huge"], "invalid choice"),
    (["--frobnicate"], "unrecognized arguments"),
    (["--lr", "-1"], "--lr must be > 0"),
    (["--lr", "nan"], "--lr must be > 0"),
    (["--dropout", "1.5"], "--dropout must be in [0, 1)"),
    (["--grad-clip", "-1"], "--grad-clip must be >= 0"),
    (["--warmup", "-1"], "--warmup must be an integer >= 0"),
    (["--n-head", "3"], "n_embd (16) must be divisible by n_head (3)"),
    (["--block-size", "100000"], "fewer than block_size + 2"),
    (["--device", "toaster"], "is not a device"),
    (["--data", "/nonexistent/words.txt"], "no such text file"),
    (["--data", "."], "is a directory"),
    (["--resume", "/nonexistent/ckpt.pt"], "no checkpoint at"),
    (["--encoding", "klingon"], "unknown encoding"),
    (["--out", "{data}"], "is a file, not a folder"),
])
def test_every_command_line_error_is_one_line(capsys, data, argv, says):
    argv = [a.format(data=data) for a in argv]
    line = _cli_error(capsys, TINY + ["--data", data, "--steps", "2"] + argv)
    assert says in line, line


def test_command_line_errors_without_traceback(tmp_path):
    for argv in (["--steps", "0"], ["--data", str(tmp_path / "nope.txt")]):
        r = subprocess.run([sys.executable, "-m", "fusedops.train", *argv], cwd=REPO_ROOT, env=ENV,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and r.stderr.startswith(("fusedops.train:", "fusedops.data:"))
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


# ---- resume: exact on every rank, with the run's own settings --------------------------------


_RANK_SCRIPT = """
import json, os, sys
from fusedops.train import trainer

class Logged(trainer.GPT):  # records the first token of every training sequence
    log = []
    def forward(self, idx, targets=None):
        if self.training:
            Logged.log.append(idx[:, 0].tolist())
        return super().forward(idx, targets)

trainer.GPT = Logged
logs = []
for port, argv in json.loads(sys.argv[1]):  # one interpreter for all runs: torch imports once
    os.environ["MASTER_PORT"] = str(port)  # a store of its own: none left over from the last
    Logged.log = []
    trainer.main(argv)
    logs.append(Logged.log)
print("BATCHES", json.dumps(logs))
"""


def _two_ranks(runs: list) -> list:
    """Runs the program as two gloo ranks (what torchrun sets up), once for each argument list
    of runs; returns the batches of every run, one list per rank."""
    runs, procs = [(_free_port(), argv) for argv in runs], []
    for rank in range(2):
        env = dict(ENV, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                   MASTER_ADDR="127.0.0.1", OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen([sys.executable, "-c", _RANK_SCRIPT, json.dumps(runs)],
                                      cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    logs = []
    for p in procs:
        # gloo ranks wait by polling: on a machine busy with other work they can take minutes
        # (a run took 4 of them beside two compilers), so the limit only guards against a hang
        output, _ = p.communicate(timeout=300)
        assert p.returncode == 0, output
        logs.append(json.loads(output.split("BATCHES ")[-1]))
    return [[logs[rank][run] for rank in range(2)] for run in range(len(runs))]


def _free_port() -> int:
    """A free port below the kernel's ephemeral range: a port the kernel handed out by bind(0)
    could be handed out again to one of gloo's own connections of an earlier run before this
    run's store binds it, and the other rank would then wait for a store that never comes."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(max(1024, low - 12000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


def test_two_ranks_resume_each_with_its_own_batches(tmp_path, data):
    # a constant learning rate after one warmup step: the schedule does not depend on --steps
    common = TINY + ["--data", data, "--eval-interval", "2", "--warmup", "1", "--min-lr-ratio", "1"]
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    straight, first, resumed = _two_ranks([common + ["--steps", "4", "--out", a],
                                           common + ["--steps", "2", "--out", b],
                                           common + ["--steps", "4", "--out", b, "--resume"]])
    assert len(straight[0]) == 4 and straight[0] != straight[1]  # the ranks draw different batches
    for rank in range(2):  # ... and each continues with its own after the resume
        assert first[rank] + resumed[rank] == straight[rank]
    ca, cb = checkpoint.load(os.path.join(a, "ckpt.pt")), checkpoint.load(os.path.join(b, "ckpt.pt"))
    assert len(cb["generators"]) == 2 and not torch.equal(*cb["generators"])
    for k, v in ca["model"].items():
        torch.testing.assert_close(cb["model"][k], v, rtol=1e-6, atol=1e-7)


def test_resume_with_dropout_continues_exactly(tmp_path, data):
    common = TINY + ["--data", data, "--eval-interval", "2", "--warmup", "1", "--min-lr-ratio", "1",
                     "--dropout", "0.2"]
    train(parse_args(common + ["--steps", "4", "--out", str(tmp_path / "a")]))
    train(parse_args(common + ["--steps", "2", "--out", str(tmp_path / "b")]))
    train(parse_args(common + ["--steps", "4", "--out", str(tmp_path / "b"), "--resume"]))
    a, b = (checkpoint.load(str(tmp_path / d / "ckpt.pt")) for d in "ab")
    for k, v in a["model"].items():  # the dropout masks of steps 3 and 4 were the same
        torch.testing.assert_close(b["model"][k], v, rtol=1e-6, atol=1e-7)


def test_resume_takes_the_settings_not_given_from_the_checkpoint(tmp_path, capsys, data):
    out = str(tmp_path / "run")
    train(parse_args(TINY + ["--data", data, "--steps", "4", "--lr", "5e-3", "--warmup", "2",
                             "--batch-size", "3", "--backend", "torch", "--out", out]))
    ckpt = checkpoint.load(os.path.join(out, "ckpt.pt"))
    capsys.readouterr()
    # what the README shows: only --out and --resume (and a longer run)
    r = train(parse_args(["--out", out, "--resume", "--steps", "6", "--no-progress"]))
    err = capsys.readouterr().err.strip().splitlines()
    assert r["step"] == 6 and r["backend"] == "torch"
    assert err == ["fusedops.train: warning: --steps 6 differs from the checkpoint's 4; this run "
                   "uses 6"]
    state = checkpoint.load(os.path.join(out, "ckpt.pt"))
    assert state["config"] == ckpt["config"]
    for name in ("data", "lr", "warmup", "batch_size", "backend", "eval_iters", "seed"):
        assert state["args"][name] == ckpt["args"][name], name
    assert [h["lr"] for h in state["history"] if "lr" in h][4:] == [
        trainer.lr_at(s, parse_args(["--lr", "5e-3", "--warmup", "2", "--steps", "6"]))
        for s in (4, 5)]

    # given settings that differ are used and named; other text is named
    other = tmp_path / "other.txt"
    other.write_text(_text(seed=1))
    train(parse_args(["--out", out, "--resume", "--steps", "7", "--lr", "1e-3", "--data",
                      str(other), "--no-progress"]))
    err = capsys.readouterr().err
    assert "--lr 0.001 differs from the checkpoint's 0.005; this run uses 0.001" in err
    assert f"--data {other} differs from the checkpoint's {os.path.abspath(data)}" in err
    assert f"the text of {other} differs from the text the checkpoint was trained on" in err
    assert checkpoint.load(os.path.join(out, "ckpt.pt"))["history"][-2]["lr"] == trainer.lr_at(
        6, parse_args(["--lr", "1e-3", "--warmup", "2", "--steps", "7"]))

    # nothing left to train: main returns (exit code 0) with a message
    main(["--out", out, "--resume"])
    assert "is at step 7 and --steps is 7: nothing to train" in capsys.readouterr().out


# ---- data that is not text ------------------------------------------------------------------


@pytest.mark.parametrize("kind, encoding", [
    ("random bytes", None), ("NUL bytes", None), ("utf-16", "utf-16"), ("latin-1", "latin-1")])
def test_data_that_is_not_utf8_is_refused(tmp_path, capsys, kind, encoding):
    text = _text() + " café naïve"
    path = str(tmp_path / "data.txt")
    raw = {"random bytes": random.Random(2).randbytes(5000),
           "NUL bytes": text.encode() + b"\0" * 10 + text.encode(),
           "utf-16": text.encode("utf-16"), "latin-1": text.encode("latin-1")}[kind]
    open(path, "wb").write(raw)
    line = _cli_error(capsys, TINY + ["--data", path, "--steps", "1", "--out", str(tmp_path / "r")])
    assert line.startswith(f"fusedops.data: {path!r}") and "--encoding" in line, line
    if encoding:  # with --encoding the text is decoded as asked
        assert load_text(path, encoding) == text


# ---- signals, temporaries, atomic writes ----------------------------------------------------


def _start(tmp_path, data, *extra):
    cmd = [sys.executable, "-m", "fusedops.train", *TINY, "--data", data, "--steps", "100000",
           "--eval-interval", "100000", "--out", str(tmp_path / "run"), *extra]
    return subprocess.Popen(cmd, cwd=REPO_ROOT, env=ENV, stdout=subprocess.PIPE, text=True)


def _wait_for(proc, prefix):
    for line in proc.stdout:
        if line.startswith(prefix):
            return
    raise AssertionError(f"the program ended without printing {prefix!r}")


def test_sigterm_during_the_first_evaluation_saves_and_exits_0(tmp_path, data):
    proc = _start(tmp_path, data, "--eval-iters", "600")  # a first evaluation of ~1 s
    _wait_for(proc, "data: ")  # printed just before it starts
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, rest
    assert "stopped by SIGTERM at step 0" in rest
    state = checkpoint.load(str(tmp_path / "run" / "ckpt.pt"))
    assert state["step"] == 0 and _finite(state)


def test_two_quick_sigints_save_and_exit_0(tmp_path, data):
    proc = _start(tmp_path, data)
    _wait_for(proc, "step      0")
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, rest
    assert "stopped by SIGINT" in rest
    state = checkpoint.load(str(tmp_path / "run" / "ckpt.pt"))
    assert state["step"] > 0 and _finite(state)


def test_a_second_sigint_during_the_save_is_ignored(tmp_path, monkeypatch, data):
    class Interrupted(trainer.GPT):  # Ctrl-C in the 3rd training step
        steps = 0

        def forward(self, idx, targets=None):
            if self.training:
                type(self).steps += 1
                if type(self).steps == 3:
                    os.kill(os.getpid(), signal.SIGINT)
            return super().forward(idx, targets)

    real_save = checkpoint.save_atomic

    def save_atomic(state, path):
        if state["step"] == 3:  # the save after the first Ctrl-C: press it again, mid-save
            os.kill(os.getpid(), signal.SIGINT)
        real_save(state, path)

    monkeypatch.setattr(trainer, "GPT", Interrupted)
    monkeypatch.setattr(checkpoint, "save_atomic", save_atomic)
    before = signal.getsignal(signal.SIGINT)
    r = train(parse_args(TINY + ["--data", data, "--steps", "100", "--out", str(tmp_path / "run")]))
    assert r == {"step": 3, "stopped": True}  # the step in flight finished, then it stopped
    assert signal.getsignal(signal.SIGINT) is before
    state = checkpoint.load(str(tmp_path / "run" / "ckpt.pt"))
    assert state["step"] == 3 and _finite(state)


def test_stale_temporaries_are_removed_and_metrics_written_atomically(tmp_path, monkeypatch, data):
    out = tmp_path / "run"
    out.mkdir()
    stale = [out / ".ckpt.pt-4242-deadbeef.tmp", out / ".metrics.json-4242-deadbeef.tmp"]
    for f in stale:
        f.write_bytes(b"half a checkpoint")  # what a run killed mid-write leaves
    written = []
    real = checkpoint.write_atomic
    monkeypatch.setattr(checkpoint, "write_atomic", lambda p, w: (written.append(p), real(p, w)))
    train(parse_args(TINY + ["--data", data, "--steps", "2", "--out", str(out)]))
    assert not any(f.exists() for f in stale)
    assert str(out / "metrics.json") in written
    assert json.loads((out / "metrics.json").read_text())["step"] == 2
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]


def test_atomic_write_syncs_the_folder_and_survives_a_crash(tmp_path, monkeypatch):
    path = str(tmp_path / "f.json")
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.fstat(fd).st_mode), real_fsync(fd)))
    checkpoint.write_atomic(path, lambda f: f.write(b"old"))
    assert any(stat.S_ISDIR(m) for m in synced)  # the rename reached the disk

    def crash(f):
        f.write(b"ne")
        raise OSError("disk full")

    with pytest.raises(OSError):
        checkpoint.write_atomic(path, crash)
    assert open(path, "rb").read() == b"old" and os.listdir(tmp_path) == ["f.json"]
