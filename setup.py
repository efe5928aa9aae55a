"""Builds fusedops._C against the installed torch.

- CPU kernels always (csrc/ops.cpp, csrc/common, csrc/cpu).
- The CUDA simulator ops (fusedops_sim::*, csrc/sim) whenever the CUDA headers are found
  (nvcc on PATH or CUDA_HOME); FUSEDOPS_SIM=0 leaves them out.
- The CUDA kernels (csrc/cuda/*.cu) when the installed torch has CUDA and nvcc is found;
  TORCH_CUDA_ARCH_LIST picks the architectures (default 8.0 and 9.0).
DEBUG=1 builds -O0 -g. No flags for the build machine's own CPU: SIMD code is chosen at run
time (csrc/common).
Install with `pip install --no-build-isolation -e .` so the build uses the torch you have.
"""
import glob
import os
import shutil
import subprocess

ROOT = os.path.dirname(os.path.abspath(__file__))
DEBUG = os.environ.get("DEBUG", "0") == "1"


def cuda_home():
    """The toolkit root as nvcc reports it (nvcc on PATH may be a wrapper script, so the
    location of the nvcc file says nothing)."""
    if os.environ.get("CUDA_HOME"):
        return os.environ["CUDA_HOME"]
    nvcc = shutil.which("nvcc")
    if not nvcc:
        return None
    try:
        out = subprocess.run(
            [nvcc, "-v", "--dryrun", "-c", "-x", "cu", "/dev/null", "-o", "/dev/null"],
            capture_output=True, text=True, timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    for line in (out.stdout + out.stderr).splitlines():
        if line.startswith("#$ TOP="):
            return os.path.realpath(line.split("=", 1)[1].strip())
    return None


CUDA_HOME = cuda_home()
if CUDA_HOME:
    os.environ["CUDA_HOME"] = CUDA_HOME  # before torch.utils.cpp_extension reads it

import torch  # noqa: E402
from setuptools import setup  # noqa: E402
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402


def sources(*patterns):
    out = []
    for p in patterns:
        out += sorted(glob.glob(os.path.join("csrc", p), recursive=True))
    return out


def torch_version_tuple():
    return tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2])


cuda_inc = os.path.join(CUDA_HOME, "include") if CUDA_HOME else None
has_cuda_headers = bool(cuda_inc and os.path.exists(os.path.join(cuda_inc, "cuda_fp16.h")))
with_sim = has_cuda_headers and os.environ.get("FUSEDOPS_SIM", "1") != "0"
with_cuda = bool(torch.version.cuda) and CUDA_HOME is not None

cxx = ["-O0", "-g"] if DEBUG else ["-O3"]
cxx += ["-fopenmp", "-std=c++20", "-Wall", "-Wno-psabi", "-fvisibility=hidden", "-pthread"]
cxx.append(f'-DFUSEDOPS_TORCH_VERSION="{torch.__version__}"')
srcs = sources("ops.cpp", "common/*.cpp", "cpu/*.cpp", "cpu/kernels/**/*.cpp")
include_dirs = [os.path.join(ROOT, "csrc")]
if with_sim:
    srcs += sources("sim/*.cpp")
    cxx += ["-isystem", cuda_inc, "-DFUSEDOPS_WITH_SIM=1"]
# torch >= 2.6 builds abi3 extensions (and defines Py_LIMITED_API itself).
limited_api = torch_version_tuple() >= (2, 6)
kwargs = dict(
    name="fusedops._C",
    include_dirs=include_dirs,
    extra_link_args=["-fopenmp", "-pthread"],
    py_limited_api=limited_api,
)
if with_cuda:
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
    nvcc = ["-O0", "-g", "-G"] if DEBUG else ["-O3", "-lineinfo"]
    nvcc += ["-std=c++20", "--expt-relaxed-constexpr", "-DFUSEDOPS_WITH_CUDA=1"]
    cxx.append("-DFUSEDOPS_WITH_CUDA=1")
    ext = CUDAExtension(
        sources=srcs + sources("cuda/*.cu"),
        extra_compile_args={"cxx": cxx, "nvcc": nvcc},
        **kwargs,
    )
else:
    ext = CppExtension(sources=srcs, extra_compile_args={"cxx": cxx}, **kwargs)

setup(
    ext_modules=[ext],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    options={"bdist_wheel": {"py_limited_api": "cp310"}} if limited_api else {},
)
