"""Shared fixtures for the fusedops test suite.

- `isa`: runs a test once per instruction set the GEMM has (generic, avx2, avx512), capping the
  kernels with fusedops._C._set_isa; a set the CPU lacks is skipped, saying so.
- Tolerances: forward values are checked element by element against a float64 torch
  reference with the bound a dot product of length K earns in floating point,
  `c * sqrt(K) * eps * (|A| @ |B|)`; gradients with the error-budget rule of STYLE.md
  (ours may be off the float64 truth by at most a small multiple of torch's own error).
- A test skipped because a package is missing (`pytest.importorskip`) fails instead: the
  set-up installs everything the tests use (pyproject.toml's `test` extra).
- `python_subprocess`: runs a snippet in a fresh interpreter, for checks that must survive a crash of
  the code under test (a segfault there fails one test instead of ending the run) or need a
  process of their own (thread counts).
"""
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

# Test the checkout this file lives in, whichever way pytest was started (`pytest` does not
# put the working directory on sys.path; `python -m pytest` does).
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if sys.path[0] != REPO_ROOT:
    sys.path.insert(0, REPO_ROOT)

import fusedops  # noqa: E402

ISAS = ("generic", "avx2", "avx512")
BEST_ISA = fusedops._C._cpu_info()["best_isa"]
# the instruction set in force at start: the CPU's best, or lower under FUSEDOPS_ISA
START_ISA = fusedops._C._cpu_info()["isa"]


# ---- instruction sets ------------------------------------------------------------------------


@pytest.fixture(params=ISAS)
def isa(request):
    """Caps the kernels at one instruction set for the test; restores the one in force at the
    start after it."""
    name = request.param
    in_force = fusedops._C._set_isa(name)
    if in_force != name:
        fusedops._C._set_isa(START_ISA)
        pytest.skip(f"CPU lacks {name} (best instruction set here: {BEST_ISA})")
    assert fusedops._C._cpu_info()["isa"] == name
    yield name
    fusedops._C._set_isa(START_ISA)


@pytest.fixture(autouse=True)
def _seed_and_threads():
    """Every test starts from the same seed, and leaves the thread count as it found it."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


# ---- references and tolerances ---------------------------------------------------------------

ACTIVATIONS = (None, "relu", "gelu", "gelu_tanh")


def torch_activation(x, activation):
    """The activation as torch computes it (the reference for ours)."""
    if activation is None:
        return x
    if activation == "relu":
        return F.relu(x)
    if activation == "gelu":
        return F.gelu(x)
    if activation == "gelu_tanh":
        return F.gelu(x, approximate="tanh")
    raise AssertionError(activation)


def _check_elementwise(out, ref, tol, what):
    assert out.shape == ref.shape, f"{what}: shape {tuple(out.shape)} != {tuple(ref.shape)}"
    if out.numel() == 0:
        return
    err = (out.double() - ref).abs()
    bad = ~(err <= tol)  # NaN in ours counts as bad
    if bad.any():
        worst = int(torch.argmax(torch.where(bad, err - tol, torch.zeros_like(err)).nan_to_num(
            nan=float("inf")).flatten()))
        idx = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), err.shape))
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {out.numel()} elements off; worst at {idx}: "
            f"ours {out[idx].item()!r}, reference {ref[idx].item()!r}, "
            f"error {err[idx].item():.3e} > tolerance {tol[idx].item():.3e}"
        )


def assert_product_close(out, ref, bound, k, pre=None, activation=None, what="output"):
    """`out` (ours, any float dtype) against `ref` (float64 truth) for a product with inner
    dimension `k`: |out - ref| <= 4 sqrt(k) eps |A||B| elementwise (`bound` = |A| @ |B| + |bias|
    in float64), plus, after an activation, the error of a vector erf/tanh (a few eps times
    the pre-activation `pre`)."""
    eps = torch.finfo(out.dtype).eps
    tol = 4.0 * eps * math.sqrt(max(k, 1)) * bound
    if activation is not None:
        # activations are at most 1.13-Lipschitz; their own error is a few eps relative to |x|
        tol = 1.2 * tol + 8.0 * eps * pre.abs()
    # no absolute floor: where the bound is 0 (K == 0, no bias) the result must be exactly 0
    _check_elementwise(out, ref, tol, what)


def linear_reference(x, w, b=None, activation=None):
    """(truth, bound, pre-activation) in float64 for act(x @ w.T + b)."""
    x64, w64 = x.detach().double(), w.detach().double()
    b64 = None if b is None else b.detach().double()
    pre = F.linear(x64, w64, b64)
    bound = F.linear(x64.abs(), w64.abs(), None if b64 is None else b64.abs())
    return torch_activation(pre, activation), bound, pre


def assert_linear_close(out, x, w, b=None, activation=None, what="linear"):
    ref, bound, pre = linear_reference(x, w, b, activation)
    assert out.dtype == x.dtype, f"{what}: dtype {out.dtype} != {x.dtype}"
    assert_product_close(out, ref, bound, x.shape[-1], pre, activation, what)


def assert_matmul_close(out, a, b, what="matmul"):
    a64, b64 = a.detach().double(), b.detach().double()
    ref = torch.matmul(a64, b64)
    bound = torch.matmul(a64.abs(), b64.abs())
    assert out.dtype == a.dtype, f"{what}: dtype {out.dtype} != {a.dtype}"
    assert_product_close(out, ref, bound, a.shape[-1], what=what)


def assert_raises_named(fn, exc, words, op):
    """fn() raises exc with a message naming `fusedops.<op>` and every one of `words`."""
    with pytest.raises(exc) as info:
        fn()
    msg = str(info.value)
    assert f"fusedops.{op}" in msg, msg
    for word in words:
        assert word in msg, f"{word!r} not in {msg!r}"


def assert_within_budget(ours, theirs, truth, what, floor_ulps=16, scale=0.0):
    """Error-budget rule: max |ours - truth| <= 2 max |theirs - truth| + a floor of
    `floor_ulps` eps of the largest value (so that an exact `theirs` does not demand an exact
    `ours`), or of `scale` where that is larger: the size of the terms a result cancels from
    (a gradient that is zero by cancellation is rounded at their scale, not at zero's).
    `theirs` is torch's result in the same dtype as ours, `truth` a float64 result."""
    assert ours is not None, f"{what}: missing (None)"
    assert ours.shape == truth.shape, f"{what}: shape {tuple(ours.shape)} != {tuple(truth.shape)}"
    assert ours.dtype == theirs.dtype, f"{what}: dtype {ours.dtype} != {theirs.dtype}"
    if truth.numel() == 0:
        return
    truth = truth.double()
    ours_err = (ours.double() - truth).abs().max().item()
    theirs_err = (theirs.double() - truth).abs().max().item()
    eps = torch.finfo(ours.dtype).eps
    floor = floor_ulps * eps * max(truth.abs().max().item(), scale, 1e-30)
    budget = 2.0 * theirs_err + floor
    assert ours_err <= budget, (
        f"{what}: max error {ours_err:.3e} vs float64 exceeds budget {budget:.3e} "
        f"(torch's own error {theirs_err:.3e})"
    )


@pytest.fixture
def lce_chunk_rows():
    """Sets linear_cross_entropy's rows per chunk (every backend; 0: each backend's rule) for one
    test, and restores the setting after it."""
    from fusedops import _C
    before = []

    def set_rows(rows):
        previous = _C._set_lce_chunk_rows(int(rows))
        if not before:
            before.append(previous)

    yield set_rows
    if before:
        _C._set_lce_chunk_rows(before[0])


@pytest.fixture(scope="session")
def check():
    """The comparison helpers, as one namespace for the test modules."""

    class Check:
        linear = staticmethod(assert_linear_close)
        matmul = staticmethod(assert_matmul_close)
        budget = staticmethod(assert_within_budget)
        activation = staticmethod(torch_activation)

    return Check


# ---- CUDA kernels: the simulator (in every build) and a GPU --------------------------------------
# Low precision follows the error-budget rule: |ours - ref64| <= 2 |torch_lowp - ref64| + tiny,
# with torch computing in the same dtype on the CPU.

HAS_SIM = hasattr(torch.ops, "fusedops_sim") and hasattr(torch.ops.fusedops_sim, "linear")
HAS_GPU = torch.cuda.is_available()

BACKENDS = [
    pytest.param("cuda-sim", marks=pytest.mark.skipif(not HAS_SIM, reason="built with FUSEDOPS_SIM=0: no simulator ops")),
    pytest.param("cuda", marks=pytest.mark.skipif(not HAS_GPU, reason="no GPU")),
]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def op(backend, name):
    ns = torch.ops.fusedops_sim if backend == "cuda-sim" else torch.ops.fusedops
    return getattr(ns, name)


def dev(backend):
    return "cpu" if backend == "cuda-sim" else "cuda"


def check_close(ours, ref64, torch_lowp, dtype, what):
    ours = ours.double().cpu()
    err = (ours - ref64).abs().max().item() if ours.numel() else 0.0
    if dtype == torch.float64:
        bound = 1e-10 * (1 + ref64.abs().max().item())
    elif dtype == torch.float32:
        # tf32 may be in force on a GPU; the simulator honours the same setting
        tf32 = torch.backends.cuda.matmul.allow_tf32
        bound = (2e-3 if tf32 else 2e-5) * (1 + ref64.abs().max().item())
    else:
        budget = (torch_lowp.double() - ref64).abs().max().item() if ref64.numel() else 0.0
        bound = 2 * budget + 1e-3 * (1 + ref64.abs().max().item())
    assert err <= bound, f"{what} {dtype}: max error {err:.3g} > bound {bound:.3g}"



# ---- no skips for a missing package -----------------------------------------------------------


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A skip for a missing package (pytest.importorskip: "could not import ...") is a failure:
    `make setup` installs every package the tests use."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and call.excinfo is not None:
        reason = str(call.excinfo.value)
        if "could not import" in reason:
            report.outcome = "failed"
            report.longrepr = (f"{reason}: the tests' packages are pyproject.toml's `test` extra, "
                               "which `make setup` installs; add it there")


# ---- isolated processes ----------------------------------------------------------------------


def run_python(code, timeout=120, env=None):
    """Runs `code` in a fresh interpreter rooted at the checkout; returns CompletedProcess."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = REPO_ROOT + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO_ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def python_subprocess():
    return run_python
