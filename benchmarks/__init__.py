"""Benchmarks of fusedops against its peers; run `python -m benchmarks --help`."""
