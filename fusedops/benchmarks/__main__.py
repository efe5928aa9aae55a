from .cli import main

main("fusedops.benchmarks")
