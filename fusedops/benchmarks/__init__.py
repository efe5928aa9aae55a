"""Benchmarks of fusedops against its peers: `python -m fusedops.benchmarks --help` (in a
checkout also `python -m benchmarks`).

A family is a module bench_<family>.py of this package (see harness.py); FAMILIES lists them.
"""
import pkgutil

FAMILIES = sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules(__path__)
                  if m.name.startswith("bench_"))
