from fusedops.benchmarks.cli import main

main("benchmarks")
