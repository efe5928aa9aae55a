"""fusedops: hand-written CPU and CUDA kernels for PyTorch, as drop-in layers.

    import fusedops
    y = fusedops.ops.linear(x, w, b, activation="gelu")
    layer = fusedops.nn.Linear(768, 3072)      # same parameters and state_dict as torch's
"""
from ._version import __version__


def _load_extension():
    import torch  # noqa: F401  (loads libtorch before our library)

    try:
        from . import _C
    except ImportError as e:
        raise ImportError(
            "fusedops: the compiled extension fusedops._C could not be loaded "
            f"({e}). Build it against the installed torch with "
            "`pip install --no-build-isolation -e .` (or `make install`)."
        ) from e
    built, running = _C.torch_version, torch.__version__
    if built.split("+")[0] != running.split("+")[0]:
        raise ImportError(
            f"fusedops: the extension was built for torch {built} but torch {running} is "
            "installed; rebuild with `pip install --no-build-isolation -e .`."
        )
    return _C


_C = _load_extension()


def _check_isa_setting():
    import os
    import warnings

    want = os.environ.get("FUSEDOPS_ISA")
    if want is not None and want not in ("generic", "avx2", "avx512"):
        warnings.warn(
            f"fusedops: FUSEDOPS_ISA={want!r} is not one of 'generic', 'avx2', 'avx512'; "
            f"ignored, the kernels use {_C._cpu_info()['isa']!r}",
            RuntimeWarning,
            stacklevel=3,
        )


_check_isa_setting()

from . import ops  # noqa: E402
from . import nn  # noqa: E402
from . import optim  # noqa: E402


def empty_cache() -> int:
    """Frees the memory the CPU kernels keep between calls (scratch blocks, the recurrent layers'
    block pool, the cross-entropy gradient buffer when FUSEDOPS_CE_GRAD_CACHE=1); returns the
    bytes freed. Memory of live tensors is untouched."""
    return _C._empty_cache()


def cpu_info():
    """The CPU as the kernels see it: model, instruction sets, cache sizes, GEMM tiles."""
    return _C._cpu_info()


__all__ = ["__version__", "ops", "nn", "optim", "cpu_info", "empty_cache"]
