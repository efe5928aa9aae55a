"""BatchNorm1d and BatchNorm2d: subclasses of their torch.nn counterparts (same constructor,
parameters, buffers, init, state_dict with num_batches_tracked, repr), with the normalisation
and its backward in fusedops kernels."""
import torch

from .. import ops


def _batch_norm_forward(m, input):
    # torch's module rules: momentum=None is the cumulative average (1 / batches seen); the
    # running statistics are updated in training when tracked, and normalise in eval when kept
    m._check_input_dim(input)
    factor = 0.0 if m.momentum is None else m.momentum
    if m.training and m.track_running_stats and m.num_batches_tracked is not None:
        m.num_batches_tracked.add_(1)
        if m.momentum is None:
            factor = 1.0 / float(m.num_batches_tracked)
    use_batch = m.training or (m.running_mean is None and m.running_var is None)
    keep = not m.training or m.track_running_stats
    return ops.batch_norm(input, m.running_mean if keep else None, m.running_var if keep else None,
                          m.weight, m.bias, use_batch, factor, m.eps)


class BatchNorm1d(torch.nn.BatchNorm1d):
    """``torch.nn.BatchNorm1d(num_features, eps=1e-05, momentum=0.1, affine=True,
    track_running_stats=True, device=None, dtype=None)`` over [N, C] or [N, C, L]."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return _batch_norm_forward(self, input)


class BatchNorm2d(torch.nn.BatchNorm2d):
    """``torch.nn.BatchNorm2d(num_features, eps=1e-05, momentum=0.1, affine=True,
    track_running_stats=True, device=None, dtype=None)`` over [N, C, H, W], NCHW or
    channels-last (read in place, output channels-last)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return _batch_norm_forward(self, input)
