"""`python -m fusedops.examples NAME`: the command line, a short smoke run of every example,
the MNIST IDX reader (on small files written here), the generated sequence tasks, and (marked
slow) every example reaching its goal with its fixed seed."""
import gzip
import os

import numpy as np
import pytest
import torch

from conftest import REPO_ROOT, run_python
from fusedops import examples
from fusedops.data import sequences as S
from fusedops.data.idx import IDXError, load_mnist, read_idx, write_idx

NAMES = ["linreg", "logreg", "mlp", "cnn", "rnn", "transformer", "gpt"]


def run(tmp_path, *argv):
    args = examples.parse_args([*argv, "--out", str(tmp_path), "--no-progress"])
    return examples.run(args)


# ---- command line -----------------------------------------------------------------------------


def test_help_lists_every_example():
    r = run_python("import sys; sys.argv = ['x', '--help']\nfrom fusedops.examples import main\nmain()")
    assert r.returncode == 0, r.stderr
    for name in NAMES:
        assert f"  {name} " in r.stdout
    assert list(examples.EXAMPLES) == NAMES


def test_module_and_console_script_are_declared():
    with open(os.path.join(REPO_ROOT, "pyproject.toml")) as f:
        text = f.read()
    assert 'fusedops-examples = "fusedops.examples:main"' in text
    r = run_python("import runpy, sys; sys.argv = ['x', 'nosuch']\n"
                   "runpy.run_module('fusedops.examples', run_name='__main__')")
    assert r.returncode == 2 and "invalid choice: 'nosuch'" in r.stderr


def test_bad_arguments():
    with pytest.raises(SystemExit):
        examples.parse_args(["mlp", "--data", "somewhere"])
    with pytest.raises(SystemExit):
        examples.parse_args(["cnn", "--epochs", "0"])


# ---- smoke runs (a few steps; the goal is not checked) ---------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_smoke(name, tmp_path, capsys):
    results = run(tmp_path, name, "--quick")
    out = capsys.readouterr().out
    assert results and all(np.isfinite(r.value) for r in results)
    assert "smoke run, goal not checked" in out
    plot = tmp_path / name / "loss.png"
    assert plot.is_file() and plot.stat().st_size > 0


def test_loss_log_without_matplotlib_writes_csv(tmp_path, monkeypatch):
    import builtins

    from fusedops.examples.report import LossLog

    real_import = builtins.__import__

    def no_matplotlib(name, *a, **k):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    log = LossLog()
    log.add("train", 1, 2.5)
    log.add("train", 2, 1.5)
    line = log.save(str(tmp_path), "t")
    assert "matplotlib is not installed" in line
    assert (tmp_path / "loss.csv").read_text().splitlines() == [
        "curve,step,loss", "train,1,2.5", "train,2,1.5"]


def test_result_lines():
    from fusedops.examples.report import Result

    assert Result("acc", 0.97, 0.95).met
    assert not Result("acc", 0.90, 0.95).met
    assert Result("gap", 0.004, 0.01, higher_is_better=False).met
    assert "GOAL MISSED" in Result("acc", 0.5, 0.95).line()


# ---- MNIST IDX files --------------------------------------------------------------------------


def _write_mnist(folder, n_train=64, n_test=32, gz=False, size=28):
    rng = np.random.default_rng(0)
    sfx = ".gz" if gz else ""
    data = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 40, (n, size, size)).astype(np.uint8)
        for i, d in enumerate(labels):  # a bright bar whose row is the label: learnable
            images[i, 2 + 2 * d: 4 + 2 * d, 4:24] = 255
        write_idx(str(folder / f"{split}-images-idx3-ubyte{sfx}"), images)
        write_idx(str(folder / f"{split}-labels-idx1-ubyte{sfx}"), labels)
        data[split] = (images, labels)
    return data


@pytest.mark.parametrize("gz", [False, True])
def test_read_mnist_folder(tmp_path, gz):
    want = _write_mnist(tmp_path, gz=gz)
    got = load_mnist(str(tmp_path))
    x, y = got["train"]
    assert x.shape == (64, 1, 28, 28) and x.dtype == torch.float32
    assert torch.equal(y, torch.from_numpy(want["train"][1].astype(np.int64)))
    torch.testing.assert_close(x[:, 0], torch.from_numpy(want["train"][0]).float() / 255)
    assert got["test"][0].shape == (32, 1, 28, 28)


def test_read_idx_types_and_byte_order(tmp_path):
    for arr in (np.arange(-6, 6, dtype=np.int16).reshape(3, 4),
                np.linspace(-1, 1, 10, dtype=np.float32), np.arange(5, dtype=np.int32)):
        path = str(tmp_path / "a.idx")
        write_idx(path, arr)
        np.testing.assert_array_equal(read_idx(path).numpy(), arr)
    raw = bytes([0, 0, 0x0B, 1, 0, 0, 0, 2, 0x01, 0x02, 0xFF, 0xFE])  # big-endian int16
    (tmp_path / "b.idx").write_bytes(raw)
    assert read_idx(str(tmp_path / "b.idx")).tolist() == [258, -2]


def test_bad_idx_files_give_clear_errors(tmp_path):
    _write_mnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte"
    raw = path.read_bytes()
    path.write_bytes(raw[:-100])
    with pytest.raises(IDXError, match=r"train-images-idx3-ubyte: truncated: shape \[64, 28, 28\] "
                                       r"needs 50176 data bytes, the file holds 50076"):
        load_mnist(str(tmp_path))
    path.write_bytes(raw + b"x")
    with pytest.raises(IDXError, match="longer than its header says"):
        read_idx(str(path))
    path.write_bytes(b"PK\x03\x04 not idx at all")
    with pytest.raises(IDXError, match="not an IDX file"):
        read_idx(str(path))
    path.write_bytes(raw[:10])
    with pytest.raises(IDXError, match="truncated header"):
        read_idx(str(path))
    path.write_bytes(gzip.compress(raw)[:-20])
    with pytest.raises(IDXError, match="not a readable gzip file"):
        read_idx(str(path))
    path.write_bytes(raw)
    labels = tmp_path / "train-labels-idx1-ubyte"
    write_idx(str(labels), np.zeros(63, np.uint8))
    with pytest.raises(IDXError, match="64 images but 63 labels"):
        load_mnist(str(tmp_path))
    write_idx(str(labels), np.full(64, 12, np.uint8))
    with pytest.raises(IDXError, match="labels must be digits 0-9, found 12"):
        load_mnist(str(tmp_path))
    write_idx(str(labels), np.zeros((64, 2), np.uint8))
    with pytest.raises(IDXError, match=r"expected unsigned bytes \[N\]"):
        load_mnist(str(tmp_path))
    os.remove(labels)
    with pytest.raises(FileNotFoundError, match="has no train-labels-idx1-ubyte"):
        load_mnist(str(tmp_path))


def test_cnn_example_on_mnist_files(tmp_path, capsys):
    data = tmp_path / "mnist"
    data.mkdir()
    _write_mnist(data, n_train=240, n_test=60, gz=True)
    results = run(tmp_path / "out", "cnn", "--data", str(data), "--arch", "mnist",
                  "--epochs", "5")
    assert len(results) == 1 and "MNIST" in results[0].name
    # the label is a bright bar: learnable only if images and labels were read in step (chance: 0.1)
    assert results[0].value >= 0.5
    assert (tmp_path / "out" / "cnn" / "loss.png").is_file()


def test_cnn_example_reports_bad_mnist_folder(tmp_path):
    _write_mnist(tmp_path)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03short")
    r = run_python(f"from fusedops.examples import main\nmain(['cnn', '--data', {str(tmp_path)!r}, "
                   f"'--out', {str(tmp_path / 'o')!r}])")
    assert r.returncode == 2
    assert "fusedops.data:" in r.stderr and "truncated header" in r.stderr
    assert "Traceback" not in r.stderr


def test_examples_keep_one_openmp_runtime(tmp_path):
    """The data sets are read from scikit-learn's files without importing it: its compiled
    modules would load a second OpenMP runtime beside torch's."""
    r = run_python(f"""
import sys
from fusedops.examples import main
try:
    main(['logreg', '--quick', '--no-progress', '--out', {str(tmp_path)!r}])
except SystemExit as e:
    assert e.code == 0, e.code
assert not [m for m in sys.modules if m.startswith('sklearn')]
maps = open('/proc/self/maps').read()
libs = {{line.split()[-1] for line in maps.splitlines() if 'libgomp' in line or 'libomp' in line}}
assert len(libs) <= 1, libs
""")
    assert r.returncode == 0, r.stderr


def test_tabular_data_sets():
    from fusedops.data import tabular

    X, y = tabular.load_digits()
    assert X.shape == (1797, 64) and y.shape == (1797,) and set(y.tolist()) == set(range(10))
    assert 0 <= X.min() and X.max() == 16
    X, y = tabular.load_breast_cancer()
    assert X.shape == (569, 30) and int(y.sum()) == 357  # benign
    X, y = tabular.load_diabetes()
    assert X.shape == (442, 10) and y.shape == (442,)
    parts = tabular.split(torch.arange(100) % 4, [0.2, 0.12], seed=3)
    assert [len(p) for p in parts] == [20, 12, 68]
    assert len(torch.cat(parts).unique()) == 100
    for p in parts[:2]:  # stratified: every class in proportion
        assert torch.bincount(p % 4, minlength=4).tolist() == [len(p) // 4] * 4


# ---- generated sequence tasks -----------------------------------------------------------------


def test_sequence_tasks():
    g = torch.Generator().manual_seed(0)
    q, a = S.make_task("reverse", 50, 6, g)
    assert torch.equal(a, q.flip(1))
    q, a = S.make_task("sort", 50, 6, g)
    assert torch.equal(a, q.sort(1).values)
    q, a = S.make_task("add", 50, 3, g)
    assert q.shape == (50, 7) and a.shape == (50, 4)
    for row, ans in zip(q, a):
        text = S.decode(row)
        x, y = text.split("+")
        assert S.decode(ans) == f"{int(x) + int(y):04d}"
    with pytest.raises(ValueError, match="task must be one of"):
        S.make_task("copy", 3, 3, g)


# ---- each example reaches its goal (fixed seed) ------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_example_reaches_goal(name, tmp_path):
    # one thread: the kernels give the same bits at any thread count, and on a shared machine
    # two threads of small per-step GEMMs (the recurrent layer) can wait out other processes'
    # time slices at every barrier
    threads = torch.get_num_threads()
    try:
        for r in run(tmp_path, name, "--threads", "1"):
            assert r.met, r.line()
    finally:
        torch.set_num_threads(threads)
