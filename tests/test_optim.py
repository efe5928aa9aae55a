"""fusedops.optim (Adam, AdamW, SGD, clip_grad_norm_) against torch.optim and
torch.nn.utils: 100-step trajectories over odd shapes (0-d, empty, SIMD tails, tensors split
between threads), every instruction set, several param groups, params without grads, strided
and complex params, state_dicts moving both ways, clipping norms, opcheck, torch.compile, bad
input, and the CUDA kernels on the simulator."""
import copy

import pytest
import torch

import fusedops
import fusedops.optim as fo

from conftest import BACKENDS, assert_raises_named, dev, op

ops = torch.ops.fusedops

# 0-d, empty, one element, SIMD tails, a matrix, a longer vector (chunks and threads: the
# tests with 200K+ elements below)
SHAPES = [(), (0,), (1,), (7,), (33, 17), (1000,), (20001,)]


@pytest.fixture(autouse=True)
def _one_thread():
    """One thread unless a test asks for more: torch's reference runs about ten parallel
    regions per tensor and step, which crawl when other processes share the two cores.
    (conftest restores the thread count after each test.)"""
    torch.set_num_threads(1)


TOL = {torch.float32: dict(rtol=2e-5, atol=2e-6), torch.float64: dict(rtol=1e-12, atol=1e-13)}


def make_params(dtype, shapes=SHAPES, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=dtype) for s in shapes]


def run_pair(ours_cls, theirs_cls, kwargs, dtype=torch.float32, steps=100, shapes=SHAPES,
             skip_grad=()):
    """Same params, same random gradients each step, in ours and torch's optimizer; the
    params whose index is in skip_grad get no gradient on odd steps."""
    base = make_params(dtype, shapes)
    ours = [p.clone().requires_grad_() for p in base]
    theirs = [p.clone().requires_grad_() for p in base]
    opt_o = ours_cls(ours, **kwargs)
    opt_t = theirs_cls(theirs, **kwargs)
    g = torch.Generator().manual_seed(1)
    for step in range(steps):
        for i, (a, b) in enumerate(zip(ours, theirs)):
            if i in skip_grad and step % 2:
                a.grad = b.grad = None
                continue
            grad = torch.randn(a.shape, generator=g, dtype=dtype)
            a.grad, b.grad = grad.clone(), grad.clone()
        opt_o.step()
        opt_t.step()
    return ours, theirs, opt_o, opt_t


def assert_params_close(ours, theirs, dtype, what):
    for i, (a, b) in enumerate(zip(ours, theirs)):
        torch.testing.assert_close(a.detach(), b.detach(), **TOL[dtype],
                                   msg=lambda m: f"{what}: param {i} {tuple(a.shape)}: {m}")


def assert_states_close(opt_o, opt_t, dtype):
    so, st = opt_o.state_dict(), opt_t.state_dict()
    assert so["param_groups"] == st["param_groups"]
    assert so["state"].keys() == st["state"].keys()
    for k in st["state"]:
        a, b = so["state"][k], st["state"][k]
        assert list(a.keys()) == list(b.keys()), f"state {k}: keys {list(a)} != {list(b)}"
        for name in b:
            assert a[name].dtype == b[name].dtype and a[name].device == b[name].device, name
            torch.testing.assert_close(a[name], b[name], **TOL[dtype])


# ---- Adam / AdamW trajectories ------------------------------------------------------------------

ADAM_CASES = [
    dict(),
    dict(weight_decay=0.1),
    dict(amsgrad=True),
    dict(amsgrad=True, weight_decay=0.05, maximize=True),
    dict(maximize=True, lr=3e-3, betas=(0.8, 0.99), eps=1e-6),
    dict(betas=(0.3, 0.9)),  # lerp weight 0.7 >= 0.5: torch's other lerp formula
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kwargs", ADAM_CASES, ids=lambda k: ",".join(map(str, k.items())) or "default")
@pytest.mark.parametrize("name", ["AdamW", "Adam"])
def test_adam_trajectory_matches_torch(name, kwargs, dtype):
    ours, theirs, opt_o, opt_t = run_pair(getattr(fo, name), getattr(torch.optim, name),
                                          kwargs, dtype)
    assert_params_close(ours, theirs, dtype, name)
    assert_states_close(opt_o, opt_t, dtype)
    # the params moved (a kernel that does nothing would fail above unless lr were 0)
    assert not torch.equal(ours[-1].detach(), make_params(dtype)[-1])


def test_adam_every_isa(isa):
    for amsgrad in (False, True):
        ours, theirs, _, _ = run_pair(fo.AdamW, torch.optim.AdamW,
                                      dict(lr=1e-2, amsgrad=amsgrad), steps=30)
        assert_params_close(ours, theirs, torch.float32, f"AdamW {isa}")


def test_adam_threads_split_big_tensor():
    """One tensor split between threads gives the one-thread result bit for bit."""
    results = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        ours, _, _, _ = run_pair(fo.AdamW, torch.optim.AdamW, dict(lr=1e-2), steps=3,
                                 shapes=[(200003,), (5,), (70001,)])
        results.append([p.detach() for p in ours])
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_adam_param_groups_and_missing_grads():
    base = make_params(torch.float32)
    kwargs = [dict(lr=1e-2), dict(lr=3e-3, weight_decay=0.2, amsgrad=True), dict(lr=0.0)]

    def groups(ps):
        return [dict(params=ps[0:3], **kwargs[0]), dict(params=ps[3:5], **kwargs[1]),
                dict(params=ps[5:], **kwargs[2])]

    ours = [p.clone().requires_grad_() for p in base]
    theirs = [p.clone().requires_grad_() for p in base]
    opt_o, opt_t = fo.AdamW(groups(ours)), torch.optim.AdamW(groups(theirs))
    never = 4  # this param never gets a gradient: untouched, no state
    for step in range(40):
        for i, (a, b) in enumerate(zip(ours, theirs)):
            if i == never or (i == 1 and step % 3 == 0):
                a.grad = b.grad = None
                continue
            grad = torch.randn(a.shape)
            a.grad, b.grad = grad.clone(), grad.clone()
        opt_o.step()
        opt_t.step()
    assert_params_close(ours, theirs, torch.float32, "groups")
    assert_states_close(opt_o, opt_t, torch.float32)
    assert torch.equal(ours[never].detach(), base[never])
    assert ours[never] not in opt_o.state
    assert opt_o.state[ours[1]]["step"].item() < 40  # skipped steps are not counted
    assert torch.equal(ours[5].detach(), base[5])  # lr 0


def test_adam_tensor_lr_and_closure():
    lr = torch.tensor(1e-2)
    ours, theirs, _, _ = run_pair(fo.AdamW, torch.optim.AdamW, dict(lr=lr), steps=20)
    assert_params_close(ours, theirs, torch.float32, "tensor lr")
    w = torch.randn(5, requires_grad=True)
    opt = fo.Adam([w])

    def closure():
        opt.zero_grad()
        loss = (w**2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert torch.is_tensor(loss) and w.grad is not None


def test_adam_model_training_matches_torch():
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(13, 32), torch.nn.Tanh(), torch.nn.Linear(32, 3))
    twin = copy.deepcopy(model)
    x, y = torch.randn(64, 13), torch.randint(0, 3, (64,))
    opt_o = fo.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    opt_t = torch.optim.AdamW(twin.parameters(), lr=1e-2, weight_decay=0.1)
    for _ in range(30):
        for m, opt in ((model, opt_o), (twin, opt_t)):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(m(x), y).backward()
            opt.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("layout", ["transposed", "sliced"])
def test_adam_strided_params(layout):
    torch.manual_seed(0)
    p0 = torch.randn(30, 40).t() if layout == "transposed" else torch.randn(40, 30)
    if layout == "transposed":  # keep the memory layout: dense but not contiguous
        ours = p0.detach().clone().t().contiguous().t().requires_grad_()
        theirs = p0.detach().clone().t().contiguous().t().requires_grad_()
        assert not ours.is_contiguous()
    else:  # not dense: a view into a bigger tensor
        big_o, big_t = torch.randn(40, 90), None
        big_o[:, ::3] = p0
        big_t = big_o.clone()
        ours = big_o[:, ::3].requires_grad_()
        theirs = big_t[:, ::3].requires_grad_()
    opt_o, opt_t = fo.AdamW([ours], lr=1e-2), torch.optim.AdamW([theirs], lr=1e-2)
    for _ in range(10):
        grad = torch.randn(ours.shape)
        ours.grad, theirs.grad = grad.clone(), grad.clone()
        opt_o.step()
        opt_t.step()
    torch.testing.assert_close(ours.detach(), theirs.detach(), **TOL[torch.float32])
    if layout == "sliced":  # the elements between the slice's are untouched
        torch.testing.assert_close(big_o, big_t, **TOL[torch.float32])


def test_adam_complex_params():
    ours, theirs, _, _ = run_pair(fo.Adam, torch.optim.Adam, dict(lr=1e-2, weight_decay=0.1),
                                  dtype=torch.complex64, steps=20, shapes=[(5, 3), (17,)])
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=2e-5, atol=2e-6)


# ---- SGD trajectories ---------------------------------------------------------------------------

SGD_CASES = [
    dict(lr=1e-2),
    dict(lr=1e-2, momentum=0.9),
    dict(lr=1e-2, momentum=0.9, dampening=0.1, weight_decay=0.01),
    dict(lr=1e-2, momentum=0.9, nesterov=True, weight_decay=0.01),
    dict(lr=1e-2, momentum=0.5, maximize=True),
    dict(lr=1e-2, weight_decay=0.1, maximize=True),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kwargs", SGD_CASES, ids=lambda k: ",".join(map(str, k.items())))
def test_sgd_trajectory_matches_torch(kwargs, dtype):
    ours, theirs, opt_o, opt_t = run_pair(fo.SGD, torch.optim.SGD, kwargs, dtype,
                                          skip_grad=(2,))
    assert_params_close(ours, theirs, dtype, "SGD")
    assert_states_close(opt_o, opt_t, dtype)


def test_sgd_every_isa(isa):
    ours, theirs, _, _ = run_pair(fo.SGD, torch.optim.SGD,
                                  dict(lr=1e-2, momentum=0.9, nesterov=True), steps=30)
    assert_params_close(ours, theirs, torch.float32, f"SGD {isa}")


# ---- state_dict both ways ------------------------------------------------------------------------

OPTIMIZERS = [
    ("AdamW", dict(lr=1e-2, weight_decay=0.1)),
    ("Adam", dict(lr=1e-2, amsgrad=True)),
    ("SGD", dict(lr=1e-2, momentum=0.9, nesterov=True)),
]


@pytest.mark.parametrize("direction", ["ours_to_torch", "torch_to_ours"])
@pytest.mark.parametrize("name,kwargs", OPTIMIZERS, ids=[n for n, _ in OPTIMIZERS])
def test_state_dict_moves_both_ways(name, kwargs, direction):
    """Train 10 steps with one optimizer, load its state_dict into the other kind, continue
    both (the original and the loaded one) for 10 steps: they stay together."""
    first, second = ((getattr(fo, name), getattr(torch.optim, name))
                     if direction == "ours_to_torch" else
                     (getattr(torch.optim, name), getattr(fo, name)))
    shapes = [(3, 5), (), (0,), (33,)]
    ps = [p.requires_grad_() for p in make_params(torch.float32, shapes)]
    opt = first(ps, **kwargs)
    g = torch.Generator().manual_seed(5)

    def set_grads(params, grads):
        for p, gr in zip(params, grads):
            p.grad = gr.clone()

    for _ in range(10):
        set_grads(ps, [torch.randn(p.shape, generator=g) for p in ps])
        opt.step()
    qs = [p.detach().clone().requires_grad_() for p in ps]
    loaded = second(qs, **kwargs)
    sd = copy.deepcopy(opt.state_dict())
    loaded.load_state_dict(sd)
    assert loaded.state_dict()["param_groups"] == opt.state_dict()["param_groups"]
    for _ in range(10):
        grads = [torch.randn(p.shape, generator=g) for p in ps]
        set_grads(ps, grads)
        set_grads(qs, grads)
        opt.step()
        loaded.step()
    for a, b in zip(ps, qs):
        torch.testing.assert_close(a.detach(), b.detach(), **TOL[torch.float32])
    assert_states_close(loaded, opt, torch.float32) if first is getattr(fo, name) else \
        assert_states_close(opt, loaded, torch.float32)


def test_state_layout_is_torchs():
    p = torch.randn(4, requires_grad=True)
    p.grad = torch.randn(4)
    opt = fo.AdamW([p], amsgrad=True)
    opt.step()
    st = opt.state[p]
    assert list(st) == ["step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"]
    assert st["step"].dtype == torch.float32 and st["step"].dim() == 0
    assert st["step"].device.type == "cpu" and st["step"].item() == 1.0
    ref = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], amsgrad=True)
    assert opt.param_groups[0].keys() == ref.param_groups[0].keys()
    assert opt.defaults == ref.defaults
    sgd, sgd_ref = fo.SGD([p], momentum=0.9), torch.optim.SGD([p], momentum=0.9)
    assert sgd.defaults == sgd_ref.defaults
    sgd.step()
    assert list(sgd.state[p]) == ["momentum_buffer"]


def test_constructor_validation():
    p = [torch.zeros(2, requires_grad=True)]
    for bad in (dict(lr=-1.0), dict(eps=-1.0), dict(betas=(1.0, 0.9)), dict(betas=(0.9, -0.1)),
                dict(weight_decay=-1.0)):
        with pytest.raises(ValueError):
            fo.AdamW(p, **bad)
    with pytest.raises(ValueError, match="Nesterov"):
        fo.SGD(p, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="differentiable"):
        fo.Adam(p, differentiable=True)
    with pytest.raises(RuntimeError, match="foreach"):
        fo.AdamW(p, fused=True, foreach=True)
    fo.AdamW(p, fused=True)  # accepted: the step is always fused
    fo.SGD(p, foreach=False)


def test_sparse_grad_is_a_clear_error():
    emb = torch.nn.Embedding(10, 3, sparse=True)
    emb(torch.tensor([1, 2])).sum().backward()
    for opt in (fo.AdamW(emb.parameters()), fo.SGD(emb.parameters(), lr=0.1)):
        with pytest.raises(RuntimeError, match="sparse"):
            opt.step()


# ---- clip_grad_norm_ --------------------------------------------------------------------------------


def grads_pair(shapes, dtype=torch.float32, scale=1.0):
    g = torch.Generator().manual_seed(2)
    ps = [torch.zeros(s, dtype=dtype, requires_grad=True) for s in shapes]
    qs = [torch.zeros(s, dtype=dtype, requires_grad=True) for s in shapes]
    for p, q in zip(ps, qs):
        grad = torch.randn(p.shape, generator=g, dtype=dtype) * scale
        p.grad, q.grad = grad.clone(), grad.clone()
    return ps, qs


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("norm_type", [2.0, 1.0, float("inf"), 3.0, "inf", 0.5])
@pytest.mark.parametrize("max_norm", [0.5, 1e6])
def test_clip_grad_norm_matches_torch(norm_type, max_norm, dtype):
    # torch's inf norm refuses empty tensors (no identity); ours gives 0 for them
    shapes = [s for s in SHAPES if s != (0,)] if float(norm_type) == float("inf") else SHAPES
    ps, qs = grads_pair(shapes, dtype)
    ours = fo.clip_grad_norm_(ps, max_norm, norm_type)
    theirs = torch.nn.utils.clip_grad_norm_(qs, max_norm, norm_type)
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape == ()
    tol = dict(rtol=1e-5, atol=0) if dtype == torch.float32 else dict(rtol=1e-12, atol=0)
    torch.testing.assert_close(ours, theirs, **tol)
    for p, q in zip(ps, qs):
        torch.testing.assert_close(p.grad, q.grad, **tol)


def test_clip_grad_norm_is_accurate():
    """Double accumulation: a million float32 values of 0.1 give the norm to float rounding."""
    p = torch.zeros(1_000_003, requires_grad=True)
    p.grad = torch.full_like(p, 0.1)
    norm = fo.clip_grad_norm_([p], 1e9)
    exact = (1_000_003 * float(torch.tensor(0.1)) ** 2) ** 0.5
    assert abs(norm.item() - exact) <= 2e-7 * exact


def test_clip_grad_norm_every_isa(isa):
    for norm_type in (2.0, 1.0, float("inf")):
        ps, qs = grads_pair([s for s in SHAPES if s != (0,)])
        ours = fo.clip_grad_norm_(ps, 0.5, norm_type)
        theirs = torch.nn.utils.clip_grad_norm_(qs, 0.5, norm_type)
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=0)
        for p, q in zip(ps, qs):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=0)


def test_total_norm_same_for_any_thread_count():
    """Per-chunk partials combined in chunk order: the same bits on 1 and 2 threads."""
    ts = make_params(torch.float32, [(300001,), (5,), (70001,)])
    out = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        out.append([ops.total_norm(ts, p) for p in (2.0, 1.0, 3.0)])
    assert all(torch.equal(a, b) for a, b in zip(*out))


def test_clip_grad_norm_edge_cases():
    assert fo.clip_grad_norm_([], 1.0).item() == 0.0
    p = torch.zeros(3, requires_grad=True)  # no grad: skipped
    assert fo.clip_grad_norm_([p], 1.0).item() == 0.0
    p.grad = torch.tensor([3.0, 4.0, 0.0])
    norm = fo.clip_grad_norm_(p, 1.0)  # a single tensor
    assert norm.item() == pytest.approx(5.0)
    torch.testing.assert_close(p.grad, torch.tensor([3.0, 4.0, 0.0]) / (5.0 + 1e-6))
    for bad in (float("nan"), float("inf")):
        grad = torch.ones(70001)
        grad[12345] = bad
        q = torch.zeros(70001, requires_grad=True)
        q.grad = grad.clone()
        with pytest.raises(RuntimeError, match="non-finite"):
            fo.clip_grad_norm_([q], 1.0, error_if_nonfinite=True)
        torch.testing.assert_close(q.grad, grad, rtol=0, atol=0, equal_nan=True)  # unscaled
        for norm_type in (2.0, 1.0, float("inf"), 3.0):
            q.grad = grad.clone()
            n = fo.clip_grad_norm_([q], 1.0, norm_type)
            ref = torch.linalg.vector_norm(grad, norm_type)
            assert n.isnan().item() == ref.isnan().item() and (ref.isnan() or n == ref), \
                (bad, norm_type, n, ref)


def test_clip_grad_norm_mixed_dtypes():
    ps, qs = grads_pair([(5,), (7, 3)])
    for p, q in ((ps[1], qs[1]),):
        p.data, q.data = p.data.double(), q.data.double()
        p.grad, q.grad = p.grad.double(), q.grad.double()
    ours = fo.clip_grad_norm_(ps, 0.5)
    theirs = torch.nn.utils.clip_grad_norm_(qs, 0.5)
    torch.testing.assert_close(ours, theirs)
    for p, q in zip(ps, qs):
        torch.testing.assert_close(p.grad, q.grad)


# ---- ops: opcheck, torch.compile, bad input --------------------------------------------------------


def adam_args(n=3, amsgrad=True, dtype=torch.float32):
    shapes = [(4, 5), (), (9,)][:n]
    ps = make_params(dtype, shapes)
    gs = make_params(dtype, shapes, seed=1)
    ms = [torch.randn(s, dtype=dtype) * 0.1 for s in shapes]
    vs = [torch.rand(s, dtype=dtype) * 0.1 for s in shapes]
    vm = [v + 0.01 for v in vs] if amsgrad else []
    steps = [torch.tensor(float(i + 1)) for i in range(n)]
    return (ps, gs, ms, vs, vm, steps, 1e-2, 0.9, 0.999, 0.1, 1e-8, amsgrad, False, True)


@pytest.mark.parametrize("amsgrad", [False, True])
def test_opcheck_adam_step(amsgrad):
    torch.library.opcheck(ops.adam_step_.default, adam_args(amsgrad=amsgrad))


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_opcheck_sgd_step(momentum):
    ps, gs = make_params(torch.float32, [(4, 5), (3,)]), make_params(torch.float32, [(4, 5), (3,)], 1)
    bufs = [torch.randn_like(p) for p in ps] if momentum else []
    fresh = [True, False] if momentum else []
    torch.library.opcheck(ops.sgd_step_.default,
                          (ps, gs, bufs, fresh, 1e-2, momentum, 0.0, 0.01, False, False))


def test_opcheck_norm_ops():
    ts = make_params(torch.float32, [(4, 5), (3,), ()])
    torch.library.opcheck(ops.total_norm.default, (ts, 2.0))
    torch.library.opcheck(ops.clip_scale_.default, (ts, torch.tensor(7.0), 1.0))


def test_torch_compile_fullgraph():
    def step(ps, gs, ms, vs, steps):
        ops.adam_step_(ps, gs, ms, vs, [], steps, 1e-2, 0.9, 0.999, 0.1, 1e-8, False, False,
                       True)
        norm = ops.total_norm(gs, 2.0)
        ops.clip_scale_(gs, norm, 1.0)
        return norm

    args = adam_args(amsgrad=False)
    ps, gs, ms, vs, _, steps = args[:6]
    eager = [[t.clone() for t in lst] for lst in (ps, gs, ms, vs, steps)]
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    n1 = compiled(ps, gs, ms, vs, steps)
    n2 = step(*eager)
    torch.testing.assert_close(n1, n2)
    for a, b in zip(ps + ms + vs + steps, eager[0] + eager[2] + eager[3] + eager[4]):
        torch.testing.assert_close(a, b)


def test_bad_input():
    ps, gs, ms, vs, vm, steps, *rest = adam_args()
    f = ops.adam_step_
    assert_raises_named(lambda: f(ps, gs[:2], ms, vs, vm, steps, *rest), RuntimeError,
                        ["grads", "3 tensors", "got 2"], "adam_step_")
    assert_raises_named(lambda: f(ps, gs, ms, vs, [], steps, *rest), RuntimeError,
                        ["max_exp_avg_sqs", "amsgrad"], "adam_step_")
    bad = [gs[0].t().contiguous(), gs[1], gs[2]]
    assert_raises_named(lambda: f(ps, bad, ms, vs, vm, steps, *rest), RuntimeError,
                        ["grads[0]", "shape", "[4, 5]", "[5, 4]"], "adam_step_")
    bad = [gs[0].double(), gs[1], gs[2]]
    assert_raises_named(lambda: f(ps, bad, ms, vs, vm, steps, *rest), TypeError,
                        ["grads[0]", "Float", "Double"], "adam_step_")
    bad = [ps[0].int(), ps[1], ps[2]]
    assert_raises_named(lambda: f(bad, gs, ms, vs, vm, steps, *rest), TypeError,
                        ["params", "float32, float64 or bfloat16", "Int"], "adam_step_")
    bad = [torch.tensor([1.0, 2.0]), steps[1], steps[2]]
    assert_raises_named(lambda: f(ps, gs, ms, vs, vm, bad, *rest), RuntimeError,
                        ["state_steps[0]", "1-element"], "adam_step_")
    mixed = [ps[0], ps[1].double(), ps[2]]
    assert_raises_named(lambda: f(mixed, gs, ms, vs, vm, steps, *rest), TypeError,
                        ["params[1]", "dtype of params[0]"], "adam_step_")
    assert_raises_named(lambda: ops.sgd_step_(ps, gs, [], [True], 0.1, 0.0, 0.0, 0.0, False,
                                              False),
                        RuntimeError, ["fresh_buffers"], "sgd_step_")
    assert_raises_named(lambda: ops.total_norm([gs[0], gs[1].double()], 2.0), TypeError,
                        ["tensors[1]", "dtype"], "total_norm")
    assert_raises_named(lambda: ops.clip_scale_(gs, torch.ones(2), 1.0), RuntimeError,
                        ["total_norm", "one element"], "clip_scale_")


# ---- CUDA kernels: on the simulator (CPU tensors) and a GPU, against the CPU ops ---------------

LOWP = (torch.float16, torch.bfloat16)
# 0-d, empty, tails, one tensor over two chunks, and an unaligned view (offset one element)
SIM_SHAPES = [(), (0,), (7,), (33, 17), (70001,)]


def sim_lists(dtype, state_dtype, amsgrad, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(s, scale=1.0, pos=False):
        x = torch.rand(s, generator=g) if pos else torch.randn(s, generator=g)
        return (x * scale).to(dtype)

    ps = [r(s) for s in SIM_SHAPES]
    ps.append(r((1001,))[1:])  # data pointer off by one element: the unaligned path
    shapes = [p.shape for p in ps]
    gs = [r(s) for s in shapes]
    ms = [r(s, 0.1).to(state_dtype) for s in shapes]
    vs = [r(s, 0.1, pos=True).to(state_dtype) for s in shapes]
    vm = [(v.float() + 0.01).to(state_dtype) for v in vs] if amsgrad else []
    steps = [torch.tensor(float(i + 2)) for i in range(len(shapes))]
    return [ps, gs, ms, vs, vm, steps]


def to_dev(lists, d):
    # steps stay on the CPU, as torch.optim keeps them (non-capturable)
    return [[t.to(d, copy=True) for t in lst] for lst in lists[:-1]] + [[t.clone() for t in lists[-1]]]


def assert_lowp_equal_rounded(ours, ref32, dtype, what):
    """A kernel computing in float32 and rounding once to `dtype` lands within one unit in the
    last place of the float32 result rounded to `dtype`."""
    ours = ours.cpu()
    if ours.numel() == 0:
        return
    ref = ref32.to(dtype).float()
    ulp = torch.finfo(dtype).eps * ref.abs().clamp_min(torch.finfo(dtype).tiny)
    err = (ours.float() - ref).abs()
    assert (err <= ulp).all(), f"{what}: max error {err.max().item():.3g} > one ulp"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype,state_dtype", [(torch.float32, torch.float32),
                                               (torch.float64, torch.float64),
                                               (torch.float16, torch.float16),
                                               (torch.bfloat16, torch.bfloat16),
                                               (torch.bfloat16, torch.float32),
                                               (torch.float16, torch.float32)])
@pytest.mark.parametrize("amsgrad,maximize,decoupled", [(False, False, True), (True, True, False)])
def test_cuda_adam_step(backend, dtype, state_dtype, amsgrad, maximize, decoupled):
    lists = sim_lists(dtype, state_dtype, amsgrad)
    hyper = (1e-2, 0.9, 0.999, 0.1, 1e-8, amsgrad, maximize, decoupled)
    ours = to_dev(lists, dev(backend))
    op(backend, "adam_step_")(*ours, *hyper)
    # the CPU op on the same values in float32 (float64 for float64) is the reference
    cpu_t = torch.float64 if dtype == torch.float64 else torch.float32
    ref = [[t.to(cpu_t) for t in lst] for lst in lists[:-1]] + [[t.clone() for t in lists[-1]]]
    ops.adam_step_(*ref, *hyper)
    names = ("params", "grads", "exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs")
    for name, o_list, r_list in zip(names, ours, ref):
        for i, (o, r) in enumerate(zip(o_list, r_list)):
            what = f"{name}[{i}] {dtype}/{state_dtype}"
            if o.dtype in LOWP:
                assert_lowp_equal_rounded(o, r, o.dtype, what)
            else:
                torch.testing.assert_close(o.cpu(), r.to(o.dtype), rtol=2e-6 if o.dtype ==
                                           torch.float32 else 1e-14, atol=0, msg=what)
    assert [s.item() for s in ours[-1]] == [s.item() for s in ref[-1]]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("momentum,dampening,nesterov,fresh",
                         [(0.0, 0.0, False, False), (0.9, 0.1, False, True),
                          (0.9, 0.0, True, False)])
def test_cuda_sgd_step(backend, dtype, momentum, dampening, nesterov, fresh):
    ps, gs, bufs = sim_lists(dtype, dtype, False)[:3]
    if momentum == 0:
        bufs = []
    flags = [fresh if i % 2 else not fresh for i in range(len(bufs))]
    hyper = (1e-2, momentum, dampening, 0.01, nesterov, True)
    d = dev(backend)
    ours = [[t.to(d, copy=True) for t in lst] for lst in (ps, gs, bufs)]
    op(backend, "sgd_step_")(ours[0], ours[1], ours[2], flags, *hyper)
    cpu_t = torch.float64 if dtype == torch.float64 else torch.float32
    ref = [[t.to(cpu_t) for t in lst] for lst in (ps, gs, bufs)]
    ops.sgd_step_(ref[0], ref[1], ref[2], flags, *hyper)
    for name, o_list, r_list in zip(("params", "grads", "buffers"), ours, ref):
        for o, r in zip(o_list, r_list):
            if dtype in LOWP:
                assert_lowp_equal_rounded(o, r, dtype, name)
            else:
                torch.testing.assert_close(o.cpu(), r, rtol=2e-6, atol=0, msg=name)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("norm_type", [2.0, 1.0, float("inf"), float("-inf"), 0.0, 3.0])
def test_cuda_total_norm_and_clip(backend, dtype, norm_type):
    ts = sim_lists(dtype, dtype, False)[1]
    ts = [t for t in ts if t.numel()] if norm_type == float("-inf") else ts
    d = dev(backend)
    ours = [t.to(d, copy=True) for t in ts]
    norm = op(backend, "total_norm")(ours, norm_type)
    assert norm.dtype == dtype and norm.shape == ()
    flat = torch.cat([t.double().flatten() for t in ts])
    ref = torch.linalg.vector_norm(flat, norm_type).to(dtype).double()  # float16 may overflow
    rtol = {torch.float32: 1e-5, torch.float64: 1e-12}.get(dtype, 2 * torch.finfo(dtype).eps)
    torch.testing.assert_close(norm.cpu().double(), ref, rtol=rtol, atol=0)
    again = op(backend, "total_norm")(ours, norm_type)
    assert torch.equal(norm, again)  # deterministic
    op(backend, "clip_scale_")(ours, norm, 0.5)
    coef = min(0.5 / (norm.cpu().double().item() + 1e-6), 1.0)
    for o, t in zip(ours, ts):
        atol = 2.0**-24 if dtype == torch.float16 else 0  # float16 subnormals
        torch.testing.assert_close(o.cpu().double(), t.double() * coef, rtol=2 * rtol + 1e-6,
                                   atol=atol)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cuda_bad_input(backend):
    d = dev(backend)
    ps, gs, ms, vs, vm, steps = to_dev(sim_lists(torch.float32, torch.float32, True), d)
    f = op(backend, "adam_step_")
    rest = (1e-2, 0.9, 0.999, 0.1, 1e-8, True, False, True)
    bad = [gs[0].double()] + gs[1:]
    assert_raises_named(lambda: f(ps, bad, ms, vs, vm, steps, *rest), TypeError,
                        ["grads", "dtype"], "adam_step_")
    bad = [m.half() for m in ms]
    assert_raises_named(lambda: f(ps, gs, bad, vs, vm, steps, *rest), TypeError,
                        ["exp_avgs[0]", "float32 for 16-bit params"], "adam_step_")
    assert_raises_named(lambda: f(ps, gs[:-1], ms, vs, vm, steps, *rest), RuntimeError,
                        ["grads", "tensors"], "adam_step_")
    assert_raises_named(lambda: op(backend, "clip_scale_")(gs, torch.ones(3), 1.0),
                        RuntimeError, ["total_norm", "one element"], "clip_scale_")


def test_lr_scheduler_drives_our_optimizer():
    ours, theirs = (torch.nn.Parameter(torch.ones(3)) for _ in range(2))
    opt_o, opt_t = fo.AdamW([ours], lr=0.1), torch.optim.AdamW([theirs], lr=0.1)
    sched = [torch.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.5) for o in (opt_o, opt_t)]
    for _ in range(6):
        for p, o, s in zip((ours, theirs), (opt_o, opt_t), sched):
            p.grad = torch.tensor([1.0, -2.0, 0.5])
            o.step()
            s.step()
    assert opt_o.param_groups[0]["lr"] == opt_t.param_groups[0]["lr"] == 0.1 * 0.5**3
    torch.testing.assert_close(ours.detach(), theirs.detach())
