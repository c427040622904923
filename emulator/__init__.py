"""The emulator: executes a program file cycle by cycle (numba) and judges it.

It imports `isa` only, never the compiler, so that it stays an independent
judge of the compiler's output. The execution engine arrives with the one-chip
work (issue 4); until then this package holds nothing else.
"""
