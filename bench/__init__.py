"""Benchmarks for seqserve: the naive baseline, load generators and the side-by-side run (issue #6)."""
