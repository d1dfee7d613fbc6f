"""Benchmarks: inference speed of exported runs, training throughput."""
