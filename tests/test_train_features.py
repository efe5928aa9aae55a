"""The training program's larger features, each on a tiny model and small generated text:
--grad-accum N equals one batch N times larger, --dtype bf16 trains with float32 weights,
--patience stops early and ends with the best weights (best.pt beside ckpt.pt), --keep-last K,
--compile, BPE tokens from a text file, model FLOP/s and the fraction of peak, the banner
naming the model really trained, torchrun's thread share, and every --help in full."""
import functools
import os
import random

import pytest
import torch

from fusedops import sample
from fusedops.data import __main__ as data_cli
from fusedops.train import checkpoint, main, parse_args, train, trainer

TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16",
        "--eval-iters", "2", "--sample-chars", "10", "--no-progress", "--threads", "1"]
WORDS = ("the of and to in is that for it as with was on be by this are an or from at which "
         "but not have one all were when there can more if no out so what up about into").split()


@pytest.fixture
def data(tmp_path):
    rng = random.Random(0)
    path = tmp_path / "words.txt"
    path.write_text(" ".join(rng.choice(WORDS) for _ in range(3000)))
    return str(path)


def _weights(out):
    return checkpoint.load(os.path.join(out, "ckpt.pt"))["model"]


def test_grad_accum_equals_a_larger_batch(tmp_path, data):
    common = TINY + ["--data", data, "--steps", "3", "--eval-interval", "3", "--lr", "1e-2"]
    big = train(parse_args(common + ["--batch-size", "8", "--out", str(tmp_path / "a")]))
    accum = train(parse_args(common + ["--batch-size", "4", "--grad-accum", "2",
                                       "--out", str(tmp_path / "b")]))
    a, b = _weights(str(tmp_path / "a")), _weights(str(tmp_path / "b"))
    for name in a:  # the same 8 sequences per step, the gradient averaged over them
        torch.testing.assert_close(b[name], a[name], atol=2e-5, rtol=1e-4, msg=name)
    hist = [checkpoint.load(os.path.join(tmp_path, d, "ckpt.pt"))["history"] for d in "ab"]
    losses = [[h["loss"] for h in hs if "loss" in h] for hs in hist]
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    assert big["tokens_per_s"] and accum["step"] == 3


@pytest.mark.parametrize("backend", ["fusedops", "torch"])
def test_bf16_trains_with_float32_weights(tmp_path, data, backend):
    common = TINY + ["--data", data, "--steps", "12", "--lr", "1e-2", "--batch-size", "8",
                     "--backend", backend]
    fp32 = train(parse_args(common + ["--out", str(tmp_path / "fp32")]))
    bf16 = train(parse_args(common + ["--dtype", "bf16", "--out", str(tmp_path / "bf16")]))
    assert bf16["dtype"] == "bf16" and bf16["val_loss"] < bf16["initial_val_loss"] - 0.3
    assert bf16["val_loss"] == pytest.approx(fp32["val_loss"], abs=0.05)
    state = checkpoint.load(os.path.join(tmp_path, "bf16", "ckpt.pt"))
    assert all(t.dtype == torch.float32 for t in state["model"].values())
    assert state["args"]["dtype"] == "bf16"


@pytest.mark.slow
def test_bf16_tiny_preset_300_steps_within_2_percent_of_fp32(tmp_path):
    """The tiny preset on the embedded corpus: 300 steps under bf16 autocast end within 2% of
    the fp32 run's validation loss (the same seed, data and batches)."""
    common = ["--preset", "tiny", "--steps", "300", "--batch-size", "8", "--eval-interval", "300",
              "--eval-iters", "8", "--sample-chars", "0", "--no-progress"]
    fp32 = train(parse_args(common + ["--out", str(tmp_path / "fp32")]))
    bf16 = train(parse_args(common + ["--dtype", "bf16", "--out", str(tmp_path / "bf16")]))
    assert bf16["val_loss"] < bf16["initial_val_loss"] - 1.0
    assert abs(bf16["val_loss"] - fp32["val_loss"]) <= 0.02 * fp32["val_loss"], (
        bf16["val_loss"], fp32["val_loss"])


def test_attention_and_losses_under_cpu_autocast():
    import fusedops
    import torch.nn.functional as F

    q, k, v = (torch.randn(2, 2, 8, 16).bfloat16() for _ in range(3))
    x = torch.randn(6, 16).bfloat16().requires_grad_()
    w, t = torch.randn(11, 16), torch.randint(0, 11, (6,))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # torch's policy: attention in the
        att = fusedops.ops.scaled_dot_product_attention(q, k, v, is_causal=True)  # low dtype,
        loss = fusedops.ops.linear_cross_entropy(x, w, t)  # losses in float32
        ce = fusedops.ops.cross_entropy(x @ w.bfloat16().T, t)
    assert att.dtype == torch.bfloat16 and loss.dtype == ce.dtype == torch.float32
    ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True)
    torch.testing.assert_close(att.float(), ref, atol=1e-2, rtol=1e-2)
    # the logits are products of bf16 values (the fp32 master weight rounded while packed, as
    # torch's autocast linear rounds it), summed in fp32; the widening path (CPUs without
    # native bf16 products) uses the fp32 master unrounded
    widened = fusedops.cpu_info()["bf16"].startswith("widened")
    wref = w.double() if widened else w.bfloat16().double()
    ref_loss = F.cross_entropy(x.double() @ wref.T, t).float()
    torch.testing.assert_close(loss, ref_loss, atol=1e-5, rtol=1e-5)
    loss.backward()
    assert x.grad.dtype == torch.bfloat16


def test_patience_stops_early_and_ends_with_the_best_weights(tmp_path, monkeypatch, capsys, data):
    vals = iter([5.0, 4.0, 3.0, 3.5, 3.6, 3.7, 3.8])  # the best at step 2, then worse
    real_eval = trainer.evaluate
    monkeypatch.setattr(trainer, "evaluate", lambda *a: {**real_eval(*a), "val": next(vals)})
    saved, models = {}, []
    real_save = checkpoint.save_atomic
    monkeypatch.setattr(checkpoint, "save_atomic", lambda state, path: (
        saved.__setitem__(state["step"], {k: v.clone() for k, v in state["model"].items()}),
        real_save(state, path)))

    class Kept(trainer.GPT):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            models.append(self)

    monkeypatch.setattr(trainer, "GPT", Kept)
    out = str(tmp_path / "run")
    argv = TINY + ["--data", data, "--steps", "20", "--eval-interval", "1", "--patience", "2",
                   "--batch-size", "4", "--out", out]
    r = train(parse_args(argv))
    assert r["stopped_early"] and r["step"] == 4 and r["best_step"] == 2 and r["best_val_loss"] == 3.0
    best, last = (checkpoint.load(os.path.join(out, n)) for n in ("best.pt", "ckpt.pt"))
    assert best["step"] == 2 and last["step"] == 4  # the best kept beside the last
    for name, w in best["model"].items():
        assert torch.equal(w, saved[2][name])
        assert torch.equal(models[0].state_dict()[name], w)  # the run ended with the best weights
    assert "early stop at step 4" in capsys.readouterr().out
    # resuming has nothing to do while the patience is spent; a larger one continues
    main(["--out", out, "--resume"])
    assert "stopped early" in capsys.readouterr().out
    monkeypatch.setattr(trainer, "evaluate", real_eval)
    r = train(parse_args(["--out", out, "--resume", "--patience", "9", "--steps", "5",
                          "--no-progress"]))
    assert r["step"] == 5 and not r["stopped_early"]


def test_keep_last(tmp_path, data):
    out = tmp_path / "run"
    train(parse_args(TINY + ["--data", data, "--steps", "4", "--eval-interval", "1",
                             "--keep-last", "2", "--batch-size", "4", "--out", str(out)]))
    kept = sorted(f for f in os.listdir(out) if f.startswith("ckpt-"))
    assert kept == ["ckpt-3.pt", "ckpt-4.pt"]
    assert [checkpoint.load(str(out / f))["step"] for f in kept] == [3, 4]
    assert checkpoint.load(str(out / "ckpt.pt"))["step"] == 4


def test_compile(tmp_path, monkeypatch, capsys, data):
    # aot_eager: the graph capture through our ops without Inductor's minute of C++ builds
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    r = train(parse_args(TINY + ["--data", data, "--steps", "3", "--batch-size", "4",
                                 "--compile", "--out", str(tmp_path / "run")]))
    assert r["val_loss"] < r["initial_val_loss"]
    assert " · compiled · " in capsys.readouterr().out


def test_bpe_tokens_flops_and_the_banner(tmp_path, capsys, data):
    out = str(tmp_path / "run")
    r = train(parse_args(TINY + ["--data", data, "--steps", "3", "--batch-size", "4",
                                 "--tokenizer", "bpe", "--vocab-size", "300", "--out", out]))
    captured = capsys.readouterr()
    assert f"trained a BPE of {r['vocab_size']} tokens cached in {data}.bpe300.json" in captured.err
    assert "GPT custom (1 layers, 2 heads, 16 wide, context 16)" in captured.out
    assert f"vocabulary {r['vocab_size']} BPE tokens (padded to 320)" in captured.out
    assert r["flops_per_token"] == 6 * r["params"] + 12 * 1 * 16 * 16
    assert r["model_flops_per_s"] == pytest.approx(r["tokens_per_s"] * r["flops_per_token"])
    assert 0 < r["peak_fraction"] < 2 and r["peak_flops_per_s"] > 1e9
    # the preset's own sizes are named as the preset, also when restored from a checkpoint
    tiny = ["--preset", "tiny", "--batch-size", "1", "--eval-iters", "1", "--steps", "1",
            "--sample-chars", "1", "--no-progress", "--threads", "1", "--data", data]
    train(parse_args(tiny + ["--out", str(tmp_path / "tiny")]))
    assert "GPT tiny (4 layers" in capsys.readouterr().out
    train(parse_args(["--out", out, "--resume", "--steps", "4", "--no-progress"]))
    assert "GPT custom (1 layers" in capsys.readouterr().out
    # a resumed run keeps its tokens
    with pytest.raises(SystemExit):
        main(["--out", out, "--resume", "--steps", "5", "--tokenizer", "char"])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the checkpoint's model reads bpe tokens" in err[0]


def test_torchrun_processes_take_their_share_of_the_cores(monkeypatch):
    args = parse_args([])
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # what torchrun sets
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(6)), raising=False)
    note = trainer._threads(args)
    assert torch.get_num_threads() == 3 and "2 processes on 6 cores: 3 thread(s) each" in note
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's choice stands
    assert trainer._threads(args) is None
    assert trainer._threads(parse_args(["--threads", "1"])) is None
    assert torch.get_num_threads() == 1


@pytest.mark.parametrize("cli, argv", [(main, ["--help"]), (data_cli.main, ["prepare", "--help"]),
                                       (data_cli.main, ["--help"]), (sample.main, ["--help"])])
def test_every_help_prints_its_whole_description(capsys, cli, argv):
    with pytest.raises(SystemExit) as info:
        cli(argv)
    assert info.value.code == 0
    out = capsys.readouterr().out
    doc = {main: trainer.__doc__, data_cli.main: data_cli.__doc__, sample.main: sample.__doc__}[cli]
    for line in doc.strip().splitlines():
        assert line.rstrip() in out, line
