"""Benchmarks measured against the machine's limits and the usual alternatives.

Every figure is a same-run ratio (these machines are shared and noisy); the
torch references run with OMP_WAIT_POLICY=PASSIVE and one thread per core,
which `launch/benchmark.py` sets before torch is imported.
"""
