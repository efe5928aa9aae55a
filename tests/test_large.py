"""Tensors of more than 2**31 elements (past any 32-bit index): GELU, LayerNorm and
cross-entropy are checked against torch on chunks and sampled rows (the first, those around
element 2**31, the last, and random ones), never against a second full-size copy. `slow`;
each test needs 8 or 16 GiB and is skipped, saying how much it needs and how much is free,
where the machine has less available memory."""
import gc

import pytest
import torch
import torch.nn.functional as F

from conftest import assert_within_budget
from fusedops import ops as fops

GIB = 2**30
BEYOND = 2**31 + 4099  # elements: past 2**31 by an odd tail
pytestmark = pytest.mark.slow


def _available_bytes():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def _need(nbytes, what):
    """Skip unless `nbytes` (plus 2 GiB for everything else) are available now."""
    free = _available_bytes()
    if free < nbytes + 2 * GIB:
        pytest.skip(f"{what} needs {nbytes / GIB:.0f} GiB + 2 GiB of headroom; "
                    f"{free / GIB:.1f} GiB available now")


@pytest.fixture(autouse=True)
def _collect():
    yield
    gc.collect()


def _randn(n, seed, scale=1.0):
    """A float32 vector of n normal values, filled in chunks (no float64 temporary)."""
    x = torch.empty(n)
    g = torch.Generator().manual_seed(seed)
    step = 2**26
    for a in range(0, n, step):
        x[a:a + step].normal_(0.0, scale, generator=g)
    return x


def _sample_ranges(n, span, seed):
    """Index ranges [a, b) over 0..n: the start, around 2**31, the end, and random places."""
    g = torch.Generator().manual_seed(seed)
    starts = [0, max(2**31 - span // 2, 0), n - span]
    starts += [int(v) for v in torch.randint(0, n - span, (8,), generator=g)]
    return [(a, min(a + span, n)) for a in starts]


def test_gelu_past_2_31():
    _need(2 * 4 * BEYOND, "GELU over 2**31 float32 elements (input and output)")
    x = _randn(BEYOND, 0, 3.0)
    for approximate in ("none", "tanh"):
        y = fops.gelu(x, approximate=approximate)
        assert y.shape == x.shape
        for a, b in _sample_ranges(BEYOND, 2**20, 1):
            xs = x[a:b]
            assert_within_budget(y[a:b], F.gelu(xs, approximate=approximate),
                                 F.gelu(xs.double(), approximate=approximate), f"gelu {approximate} [{a}, {b})")
        del y


def test_layer_norm_past_2_31():
    C = 4099
    R = BEYOND // C + 1
    _need(2 * 4 * R * C, "LayerNorm over 2**31 float32 elements (input and output)")
    x = _randn(R * C, 2, 2.0).view(R, C)
    x += torch.arange(R, dtype=torch.float32).remainder_(97).unsqueeze(1)  # rows of their own mean
    g = torch.Generator().manual_seed(3)
    w, b = torch.randn(C, generator=g), torch.randn(C, generator=g)
    y = fops.layer_norm(x, [C], w, b)
    rows = 256
    for a, e in _sample_ranges(R, rows, 4):
        xs = x[a:e]
        assert_within_budget(y[a:e], F.layer_norm(xs, [C], w, b),
                             F.layer_norm(xs.double(), [C], w.double(), b.double()), f"layer_norm rows [{a}, {e})")


def test_cross_entropy_past_2_31():
    C = 50257  # the GPT-2 vocabulary
    N = BEYOND // C + 1
    _need(4 * N * C, "cross-entropy over 2**31 float32 logits")
    x = _randn(N * C, 5, 2.0).view(N, C)
    t = torch.randint(0, C, (N,), generator=torch.Generator().manual_seed(6))
    t[::7] = -100
    with torch.no_grad():
        loss = fops.cross_entropy(x, t, reduction="none")
        mean = fops.cross_entropy(x, t)
    assert loss.shape == (N,)
    for a, e in _sample_ranges(N, 64, 7):
        xs, ts = x[a:e], t[a:e]
        assert_within_budget(loss[a:e], F.cross_entropy(xs, ts, reduction="none"),
                             F.cross_entropy(xs.double(), ts, reduction="none"), f"cross_entropy rows [{a}, {e})")
    kept = (t != -100).sum().item()
    truth = loss.double().sum() / kept  # ours per row, each checked above where sampled
    assert abs(mean.item() - truth.item()) <= 1e-5 * abs(truth.item()), (mean.item(), truth.item())
