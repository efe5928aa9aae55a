"""Makes sure the project environment has torch (`make setup` runs it with the environment's
Python):

    .venv/bin/python tools/install_torch.py 2.13.0

- A torch the environment already has (its own, or its base interpreter's; at least the
  version pyproject.toml asks for) is used as it is.
- Otherwise, where `nvidia-smi` sees a GPU: torch VERSION from the configured package index,
  whose Linux wheels are the CUDA build.
- Otherwise the CPU build: from torch's CPU wheel index (FUSEDOPS_TORCH_CPU_INDEX names a
  mirror of it); failing that, from the configured
  index, but only after a dry run shows that what it would install is no CUDA build (the
  CUDA build pulls several GB of NVIDIA libraries, useless without a GPU).
Only the standard library is used; pip does the installing.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# torch's CPU wheel index, or a mirror of it named by FUSEDOPS_TORCH_CPU_INDEX
CPU_INDEX = os.environ.get("FUSEDOPS_TORCH_CPU_INDEX") or "https://download.pytorch.org/whl/cpu"
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check"]


def torch_floor():
    with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as f:
        m = re.search(r'"torch>=(\d+)\.(\d+)', f.read())
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def installed_torch():
    """(version, cuda version or None, file) of the torch this interpreter imports, or None."""
    code = "import torch; print(torch.__version__, torch.version.cuda, torch.__file__)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if r.returncode != 0:
        return None
    version, cuda, where = r.stdout.split()[-3:]
    return version, (None if cuda == "None" else cuda), where


def release(version):
    return tuple(int(x) for x in re.findall(r"\d+", version.split("+")[0])[:2])


def gpu_seen():
    """Whether nvidia-smi runs and lists a GPU."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return False
    try:
        r = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return r.returncode == 0 and "GPU" in r.stdout


def pip_install(args, quiet=True, capture=False):
    """Runs pip install; with capture, its messages (retries of an index that cannot be
    reached, say) are kept back and only the last lines are shown, on failure."""
    cmd = PIP + ["install"] + (["-qq"] if quiet else []) + args
    r = subprocess.run(cmd, capture_output=capture, text=True)
    if r.returncode != 0 and capture:
        lines = [l for l in (r.stdout + r.stderr).splitlines() if l.strip()]
        print("\n".join("    " + l for l in lines[-3:]))
    return r.returncode == 0


def cuda_packages(requirement):
    """What a plain `pip install REQUIREMENT` would bring that belongs to a CUDA build (NVIDIA
    libraries, triton, a +cu/+rocm torch); None when pip cannot tell (no dry run)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "report.json")
        r = subprocess.run(PIP + ["install", "-qq", "--dry-run", "--ignore-installed", "--report", report, requirement])
        if r.returncode != 0 or not os.path.exists(report):
            return None
        with open(report, encoding="utf-8") as f:
            items = json.load(f).get("install", [])
    out = []
    for item in items:
        meta = item.get("metadata", {})
        name, version = meta.get("name", "").lower(), meta.get("version", "")
        if name.startswith("nvidia-") or name in ("triton", "pytorch-triton-rocm"):
            out.append(f"{name} {version}")
        elif name == "torch" and re.search(r"\+(cu|rocm)", version):
            out.append(f"torch {version}")
    return out


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: .venv/bin/python tools/install_torch.py TORCH_VERSION")
    version = sys.argv[1]
    floor = torch_floor()
    have = installed_torch()
    if have and release(have[0]) >= floor:
        build = f"CUDA {have[1]}" if have[1] else "CPU"
        print(f"setup: torch {have[0]} ({build} build) from {os.path.dirname(have[2])}")
        return
    if have:
        print(f"setup: torch {have[0]} is older than {'.'.join(map(str, floor))}: installing {version}")
    requirement = f"torch=={version}"
    if gpu_seen():
        print(f"setup: nvidia-smi sees a GPU: installing torch {version} (CUDA build) from the configured index")
        if not pip_install([requirement], quiet=False):
            sys.exit(f"setup: `pip install {requirement}` failed")
    else:
        print(f"setup: no NVIDIA GPU: installing torch {version} (CPU build) from torch's CPU wheel index")
        if not pip_install(["--retries", "2", "--index-url", CPU_INDEX, requirement], capture=True):
            print("setup: torch's CPU wheel index could not serve it; trying the configured index")
            cuda = cuda_packages(requirement)
            if cuda is None or cuda:
                what = ("its dry run failed, so it may be a CUDA build" if cuda is None else
                        "it offers it only as a CUDA build (" + ", ".join(cuda[:3]) + (", ..." if len(cuda) > 3 else "") + ")")
                sys.exit(
                    f"setup: not installing {requirement} from the configured package index: {what}.\n"
                    "That is several GB of libraries a machine without an NVIDIA GPU cannot use. Install a CPU\n"
                    "build into the environment yourself, then run make again:\n"
                    f"    {sys.executable} -m pip install {requirement} --index-url {CPU_INDEX}\n"
                    "(or from a mirror of that index, FUSEDOPS_TORCH_CPU_INDEX=URL; a wheel file works too)."
                )
            if not pip_install([requirement]):
                sys.exit(f"setup: `pip install {requirement}` failed")
    have = installed_torch()
    if not have:
        sys.exit("setup: torch was installed but does not import; see the messages above")
    build = f"CUDA {have[1]}" if have[1] else "CPU"
    print(f"setup: installed torch {have[0]} ({build} build)")


if __name__ == "__main__":
    main()
