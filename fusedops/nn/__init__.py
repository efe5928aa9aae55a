"""Drop-in modules: the constructor signature, parameters, init and state_dict of their
torch.nn counterparts, with the forward pass in fusedops kernels."""
from .attention import MultiheadAttention
from .linear import Linear

__all__ = ["Linear", "MultiheadAttention"]
