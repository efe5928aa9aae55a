"""The benchmark programs: the results format, the report (tables from a small CSV), every
entry point's --help, and a tiny run from a directory outside the repository."""
import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fusedops.benchmarks import FAMILIES, harness, report, results

REPO = Path(__file__).resolve().parent.parent


def run(args, cwd=REPO, env=None, timeout=300):
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


# ---- the results format -----------------------------------------------------------------------


def test_percentiles_and_comparison():
    assert results.percentiles([3.0]) == (3.0, 3.0, 3.0)
    p20, p50, p80 = results.percentiles([5.0, 1.0, 4.0, 2.0, 3.0])
    assert (p20, p50, p80) == pytest.approx((1.8, 3.0, 4.2))
    ours, theirs = [0.010, 0.011, 0.012, 0.013, 0.014], [0.020, 0.024, 0.021, 0.023, 0.022]
    c = results.comparison(ours, theirs)
    assert c["fusedops_ms"] == 12.0 and c["peer_ms"] == 22.0
    assert c["fusedops_p20_ms"] == pytest.approx(10.8) and c["peer_p80_ms"] == pytest.approx(23.2)
    assert c["ratio"] == pytest.approx(22 / 12, rel=1e-4)
    assert c["ratio_p20"] == pytest.approx(20.8 / 13.2, rel=1e-4)
    assert c["ratio_p80"] == pytest.approx(23.2 / 10.8, rel=1e-4)
    assert c["ratio_p20"] <= c["ratio"] <= c["ratio_p80"]
    assert c["fusedops_samples_ms"].split() == ["10.0", "11.0", "12.0", "13.0", "14.0"]


def _row(**over):
    row = {k: None for k in results.HEADER}
    row.update(timestamp="2026-01-01T00:00:00+00:00", machine_kind="AMD Zen3 (avx2)",
               cpu="AMD EPYC", cores=2, isa="avx2", best_isa="avx2", fp32_peak_gflops=193.0,
               triad_gbs=38.0, torch="2.13.0", fusedops="0.3.0", family="conv", case="c1",
               mode="fwd", threads=2, peer="torch", unit="GFLOP/s", fusedops_rate=100.0,
               fusedops_pct_peak=51.8, rel_err=1e-7, tolerance=1e-3, rounds=5,
               **results.comparison([0.010] * 5, [0.015] * 5))
    row.update(over)
    return row


def test_append_writes_the_header_once_and_reads_back(tmp_path):
    path = tmp_path / "conv.csv"
    assert results.append(path, [_row()]) == 1
    assert results.append(path, [_row(case="c2", fusedops_mem_mib=12.5)]) == 1
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(results.HEADER) and len(lines) == 3
    rows = results.read(path)
    assert [r["case"] for r in rows] == ["c1", "c2"]
    assert rows[0]["threads"] == 2 and rows[0]["ratio"] == 1.5
    assert rows[0]["fusedops_mem_mib"] is None and rows[1]["fusedops_mem_mib"] == 12.5
    assert rows[0]["commit"] is None  # unknown stays empty


def test_append_refuses_another_format(tmp_path):
    path = tmp_path / "old.csv"
    path.write_text("timestamp,machine,case\n1,2,3\n")
    with pytest.raises(SystemExit, match="not this results format"):
        results.append(path, [_row()])
    assert path.read_text() == "timestamp,machine,case\n1,2,3\n"


def test_committed_results_use_the_format():
    files = sorted((REPO / "benchmarks" / "results").glob("*.csv"))
    assert {f.stem for f in files} >= set(FAMILIES) - {"gpu"}
    for f in files:
        with open(f, newline="") as fh:
            assert next(csv.reader(fh)) == results.HEADER, f
        for r in results.read(f):
            for key in ("timestamp", "machine_kind", "cpu", "isa", "torch", "fusedops", "family",
                        "case", "mode", "threads", "peer", "fusedops_ms", "peer_ms", "ratio",
                        "fp32_peak_gflops", "triad_gbs", "fusedops_pct_peak"):
                assert r[key] is not None, (f.name, key, r["case"])
            assert r["family"] == f.stem
            assert r["fusedops_p20_ms"] <= r["fusedops_ms"] <= r["fusedops_p80_ms"]
            assert r["peer_p20_ms"] <= r["peer_ms"] <= r["peer_p80_ms"]
            assert r["ratio"] == pytest.approx(r["peer_ms"] / r["fusedops_ms"], rel=2e-4)
            assert r["ratio_p20"] <= r["ratio"] <= r["ratio_p80"]
            samples = [float(x) for x in r["fusedops_samples_ms"].split()]
            assert len(samples) == r["rounds"]


def test_machine_kind_from_cpuinfo(monkeypatch):
    cases = [({"vendor_id": "AuthenticAMD", "cpu family": "25", "model": "1", "model name": "AMD EPYC 7R13"},
              "avx2", "AMD Zen3 (avx2)"),
             ({"vendor_id": "AuthenticAMD", "cpu family": "25", "model": "17", "model name": "AMD EPYC 9R14"},
              "avx512", "AMD Zen4 (avx512)"),
             ({"vendor_id": "AuthenticAMD", "cpu family": "26", "model": "2", "model name": "AMD EPYC"},
              "avx512", "AMD Zen5 (avx512)"),
             ({"vendor_id": "GenuineIntel", "cpu family": "6", "model": "143", "flags": "avx512f amx_bf16",
               "model name": "Intel(R) Xeon(R) Platinum 8488C"}, "avx512",
              "Intel Xeon Platinum 8488C with AMX (avx512)"),
             ({}, "generic", "Some CPU (generic)")]
    for cpuinfo, isa, kind in cases:
        monkeypatch.setattr(harness, "_cpuinfo", lambda c=cpuinfo: c)
        got = harness.machine({"model": "Some CPU", "isa": isa})
        assert got["machine_kind"] == kind
    assert got["cpu_id"] == ""


def test_call_memory_counts_what_a_call_allocates():
    if not os.path.exists("/proc/self/clear_refs"):
        pytest.skip("needs Linux's /proc/self/clear_refs")
    n = 64 << 18  # 64 MiB of float32
    mib = harness.call_memory_mib(lambda: torch.ones(n))
    assert 60 <= mib <= 80, mib
    assert harness.call_memory_mib(lambda: torch.ones(16)) < 8


# ---- the report -------------------------------------------------------------------------------


def _small_results(tmp_path):
    old = dict(timestamp="2026-01-01T00:00:00+00:00")
    new = dict(timestamp="2026-02-01T00:00:00+00:00", commit="abc123")
    rows = [
        _row(**old, case="64x1x28x28->32", mode="fwd+bwd", **results.comparison([0.010] * 3, [0.012] * 3)),
        _row(**new, case="64x1x28x28->32", mode="fwd+bwd", fusedops_mem_mib=10.0, peer_mem_mib=30.0,
             **results.comparison([0.010, 0.011, 0.012], [0.025, 0.026, 0.027])),
        _row(**old, case="64x32x13x13->64", mode="fwd+bwd", **results.comparison([0.020] * 3, [0.018] * 3)),
        _row(timestamp="2026-03-01T00:00:00+00:00", machine_kind="AMD Zen5 (avx512)",
             case="64x1x28x28->32", mode="fwd",
             **results.comparison([0.001] * 3, [0.003] * 3)),
        _row(**old, machine_kind="AMD Zen5 (avx512)", case="64x1x28x28->32", mode="fwd",
             **results.comparison([0.001] * 3, [0.0005] * 3)),
    ]
    results.append(tmp_path / "conv.csv", rows)
    return tmp_path


def test_report_tables_from_a_small_csv(tmp_path):
    data = report.load(_small_results(tmp_path))
    assert list(data) == ["conv"]
    kinds = report.newest(data["conv"])
    assert list(kinds) == ["AMD Zen5 (avx512)", "AMD Zen3 (avx2)"]  # the newest run first
    text = report.family_markdown("conv", data["conv"])
    zen5, zen3 = text.split("\n\n**AMD Zen3 (avx2)**")
    # Zen5: only the newer of its two runs of the same case
    assert "| 64x1x28x28->32 | fwd | 2 | 1.00 | 3.00 |" in zen5 and "0.500" not in zen5
    assert "3.00x (3.00-3.00)" in zen5
    # Zen3: the newest row of each case, from two runs, numbered in the caption
    assert "run 1: 2026-01-01 00:00 UTC" in zen3 and "run 2: 2026-02-01 00:00 UTC, fusedops 0.3.0 (abc123)" in zen3
    first = next(line for line in zen3.splitlines() if line.startswith("| 64x1x28x28->32"))
    assert "| 11.0 | 26.0 |" in first
    # 26 / 11 and (p20, p80 of 3 samples interpolated) 25.4 / 11.6 and 26.6 / 10.4
    assert "2.36x (2.19-2.56)" in first
    assert "| 10.0 / 30.0 |" in first  # memory, fusedops / torch
    assert "vs torch >= 2: met" in first and first.endswith("| 2 |")
    second = next(line for line in zen3.splitlines() if line.startswith("| 64x32x13x13->64"))
    assert "0.90x" in second and "vs torch >= 1.2: **missed**" in second and "| - / - |" in second
    assert "fp32 193 GFLOP/s, triad 38.0 GB/s at 2 threads" in zen3


def test_report_rewrites_only_between_markers(tmp_path):
    folder = _small_results(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- bench:conv:begin -->\nstale 9.99x\n<!-- bench:conv:end -->\n"
                      "middle\n<!-- bench:rnn:begin -->\n<!-- bench:rnn:end -->\nend\n")
    r = run(["-m", "fusedops.benchmarks", "report", "--results", str(folder), "--readme",
             str(readme), "--no-plots"])
    assert r.returncode == 0, r.stderr
    text = readme.read_text()
    assert "stale" not in text and text.startswith("intro\n<!-- bench:conv:begin -->\n**AMD Zen5")
    assert "2.36x (2.19-2.56)" in text
    assert "\n<!-- bench:conv:end -->\nmiddle\n" in text and text.endswith("<!-- bench:rnn:end -->\nend\n")
    assert "No results of `rnn` yet." in text
    check = run(["-m", "fusedops.benchmarks", "report", "--results", str(folder), "--readme",
                 str(readme), "--check"])
    assert check.returncode == 0, check.stderr
    readme.write_text(text.replace("2.36x", "2.40x"))
    check = run(["-m", "fusedops.benchmarks", "report", "--results", str(folder), "--readme",
                 str(readme), "--check"])
    assert check.returncode != 0 and "differ" in check.stderr


def test_report_plots(tmp_path):
    pytest.importorskip("matplotlib")
    folder = _small_results(tmp_path)
    r = run(["-m", "fusedops.benchmarks", "report", "--results", str(folder), "--readme",
             str(tmp_path / "none.md")])
    assert r.returncode != 0  # a README that does not exist is an error, not silence
    (tmp_path / "none.md").write_text("no markers\n")
    r = run(["-m", "fusedops.benchmarks", "report", "--results", str(folder), "--readme",
             str(tmp_path / "none.md")])
    assert r.returncode == 0, r.stderr
    png = folder / "conv.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_readme_tables_match_the_committed_results():
    r = run(["-m", "fusedops.benchmarks", "report", "--check"])
    assert r.returncode == 0, r.stdout + r.stderr


# ---- entry points -----------------------------------------------------------------------------


@pytest.mark.parametrize("args", [
    ["-m", "fusedops.benchmarks", "--help"],
    ["-m", "fusedops.benchmarks", "report", "--help"],
    ["-m", "benchmarks", "--help"],
    ["-m", "fusedops.benchmarks.bench_attention", "--help"],
    ["-m", "fusedops.benchmarks.bench_loss", "--help"],
    ["benchmarks/gpu_report.py", "--help"],
])
def test_help(args):
    r = run(args, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage:") and "-h, --help" in r.stdout


def test_cli_rejects_bad_arguments():
    r = run(["-m", "fusedops.benchmarks", "nosuchfamily"], timeout=120)
    assert r.returncode == 2 and "unknown family nosuchfamily" in r.stderr
    r = run(["-m", "fusedops.benchmarks", "matmul", "--threads", "0"], timeout=120)
    assert r.returncode == 2 and "at least 1" in r.stderr
    r = run(["-m", "fusedops.benchmarks", "matmul", "-k", "no such case"], timeout=120)
    assert r.returncode != 0 and "--list" in r.stderr


def test_list_shows_the_filtered_cases():
    r = run(["-m", "fusedops.benchmarks", "all", "--quick", "--list", "-k", "square 256"], timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[0].split() == ["matmul", "square", "256", "fwd"]
    assert len(r.stdout.strip().splitlines()) == 1


def _tiny_run(tmp_path, extra=()):
    """`square 256` at 1 thread with --quick, from tmp_path (outside the repository)."""
    out = tmp_path / "results"
    r = run(["-c", "import sys; " + "; ".join(extra) + "; from fusedops.benchmarks.cli import main; "
             "main('fusedops.benchmarks')", "matmul", "--quick", "-k", "square 256 fwd",
             "--threads", "1", "--out", str(out)], cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout, results.read(out / "matmul-quick.csv")


def test_tiny_case_from_outside_the_repository(tmp_path):
    out = tmp_path / "results"
    r = run(["-m", "fusedops.benchmarks", "matmul", "--quick", "-k", "square 256 fwd",
             "--threads", "1", "--out", str(out)], cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = results.read(out / "matmul-quick.csv")
    by_peer = {row["peer"]: row for row in rows}
    assert "torch" in by_peer
    if "numpy" not in by_peer:  # never silently: the run says why
        assert "numpy/OpenBLAS peer NOT MEASURED" in r.stdout
    t = by_peer["torch"]
    assert t["case"] == "square 256" and t["threads"] == 1 and t["family"] == "matmul"
    assert t["machine_kind"] and t["cpu"] and t["fp32_peak_gflops"] > 0 and t["torch"] == torch.__version__
    assert t["fusedops_pct_peak"] == pytest.approx(100 * t["fusedops_rate"] / t["fp32_peak_gflops"], rel=1e-3)
    assert t["rel_err"] < 1e-4 and t["rounds"] >= 3
    assert "appended" in r.stdout and "square 256" in r.stdout
    # a second run appends
    r = run(["-m", "fusedops.benchmarks", "matmul", "--quick", "-k", "square 256 fwd",
             "--threads", "1", "--out", str(out)], cwd=tmp_path)
    assert r.returncode == 0
    assert len(results.read(out / "matmul-quick.csv")) == 2 * len(rows)


def test_missing_threadpoolctl_is_said_loudly(tmp_path):
    stdout, rows = _tiny_run(tmp_path, ["sys.modules['threadpoolctl'] = None"])
    assert "WARNING: numpy/OpenBLAS peer NOT MEASURED: threadpoolctl is missing" in stdout
    assert {r["peer"] for r in rows} == {"torch"}


def test_gpu_report_rows_use_the_results_format(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_report", REPO / "benchmarks" / "gpu_report.py")
    gpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu)
    info = {"timestamp": "2026-01-01T00:00:00+00:00", "machine_kind": "NVIDIA H100 (sm_90)",
            "cpu": "NVIDIA H100", "cpu_id": "CUDA 12.8, 132 SMs", "cores": 132, "isa": "sm_90",
            "torch": "2.13.0", "fusedops": "0.3.0", "commit": None}
    samples = {"fusedops": [0.001, 0.0011, 0.0012], "torch": [0.002, 0.0021, 0.0022]}
    row = gpu.make_row(info, "matmul 4096x4096x4096", "fwd", "float16", 2 * 4096**3, samples,
                       {"fusedops": 96.0, "torch": 128.0}, 1e-3)
    results.append(tmp_path / "gpu.csv", [row])
    back = results.read(tmp_path / "gpu.csv")[0]
    assert back["case"] == "matmul 4096x4096x4096 float16" and back["family"] == "gpu"
    assert back["ratio"] == pytest.approx(2.1 / 1.1, rel=1e-4)
    assert back["fusedops_rate"] == pytest.approx(2 * 4096**3 / 0.0011 / 1e9, rel=1e-4)
    assert back["fusedops_mem_mib"] == 96.0 and back["tolerance"] == 3e-2
    text = report.family_markdown("gpu", [back])
    assert "**NVIDIA H100 (sm_90)**" in text and "Peaks not measured." in text and "| - |" in text
