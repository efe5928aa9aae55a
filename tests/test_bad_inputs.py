"""The bad-input matrix (tests/bad_inputs.py) run in child processes: one worker runs the cases
in order; when a case kills it (a crash), that case fails and a new worker goes on from the
next one, so a crash costs one case, not the suite, and torch is imported once per worker, not
once per case."""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bad_inputs  # noqa: E402

WORKER = os.path.join(REPO_ROOT, "tests", "bad_inputs.py")


def _run_all():
    """{case index: result} for every case; a worker that dies mid-case records why."""
    results, first = {}, 0
    n = len(bad_inputs.CASES)
    while first < n:
        proc = subprocess.run([sys.executable, WORKER, str(first)], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=600)
        started = None
        for line in proc.stdout.splitlines():
            if line.startswith("start "):
                started = int(line.split()[1])
            elif line.startswith("{"):
                rec = json.loads(line)
                results[rec["case"]] = rec["result"]
                started = None
        if started is None:  # the worker ran to the end
            assert proc.returncode == 0 and len(results) >= n - first, proc.stderr[-2000:]
            break
        results[started] = (f"the worker died (exit status {proc.returncode}) in this case: "
                            f"{proc.stderr[-1500:]}")
        first = started + 1
    return results


@pytest.fixture(scope="module")
def matrix():
    return _run_all()


@pytest.mark.parametrize("index", range(len(bad_inputs.CASES)), ids=[c[0] for c in bad_inputs.CASES])
def test_bad_input(matrix, index):
    assert matrix.get(index) == "pass", f"{bad_inputs.CASES[index][0]}: {matrix.get(index)}"


def test_a_crash_costs_one_case(monkeypatch, tmp_path):
    """The harness itself: a case that kills its worker fails alone, and the cases after it
    still run."""
    worker = tmp_path / "worker.py"
    worker.write_text(
        "import json, os, sys\n"
        "first = int(sys.argv[1])\n"
        "for i in range(first, 4):\n"
        "    print(f'start {i}', flush=True)\n"
        "    if i == 1:\n"
        "        os.abort()\n"
        "    print(json.dumps({'case': i, 'result': 'pass'}), flush=True)\n")
    monkeypatch.setattr(sys.modules[__name__], "WORKER", str(worker))
    monkeypatch.setattr(bad_inputs, "CASES", [("a", None, None)] * 4)
    results = _run_all()
    assert [results[i] == "pass" for i in range(4)] == [True, False, True, True]
    assert "died" in results[1]
