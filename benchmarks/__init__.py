"""Benchmarks behind every speed claim of the cookbook (run: make bench)."""
