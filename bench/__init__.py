"""Benchmarks (installed as tinynet.bench): ratios measured side by side in one run."""
