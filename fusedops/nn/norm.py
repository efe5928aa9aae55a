import torch

from .. import ops


class LayerNorm(torch.nn.LayerNorm):
    """``torch.nn.LayerNorm`` computed by fusedops kernels.

    A subclass of ``torch.nn.LayerNorm``: same constructor (normalized_shape, eps,
    elementwise_affine, bias, device, dtype), parameters (``weight``, ``bias``), initialisation,
    state_dict and repr, so ``load_state_dict`` from a torch LayerNorm (and back) just works.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return ops.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)


class RMSNorm(torch.nn.RMSNorm):
    """``torch.nn.RMSNorm`` computed by fusedops kernels.

    A subclass of ``torch.nn.RMSNorm``: same constructor (normalized_shape, eps,
    elementwise_affine, device, dtype), parameter (``weight``), initialisation, state_dict and
    repr, so ``load_state_dict`` from a torch RMSNorm (or a Hugging Face LlamaRMSNorm, whose
    parameter is also ``weight``) just works. ``eps=None`` means the machine epsilon of the
    input's arithmetic type, as torch.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return ops.rms_norm(input, self.weight, self.eps, self.normalized_shape)
