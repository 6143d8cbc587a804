"""Ahead-of-time compilation of every kernel for real GPU targets, on a machine with no GPU.

`cases` lists the launches (kernel, config, dtype, model shape), `specialize` turns launch
arguments into what `triton.compile` takes, `compile` builds a case for a `targets` entry
and `inspect_binary` reads the result: shared memory, registers, spills, MMA kinds, load
width and pipelining. `python -m benchmarks.kernel_report` prints the full table;
tests/kernels/test_compile_targets.py holds CI to it.
"""
