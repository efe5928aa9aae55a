"""Small real data sets that ship inside scikit-learn (diabetes, breast cancer, digits), read
straight from the files in its package folder, and a seeded (stratified) split.

scikit-learn itself is never imported: its compiled modules bring a second OpenMP runtime
(their own libgomp) into the process, beside the one torch and our kernels share."""
import csv
import gzip
import importlib.util
import os
from typing import List, Tuple

import numpy as np
import torch


def data_folder() -> str:
    """scikit-learn's datasets/data folder, found without importing scikit-learn."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("fusedops.data: this data set ships with scikit-learn, which is "
                                "not installed: pip install scikit-learn (or fusedops[examples])")
    folder = os.path.join(list(spec.submodule_search_locations)[0], "datasets", "data")
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"fusedops.data: scikit-learn's data folder {folder} is missing")
    return folder


def _text(name: str) -> str:
    path = os.path.join(data_folder(), name)
    opener = gzip.open if name.endswith(".gz") else open
    with opener(path, "rt") as f:
        return f.read()


def load_diabetes() -> Tuple[torch.Tensor, torch.Tensor]:
    """442 patients: 10 raw features (age, sex, BMI, blood pressure, six serum measurements)
    [442, 10] and the disease progression a year later [442], float64."""
    X = np.loadtxt(_text("diabetes_data_raw.csv.gz").splitlines())
    y = np.loadtxt(_text("diabetes_target.csv.gz").splitlines())
    return torch.from_numpy(X), torch.from_numpy(y)


def load_breast_cancer() -> Tuple[torch.Tensor, torch.Tensor]:
    """569 tumours: 30 features [569, 30] float64 and labels [569] (0 malignant, 1 benign)."""
    rows = list(csv.reader(_text("breast_cancer.csv").splitlines()))[1:]
    data = np.array(rows, dtype=np.float64)
    return torch.from_numpy(data[:, :-1]), torch.from_numpy(data[:, -1]).long()


def load_digits() -> Tuple[torch.Tensor, torch.Tensor]:
    """1797 handwritten digits: 8x8 images of pixel values 0..16 as [1797, 64] float64, labels
    [1797] int64."""
    data = np.loadtxt(_text("digits.csv.gz").splitlines(), delimiter=",")
    return torch.from_numpy(data[:, :-1]), torch.from_numpy(data[:, -1]).long()


def split(y: torch.Tensor, fractions: List[float], seed: int,
          stratify: bool = True) -> List[torch.Tensor]:
    """Indices of len(fractions) + 1 disjoint parts: part i takes fractions[i] of the rows
    (of each class, with stratify), the last part the rest; seeded."""
    g = torch.Generator().manual_seed(seed)
    groups = [torch.nonzero(y == c).flatten() for c in torch.unique(y)] if stratify else \
        [torch.arange(len(y))]
    parts = [[] for _ in range(len(fractions) + 1)]
    for idx in groups:
        idx = idx[torch.randperm(len(idx), generator=g)]
        start = 0
        for i, f in enumerate(fractions):
            n = int(round(f * len(idx)))
            parts[i].append(idx[start:start + n])
            start += n
        parts[-1].append(idx[start:])
    return [torch.cat(p)[torch.randperm(sum(len(t) for t in p), generator=g)] for p in parts]
