"""The report of the results files: one PNG per family and the README's result tables.

For every machine kind in a family's results the newest row of each comparison (case, mode,
thread count, peer) is taken; older runs stay in the file. The README's tables live between
the markers <!-- bench:<family>:begin --> and <!-- bench:<family>:end -->, one table per
machine kind; the report rewrites what lies between them and nothing else.
"""
import argparse
import importlib
import math
import re
from collections import OrderedDict
from pathlib import Path
from typing import Dict, List, Optional

from . import FAMILIES, results

Row = Dict[str, object]


def load(folder: Path) -> Dict[str, List[Row]]:
    """{family: rows} of every <family>.csv in the folder (not the --quick files)."""
    return {p.stem: results.read(p) for p in sorted(folder.glob("*.csv"))
            if not p.stem.endswith("-quick")}


def newest(rows: List[Row]) -> "OrderedDict[str, List[Row]]":
    """{machine kind: the newest row of each (case, mode, threads, peer)}, the kinds ordered by
    their newest run (newest first), the rows in the order the cases first appear."""
    kinds: Dict[str, Dict[tuple, Row]] = {}
    for row in rows:
        key = (row["case"], row["mode"], row["threads"], row["peer"])
        kept = kinds.setdefault(row["machine_kind"] or "unknown machine", {})
        if key not in kept or row["timestamp"] >= kept[key]["timestamp"]:
            kept[key] = row  # an updated key keeps its first position
    order = sorted(kinds, key=lambda k: max(r["timestamp"] for r in kinds[k].values()),
                   reverse=True)
    return OrderedDict((k, list(kinds[k].values())) for k in order)


# ---- tables -----------------------------------------------------------------------------------


def goals(family: str) -> Dict[tuple, float]:
    """The family's GOALS ({(case, mode, peer): ratio}), or none when it declares none."""
    if family not in FAMILIES:
        return {}
    return getattr(importlib.import_module(f"{__package__}.bench_{family}"), "GOALS", {})


def _num(x: Optional[float], digits: int = 3) -> str:
    """A number to `digits` significant digits, thousands separated, without exponent."""
    if x is None:
        return "-"
    if x == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(x))))
    return f"{x:,.{decimals}f}"


def _ratio(row: Optional[Row]) -> str:
    if row is None:
        return "-"
    text = f"{row['ratio']:.2f}x"
    if row["ratio_p20"] is not None:
        text += f" ({row['ratio_p20']:.2f}-{row['ratio_p80']:.2f})"
    return text


def _runs(rows: List[Row]) -> List[str]:
    """The timestamps of the runs the rows come from, oldest first."""
    return sorted({r["timestamp"] for r in rows})


def _caption(kind: str, rows: List[Row]) -> str:
    runs = _runs(rows)
    described = []
    for i, stamp in enumerate(runs, 1):
        r = next(r for r in rows if r["timestamp"] == stamp)
        text = (f"{stamp[:16].replace('T', ' ')} UTC, fusedops {r['fusedops']}"
                f"{' (' + r['commit'] + ')' if r['commit'] else ''}, torch {r['torch']}"
                + (f", load {r['load']:g}" if r["load"] is not None else ""))
        described.append(f"run {i}: {text}" if len(runs) > 1 else f"run {text}")
    peaks = []
    for t in sorted({r["threads"] for r in rows}):
        r = max((r for r in rows if r["threads"] == t), key=lambda r: r["timestamp"])
        parts = [f"{name} {_num(r[key])} {unit}" for name, key, unit in (
            ("fp32", "fp32_peak_gflops", "GFLOP/s"), ("bf16", "bf16_peak_gflops", "GFLOP/s"),
            ("triad", "triad_gbs", "GB/s")) if r[key] is not None]
        if parts:
            peaks.append(f"{', '.join(parts)} at {t} thread{'s' if t > 1 else ''}")
    cpus = ", ".join(sorted({r["cpu"] for r in rows}))
    return (f"**{kind}** ({cpus}); {'; '.join(described)}. "
            + (f"Measured peaks: {'; '.join(peaks)}." if peaks else "Peaks not measured."))


def table(family: str, kind: str, rows: List[Row], family_goals: Dict[tuple, float]) -> str:
    """The markdown table of one family on one machine kind."""
    peers = list(OrderedDict.fromkeys(r["peer"] for r in rows))
    cases = list(OrderedDict.fromkeys((r["case"], r["mode"], r["threads"]) for r in rows))
    by = {(r["case"], r["mode"], r["threads"], r["peer"]): r for r in rows}
    units = sorted({r["unit"] for r in rows})
    memory = any(r["fusedops_mem_mib"] is not None for r in rows)
    runs = _runs(rows)
    head = (["case", "mode", "threads", "fusedops ms"] + [f"{p} ms" for p in peers]
            + [units[0] if len(units) == 1 else "rate", "% peak"]
            + [f"vs {p} (p20-p80)" for p in peers])
    if memory:
        head.append("MiB " + " / ".join(["fusedops", *peers]))
    if family_goals:
        head.append("goal")
    if len(runs) > 1:
        head.append("run")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for case, mode, threads in cases:
        row = {p: by.get((case, mode, threads, p)) for p in peers}
        any_row = next(r for r in row.values() if r is not None)
        cells = [case, mode, str(threads), _num(any_row["fusedops_ms"])]
        cells += [_num(r["peer_ms"]) if r else "-" for r in row.values()]
        rate = _num(any_row["fusedops_rate"]) + (f" {any_row['unit']}" if len(units) > 1 else "")
        pct = any_row["fusedops_pct_peak"]
        cells += [rate, "-" if pct is None else f"{pct:.0f}%"]
        cells += [_ratio(r) for r in row.values()]
        if memory:
            mems = [any_row["fusedops_mem_mib"]] + [r["peer_mem_mib"] if r else None
                                                   for r in row.values()]
            cells.append(" / ".join(_num(m) for m in mems))
        if family_goals:
            met = []
            for p, r in row.items():
                goal = family_goals.get((case, mode, p))
                if goal is not None and r is not None:
                    met.append(f"vs {p} >= {goal:g}: " + ("met" if r["ratio"] >= goal else "**missed**"))
            cells.append("; ".join(met))
        if len(runs) > 1:
            cells.append(str(runs.index(any_row["timestamp"]) + 1))
        if any_row["rel_err"] is not None and any_row["rel_err"] > any_row["tolerance"]:
            cells[0] += " (**wrong result**)"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def family_markdown(family: str, rows: List[Row]) -> str:
    """Every machine kind's table of a family, newest kind first, each with its caption."""
    if not rows:
        return f"No results of `{family}` yet."
    family_goals = goals(family)
    parts = [f"{_caption(kind, kr)}\n\n{table(family, kind, kr, family_goals)}"
             for kind, kr in newest(rows).items()]
    return "\n\n".join(parts)


MARKER = re.compile(r"(<!-- bench:(?P<family>[\w-]+):begin -->\n)(?P<body>.*?)(<!-- bench:(?P=family):end -->)",
                    re.S)


def update_readme(text: str, data: Dict[str, List[Row]]) -> str:
    """The text with every bench marker pair's content regenerated from data."""
    def fill(m):
        body = family_markdown(m.group("family"), data.get(m.group("family"), []))
        return f"{m.group(1)}{body}\n{m.group(4)}"
    return MARKER.sub(fill, text)


# ---- plots ------------------------------------------------------------------------------------


def plot(family: str, rows: List[Row], path: Path) -> None:
    """Ratios (peer's time / fusedops') with their p20-p80 spread, one panel per machine kind,
    one colour per peer; right of the line at 1, fusedops is faster."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = newest(rows)
    heights = [len({(r["case"], r["mode"], r["threads"]) for r in kr}) for kr in kinds.values()]
    fig, axes = plt.subplots(len(kinds), 1, squeeze=False, figsize=(9, 1.4 * len(kinds) + 0.32 * sum(heights)),
                             gridspec_kw={"height_ratios": [h + 1 for h in heights]})
    for ax, (kind, kr) in zip(axes[:, 0], kinds.items()):
        labels = list(OrderedDict.fromkeys((r["case"], r["mode"], r["threads"]) for r in kr))
        peers = list(OrderedDict.fromkeys(r["peer"] for r in kr))
        step = 0.8 / len(peers)
        for i, peer in enumerate(peers):
            ys, xs, lo, hi = [], [], [], []
            for j, label in enumerate(labels):
                r = next((r for r in kr if (r["case"], r["mode"], r["threads"]) == label
                          and r["peer"] == peer), None)
                if r is None:
                    continue
                ys.append(j - 0.4 + (i + 0.5) * step)
                xs.append(r["ratio"])
                lo.append(r["ratio"] - (r["ratio_p20"] if r["ratio_p20"] is not None else r["ratio"]))
                hi.append((r["ratio_p80"] if r["ratio_p80"] is not None else r["ratio"]) - r["ratio"])
            ax.barh(ys, xs, height=step, xerr=[lo, hi], capsize=2, label=f"vs {peer}")
        ax.axvline(1.0, color="k", lw=0.8)
        ax.set_yticks(range(len(labels)), [f"{c} {m} · {t} thr" for c, m, t in labels], fontsize=8)
        ax.invert_yaxis()
        ax.set_title(kind, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        ax.legend(loc="lower right", fontsize="small")
    axes[-1, 0].set_xlabel("peer's median time / fusedops' (bars: p20-p80 spread); "
                           "> 1: fusedops is faster", fontsize=9)
    fig.suptitle(f"{family}: fusedops against its peers", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---- command ----------------------------------------------------------------------------------


def default_readme() -> Optional[Path]:
    import fusedops

    readme = Path(fusedops.__file__).resolve().parent.parent / "README.md"
    return readme if readme.is_file() else None


def main(argv: List[str], prog: str) -> None:
    from .cli import default_results

    p = argparse.ArgumentParser(prog=prog, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, default=default_results(),
                   help="folder of the <family>.csv files (default: %(default)s)")
    p.add_argument("--readme", type=Path, default=default_readme(),
                   help="markdown file whose bench markers are rewritten (default: %(default)s)")
    p.add_argument("--no-plots", action="store_true", help="tables only, no PNGs")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 if the README's tables differ from the results")
    args = p.parse_args(argv)
    if args.readme and not args.readme.is_file():
        p.error(f"--readme {args.readme}: no such file")
    data = load(args.results)
    if not data:
        p.error(f"no results files (<family>.csv) in {args.results}")
    if args.readme:
        text = args.readme.read_text()
        updated = update_readme(text, data)
        found = sorted({m.group("family") for m in MARKER.finditer(text)})
        if args.check:
            if updated != text:
                raise SystemExit(f"{args.readme}: the result tables differ from {args.results} "
                                 f"(run `{prog}`)")
            print(f"{args.readme}: tables of {', '.join(found)} match the results")
            return
        if updated != text:
            args.readme.write_text(updated)
        print(f"{args.readme}: tables of {', '.join(found) or 'no family (no markers)'} "
              f"{'rewritten' if updated != text else 'already up to date'}")
    if args.check:
        return
    if args.no_plots:
        return
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise SystemExit("matplotlib is missing: no plots (pip install matplotlib, or "
                         "fusedops[bench]; --no-plots writes the tables alone)")
    for family, rows in data.items():
        if rows:
            plot(family, rows, args.results / f"{family}.png")
            print(f"wrote {args.results / f'{family}.png'}")
