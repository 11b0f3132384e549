"""Casebook's benchmark suite: `make bench` (not part of `make test`).

Every benchmark times Casebook and the nearest raw-database baseline in the same run, on
the same data, alternating between the two, and reports both with their ratio: the cost
of what Casebook adds (validation, branching, audit chain, access checks, rendering) is
then a number, not an adjective. Results are kept per database in `bench/results/` and
rendered into BENCHMARKS.md with the machine they ran on.
"""
