"""Hugging Face GPT-2 weights in and out: a tiny random GPT2LMHeadModel the test writes loads
as our GPT with the same logits (1e-4) on both backends, our save_pretrained folder loads back
in transformers with the same logits, GPT-2 124M's parameter count is exact, broken folders
are one-line errors, and --init-from fine-tunes from such a folder with its own tokens.
Needs `transformers` (and `safetensors`, `tokenizers`)."""
import json
import os

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

from fusedops import sample  # noqa: E402
from fusedops.data import BPETokenizer  # noqa: E402
from fusedops.models import GPT, GPTConfig  # noqa: E402
from fusedops.train import checkpoint, main, parse_args, train  # noqa: E402

WORDS = "the of and to in is that for it as with was on be by this are an or from".split()


def _hf_model(vocab=97, n_positions=32):
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=vocab, n_positions=n_positions, n_embd=48,
                                  n_layer=2, n_head=3, bos_token_id=None, eos_token_id=None)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # biases and LayerNorms away from their 0/1 initialization
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("hf"))
    _hf_model().save_pretrained(folder)
    return folder


@pytest.mark.parametrize("backend", ["fusedops", "torch"])
def test_from_pretrained_gives_hugging_faces_logits(hf_dir, backend):
    hf = transformers.GPT2LMHeadModel.from_pretrained(hf_dir).eval()
    ours = GPT.from_pretrained(hf_dir, backend=backend).eval()
    assert ours.cfg.vocab_size == 97 and ours.cfg.padded_vocab_size is None
    idx = torch.randint(0, 97, (3, 32))
    with torch.no_grad():
        ref = hf(idx).logits
        torch.testing.assert_close(ours.logits(idx), ref, atol=1e-4, rtol=0)
        last, loss = ours(idx)  # without targets: the last position only, [B, vocab]
    assert loss is None and last.shape == (3, 97)
    torch.testing.assert_close(last, ref[:, -1], atol=1e-4, rtol=0)


def test_save_pretrained_loads_in_transformers(tmp_path):
    torch.manual_seed(1)
    ours = GPT(GPTConfig(vocab_size=90, padded_vocab_size=128, block_size=24, n_layer=2,
                         n_head=2, n_embd=32)).eval()
    ours.save_pretrained(str(tmp_path))
    config = json.load(open(tmp_path / "config.json"))
    assert config["vocab_size"] == 90 and config["model_type"] == "gpt2"
    hf = transformers.GPT2LMHeadModel.from_pretrained(str(tmp_path)).eval()
    idx = torch.randint(0, 90, (2, 24))
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits, ours.logits(idx), atol=1e-4, rtol=0)
    again = GPT.from_pretrained(str(tmp_path)).eval()  # and back: the padding rows are gone
    assert again.wte.weight.shape == (90, 32)
    with torch.no_grad():
        torch.testing.assert_close(again.logits(idx), ours.logits(idx), atol=1e-5, rtol=0)


def test_gpt2_124m_is_exact():
    with torch.device("meta"):
        plain = GPT(GPTConfig.preset("gpt2", 50257))
        padded = GPT(GPTConfig.preset("gpt2", 50257, padded_vocab_size=50304))
        hf = transformers.GPT2LMHeadModel(transformers.GPT2Config())
    hf_count = sum(p.numel() for p in hf.parameters())
    assert hf_count == plain.num_params(positions=True) == 124_439_808
    assert padded.num_params(positions=True) == 124_439_808 + 47 * 768
    assert padded.cfg.name() == plain.cfg.name() == "GPT-2 124M"


def _break(folder, how):
    if how == "no config":
        os.unlink(os.path.join(folder, "config.json"))
    elif how == "pickle only":
        os.rename(os.path.join(folder, "model.safetensors"), os.path.join(folder, "pytorch_model.bin"))
    elif how == "other activation":
        c = json.load(open(os.path.join(folder, "config.json")))
        c["activation_function"] = "relu"
        json.dump(c, open(os.path.join(folder, "config.json"), "w"))
    elif how == "untied head":
        from safetensors.torch import load_file, save_file
        w = load_file(os.path.join(folder, "model.safetensors"))
        w["lm_head.weight"] = torch.randn_like(w["transformer.wte.weight"])
        save_file(w, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    elif how == "damaged":
        open(os.path.join(folder, "model.safetensors"), "wb").write(b"\x10\x00garbage" * 10)
    elif how == "other sizes":
        c = json.load(open(os.path.join(folder, "config.json")))
        c["n_embd"] = 96
        json.dump(c, open(os.path.join(folder, "config.json"), "w"))


@pytest.mark.parametrize("how, says", [
    ("no config", "no config.json"), ("pickle only", "only pytorch_model.bin: a pickle"),
    ("other activation", "activation_function = 'relu' is not supported"),
    ("untied head", "an untied head"), ("damaged", "cannot read model.safetensors"),
    ("other sizes", "wte.weight is [97, 48] there, config.json makes it [97, 96]")])
def test_a_bad_folder_is_a_one_line_error(tmp_path, how, says):
    _hf_model().save_pretrained(str(tmp_path))
    _break(str(tmp_path), how)
    with pytest.raises(ValueError) as info:
        GPT.from_pretrained(str(tmp_path))
    msg = str(info.value)
    assert msg.startswith("fusedops.models.GPT:") and "\n" not in msg and says in msg, msg


def test_init_from_fine_tunes_with_the_folders_tokens(tmp_path, capsys):
    text = " ".join(WORDS[i % len(WORDS)] for i in range(4000))
    data = tmp_path / "words.txt"
    data.write_text(text)
    tok = BPETokenizer.train([text], 300)
    folder = str(tmp_path / "gpt2")
    BPETokenizer(tok.vocab, tok.merges, "gpt2").save(folder)  # vocab.json, merges.txt
    _hf_model(vocab=tok.vocab_size).save_pretrained(folder)
    before = GPT.from_pretrained(folder)
    out = str(tmp_path / "run")
    argv = ["--init-from", folder, "--data", str(data), "--steps", "2", "--batch-size", "2",
            "--block-size", "16", "--eval-iters", "1", "--sample-chars", "5", "--no-progress",
            "--threads", "1", "--lr", "1e-12", "--out", out]
    r = train(parse_args(argv))
    assert r["tokenizer"] == "gpt2" and r["model"] == "custom"
    state = checkpoint.load(os.path.join(out, "ckpt.pt"))
    assert state["config"]["vocab_size"] == tok.vocab_size and state["config"]["block_size"] == 16
    assert state["tokenizer"]["vocab"] == tok.vocab
    # the run trained the folder's weights (cropped to 16 positions; a learning rate of 1e-12
    # leaves them as they were)
    ref = before.state_dict()
    ref["wpe.weight"] = ref["wpe.weight"][:16]
    for name, w in state["model"].items():
        torch.testing.assert_close(w, ref[name], atol=1e-8, rtol=0, msg=name)
    out_text = capsys.readouterr().out
    assert f"initialized from {folder}" in out_text and "GPT custom" in out_text
    # the sample command reads the folder itself: weights and tokens
    sample.main(["--ckpt", folder, "--prompt", "the", "--temperature", "0",
                 "--max-new-tokens", "5"])
    text = capsys.readouterr().out
    assert text.startswith("the") and text != "the\n"
    # tokens that do not fit the model are refused
    with pytest.raises(SystemExit):
        main(argv + ["--tokenizer", "char", "--out", str(tmp_path / "r2")])
    assert "the model of --init-from" in capsys.readouterr().err
