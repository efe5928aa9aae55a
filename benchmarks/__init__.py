"""`python -m benchmarks` in a checkout runs fusedops.benchmarks (`--help` says what)."""
