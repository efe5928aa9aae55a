"""Makes the project's virtual environment (`make setup` runs it once; the Makefile reuses
the environment after that).

    python3 tools/make_venv.py .venv

The interpreter that runs this script (the Makefile's PY) becomes the environment's Python.
When it already has a usable torch (at least the version pyproject.toml asks for), the new
environment sees that torch instead of installing another one: through
--system-site-packages when the interpreter is a base installation, through a .pth file
naming its package folders when it is itself a virtual or user environment. Otherwise the
environment starts empty and tools/install_torch.py installs torch into it.
Only the standard library is used.
"""
import importlib.metadata
import os
import re
import site
import subprocess
import sys
import sysconfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def torch_floor():
    """(major, minor) from pyproject.toml's `torch>=X.Y` dependency."""
    with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as f:
        m = re.search(r'"torch>=(\d+)\.(\d+)', f.read())
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def release(version):
    return tuple(int(x) for x in re.findall(r"\d+", version.split("+")[0])[:2])


def usable_torch():
    """(version, folder holding the torch package) of this interpreter's torch, or None when it
    has none or one older than the floor. Found from its metadata: importing torch is slow."""
    try:
        dist = importlib.metadata.distribution("torch")
    except importlib.metadata.PackageNotFoundError:
        return None
    if release(dist.version) < torch_floor():
        print(f"setup: {sys.executable} has torch {dist.version}, older than the "
              f"{'.'.join(map(str, torch_floor()))} fusedops needs: not using it")
        return None
    return dist.version, os.path.realpath(str(dist.locate_file("")))


def package_folders():
    """The folders this interpreter imports installed packages from (site-packages,
    dist-packages, the user site), in its own order."""
    stdlib = {os.path.realpath(sysconfig.get_path(k)) for k in ("stdlib", "platstdlib")}
    out = []
    for p in sys.path:
        rp = os.path.realpath(p) if p else ""
        if rp and os.path.isdir(rp) and rp not in stdlib and os.path.basename(rp) in ("site-packages", "dist-packages"):
            if rp not in out:
                out.append(rp)
    return out


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: python3 tools/make_venv.py DIR")
    target = sys.argv[1]
    found = usable_torch()
    in_base = sys.prefix == sys.base_prefix
    system_site = found is not None and in_base and found[1] in map(os.path.realpath, site.getsitepackages())
    cmd = [sys.executable, "-m", "venv"] + (["--system-site-packages"] if system_site else []) + [target]
    try:
        subprocess.run(cmd, check=True)
    except (subprocess.CalledProcessError, OSError) as e:
        sys.exit(f"setup: `{' '.join(cmd)}` failed ({e}). On Debian and Ubuntu the venv module is "
                 "the package python3-venv (apt install python3-venv); or pick another interpreter "
                 "with PY=/path/to/python3.")
    if found is None:
        print(f"setup: made {target} from {sys.executable}")
        return
    version, where = found
    if not system_site:  # a virtual environment, conda or user site: name its folders
        py = os.path.join(target, "bin", "python")
        purelib = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 check=True, capture_output=True, text=True).stdout.strip()
        with open(os.path.join(purelib, "_fusedops_base_packages.pth"), "w", encoding="utf-8") as f:
            f.write("# the packages of the interpreter this environment was made from (its torch)\n")
            f.write("".join(p + "\n" for p in package_folders()))
    print(f"setup: made {target} from {sys.executable}; it uses that interpreter's torch {version} ({where})")


if __name__ == "__main__":
    main()
