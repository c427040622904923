"""lpu: compile models onto Groq-style LPU chips and prove the schedules right.

The Python API mirrors the command line::

    import lpu
    m = lpu.parse(open("mlp.lpu").read(), "mlp.lpu")   # verified IR, or LpuError
    print(lpu.print_module(m))                          # canonical text
    outs = lpu.evaluate(m, "main", inputs, weights)     # the numpy reference
    prog = lpu.compile(m, lpu.resolve_system("tsp"), weights)
    r = lpu.report(prog)                                # cycles, lower bound, critical path, ...
    t = lpu.instructions(prog).where(unit="MXM")        # the instruction table, filtered
    json.dump(lpu.trace(prog), open("trace.json", "w")) # Perfetto / chrome://tracing
"""

from compiler.backend import compile_module as compile
from compiler.ir import Module, TensorType
from compiler.parser import parse, parse_file
from compiler.printer import print_module
from compiler.reference import Reference, evaluate
from compiler.verify import verify
from emulator.run import Emulator, RunResult
from isa.diagnostics import Diagnostic, LpuError
from isa.program import Program
from isa.program import load as load_program
from isa.program import save as save_program
from isa.system import SystemConfig, resolve_system
from lpu.report import Report, report
from lpu.table import Table, instructions
from lpu.trace import trace_events as trace

__all__ = [
    "Diagnostic",
    "Emulator",
    "LpuError",
    "Module",
    "Program",
    "Reference",
    "Report",
    "RunResult",
    "SystemConfig",
    "Table",
    "TensorType",
    "compile",
    "evaluate",
    "instructions",
    "load_program",
    "parse",
    "parse_file",
    "print_module",
    "report",
    "resolve_system",
    "save_program",
    "trace",
    "verify",
]
__version__ = "0.1.0"
