"""Benchmark commands (bench/README.md). Not tests: nothing here runs under pytest."""
