"""Threads: every CPU op gives the same bits at any thread count, under OpenMP team limits, from
several Python threads at once; a new Python thread follows torch.set_num_threads; a packed
operand keeps the instruction set it was packed for."""
import os
import subprocess
import sys
import threading

import pytest
import torch

import fusedops
import thread_cases as tc

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def reference():
    """Every case at one thread."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return tc.run()
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("threads", [2, 3, 4])
def test_same_bits_at_any_thread_count(reference, threads):
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = tc.run()
    finally:
        torch.set_num_threads(old)
    assert tc.differences(reference, got) == {}


def _child_results(tmp_path, env):
    out = tmp_path / "cases.pt"
    full_env = {**os.environ, **env, "PYTHONPATH": os.pathsep.join([HERE, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, os.path.join(HERE, "thread_cases.py"), str(out)],
                          env=full_env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"child died ({proc.returncode}): {proc.stderr[-2000:]}"
    return torch.load(out, weights_only=True)


# Teams smaller than asked for: a thread limit, dynamic teams, and (OMP_MAX_ACTIVE_LEVELS=1 with
# the ops asked for 4 threads on any machine) regions that get fewer threads than requested.
@pytest.mark.parametrize("env", [
    {"OMP_THREAD_LIMIT": "1", "OMP_NUM_THREADS": "4"},
    {"OMP_DYNAMIC": "true", "OMP_NUM_THREADS": "4"},
    {"OMP_THREAD_LIMIT": "3", "OMP_NUM_THREADS": "4"},
], ids=["thread-limit-1", "dynamic", "thread-limit-3"])
def test_team_smaller_than_asked(reference, tmp_path, env):
    got = _child_results(tmp_path, env)
    assert tc.differences(reference, got) == {}


def test_several_python_threads_at_once(reference):
    names = ["linear", "conv_padded", "attention_one_head", "layer_norm", "lstm", "cross_entropy"]
    results, errors = {}, []

    def work(i):
        try:
            results[i] = tc.run(names)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i in range(4):
        assert tc.differences({n: reference[n] for n in names}, results[i]) == {}


_NEW_THREAD = r"""
import os, threading, torch, fusedops
torch.set_num_threads(1)
x, w = torch.randn(512, 512), torch.randn(512, 512)
fusedops.ops.linear(x, w)                     # the main thread's pool, if any, exists now
before = len(os.listdir('/proc/self/task'))
seen = []
def work():
    for _ in range(3):
        fusedops.ops.linear(x, w)
        fusedops.ops.layer_norm(torch.randn(4096, 256), [256])
    seen.append(len(os.listdir('/proc/self/task')))
t = threading.Thread(target=work); t.start(); t.join()
print(before, seen[0])
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads through /proc")
def test_new_python_thread_follows_set_num_threads():
    proc = subprocess.run([sys.executable, "-c", _NEW_THREAD], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "4"})
    assert proc.returncode == 0, proc.stderr
    before, during = map(int, proc.stdout.split())
    # The new Python thread itself, and no OpenMP threads of its own.
    assert during == before + 1


def test_unknown_isa_setting_warns():
    proc = subprocess.run([sys.executable, "-W", "always", "-c", "import fusedops"], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "FUSEDOPS_ISA": "avx9"})
    assert proc.returncode == 0, proc.stderr
    assert "FUSEDOPS_ISA='avx9' is not one of 'generic', 'avx2' or 'avx512'" in proc.stderr


def test_unknown_bf16_setting_warns():
    proc = subprocess.run([sys.executable, "-W", "always", "-c", "import fusedops"], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "FUSEDOPS_BF16": "wide"})
    assert proc.returncode == 0, proc.stderr
    assert "FUSEDOPS_BF16='wide' is not one of 'auto', 'native', 'widen' or 'avx512_bf16'" in proc.stderr


def test_isa_switched_while_a_packed_weight_is_in_use():
    """The recurrent weight is packed once per call; switching the instruction set meanwhile
    (another thread, here) must not make the steps read it in another layout."""
    info = fusedops.cpu_info()
    if info["best_isa"] == "generic":
        pytest.skip("one instruction set only")
    torch.manual_seed(0)
    ref = torch.nn.LSTM(64, 96, batch_first=True)
    ours = fusedops.nn.LSTM(64, 96, batch_first=True)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(8, 300, 64)
    expected = ref(x)[0]
    stop = threading.Event()

    def toggle():
        names = ["generic", info["best_isa"]]
        i = 0
        while not stop.is_set():
            fusedops._C._set_isa(names[i % 2])
            i += 1

    t = threading.Thread(target=toggle)
    t.start()
    try:
        worst = max((ours(x)[0] - expected).abs().max().item() for _ in range(5))
    finally:
        stop.set()
        t.join()
        fusedops._C._set_isa(info["isa"])
    assert worst < 1e-4


_MEMORY = r"""
import gc, os, threading, torch, fusedops
from fusedops import ops

def rss_mb():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20

def calls():
    x = torch.randn(64, 2**19); w = torch.randn(16, 2**19)
    ops.linear(x, w)                                          # small M, K = 2^19
    logits = torch.randn(4096, 4099, requires_grad=True)
    ops.cross_entropy(logits, torch.randint(0, 4099, (4096,))).backward()
    lstm = fusedops.nn.LSTM(256, 512, batch_first=True)
    out, _ = lstm(torch.randn(64, 64, 256, requires_grad=True)); out.sum().backward()
    def conv():
        xi = torch.randn(16, 64, 28, 28, requires_grad=True); wi = torch.randn(64, 64, 3, 3, requires_grad=True)
        ops.conv2d(xi, wi, padding=1).sum().backward()
    ts = [threading.Thread(target=conv) for _ in range(4)]
    [t.start() for t in ts]; [t.join() for t in ts]

torch.randn(8, 8) @ torch.randn(8, 8)
ops.linear(torch.randn(64, 64), torch.randn(64, 64))
gc.collect()
base = rss_mb()
calls()
gc.collect()
after = rss_mb()
held = fusedops._C._cache_bytes()
freed = fusedops.empty_cache()
gc.collect()
emptied = rss_mb()
print(base, after, emptied, held['scratch'], held['rnn_pool'], held['loss'], freed, sum(fusedops._C._cache_bytes().values()))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads resident memory from /proc")
def test_memory_bounded_after_the_tensors_are_gone():
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "2"}
    for k in ("FUSEDOPS_SCRATCH_MB", "FUSEDOPS_RNN_POOL_MB", "FUSEDOPS_CE_GRAD_CACHE"):
        env.pop(k, None)
    proc = subprocess.run([sys.executable, "-c", _MEMORY], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr
    base, after, emptied, scratch, pool, loss, freed, left = map(float, proc.stdout.split())
    mb = 2.0**20
    assert scratch + loss <= 32 * mb and pool <= 64 * mb
    assert freed == scratch + pool + loss and left == 0
    # What the process still holds: the caches' allowance, and a little of allocator slack.
    assert after - base <= 96 + 24, (base, after)
    assert emptied - base <= 24, (base, emptied)
