"""Benchmarks (installed as tinynet.bench): ratios measured side by side in one run.

    python -m tinynet bench [--suite cpu|stack|gpu|all] [--quick] [--json PATH] [--plot PATH]

run.py        the command line: runs the suites, prints the markdown, writes JSON and plot
cpu_suite.py  S1, S4, S7 through tinynet.ops beside handwritten NumPy and PyTorch CPU
stack_suite.py  S7 for 256 models at once beside one at a time, PyTorch bmm and JAX vmap
sweep_bench.py  a sweep in this process beside a 2-worker Dask cluster (runs alone)
overhead.py   per-call overhead of each op at its smallest size (also runs alone)
numba_cpu_tuning.py  the numba-cpu size crossovers and its compile cost (runs alone)
gpu_suite.py  S7 stack, per-step host time, dense, lstm and launch overhead on the GPU,
              beside PyTorch CUDA
peaks.py      the GEMM and copy ceilings every floor is measured against
work.py       FLOPs and bytes of each op, counted
timing.py     medians of interleaved, calibrated blocks; CUDA events
report.py     rows, ratios, the markdown, the targets, the plot
collect.py    assembles bench/gpu_check.sh's result file (results/README.md)
gpu_check.sh  the one prepared run of GPU tests and benchmarks on a machine with a GPU
"""
