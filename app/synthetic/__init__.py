"""Synthetic multicentre data for load tests, benchmarks and demonstrations.

`generator` invents plausible cases of the registry (as raw form submissions, exactly what
a coordinator would type); `bulk` writes them with the write path's semantics (parsing,
branching, calculations, data-quality warnings, hash-chained audit rows) but in batched
INSERTs, so 100,000 records take minutes instead of hours. `flask seed-synthetic` (`cli`)
drives both. Synthetic records live at their own sites (SYN001, ...) and are audited with
source "synthetic", so they can never be mistaken for real cases.
"""
