"""The machine, declared once: opcodes, units, timing, chip and system parameters.

`isa` imports nothing else of lpu's; the compiler, the emulator and the front
door all read the machine from here.
"""

from isa.chip import CHIP_PRESETS, TINY, TSP, ChipConfig, ChipConfigError, Slice
from isa.diagnostics import Diagnostic, Loc, LpuError, Source, error
from isa.spec import BY_CODE, BY_MNEMONIC, DTYPE_BYTES, DTYPES, ENUMS, FIELDS, OPS, OpSpec, Unit
from isa.system import SystemConfig, load_system, named_system, parse_system, resolve_system

__all__ = [
    "BY_CODE", "BY_MNEMONIC", "CHIP_PRESETS", "DTYPES", "DTYPE_BYTES", "ENUMS", "FIELDS", "OPS",
    "TINY", "TSP", "ChipConfig", "ChipConfigError", "Diagnostic", "Loc", "LpuError", "OpSpec",
    "Slice", "Source", "SystemConfig", "Unit", "error", "load_system", "named_system",
    "parse_system", "resolve_system",
]
