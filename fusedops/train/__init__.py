"""GPT training program: `python -m fusedops.train --help` (also the `fusedops-train` command)."""
from .trainer import main, parse_args, train

__all__ = ["main", "parse_args", "train"]
