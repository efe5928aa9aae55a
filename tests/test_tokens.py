"""Tokens and token folders: every tokenizer round-trips any text, its state is plain data, a
BPE is trained once and cached beside the data, GPT-2's tokens read from vocab.json and
merges.txt equal transformers' own tokenizer, and `python -m fusedops.data prepare` writes
uint16/uint32 token files (streamed in pieces that change no token) that training memory-maps.
Small generated text throughout; the `tokenizers` package is needed (transformers for one
comparison)."""
import json
import os
import random

import pytest
import torch

pytest.importorskip("tokenizers")

from fusedops.data import (BPETokenizer, CharTokenizer, TextData, TokenData, from_state_dict,
                           prepare, train_bpe)
from fusedops.data import __main__ as data_cli
from fusedops.data import tokens as tokens_mod
from fusedops.train import checkpoint, parse_args, train

WORDS = ("the of and to in is that for it as with was on be by this are an or from at which "
         "but not have one all were when there can more if no out so what up about into").split()
ODD = "naïve café — 日本語 🙂 tab\there\r\n  indented\n\n\nlast  "  # bytes BPE must round-trip
TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16",
        "--batch-size", "4", "--eval-iters", "2", "--sample-chars", "10", "--no-progress",
        "--threads", "1"]


def _text(n_words=3000, seed=0) -> str:
    rng = random.Random(seed)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))
             for _ in range(n_words // 7)]
    return "\n".join(lines) + "\n" + ODD


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text(_text(), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def bpe():
    return BPETokenizer.train([_text()], 400)


def _gpt2_dir(folder, tok: BPETokenizer) -> str:
    """A small GPT-2-format tokenizer folder (vocab.json, merges.txt) from a trained BPE."""
    state = tok.state_dict()
    gpt2 = BPETokenizer(state["vocab"], state["merges"], "gpt2")
    gpt2.save(str(folder))
    return str(folder)


# ---- tokenizers ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_round_trip_and_plain_state(kind, bpe):
    text = _text(seed=1)
    tok = CharTokenizer.from_text(text) if kind == "char" else bpe
    ids = tok.encode(text)
    assert ids.dtype == torch.long and tok.decode(ids) == text
    assert int(ids.max()) < tok.vocab_size
    state = tok.state_dict()
    assert state["kind"] == kind
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"tok-{os.getpid()}-{kind}.pt")
    torch.save(state, path)  # plain data: the restricted loader takes it
    again = from_state_dict(torch.load(path, weights_only=True))
    os.unlink(path)
    assert torch.equal(again.encode(text), ids)
    if kind == "bpe":  # byte-level: characters never seen still round-trip
        assert tok.decode(tok.encode("Ωμέγα ∑ 🚀")) == "Ωμέγα ∑ 🚀"
        assert len(ids) < len(text) / 2  # and it compresses


def test_bpe_is_cached_beside_the_data(corpus):
    text = open(corpus, encoding="utf-8", newline="").read()
    tok, path, trained = train_bpe(text, 300, corpus)
    assert trained and path == corpus + ".bpe300.json" and os.path.isfile(path)
    again, path2, trained2 = train_bpe(text, 300, corpus)
    assert not trained2 and path2 == path and again.state_dict() == tok.state_dict()
    cached = json.load(open(path, encoding="utf-8"))  # JSON, never a pickle
    assert cached["vocab_size"] == 300 and cached["tokenizer"]["kind"] == "bpe"
    # other text: trained anew, not the stale cache
    other, _, trained3 = train_bpe(text + " more words", 300, corpus)
    assert trained3


def test_gpt2_tokens_equal_transformers(tmp_path, bpe):
    transformers = pytest.importorskip("transformers")
    folder = _gpt2_dir(tmp_path / "gpt2", bpe)
    ours = BPETokenizer.from_dir(folder)
    theirs = transformers.GPT2Tokenizer.from_pretrained(folder)  # reads the same two files
    text = _text(seed=2)
    assert ours.kind == "gpt2" and ours.vocab_size == bpe.vocab_size
    assert ours.encode(text).tolist() == theirs(text)["input_ids"]
    assert ours.decode(ours.encode(text)) == text
    assert ours.eot == 0 and ours.encode("a<|endoftext|>b").tolist()[1] == 0


def test_gpt2_folder_errors(tmp_path, bpe):
    with pytest.raises(ValueError, match="merges.txt.*missing|vocab.json.*missing"):
        BPETokenizer.from_dir(str(tmp_path))
    folder = _gpt2_dir(tmp_path / "bad", bpe)
    with open(os.path.join(folder, "merges.txt"), "a", encoding="utf-8") as f:
        f.write("zzqq xxyy\n")  # a merge of tokens the vocabulary lacks
    with pytest.raises(ValueError, match="inconsistent BPE vocabulary and merges"):
        BPETokenizer.from_dir(folder)


# ---- token folders ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_prepared_tokens_equal_the_text_tokens(tmp_path, monkeypatch, corpus, kind):
    monkeypatch.setattr(tokens_mod, "CHUNK", 1000)  # many pieces: the streaming is exercised
    meta = prepare(corpus, kind, vocab_size=300, out=str(tmp_path / "tok"), progress=False)
    data = TokenData(meta["out"])
    assert meta["dtype"] == "uint16" and data.train.dtype == torch.uint16
    if os.path.exists("/proc/self/maps"):  # Linux: the file is mapped, not read into memory
        assert os.path.join(meta["out"], "tokens.bin") in open("/proc/self/maps").read()
    text = open(corpus, encoding="utf-8", newline="").read()
    ref = TextData(text, data.tokenizer)
    assert torch.equal(torch.cat([data.train, data.val]).long(), torch.cat([ref.train, ref.val]))
    assert data.fingerprint == ref.fingerprint and len(data.val) == len(ref.val)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for a, b in zip(data.batch("train", 4, 16, g1), ref.batch("train", 4, 16, g2)):
        assert a.dtype == torch.long and torch.equal(a, b)


def test_a_folder_of_files_with_end_of_text_and_uint32(tmp_path, bpe):
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "a.txt").write_text(_text(seed=3))
    (docs / "sub" / "b.txt").write_text(_text(seed=4))
    (docs / ".hidden").write_text("\0 not read")
    state = bpe.state_dict()  # a vocabulary over 65,536 ids: uint32 files
    vocab = {**state["vocab"], **{f"unused{i}": 70000 + i for i in range(3)}}
    folder = str(tmp_path / "big")
    BPETokenizer(vocab, state["merges"], "gpt2").save(folder)
    meta = prepare(str(docs), "gpt2", tokenizer_dir=folder, progress=False)
    assert meta["out"] == str(tmp_path / "docs-gpt2") and meta["files"] == 2
    data = TokenData(meta["out"])
    assert meta["dtype"] == "uint32" and data.train.dtype == torch.uint32
    ids = torch.cat([data.train, data.val]).long()
    tok = data.tokenizer
    assert (ids == tok.eot).sum() == 1  # between the two documents
    i = int((ids == tok.eot).nonzero())
    assert tok.decode(ids[:i]) == _text(seed=3) and tok.decode(ids[i + 1:]) == _text(seed=4)


def test_training_memory_maps_a_token_folder(tmp_path, corpus):
    meta = prepare(corpus, "bpe", vocab_size=300, out=str(tmp_path / "tok"), progress=False)
    out = str(tmp_path / "run")
    r = train(parse_args(TINY + ["--data", meta["out"], "--steps", "6", "--lr", "1e-2",
                                 "--out", out]))
    assert r["tokenizer"] == "bpe" and r["vocab_size"] == 300
    assert r["val_loss"] < r["initial_val_loss"]
    state = checkpoint.load(os.path.join(out, "ckpt.pt"))
    assert state["tokenizer"] == meta["tokenizer"] and state["config"]["padded_vocab_size"] == 320
    # the same text as a file continues the run: same tokens, same fingerprint
    r = train(parse_args(["--out", out, "--resume", "--steps", "8", "--no-progress",
                          "--data", corpus]))
    assert r["step"] == 8


def _damage(folder: str, how: str):
    meta_path, bin_path = os.path.join(folder, "meta.json"), os.path.join(folder, "tokens.bin")
    if how == "truncated":
        raw = open(bin_path, "rb").read()
        open(bin_path, "wb").write(raw[:-2])
    elif how == "no meta":
        os.unlink(meta_path)
    elif how == "bad meta":
        open(meta_path, "w").write('{"format": "something else"}')
    elif how == "id out of range":
        open(bin_path, "r+b").write(b"\xff\xff" * 4096)


@pytest.mark.parametrize("how, says", [
    ("truncated", "truncated or replaced"), ("no meta", "not a token folder (no meta.json)"),
    ("bad meta", "is not a token folder's meta.json"), ("id out of range", "holds token id 65535")])
def test_a_damaged_token_folder_is_a_one_line_error(tmp_path, capsys, corpus, how, says):
    folder = prepare(corpus, "char", out=str(tmp_path / "tok"), progress=False)["out"]
    _damage(folder, how)
    with pytest.raises(SystemExit) as info:
        from fusedops.train import main
        main(TINY + ["--data", folder, "--steps", "2", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 1 and err[0].startswith("fusedops.data:")
    assert says in err[0], err


@pytest.mark.parametrize("argv, says", [
    (["prepare", "--data", "/nonexistent"], "no such file or folder"),
    (["prepare", "--data", "{corpus}", "--tokenizer", "gpt2"], "needs --tokenizer-dir"),
    (["prepare", "--data", "{corpus}", "--vocab-size", "10"], "--vocab-size must be"),
    (["prepare", "--data", "{binary}"], "NUL bytes"),
    (["prepare", "--data", "{corpus}", "--encoding", "klingon"], "unknown encoding"),
    (["prepare"], "required"),
])
def test_prepare_command_line_errors_are_one_line(tmp_path, capsys, corpus, argv, says):
    binary = tmp_path / "x.bin"
    binary.write_bytes(b"text\0" * 100)
    argv = [a.format(corpus=corpus, binary=binary) for a in argv]
    with pytest.raises(SystemExit) as info:
        data_cli.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 1 and err[0].startswith("fusedops.data:")
    assert says in err[0], err


def test_prepare_command_line(tmp_path, capsys, corpus):
    data_cli.main(["prepare", "--data", corpus, "--tokenizer", "bpe", "--vocab-size", "300",
                   "--out", str(tmp_path / "t"), "--no-progress"])
    out = capsys.readouterr().out
    assert "uint16 tokens" in out and f"--data {tmp_path / 't'}" in out
    assert TokenData(str(tmp_path / "t")).tokenizer.vocab_size == 300
