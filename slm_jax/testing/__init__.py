"""Helpers for the tests and benchmarks (tools/bench_*.py); the library and the product tools never import this.

synthetic_data  slamkit-format inputs shaped like SIMS data (alignments, units, text): shapes, not speech
"""
