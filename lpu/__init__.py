"""lpu: compile models onto Groq-style LPU chips and prove the schedules right.

The Python API mirrors the command line::

    import lpu
    m = lpu.parse(open("mlp.lpu").read(), "mlp.lpu")   # verified IR, or LpuError
    print(lpu.print_module(m))                          # canonical text
    outs = lpu.evaluate(m, "main", inputs, weights)     # the numpy reference
"""

from compiler.ir import Module, TensorType
from compiler.parser import parse, parse_file
from compiler.printer import print_module
from compiler.reference import Reference, evaluate
from compiler.verify import verify
from isa.diagnostics import Diagnostic, LpuError
from isa.system import SystemConfig, resolve_system

__all__ = ["Diagnostic", "LpuError", "Module", "Reference", "SystemConfig", "TensorType",
           "evaluate", "parse", "parse_file", "print_module", "resolve_system", "verify"]
__version__ = "0.1.0"
