"""The set-up and the documents: the README's Python blocks run as written, in order; the
set-up installs every package the tests import; the version, the changelog and the torch
floor agree wherever they are written down."""
import ast
import os
import re
import sys

import torch

import fusedops

from conftest import REPO_ROOT, run_python


def read(path):
    with open(os.path.join(REPO_ROOT, path), encoding="utf-8") as f:
        return f.read()


def readme_python_blocks():
    """(first line number, code) of every ```python block of README.md, in order."""
    text = read("README.md")
    return [(text[: m.start(1)].count("\n") + 1, m.group(1))
            for m in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M)]


def test_readme_python_blocks_run_in_order():
    blocks = readme_python_blocks()
    assert len(blocks) >= 5, "README.md: the Python blocks were not found"
    # one namespace, block after block, compiled with README line numbers for tracebacks
    code = "\n".join(
        f"exec(compile({chr(10) * (line - 1) + src!r}, 'README.md', 'exec'), ns)" for line, src in blocks)
    r = run_python("import torch\ntorch.set_num_threads(2)\nns = {}\n" + code, timeout=600)
    assert r.returncode == 0, f"a README block failed:\n{r.stderr[-4000:]}"


def _third_party_imports(path):
    """Top-level modules a test file imports that are neither the standard library nor ours."""
    tree = ast.parse(read(path), path)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "importorskip"
              and node.args and isinstance(node.args[0], ast.Constant)):
            names.add(str(node.args[0].value).split(".")[0])
    local = {"fusedops", "conftest", "benchmarks", "tests"} | {
        os.path.splitext(f)[0] for f in os.listdir(os.path.join(REPO_ROOT, "tests"))}
    return {n for n in names if n not in sys.stdlib_module_names and n not in local}


# import name -> distribution name, where they differ
DISTRIBUTIONS = {"sklearn": "scikit-learn", "yaml": "pyyaml", "PIL": "pillow"}


def test_setup_installs_every_package_the_tests_import():
    text = read("pyproject.toml")
    extra = re.search(r"^test = \[(.*?)\]", text, re.M)
    deps = re.search(r"^dependencies = \[(.*?)\]", text, re.M)
    assert extra and deps, "pyproject.toml: no test extra or dependencies"
    declared = {re.split(r"[<>=!~ \[]", d.strip().strip('"'))[0].lower()
                for d in (extra.group(1) + "," + deps.group(1)).split(",") if d.strip()}
    missing = {}
    for f in sorted(os.listdir(os.path.join(REPO_ROOT, "tests"))):
        if f.endswith(".py"):
            for mod in _third_party_imports(os.path.join("tests", f)):
                if DISTRIBUTIONS.get(mod, mod).lower() not in declared:
                    missing.setdefault(mod, []).append(f)
    assert not missing, f"tests import packages the set-up does not install (add them to the test extra): {missing}"
    assert "[test" in read("Makefile"), "the Makefile's setup no longer installs the test extra"


def test_version_changelog_and_torch_floor_agree():
    assert re.fullmatch(r"\d+\.\d+\.\d+", fusedops.__version__)
    first = re.search(r"^## (?!Unreleased\b)(\S+)", read("CHANGELOG.md"), re.M)  # newest release
    assert first and first.group(1) == fusedops.__version__, (
        f"CHANGELOG.md's newest entry is {first and first.group(1)}, fusedops.__version__ is "
        f"{fusedops.__version__}: say what the new version brings")
    floor = re.search(r'"torch>=(\d+)\.(\d+)"', read("pyproject.toml"))
    assert floor, "pyproject.toml: no torch>=X.Y dependency"
    floor = (int(floor.group(1)), int(floor.group(2)))
    assert f"TORCH_FLOOR = {floor}" in read("setup.py"), "setup.py's TORCH_FLOOR differs from pyproject.toml"
    running = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2])
    assert running >= floor


def test_build_info():
    info = fusedops.build_info()
    assert info["version"] == fusedops.__version__
    assert info["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert info["cpu"] is True
    if os.environ.get("FUSEDOPS_SIM", "1") != "0":
        assert info["simulator"] is True, "the simulator ops are in every build (FUSEDOPS_SIM=0 leaves them out)"
    assert info["cuda"] == bool(torch._C._dispatch_has_kernel_for_dispatch_key("fusedops::linear", "CUDA"))
