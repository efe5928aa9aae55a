"""The GPT model and the training program: the fusedops model equals the torch one (loss and
every gradient after loading the same weights), training lowers the loss, a resumed run
continues exactly where an uninterrupted one would be, and checkpoints survive a crash
mid-write. Signals, bad input and broken checkpoints: test_train_safety.py."""
import json
import os

import pytest
import torch

import fusedops  # noqa: F401
from fusedops.data import CharTokenizer, TextData, stdlib_corpus
from fusedops.models import GPT, GPTConfig
from fusedops.train import checkpoint, parse_args, train

TINY = ["--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--block-size", "16",
        "--batch-size", "4", "--eval-iters", "2", "--sample-chars", "20", "--no-progress"]


def _corpus_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(stdlib_corpus()[:20000])
    return str(path)


def test_corpus_and_tokenizer():
    text = stdlib_corpus()
    assert len(text) > 100_000 and "\n" in text
    tok = CharTokenizer.from_text(text)
    ids = tok.encode(text[:1000])
    assert tok.decode(ids) == text[:1000]
    assert CharTokenizer.from_state_dict(tok.state_dict()).chars == tok.chars
    data = TextData(text, tok)
    x, y = data.batch("train", 3, 8, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (3, 8)
    assert torch.equal(x[:, 1:], y[:, :-1])  # targets are the inputs shifted by one


@pytest.mark.parametrize("dropout", [0.0])
def test_fused_model_matches_torch_model(dropout):
    cfg = GPTConfig(vocab_size=37, block_size=24, n_layer=2, n_head=2, n_embd=32, dropout=dropout)
    torch.manual_seed(0)
    ref = GPT(cfg, backend="torch").double()
    ours = GPT(cfg, backend="fusedops").double()
    ours.load_state_dict(ref.state_dict())  # same parameter names on both backends
    idx = torch.randint(0, 37, (3, 24))
    tgt = torch.randint(0, 37, (3, 24))
    _, l_ref = ref(idx, tgt)
    _, l_ours = ours(idx, tgt)
    torch.testing.assert_close(l_ours, l_ref, rtol=1e-10, atol=1e-10)
    l_ref.backward()
    l_ours.backward()
    for (name, p_ref), p_ours in zip(ref.named_parameters(), ours.parameters()):
        torch.testing.assert_close(p_ours.grad, p_ref.grad, rtol=1e-8, atol=1e-10, msg=name)
    logits_ref, _ = ref(idx)
    logits_ours, _ = ours(idx)
    torch.testing.assert_close(logits_ours, logits_ref, rtol=1e-10, atol=1e-10)


def test_bad_config_errors():
    with pytest.raises(ValueError, match="n_embd .* divisible by n_head"):
        GPT(GPTConfig(vocab_size=10, n_embd=30, n_head=4))
    with pytest.raises(ValueError, match="backend"):
        GPT(GPTConfig(vocab_size=10), backend="jax")
    model = GPT(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=1, n_embd=8))
    with pytest.raises(ValueError, match="exceeds block_size"):
        model(torch.zeros(1, 9, dtype=torch.long))


@pytest.mark.parametrize("backend", ["fusedops", "torch"])
def test_training_lowers_the_loss(tmp_path, backend):
    args = parse_args(TINY + ["--data", _corpus_file(tmp_path), "--steps", "30", "--lr", "3e-3",
                              "--backend", backend, "--out", str(tmp_path / "run")])
    result = train(args)
    assert result["val_loss"] < result["initial_val_loss"] - 0.5
    assert os.path.exists(tmp_path / "run" / "ckpt.pt")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["step"] == 30 and len(metrics["sample"]) >= 20


def test_resume_continues_exactly(tmp_path):
    data = _corpus_file(tmp_path)
    # a constant learning rate after one warmup step: the schedule does not depend on --steps
    common = TINY + ["--data", data, "--eval-interval", "4", "--warmup", "1", "--min-lr-ratio", "1"]
    straight = train(parse_args(common + ["--steps", "8", "--out", str(tmp_path / "a")]))
    ckpt = checkpoint.load(str(tmp_path / "a" / "ckpt.pt"))
    # the same run stopped after 4 steps, then resumed
    train(parse_args(common + ["--steps", "4", "--out", str(tmp_path / "b")]))
    resumed = train(parse_args(common + ["--steps", "8", "--out", str(tmp_path / "b"), "--resume"]))
    assert resumed["step"] == straight["step"] == 8
    assert resumed["val_loss"] == pytest.approx(straight["val_loss"], rel=1e-6)
    ckpt_b = checkpoint.load(str(tmp_path / "b" / "ckpt.pt"))
    for k, v in ckpt["model"].items():
        torch.testing.assert_close(ckpt_b["model"][k], v, rtol=1e-6, atol=1e-7)


def test_checkpoint_survives_a_crash_mid_write(tmp_path, monkeypatch):
    path = str(tmp_path / "ckpt.pt")
    checkpoint.save_atomic({"step": 1}, path)

    def crash(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError):
        checkpoint.save_atomic({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["step"] == 1
    assert [f for f in os.listdir(tmp_path) if f.endswith(".tmp")] == []
