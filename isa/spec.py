"""The instruction set, declared once: every opcode's unit, operands, timing and meaning.

Everything else (the compiler's scheduler, the emulator, the assembler and
disassembler, the generated reference in docs/isa.md) reads this table. Adding
an instruction is one row here plus its semantics where it executes.

Timing contract (DESIGN.md 4.1), stated here and in the emulator in the same words:
an instruction issued on cycle ``t`` with repeat count ``n`` samples operand
vector ``i`` (0 <= i < n) from its input streams at ``t + dskew + i`` and puts
result vector ``i`` on its output stream at ``t + dfunc + i``. Its queue is
busy, and may issue nothing else, for ``busy_fixed + busy_per_vector * n``
cycles from ``t``. For instructions without an output stream, ``dfunc`` is the
cycle offset at which their effect becomes visible (an SRAM word written, a
weight buffer installed).

The numbers are ours: Groq never published per-instruction latencies
(shared/reference/groq-tsp.md section 2.1). They are chosen to be plausible:
simple ALU operations take 2 cycles, multiplies 3, transcendentals 6-8, the
systolic matrix pass 24, a weight install 20 (the TSP reloads all four planes
in under 40 cycles).
"""

from __future__ import annotations

import enum
import functools
import re
from dataclasses import dataclass


class Unit(enum.Enum):
    MEM = "MEM"  # SRAM slices: read, write, gather, scatter
    VXM = "VXM"  # vector ALUs in the centre: elementwise, conversions, transcendentals
    MXM = "MXM"  # matrix units: load weights, install, multiply, accumulate
    SXM = "SXM"  # switch units: shift, rotate, permute, transpose, lane reductions
    C2C = "C2C"  # chip-to-chip links: send, receive
    ICU = "ICU"  # instruction control, valid on every queue: nop, sync, notify


# Element types, in encoding order. The index of a dtype is its encoding in a `dtype` field.
DTYPES: tuple[str, ...] = ("f32", "f16", "bf16", "i8", "i32", "bool")
DTYPE_BYTES: dict[str, int] = {"f32": 4, "f16": 2, "bf16": 2, "i8": 1, "i32": 4, "bool": 1}

# Named values of enumerated fields, in encoding order.
ENUMS: dict[str, tuple[str, ...]] = {
    "mm_mode": ("emit", "acc_set", "acc_add"),
    "reduce": ("sum", "max"),
}


@dataclass(frozen=True)
class FieldSpec:
    """One operand field an instruction can have."""

    name: str
    kind: str  # "stream" | "addr" | "dtype" | "imm" | "int" | "link" | "enum:<name>"
    role: str  # "in" (a stream read), "out" (a stream written) or "arg" (a plain value)
    doc: str


# fmt: off
FIELDS: dict[str, FieldSpec] = {f.name: f for f in (
    FieldSpec("a",    "stream",       "in",  "first operand stream"),
    FieldSpec("b",    "stream",       "in",  "second operand stream"),
    FieldSpec("c",    "stream",       "in",  "condition stream (bool vectors)"),
    FieldSpec("idx",  "stream",       "in",  "address stream: lane 0 of vector i holds a word offset"),
    FieldSpec("dst",  "stream",       "out", "result stream"),
    FieldSpec("addr", "addr",         "arg", "first SRAM word of the slice"),
    FieldSpec("step", "int",          "arg", "words from one vector to the next (0 repeats a word)"),
    FieldSpec("dt",   "dtype",        "arg", "element type of the operands and result"),
    FieldSpec("to",   "dtype",        "arg", "element type converted to"),
    FieldSpec("imm",  "imm",          "arg", "immediate value (an f32, or an integer for integer dt)"),
    FieldSpec("k",    "int",          "arg", "lane distance (positive: towards higher lanes)"),
    FieldSpec("kof",  "int",          "arg", "first activation lane of the K-window a matrix pass uses"),
    FieldSpec("lane", "int",          "arg", "source lane"),
    FieldSpec("map",  "int",          "arg", "index of a lane permutation in the program's map table"),
    FieldSpec("row",  "int",          "arg", "first row of the weight shadow buffer"),
    FieldSpec("slot", "int",          "arg", "first accumulator slot"),
    FieldSpec("mode", "enum:mm_mode", "arg", "emit the products, set or add into the accumulator"),
    FieldSpec("red",  "enum:reduce",  "arg", "reduction"),
    FieldSpec("link", "link",         "arg", "chip-to-chip link of this chip"),
)}
# fmt: on


@dataclass(frozen=True)
class OpSpec:
    """One row of the ISA table."""

    code: int  # stable numeric opcode used in program files
    mnemonic: str
    unit: Unit
    operands: tuple[str, ...]  # field names, in assembly order
    dskew: int  # operand vector i is sampled at t + dskew + i
    dfunc: int  # result vector i leaves at t + dfunc + i (or: effect visible at t + dfunc)
    busy_fixed: int  # queue busy for busy_fixed + busy_per_vector * n cycles
    busy_per_vector: int
    semantics: str  # one line

    @functools.cached_property
    def inputs(self) -> tuple[str, ...]:
        """The stream fields this instruction reads."""
        return tuple(f for f in self.operands if FIELDS[f].role == "in")

    @functools.cached_property
    def output(self) -> str | None:
        """The stream field this instruction writes, if any."""
        outs = [f for f in self.operands if FIELDS[f].role == "out"]
        return outs[0] if outs else None

    def busy_cycles(self, n: int) -> int:
        return self.busy_fixed + self.busy_per_vector * n


def op(code, mnemonic, unit, dskew, dfunc, busy, operands, semantics) -> OpSpec:
    fixed, per_vector = busy
    return OpSpec(code, mnemonic, unit, tuple(operands.split()), dskew, dfunc, fixed, per_vector,
                  semantics)


M, V, X, S, C, I = Unit.MEM, Unit.VXM, Unit.MXM, Unit.SXM, Unit.C2C, Unit.ICU

# fmt: off
OPS: tuple[OpSpec, ...] = (
    # code mnemonic    unit dskew dfunc busy    operands          semantics
    op(0x01, "nop",     I, 0,  0,  (0, 1),  "",               "idle this queue for n cycles"),
    op(0x02, "sync",    I, 0,  0,  (1, 0),  "",               "park this queue until a notify on the same chip"),
    op(0x03, "notify",  I, 0,  1,  (1, 0),  "",               "release every parked queue of this chip on t + 1"),

    op(0x10, "read",    M, 0,  2,  (0, 1),  "addr step dst dt", "dst[i] = vector at word addr + i * step (a dt vector spans bytes(dt) words)"),
    op(0x11, "write",   M, 1,  2,  (0, 1),  "addr step a dt", "vector at word addr + i * step = a[i]"),
    op(0x12, "gather",  M, 1,  3,  (0, 1),  "addr step idx dst dt", "dst[i] = vector at word addr + idx[i][0] * step + i * bytes(dt)"),
    op(0x13, "scatter", M, 1,  2,  (0, 1),  "addr step idx a dt", "vector at word addr + idx[i][0] * step + i * bytes(dt) = a[i]"),

    op(0x20, "mov",     V, 1,  2,  (0, 1),  "a dst dt",       "dst = a"),
    op(0x21, "splat",   V, 0,  1,  (0, 1),  "imm dst dt",     "dst = imm in every lane"),
    op(0x22, "add",     V, 1,  2,  (0, 1),  "a b dst dt",     "dst = a + b (integers wrap)"),
    op(0x23, "sub",     V, 1,  2,  (0, 1),  "a b dst dt",     "dst = a - b (integers wrap)"),
    op(0x24, "mul",     V, 1,  3,  (0, 1),  "a b dst dt",     "dst = a * b (integers wrap)"),
    op(0x25, "div",     V, 1,  8,  (0, 1),  "a b dst dt",     "dst = a / b (floats only)"),
    op(0x26, "max",     V, 1,  2,  (0, 1),  "a b dst dt",     "dst = max(a, b)"),
    op(0x27, "min",     V, 1,  2,  (0, 1),  "a b dst dt",     "dst = min(a, b)"),
    op(0x28, "addi",    V, 1,  2,  (0, 1),  "a imm dst dt",   "dst = a + imm"),
    op(0x29, "muli",    V, 1,  3,  (0, 1),  "a imm dst dt",   "dst = a * imm"),
    op(0x2A, "neg",     V, 1,  2,  (0, 1),  "a dst dt",       "dst = -a"),
    op(0x2B, "relu",    V, 1,  2,  (0, 1),  "a dst dt",       "dst = max(a, 0)"),
    op(0x2C, "exp",     V, 1,  6,  (0, 1),  "a dst dt",       "dst = e ** a"),
    op(0x2D, "log",     V, 1,  6,  (0, 1),  "a dst dt",       "dst = ln(a)"),
    op(0x2E, "tanh",    V, 1,  6,  (0, 1),  "a dst dt",       "dst = tanh(a)"),
    op(0x2F, "sigmoid", V, 1,  6,  (0, 1),  "a dst dt",       "dst = 1 / (1 + e ** -a)"),
    op(0x30, "erf",     V, 1,  8,  (0, 1),  "a dst dt",       "dst = erf(a)"),
    op(0x31, "sqrt",    V, 1,  5,  (0, 1),  "a dst dt",       "dst = sqrt(a)"),
    op(0x32, "rsqrt",   V, 1,  5,  (0, 1),  "a dst dt",       "dst = 1 / sqrt(a)"),
    op(0x33, "recip",   V, 1,  5,  (0, 1),  "a dst dt",       "dst = 1 / a"),
    op(0x34, "lt",      V, 1,  2,  (0, 1),  "a b dst dt",     "dst = a < b (bool vector)"),
    op(0x35, "gt",      V, 1,  2,  (0, 1),  "a b dst dt",     "dst = a > b (bool vector)"),
    op(0x36, "eq",      V, 1,  2,  (0, 1),  "a b dst dt",     "dst = a == b (bool vector)"),
    op(0x37, "sel",     V, 1,  2,  (0, 1),  "c a b dst dt",   "dst = a where c else b"),
    op(0x38, "cvt",     V, 1,  2,  (0, 1),  "a dst dt to",    "dst = a converted from dt to to (round to nearest even, saturating)"),

    op(0x40, "lw",      X, 1,  2,  (0, 1),  "a row",          "shadow buffer row (row + i) = a[i]"),
    op(0x41, "iw",      X, 0,  20, (20, 0), "",               "move the shadow buffer into the array (usable from t + 20) and clear the shadow buffer"),
    op(0x42, "mm",      X, 1,  24, (0, 1),  "a kof dst slot mode dt to", "p = a[i][kof : kof + K] @ W, K = the dt row limit, summed in f32 (i32 for i8); emit: dst[i] = p as to; acc_set / acc_add: acc[slot + i] = p / += p"),
    op(0x43, "acc",     X, 0,  2,  (0, 1),  "dst slot to",    "dst[i] = acc[slot + i] as to"),

    op(0x50, "shift",   S, 1,  3,  (0, 1),  "a dst k",        "dst[lane] = a[lane - k], zero where out of range"),
    op(0x51, "rot",     S, 1,  3,  (0, 1),  "a dst k",        "dst[lane] = a[(lane - k) mod lanes]"),
    op(0x52, "perm",    S, 1,  3,  (0, 1),  "a dst map",      "dst[lane] = a[maps[map][lane]], or 0 where the map holds -1"),
    op(0x53, "bcast",   S, 1,  3,  (0, 1),  "a dst lane",     "dst = a[lane] in every lane"),
    op(0x54, "trans",   S, 1,  18, (0, 1),  "a dst",          "each 16 vectors transposed as 16x16 blocks per superlane (n a multiple of 16)"),
    op(0x55, "lred",    S, 1,  6,  (0, 1),  "a dst red dt",   "dst = reduction of a over all lanes, in every lane"),

    op(0x60, "send",    C, 1,  2,  (0, 1),  "a link",         "transmit a[i] on link; it arrives after the link latency and serialisation"),
    op(0x61, "recv",    C, 0,  1,  (0, 1),  "link dst",       "dst[i] = the i-th vector received on link"),
)
# fmt: on

BY_MNEMONIC: dict[str, OpSpec] = {s.mnemonic: s for s in OPS}
BY_CODE: dict[int, OpSpec] = {s.code: s for s in OPS}

_MNEMONIC = re.compile(r"^[a-z][a-z0-9_]*$")


class ISATableError(ValueError):
    """The ISA table contradicts itself. Always our bug, never the user's."""


def validate(ops: tuple[OpSpec, ...]) -> None:
    """Check the table for internal consistency; raise ISATableError naming the row."""
    seen_codes: dict[int, str] = {}
    seen_names: set[str] = set()
    for s in ops:
        where = f"ISA row {s.mnemonic!r}"
        if not _MNEMONIC.match(s.mnemonic):
            raise ISATableError(f"{where}: mnemonic must be lower-case letters, digits or '_'")
        if s.mnemonic in seen_names:
            raise ISATableError(f"{where}: mnemonic appears twice")
        seen_names.add(s.mnemonic)
        if not 0 < s.code < 256:
            raise ISATableError(f"{where}: code {s.code} outside 1..255")
        if s.code in seen_codes:
            raise ISATableError(f"{where}: code {s.code:#x} already used by {seen_codes[s.code]!r}")
        seen_codes[s.code] = s.mnemonic
        if not isinstance(s.unit, Unit):
            raise ISATableError(f"{where}: unit {s.unit!r} is not a Unit")
        for f in s.operands:
            if f not in FIELDS:
                raise ISATableError(f"{where}: unknown operand field {f!r}")
        if len(set(s.operands)) != len(s.operands):
            raise ISATableError(f"{where}: an operand field appears twice")
        outs = [f for f in s.operands if FIELDS[f].role == "out"]
        if len(outs) > 1:
            raise ISATableError(f"{where}: more than one output stream")
        if min(s.dskew, s.dfunc, s.busy_fixed, s.busy_per_vector) < 0:
            raise ISATableError(f"{where}: timing numbers must not be negative")
        if s.busy_fixed + s.busy_per_vector == 0:
            raise ISATableError(f"{where}: an instruction must occupy its queue for a cycle")
        if s.inputs and s.dfunc <= s.dskew:
            raise ISATableError(
                f"{where}: dfunc {s.dfunc} must exceed dskew {s.dskew}: a result cannot leave "
                "before its operand arrives"
            )
        if outs and s.dfunc < 1:
            raise ISATableError(f"{where}: a result needs at least one cycle (dfunc >= 1)")
        if s.unit in (Unit.VXM, Unit.MEM) and "dt" not in s.operands:
            raise ISATableError(f"{where}: {s.unit.value} instructions must name their element type (dt)")
        if not s.semantics.strip():
            raise ISATableError(f"{where}: semantics must not be empty")


validate(OPS)
