"""Generation with a KV cache: the prompt runs once as causal attention and each new token
alone against the cached keys with no mask; the logits and the greedy tokens equal those of
recomputing the whole context (both backends) while the context fits the block, and past it
the cache refills. `python -m fusedops.sample` on a checkpoint from a short run: repeatable,
greedy the same with and without the cache, one-line errors."""
import os

import pytest
import torch

from fusedops import sample
from fusedops.models import GPT, GPTConfig, KVCache
from fusedops.train import parse_args, train

CFG = dict(vocab_size=41, block_size=32, n_layer=2, n_head=2, n_embd=32)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # tiny products: threads only wait for each other (conftest restores)


def _model(backend, seed=0):
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**CFG), backend=backend).eval()
    with torch.no_grad():  # larger weights than the initialization: logits far from uniform
        for p in model.parameters():
            p.mul_(4.0)
    return model


@pytest.mark.parametrize("backend", ["fusedops", "torch"])
def test_cache_gives_the_logits_and_tokens_of_recomputation(backend):
    model = _model(backend)
    prompt = torch.randint(0, 41, (3, 5))
    cache = KVCache(model.cfg, 3, "cpu", torch.float32)
    idx = prompt
    with torch.no_grad():
        x = model._hidden(prompt, cache)  # the prompt: causal attention, filling the cache
        for _ in range(32 - 5):
            step = model.kn.logits(x[:, -1], model._head())
            full = model.logits(idx)[:, -1]  # the whole context again
            torch.testing.assert_close(step, full, atol=1e-4, rtol=0)
            nxt = step.argmax(-1, keepdim=True)
            idx = torch.cat([idx, nxt], 1)
            if idx.size(1) < 32:
                x = model._hidden(nxt, cache)
    cached = model.generate(prompt, 27, temperature=0)
    recomputed = model.generate(prompt, 27, temperature=0, use_cache=False)
    assert torch.equal(cached, recomputed) and torch.equal(cached, idx)


def test_each_new_token_attends_to_the_cache_without_a_mask(monkeypatch):
    model = _model("fusedops")
    calls = []
    real = model.kn.attention

    def spy(q, k, v, dropout_p, is_causal=True):
        calls.append((q.shape[-2], k.shape[-2], is_causal))
        return real(q, k, v, dropout_p, is_causal)

    monkeypatch.setattr(model.kn, "attention", spy)
    model.generate(torch.randint(0, 41, (1, 6)), 4, temperature=0)
    per_layer = calls[::model.cfg.n_layer]
    assert per_layer == [(6, 6, True), (1, 7, False), (1, 8, False), (1, 9, False)]


def test_past_the_block_the_cache_refills():
    model = _model("fusedops")
    prompt = torch.randint(0, 41, (2, 30))
    out = model.generate(prompt, 40, temperature=0)
    assert out.shape == (2, 70) and torch.equal(out[:, :30], prompt)
    ref = model.generate(prompt, 2, temperature=0, use_cache=False)
    assert torch.equal(out[:, :32], ref)  # the same while the context fits the block
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a = model.generate(prompt, 10, temperature=0.9, top_k=5, generator=g1)
    b = model.generate(prompt, 10, temperature=0.9, top_k=5, generator=g2)
    assert torch.equal(a, b)  # sampling is repeatable with a seeded generator
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        model.generate(prompt, 1, temperature=-1)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sample")
    data = folder / "words.txt"
    data.write_text(" ".join(["the quick brown fox jumps over the lazy dog"] * 300))
    out = str(folder / "run")
    train(parse_args(["--data", str(data), "--n-layer", "1", "--n-head", "2", "--n-embd", "16",
                      "--block-size", "16", "--batch-size", "4", "--steps", "4", "--eval-iters",
                      "1", "--sample-chars", "5", "--no-progress", "--threads", "1", "--out", out]))
    return out


def test_sample_command_on_a_checkpoint(run_dir, capsys):
    argv = ["--ckpt", run_dir, "--prompt", "the ", "--max-new-tokens", "40", "--seed", "3"]
    sample.main(argv)
    first = capsys.readouterr()
    assert first.out.startswith("the ") and len(first.out.rstrip("\n")) == 44
    assert "best.pt (step" in first.err  # a run folder: its best checkpoint
    sample.main(argv)
    assert capsys.readouterr().out == first.out  # the same seed, the same text
    greedy = ["--ckpt", os.path.join(run_dir, "ckpt.pt"), "--temperature", "0",
              "--max-new-tokens", "30"]
    sample.main(greedy)
    cached = capsys.readouterr().out
    sample.main(greedy + ["--no-cache"])
    assert capsys.readouterr().out == cached


@pytest.mark.parametrize("argv, says", [
    (["--ckpt", "/nonexistent"], "no checkpoint at"),
    (["--ckpt", "{empty}"], "holds no best.pt, ckpt.pt or config.json"),
    (["--ckpt", "{run}", "--temperature", "-1"], "must be >= 0"),
    ([], "--ckpt is required"),
])
def test_sample_errors_are_one_line(run_dir, tmp_path, capsys, argv, says):
    argv = [a.format(empty=tmp_path, run=run_dir) for a in argv]
    with pytest.raises(SystemExit) as info:
        sample.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 1 and err[0].startswith("fusedops.sample:"), err
    assert says in err[0], err


def test_bench_prints_the_ratio(capsys):
    model = _model("fusedops")
    result = sample.bench(model, contexts=(8, 16))
    assert set(result) == {8, 16} and all(c > 0 and r > 0 for c, r in result.values())
    assert "faster than recomputation" in capsys.readouterr().out
