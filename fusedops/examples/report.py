"""What every example shows: a progress bar, its metric against the goal, and a loss plot
under the output folder (a PNG with matplotlib; otherwise a CSV and a note saying so)."""
import csv
import os
import sys
from dataclasses import dataclass
from typing import Dict, List


class Progress:
    """A progress bar over `total` steps: tqdm's when it is installed, else a line of text
    redrawn in place (or printed every tenth of the way when the output is not a terminal)."""

    def __init__(self, total: int, desc: str, enabled: bool = True):
        self.total, self.desc, self.n, self.enabled = total, desc, 0, enabled
        self.postfix = ""
        try:
            from tqdm import tqdm
        except ImportError:
            tqdm = None
        self.bar = tqdm(total=total, desc=desc, leave=False) if tqdm and enabled else None

    def update(self, n: int = 1, **info) -> None:
        self.n += n
        text = " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                        for k, v in info.items())
        if self.bar is not None:
            self.bar.update(n)
            if text:
                self.bar.set_postfix_str(text, refresh=False)
        elif self.enabled:
            step = max(1, self.total // 10)
            if sys.stdout.isatty():
                print(f"\r{self.desc}: {self.n}/{self.total} {text}", end="", flush=True)
            elif self.n % step == 0 or self.n == self.total:
                print(f"{self.desc}: {self.n}/{self.total} {text}", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and sys.stdout.isatty():
            print()


class LossLog:
    """Loss curves by name ("train", "val", ...), each a list of (step, loss)."""

    def __init__(self):
        self.curves: Dict[str, List[tuple]] = {}

    def add(self, name: str, step: int, loss: float) -> None:
        self.curves.setdefault(name, []).append((step, float(loss)))

    def save(self, folder: str, title: str) -> str:
        """Writes loss.png (matplotlib) or loss.csv and returns a line saying which."""
        os.makedirs(folder, exist_ok=True)
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            path = os.path.join(folder, "loss.csv")
            with open(path, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["curve", "step", "loss"])
                for name, pts in self.curves.items():
                    w.writerows((name, s, v) for s, v in pts)
            return f"loss curve: {path} (matplotlib is not installed, so a CSV, not a plot)"
        fig, ax = plt.subplots(figsize=(6, 4))
        for name, pts in self.curves.items():
            ax.plot([s for s, _ in pts], [v for _, v in pts], label=name)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_yscale("log")
        ax.set_title(title)
        ax.legend()
        fig.tight_layout()
        path = os.path.join(folder, "loss.png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return f"loss plot: {path}"


@dataclass
class Result:
    """One metric of a run against its goal."""

    name: str  # what was measured, e.g. "test accuracy (CNN.small)"
    value: float
    goal: float
    higher_is_better: bool = True
    note: str = ""  # how the goal was set, when it is not a fixed number

    @property
    def met(self) -> bool:
        return self.value >= self.goal if self.higher_is_better else self.value <= self.goal

    def line(self, checked: bool = True) -> str:
        op = ">=" if self.higher_is_better else "<="
        verdict = ("goal met" if self.met else "GOAL MISSED") if checked else "smoke run, goal not checked"
        note = f"; {self.note}" if self.note else ""
        return f"{self.name}: {self.value:.4f} (goal {op} {self.goal:.4f}{note}): {verdict}"
