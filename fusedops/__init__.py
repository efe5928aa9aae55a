"""fusedops: hand-written CPU and CUDA kernels for PyTorch, as drop-in layers.

    import fusedops
    y = fusedops.ops.linear(x, w, b, activation="gelu")
    layer = fusedops.nn.Linear(768, 3072)      # same parameters and state_dict as torch's
"""
from ._version import __version__


def _load_extension():
    import torch  # noqa: F401  (loads libtorch before our library)

    rebuild = (
        "From a checkout, `make setup` builds it (into .venv); in an environment of your own "
        "that has torch, `pip install --no-build-isolation -e .` in the checkout (or "
        "`pip install --no-build-isolation --force-reinstall --no-deps fusedops-*.tar.gz` "
        "for a source distribution)."
    )
    try:
        from . import _C
    except ImportError as e:
        raise ImportError(
            f"fusedops: the compiled extension fusedops._C could not be loaded ({e}). It is "
            f"built against the installed torch. {rebuild}"
        ) from e
    built, running = _C.torch_version, torch.__version__
    if built.split("+")[0] != running.split("+")[0]:
        raise ImportError(
            f"fusedops: the extension was built for torch {built} but torch {running} is "
            f"installed; rebuild it against this torch. {rebuild}"
        )
    return _C


_C = _load_extension()


def _check_isa_setting():
    import os
    import warnings

    info = _C._cpu_info()
    for var, allowed, key in (
        ("FUSEDOPS_ISA", ("generic", "avx2", "avx512"), "isa"),
        ("FUSEDOPS_BF16", ("auto", "native", "widen", "avx512_bf16"), "bf16"),
    ):
        want = os.environ.get(var)
        if want is not None and want not in allowed:
            names = ", ".join(repr(a) for a in allowed[:-1]) + f" or {allowed[-1]!r}"
            warnings.warn(
                f"fusedops: {var}={want!r} is not one of {names}; ignored, the kernels use {info[key]!r}",
                RuntimeWarning,
                stacklevel=3,
            )


_check_isa_setting()

from . import ops  # noqa: E402
from . import nn  # noqa: E402
from . import optim  # noqa: E402
from .patch import PatchReport, patch, unpatch  # noqa: E402


def empty_cache() -> int:
    """Frees the memory the CPU kernels keep between calls (scratch blocks, the recurrent layers'
    block pool, the cross-entropy gradient buffer when FUSEDOPS_CE_GRAD_CACHE=1); returns the
    bytes freed. Memory of live tensors is untouched."""
    return _C._empty_cache()


def cpu_info():
    """The CPU as the kernels see it: model, instruction sets, cache sizes, GEMM tiles."""
    return _C._cpu_info()


def build_info():
    """What this build of fusedops holds: its version, the torch it was built for, and which
    kernels are registered: `cpu` (always), `simulator` (the fusedops_sim ops: every CUDA
    kernel run on the CPU; left out only by FUSEDOPS_SIM=0 at build time), `cuda` (the CUDA
    kernels: built when torch has CUDA and the CUDA toolkit was found)."""
    import torch

    def has(op, key):
        try:
            return bool(torch._C._dispatch_has_kernel_for_dispatch_key(op, key))
        except RuntimeError:  # no such operator: its library is not in this build
            return False

    return {
        "version": __version__,
        "torch": _C.torch_version,
        "cpu": has("fusedops::linear", "CPU"),
        "simulator": has("fusedops_sim::linear", "CPU"),
        "cuda": has("fusedops::linear", "CUDA"),
    }


__all__ = ["__version__", "ops", "nn", "optim", "patch", "unpatch", "PatchReport", "cpu_info",
           "empty_cache", "build_info"]
