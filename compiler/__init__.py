"""The compiler: .lpu text -> verified IR -> (later) partitions, tiles, a schedule and a program file.

It imports `isa` and never the emulator: the emulator judges its output
independently.
"""

from compiler.ir import Commit, Global, Graph, Module, Op, TensorType, Value
from compiler.parser import parse, parse_file
from compiler.printer import print_module

__all__ = [
    "Commit",
    "Global",
    "Graph",
    "Module",
    "Op",
    "TensorType",
    "Value",
    "parse",
    "parse_file",
    "print_module",
]
