"""The compiled extension: import, version, CPU description and instruction-set capping, the
operator contract (schemas match the Python functions), and threading (one OpenMP runtime,
torch's; torch.set_num_threads governs our parallel regions)."""
import inspect
import os
import re
import subprocess
import sys
import textwrap

import pytest
import torch

import fusedops

from conftest import ISAS, REPO_ROOT, START_ISA  # noqa: E402  (tests/ is on sys.path under pytest)

# microkernel tiles (rows x columns) per instruction set, as the kernels document them
TILES = {
    "generic": ("4x4", "4x4"),
    "avx2": ("6x16", "6x8"),
    "avx512": ("14x32", "14x16"),
}


# ---- import and version ------------------------------------------------------------------------


def test_version():
    from fusedops import _version

    assert isinstance(fusedops.__version__, str)
    assert fusedops.__version__ == _version.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+([.+-]?[0-9A-Za-z.]+)?", fusedops.__version__)


def test_extension_built_for_this_torch():
    assert fusedops._C.torch_version.split("+")[0] == torch.__version__.split("+")[0]
    assert fusedops.__file__.startswith(REPO_ROOT)


def test_public_api():
    assert set(fusedops.__all__) >= {"__version__", "ops", "nn", "cpu_info"}
    assert callable(fusedops.ops.linear) and callable(fusedops.ops.matmul)
    assert issubclass(fusedops.nn.Linear, torch.nn.Linear)
    for name in ("linear", "linear_act", "linear_backward", "matmul", "matmul_backward"):
        assert hasattr(torch.ops.fusedops, name), name


# ---- the operator contract -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["linear", "matmul"])
def test_schema_matches_python_signature(name):
    """Schema name = Python function name; schema arguments and defaults = the signature."""
    schema = getattr(torch.ops.fusedops, name).default._schema
    params = inspect.signature(getattr(fusedops.ops, name)).parameters
    assert schema.name == f"fusedops::{name}"
    assert [a.name for a in schema.arguments] == list(params), (str(schema), list(params))
    for arg in schema.arguments:
        p = params[arg.name]
        has_default = arg.has_default_value()
        assert has_default == (p.default is not inspect.Parameter.empty), arg.name
        if has_default:
            assert arg.default_value == p.default, arg.name


@pytest.mark.parametrize("name", ["linear", "matmul"])
def test_backward_op_exists_for_each_op(name):
    schema = getattr(torch.ops.fusedops, f"{name}_backward").default._schema
    assert schema.arguments[0].name == "grad_output"
    assert schema.arguments[-1].name == "output_mask"


# ---- CPU description and instruction sets ----------------------------------------------------------


def _cpu_flags():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


def test_cpu_info_keys_and_types():
    info = fusedops.cpu_info()
    assert info == fusedops._C._cpu_info()
    assert set(info) == {"model", "best_isa", "isa", "l1d", "l2", "l3", "gemm_f32", "gemm_f64", "bf16"}
    assert re.match(r"(native: (amx|avx512_bf16)|widened to fp32: )", info["bf16"]), info["bf16"]
    assert isinstance(info["model"], str) and info["model"]
    assert info["best_isa"] in ISAS and info["isa"] in ISAS
    assert ISAS.index(info["isa"]) <= ISAS.index(info["best_isa"])
    for key in ("l1d", "l2", "l3"):
        assert isinstance(info[key], int) and info[key] > 0, key
    assert info["l1d"] <= info["l2"]
    for key in ("gemm_f32", "gemm_f64"):
        assert re.fullmatch(r"\d+x\d+", info[key]), info[key]


@pytest.mark.skipif(not sys.platform.startswith("linux") or os.uname().machine != "x86_64",
                    reason="reads x86 flags from /proc/cpuinfo")
def test_best_isa_matches_cpu_flags():
    flags = _cpu_flags()
    if {"avx512f", "avx512dq", "avx512bw", "avx512vl"} <= flags:
        expected = "avx512"
    elif {"avx2", "fma"} <= flags:
        expected = "avx2"
    else:
        expected = "generic"
    assert fusedops.cpu_info()["best_isa"] == expected


def test_default_isa_is_best_unless_capped():
    # (the `isa` fixture restores the instruction set in force at the start after each test)
    info = fusedops.cpu_info()
    assert info["isa"] == START_ISA
    cap = os.environ.get("FUSEDOPS_ISA")
    if cap in ISAS:
        assert info["isa"] == ISAS[min(ISAS.index(cap), ISAS.index(info["best_isa"]))]
    else:
        assert info["isa"] == info["best_isa"]


def test_set_isa_reports_isa_and_tiles(isa):
    info = fusedops.cpu_info()
    assert info["isa"] == isa
    assert (info["gemm_f32"], info["gemm_f64"]) == TILES[isa]


def test_set_isa_never_above_cpu():
    best = fusedops.cpu_info()["best_isa"]
    try:
        for name in ISAS:
            got = fusedops._C._set_isa(name)
            expected = name if ISAS.index(name) <= ISAS.index(best) else best
            assert got == expected, (name, got)
            assert fusedops.cpu_info()["isa"] == expected
    finally:
        fusedops._C._set_isa(START_ISA)


@pytest.mark.parametrize("bad", ["sse", "", "AVX2", "avx-512"])
def test_set_isa_rejects_unknown_names(bad):
    before = fusedops.cpu_info()["isa"]
    with pytest.raises(ValueError, match="generic"):
        fusedops._C._set_isa(bad)
    assert fusedops.cpu_info()["isa"] == before
    with pytest.raises(TypeError):
        fusedops._C._set_isa(2)


def test_isa_environment_variable_caps_at_load(python_subprocess):
    res = python_subprocess(
        "import fusedops; i = fusedops.cpu_info(); print(i['isa'], i['best_isa'], i['gemm_f32'])",
        env={"FUSEDOPS_ISA": "generic"},
    )
    assert res.returncode == 0, res.stderr
    isa, best, tile = res.stdout.split()
    assert isa == "generic" and tile == TILES["generic"][0]
    assert best == fusedops.cpu_info()["best_isa"]


def test_fma_peak_measures_something():
    assert fusedops._C._fma_peak_gflops(1, 0.01) > 0


# ---- threads ---------------------------------------------------------------------------------------


def test_one_openmp_runtime_loaded():
    """Our kernels bind to the OpenMP runtime torch loaded (so torch.set_num_threads governs
    them): one runtime in the process, no LLVM/Intel one beside GNU's."""
    with open("/proc/self/maps") as f:
        libs = {line.split()[-1] for line in f if re.search(r"/lib(g|i|i5)?omp[^/]*\.so", line)}
    assert len(libs) == 1, libs


@pytest.mark.parametrize("threads", (1, 2))
def test_results_correct_for_thread_counts(threads, check):
    torch.set_num_threads(threads)
    assert torch.get_num_threads() == threads
    x = torch.randn(3, 100, 300, requires_grad=True)
    w = torch.randn(200, 300, requires_grad=True)
    b = torch.randn(200, requires_grad=True)
    out = fusedops.ops.linear(x, w, b, "gelu")
    check.linear(out, x, w, b, "gelu", f"{threads} threads")
    out.sum().backward()
    xr, wr, br = (t.detach().double().requires_grad_() for t in (x, w, b))
    torch.nn.functional.gelu(torch.nn.functional.linear(xr, wr, br)).sum().backward()
    for got, want, name in ((x.grad, xr.grad, "input"), (w.grad, wr.grad, "weight"),
                            (b.grad, br.grad, "bias")):
        atol = 1e-4 * want.abs().max().item()
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=atol, msg=name)
    a, m = torch.randn(9, 7, 11), torch.randn(9, 11, 5)  # small products: parallel over the batch
    check.matmul(fusedops.ops.matmul(a, m), a, m, f"{threads} threads batched")


# Each kernel path runs in a fresh process that reports the process's thread count before and
# after it. libgomp starts its worker threads at the first parallel region with more than one
# thread: under torch.set_num_threads(1) our kernels must start none; under 2 they do (which
# shows that the check can fail). Only the first path of a process can show that, so the
# 2-thread run of every path is a slow test.
_THREAD_PATHS = {
    "linear": "ops.linear(r(256, 256), r(256, 256), r(256), 'gelu')",
    "bias_act_backward": "ops.linear_backward(r(256, 256), r(256, 8), r(256, 8), r(256, 256), 'gelu', "
                         "[False, False, True])",
    "matmul_batch_parallel": "ops.matmul(r(8, 16, 16), r(8, 16, 16))",
    "matmul_backward": "ops.matmul_backward(r(4, 128, 128), r(4, 128, 128), r(128, 128), [True, True])",
}
_THREAD_SCRIPT = """
import os, sys, torch, fusedops
ops = torch.ops.fusedops
torch.set_num_threads(int(sys.argv[1]))
def r(*s):
    return torch.randn(*s)
def tasks():
    return len(os.listdir("/proc/self/task"))
for name, code in zip(sys.argv[2::2], sys.argv[3::2]):
    inputs = {}
    exec("def run():\\n    return " + code, globals(), inputs)
    before = tasks()
    inputs["run"]()
    print(name, before, tasks(), torch.get_num_threads())
"""


def _thread_runs(runs):
    """runs: [(threads, [path, ...])], each in its own process, all at once. Returns
    {(threads, path): (before, after)}."""
    env = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("OMP_NUM_THREADS", None)
    procs = []
    for n, paths in runs:
        argv = [sys.executable, "-c", textwrap.dedent(_THREAD_SCRIPT), str(n)]
        for path in paths:
            argv += [path, _THREAD_PATHS[path]]
        procs.append((n, subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True)))
    counts = {}
    for n, p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, f"{n} threads: rc {p.returncode}\n{err[-2000:]}"
        for line in out.splitlines():
            path, before, after, got = line.split()
            assert int(got) == n
            counts[(n, path)] = (int(before), int(after))
    return counts


def _check_thread_counts(counts):
    failures = []
    for (n, path), (before, after) in counts.items():
        if n == 1 and after != before:
            failures.append(f"{path}: started {after - before} thread(s) under torch.set_num_threads(1)")
        if n == 2 and after <= before:
            failures.append(f"{path}: ran on one thread under torch.set_num_threads(2)")
    assert not failures, failures


def test_kernels_honour_torch_thread_count():
    _check_thread_counts(_thread_runs([(1, list(_THREAD_PATHS)), (2, ["linear"])]))


@pytest.mark.slow
def test_every_kernel_path_goes_parallel_with_two_threads():
    _check_thread_counts(_thread_runs([(2, [path]) for path in _THREAD_PATHS]))
