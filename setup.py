"""Builds fusedops._C against the installed torch.

- CPU kernels always (csrc/ops.cpp, csrc/module.cpp, csrc/caches.cpp, csrc/common, csrc/cpu).
- The CUDA simulator ops (fusedops_sim::*, csrc/sim) always: the simulator needs no CUDA
  toolkit; FUSEDOPS_SIM=0 leaves them out.
- The CUDA kernels (csrc/cuda/*.cu) when the installed torch has CUDA and the CUDA toolkit is
  found (CUDA_HOME, else nvcc on PATH, else /usr/local/cuda); a warning says so when torch has
  CUDA and no toolkit is found. TORCH_CUDA_ARCH_LIST picks the architectures (default 8.0 and
  9.0, plus PTX for 9.0 so that newer GPUs run it).
DEBUG=1 builds -O0 -g. FUSEDOPS_ASAN=1 builds with AddressSanitizer and UndefinedBehaviorSanitizer
(-O1 -g, frame pointers kept; run it with the sanitizer runtime preloaded: README, "Sanitizers",
and `make asan-test`). No flags for the build machine's own CPU: SIMD code is chosen at run
time (csrc/cpu/kernels/cpu_features.h).

The extension must be built against the torch it will run with, so it builds without build
isolation: `pip install --no-build-isolation .` (or `-e .`) in an environment that has torch,
or `make setup`, which makes one. `python setup.py sdist` needs no torch.
"""
import glob
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.abspath(__file__))
DEBUG = os.environ.get("DEBUG", "0") == "1"
ASAN = os.environ.get("FUSEDOPS_ASAN", "0") == "1"
# UBSan reports and continues (one run shows every report); the vptr check is left out because
# it reads the type information of torch's classes, which torch builds without sanitizers
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize=vptr"]
# the floor in pyproject.toml's dependencies, and the version that is tested
TORCH_FLOOR = (2, 13)
BUILD_COMMANDS = {"build", "build_ext", "bdist_wheel", "develop", "install", "editable_wheel", "bdist_egg"}

try:
    import torch
except ImportError:
    torch = None
if torch is None and BUILD_COMMANDS & set(sys.argv[1:]):
    sys.exit(
        "fusedops: there is no torch in the environment this build runs in. With build isolation\n"
        "(pip's default) the build runs in a fresh environment of its own, but fusedops must be\n"
        "compiled against the torch it will run with. Build it without isolation, in the\n"
        "environment that has torch (install torch there first if it has none):\n"
        "    pip install --no-build-isolation .\n"
        "or, from a checkout, `make setup` (a .venv with torch, the test tools and fusedops)."
    )


def cuda_home():
    """The CUDA toolkit root: CUDA_HOME (or CUDA_PATH), else as nvcc on PATH reports it (nvcc
    may be a wrapper script, so the location of the nvcc file says nothing), else
    /usr/local/cuda."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            return os.environ[var]
    nvcc = shutil.which("nvcc")
    if nvcc:
        try:
            out = subprocess.run(
                [nvcc, "-v", "--dryrun", "-c", "-x", "cu", "/dev/null", "-o", "/dev/null"],
                capture_output=True, text=True, timeout=60,
            )
            for line in (out.stdout + out.stderr).splitlines():
                if line.startswith("#$ TOP="):
                    return os.path.realpath(line.split("=", 1)[1].strip())
        except (OSError, subprocess.SubprocessError):
            pass
    if os.path.exists("/usr/local/cuda/bin/nvcc"):
        return "/usr/local/cuda"
    return None


def sources(*patterns):
    out = []
    for p in patterns:
        out += sorted(glob.glob(os.path.join("csrc", p), recursive=True))
    return out


def torch_version_tuple():
    return tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2])


def extension():
    """fusedops._C as this machine and its torch allow."""
    if torch_version_tuple() < TORCH_FLOOR:
        sys.exit(f"fusedops: needs torch >= {'.'.join(map(str, TORCH_FLOOR))}, found {torch.__version__}")
    home = cuda_home() if torch.version.cuda else None
    with_cuda = home is not None
    if with_cuda:
        os.environ["CUDA_HOME"] = home  # read by torch.utils.cpp_extension when it is imported
    from torch.utils.cpp_extension import CppExtension, CUDAExtension
    if torch.version.cuda and not with_cuda:
        print(
            f"WARNING: fusedops: torch {torch.__version__} has CUDA {torch.version.cuda} but no CUDA "
            "toolkit was found (CUDA_HOME, nvcc on PATH, /usr/local/cuda): building without the "
            "CUDA kernels, so fusedops ops will not run on CUDA tensors. Install the CUDA toolkit "
            "or set CUDA_HOME, and rebuild.",
            file=sys.stderr,
        )
    with_sim = os.environ.get("FUSEDOPS_SIM", "1") != "0"

    cxx = ["-O0", "-g"] if DEBUG else ["-O3"]
    link = ["-fopenmp", "-pthread"]
    if ASAN:
        cxx = (["-O0"] if DEBUG else ["-O1"]) + ["-g", "-fno-omit-frame-pointer"] + SANITIZE
        link += SANITIZE
    cxx += ["-fopenmp", "-std=c++20", "-Wall", "-Wno-psabi", "-fvisibility=hidden", "-pthread"]
    cxx.append(f'-DFUSEDOPS_TORCH_VERSION="{torch.__version__}"')
    srcs = sources("ops.cpp", "module.cpp", "caches.cpp", "common/*.cpp", "cpu/*.cpp", "cpu/kernels/**/*.cpp")
    if with_sim:
        srcs += sources("sim/*.cpp")
        cxx.append("-DFUSEDOPS_WITH_SIM=1")
    # torch >= 2.6 builds abi3 extensions (and defines Py_LIMITED_API itself).
    kwargs = dict(
        name="fusedops._C",
        include_dirs=[os.path.join(ROOT, "csrc")],
        extra_link_args=link,
        py_limited_api=torch_version_tuple() >= (2, 6),
    )
    if not with_cuda:
        return CppExtension(sources=srcs, extra_compile_args={"cxx": cxx}, **kwargs)
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0+PTX")
    nvcc = ["-O0", "-g", "-G"] if DEBUG else ["-O3", "-lineinfo"]
    nvcc += ["-std=c++20", "--expt-relaxed-constexpr", "-DFUSEDOPS_WITH_CUDA=1"]
    cxx.append("-DFUSEDOPS_WITH_CUDA=1")
    return CUDAExtension(sources=srcs + sources("cuda/*.cu"), extra_compile_args={"cxx": cxx, "nvcc": nvcc}, **kwargs)


if torch is None:  # sdist, egg_info: metadata and sources only
    from setuptools import setup

    setup()
else:
    from setuptools import setup
    from torch.utils.cpp_extension import BuildExtension

    class Build(BuildExtension.with_options(use_ninja=True)):
        def finalize_options(self):
            super().finalize_options()
            if getattr(self, "editable_mode", False):
                # an editable install (pip install -e, make setup) would compile in a new
                # temporary folder every time; a fixed one lets ninja redo only what changed
                self.build_temp = os.path.join(ROOT, "build", f"editable-{sys.implementation.cache_tag}")

    ext = extension()
    setup(
        ext_modules=[ext],
        cmdclass={"build_ext": Build},
        options={"bdist_wheel": {"py_limited_api": "cp310"}} if ext.py_limited_api else {},
    )
