"""The program's text form: `lpu inspect` prints it, `lpu asm` reads it back into the same program.

    lpuprog 1
    system tiny
    entry main
    input main x f16[2, 8] @ 0 mem.w0 0        # role [graph] name type @ chip slice word
    output main out0 f16[2, 8] @ 0 mem.e0 0
    data 0 mem.w0 0 : 1.0 2.0 ...               # one image vector: chip slice word : lanes values
    #   id entry  cycle chip queue      instruction
         0 main       0    0 mem.w0     read addr=0 dst=E1 dt=f16 n=2 <- mem:image@0
         1 main       4    0 vxm.q0     add a=E1 b=E1 dst=E2 dt=f16 n=2 <- a:#0 b:#0

Field syntax follows the ISA table: streams are E<k> / W<k>, dtypes and enumerations
by name, `imm` as a number, everything else an integer. After `<-` come the intended
sources: `slot:#ID` (vector i comes from instruction ID's vector i), `slot:#ID+K`
(its vector i + K), `slot:#ID*S+K` (its vector i * S + K), `slot:image@W` (vector 0
from image word W, the next ones following it) or `slot:unchecked`. Lines starting
with `#` are comments.
"""

from __future__ import annotations

import json
import re

import numpy as np

from isa.diagnostics import Loc, LpuError, Source, error
from isa.program import (
    ADDRESS,
    IMAGE,
    MAX_FIELDS,
    MAX_SOURCES,
    NONE,
    UNCHECKED,
    Placement,
    Program,
    ProgramError,
    check,
    check_image,
    source_slots,
    system_from_dict,
    system_to_dict,
)
from isa.spec import BY_MNEMONIC, DTYPES, ENUMS, FIELDS, OpSpec
from isa.system import SystemConfig, named_system

_TYPE = re.compile(r"^(\w+)\[([0-9, ]*)\]$")


def stream_name(v: int, streams: int) -> str:
    return f"{'EW'[v // streams]}{v % streams}"


def format_field(name: str, v: int, streams: int) -> str:
    kind = FIELDS[name].kind
    if kind == "stream":
        return stream_name(v, streams)
    if kind == "dtype":
        return DTYPES[v] if 0 <= v < len(DTYPES) else str(v)
    if kind.startswith("enum:"):
        values = ENUMS[kind[5:]]
        return values[v] if 0 <= v < len(values) else str(v)
    if kind == "imm":
        x = float(np.int64(v).view(np.float64))
        return str(int(x)) if x.is_integer() and abs(x) < 2**53 else repr(x)
    return str(v)


def encode_imm(x: float) -> int:
    return int(np.float64(x).view(np.int64))


def format_source(src: int, off: int, step: int = 1) -> str:
    if src == IMAGE:
        return f"image@{off}"
    if src == UNCHECKED:
        return "unchecked"
    if src == ADDRESS:
        return f"word@{off}"
    return f"#{src}" + (f"*{step}" if step != 1 else "") + (f"{off:+d}" if off else "")


def instruction_text(p: Program, i: int) -> str:
    """`mnemonic field=value ... n=N <- slot:source ...` for instruction i."""
    spec = p.spec(i)
    streams = p.system.chip.streams_per_direction
    parts = [spec.mnemonic]
    parts += [
        f"{name}={format_field(name, int(p.fields[i, k]), streams)}" for k, name in enumerate(spec.operands)
    ]
    parts.append(f"n={int(p.n[i])}")
    sources = [
        f"{slot}:{format_source(int(p.src[i, k]), int(p.src_off[i, k]), int(p.src_step[i, k]))}"
        for k, slot in enumerate(source_slots(spec))
        if p.src[i, k] != NONE
    ]
    if sources:
        parts.append("<- " + " ".join(sources))
    return " ".join(parts)


def _system_line(s: SystemConfig) -> str:
    """`system NAME` when the system is exactly a named one, else its full description as JSON."""
    try:
        named = system_to_dict(named_system(s.name))
    except LpuError:  # not a name we know: a system from a file
        named = None
    if named == system_to_dict(s):
        return f"system {s.name}"
    return "system " + json.dumps(system_to_dict(s), sort_keys=True)


def _type_text(dtype: str, shape) -> str:
    return f"{dtype}[{', '.join(str(d) for d in shape)}]"


def disassemble(p: Program, data: bool = True, order: np.ndarray | None = None, header: bool = True) -> str:
    """The listing; `header=False` gives the instruction lines alone. Repeated blocks (a timing-only
    program) are written out: a listing names every instruction."""
    if len(p.repeats):
        assert order is None, "an order names rows of the expanded program"
        p = p.expanded()
    chip = p.system.chip
    queues = chip.queue_table()
    mem_names = chip.mem_slice_names()
    if not header:
        order = listing_order(p) if order is None else order
        return "".join(_instruction_line(p, int(i), queues) + "\n" for i in order)
    lines = ["lpuprog 1", _system_line(p.system)]
    lines += [f"entry {e}" for e in p.entries]
    for pl in p.placements:
        graph = f"{pl.graph} " if pl.role in ("input", "output") else ""
        part = " part " + ",".join(f"{a}:{b}:{c}" for a, b, c in pl.cuts()) if pl.part else ""
        lines.append(
            f"{pl.role} {graph}{pl.name} {_type_text(pl.dtype, pl.shape)} @ {pl.chip} {pl.slice} {pl.word}"
            + part
        )
    for k in range(len(p.maps)):
        lines.append(f"map {k} : " + " ".join(str(int(v)) for v in p.maps[k]))
    if data:
        for j in range(len(p.image_word)):
            values = " ".join(_number(v) for v in p.image_data[j])
            lines.append(
                f"data {int(p.image_chip[j])} {mem_names[int(p.image_slice[j])]} "
                f"{int(p.image_word[j])} : {values}"
            )
    elif len(p.image_word):
        lines.append(f"# {len(p.image_word)} SRAM image vectors not shown (lpu inspect --data shows them)")
    lines.append("#   id entry      cycle chip queue        instruction")
    if order is None:
        order = listing_order(p)
    for i in order:
        lines.append(_instruction_line(p, int(i), queues))
    return "\n".join(lines) + "\n"


def _instruction_line(p: Program, i: int, queues) -> str:
    return (
        f"{i:6d} {p.entries[int(p.entry[i])]:<10} {int(p.cycle[i]):6d} {int(p.chip[i]):4d} "
        f"{queues[int(p.queue[i])].name:<12} {instruction_text(p, i)}"
    )


def listing_order(p: Program) -> np.ndarray:
    """Instructions in time order: entry, cycle, chip, queue, index."""
    return np.lexsort((np.arange(len(p)), p.queue, p.chip, p.cycle, p.entry))


def _number(v: float) -> str:
    return str(int(v)) if float(v).is_integer() and abs(v) < 2**53 else repr(float(v))


# -- the assembler -------------------------------------------------------------------------------


def assemble(text: str, filename: str = "<listing>") -> Program:
    source = Source(filename, text)
    return _Assembler(source).run()


class _Assembler:
    def __init__(self, source: Source):
        self.source = source
        self.system: SystemConfig | None = None

    def fail(self, message: str, line: int, col: int = 1) -> LpuError:
        return error(message, Loc(self.source, line, col))

    def col(self, line_text: str, token: str, start: int = 0) -> int:
        at = line_text.find(token, start)
        return at + 1 if at >= 0 else 1

    def run(self) -> Program:
        entries: list[str] = []
        placements: list[Placement] = []
        maps: dict[int, list[int]] = {}
        images: list[tuple[int, int, int, list[float]]] = []
        rows: dict[int, tuple] = {}
        seen_header = False
        for number, raw in enumerate(self.source.text.splitlines(), start=1):
            line = raw.strip()
            if not line or (line.startswith("#") and not re.match(r"#\d", line)):
                continue
            word = line.split()[0]
            if not seen_header:
                if line != "lpuprog 1":
                    if word == "lpuprog":
                        raise self.fail(
                            f"this listing is format {line[8:].strip()!r}; this lpu reads 1", number
                        )
                    raise self.fail("a listing starts with 'lpuprog 1'", number)
                seen_header = True
                continue
            if word == "system":
                self.system = self.parse_system(line[6:].strip(), number)
            elif word == "entry":
                entries.append(self.expect_name(line[5:].strip(), number, raw))
            elif word in ("param", "state", "input", "output"):
                placements.append(self.parse_placement(word, line, number, raw))
            elif word == "map":
                k, values = self.parse_map(line, number, raw)
                maps[k] = values
            elif word == "data":
                images.append(self.parse_data(line, number, raw))
            elif word.isdigit():
                i, row = self.parse_instruction(line, number, raw, entries)
                if i in rows:
                    raise self.fail(f"instruction id {i} appears twice", number, self.col(raw, word))
                rows[i] = row
            else:
                raise self.fail(
                    f"unknown line kind '{word}'; expected system, entry, param, state, input, "
                    "output, map, data or an instruction",
                    number,
                    self.col(raw, word),
                )
        if not seen_header:
            raise self.fail("empty listing: expected 'lpuprog 1'", 1)
        if self.system is None:
            raise self.fail("the listing names no system (a 'system NAME' line)", 1)
        return self.build(entries, placements, maps, images, rows)

    def parse_system(self, rest: str, number: int) -> SystemConfig:
        try:
            if rest.startswith("{"):
                return system_from_dict(json.loads(rest))
            return named_system(rest)
        except LpuError as e:
            raise self.fail(e.diagnostics[0].message, number, 8) from None
        except (ValueError, KeyError, TypeError) as e:
            raise self.fail(f"malformed system description: {e}", number, 8) from None

    def expect_name(self, name: str, number: int, raw: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", name):
            raise self.fail(f"'{name}' is not a name", number, self.col(raw, name))
        return name

    def need_system(self, number: int) -> SystemConfig:
        if self.system is None:
            raise self.fail("the 'system' line must come before this line", number)
        return self.system

    def parse_placement(self, role: str, line: str, number: int, raw: str) -> Placement:
        m = re.fullmatch(
            r"(\w+)\s+(?:(\w+)\s+)?([\w.]+)\s+(\w+\[[0-9, ]*\])\s+@\s+(\d+)\s+([\w.]+)\s+(\d+)"
            r"(?:\s+part\s+(\d+:\d+:\d+(?:,\d+:\d+:\d+)*))?",
            line,
        )
        if not m or (role in ("input", "output")) != (m.group(2) is not None):
            form = (
                "ROLE GRAPH NAME TYPE @ CHIP SLICE WORD [part AXIS:START:STOP]"
                if role in ("input", "output")
                else "ROLE NAME TYPE @ CHIP SLICE WORD [part AXIS:START:STOP]"
            )
            raise self.fail(f"expected '{form}'", number, self.col(raw, role))
        t = _TYPE.match(m.group(4))
        dtype = t.group(1)
        if dtype not in DTYPES:
            raise self.fail(f"unknown dtype '{dtype}'", number, self.col(raw, m.group(4)))
        shape = tuple(int(d) for d in t.group(2).split(",") if d.strip())
        part = tuple(int(v) for cut in m.group(8).split(",") for v in cut.split(":")) if m.group(8) else None
        cuts = [part[k : k + 3] for k in range(0, len(part or ()), 3)]
        axes = [c[0] for c in cuts]
        if len(set(axes)) != len(axes) or not all(
            a < len(shape) and b < c and c - b == shape[a] for a, b, c in cuts
        ):
            raise self.fail(
                f"'part {m.group(8)}' must name distinct axes of {m.group(4)}, each with a range as "
                "long as that axis",
                number,
                self.col(raw, "part"),
            )
        return Placement(
            role,
            m.group(2) or "",
            m.group(3),
            dtype,
            shape,
            int(m.group(5)),
            m.group(6),
            int(m.group(7)),
            part,
        )

    def parse_map(self, line: str, number: int, raw: str) -> tuple[int, list[int]]:
        m = re.fullmatch(r"map\s+(\d+)\s*:\s*([-0-9 ]*)", line)
        if not m:
            raise self.fail("expected 'map K : LANE LANE ...'", number)
        lanes = self.need_system(number).chip.lanes
        values = [int(v) for v in m.group(2).split()]
        if len(values) != lanes or not all(-1 <= v < lanes for v in values):
            raise self.fail(
                f"map {m.group(1)} must give each of the {lanes} lanes a source lane (0..{lanes - 1}) "
                "or -1 (zero)",
                number,
                self.col(raw, ":") + 2,
            )
        return int(m.group(1)), values

    def parse_data(self, line: str, number: int, raw: str):
        m = re.fullmatch(r"data\s+(\d+)\s+([\w.]+)\s+(\d+)\s*:\s*(.*)", line)
        if not m:
            raise self.fail("expected 'data CHIP SLICE WORD : VALUES'", number)
        chip = self.need_system(number).chip
        if m.group(2) not in chip.mem_slice_names():
            raise self.fail(
                f"'{m.group(2)}' is not a MEM slice of a {chip.name} chip", number, self.col(raw, m.group(2))
            )
        try:
            values = [float(v) for v in m.group(4).split()]
        except ValueError as e:
            raise self.fail(f"bad number in data: {e}", number, self.col(raw, ":") + 2) from None
        if len(values) != chip.lanes:
            raise self.fail(
                f"data needs {chip.lanes} values (one per lane), got {len(values)}",
                number,
                self.col(raw, ":") + 2,
            )
        return int(m.group(1)), chip.mem_slice_index(m.group(2)), int(m.group(3)), values

    def parse_instruction(self, line: str, number: int, raw: str, entries: list[str]):
        system = self.need_system(number)
        chip = system.chip
        head, _, sources_text = line.partition("<-")
        tokens = head.split()
        if len(tokens) < 6:
            raise self.fail("expected 'ID ENTRY CYCLE CHIP QUEUE MNEMONIC FIELD=VALUE ... n=N'", number)
        ident, entry, cycle, chip_no, queue_name, mnemonic, *rest = tokens
        if entry not in entries:
            raise self.fail(
                f"unknown entry '{entry}'; declare it with 'entry {entry}'", number, self.col(raw, entry)
            )
        for tok, what in ((cycle, "cycle"), (chip_no, "chip")):
            if not tok.isdigit():
                raise self.fail(
                    f"{what} must be a non-negative integer, got '{tok}'", number, self.col(raw, tok)
                )
        queues = {q.name: q for q in chip.queue_table()}
        if queue_name not in queues:
            raise self.fail(
                f"'{queue_name}' is not a queue of a {chip.name} chip", number, self.col(raw, queue_name)
            )
        if mnemonic not in BY_MNEMONIC:
            raise self.fail(f"unknown instruction '{mnemonic}'", number, self.col(raw, mnemonic))
        spec = BY_MNEMONIC[mnemonic]
        values: dict[str, int] = {}
        n = None
        for tok in rest:
            key, eq, text = tok.partition("=")
            col = self.col(raw, tok)
            if not eq:
                raise self.fail(f"expected FIELD=VALUE, got '{tok}'", number, col)
            if key == "n":
                if not text.isdigit():
                    raise self.fail(f"n must be a positive integer, got '{text}'", number, col)
                n = int(text)
                continue
            if key not in spec.operands:
                raise self.fail(
                    f"{mnemonic} has no field '{key}' (it has {' '.join(spec.operands) or 'none'})",
                    number,
                    col,
                )
            if key in values:
                raise self.fail(f"field '{key}' is given twice", number, col)
            values[key] = self.parse_value(key, text, chip.streams_per_direction, number, col)
        missing = [f for f in spec.operands if f not in values]
        if missing:
            raise self.fail(
                f"{mnemonic} needs field{'s' if len(missing) > 1 else ''} {', '.join(missing)}",
                number,
                self.col(raw, mnemonic),
            )
        if n is None:
            raise self.fail(f"{mnemonic} needs a repeat count n=N", number, self.col(raw, mnemonic))
        fields = [values[f] for f in spec.operands] + [0] * (MAX_FIELDS - len(spec.operands))
        src = [NONE] * MAX_SOURCES
        off = [0] * MAX_SOURCES
        stp = [1] * MAX_SOURCES
        slots = source_slots(spec)
        for tok in sources_text.split():
            col = self.col(raw, tok, raw.find("<-"))
            slot, colon, ref = tok.partition(":")
            if not colon or slot not in slots:
                raise self.fail(
                    f"expected SLOT:SOURCE with SLOT one of {', '.join(slots) or '(none)'}, got '{tok}'",
                    number,
                    col,
                )
            k = slots.index(slot)
            m = re.fullmatch(r"#(\d+)(?:\*(\d+))?([+-]\d+)?", ref)
            image = re.fullmatch(r"(image|word)@(\d+)", ref)
            if image:
                src[k], off[k] = (IMAGE if image.group(1) == "image" else ADDRESS), int(image.group(2))
            elif ref == "unchecked":
                src[k] = UNCHECKED
            elif m:
                src[k], stp[k], off[k] = int(m.group(1)), int(m.group(2) or 1), int(m.group(3) or 0)
            else:
                raise self.fail(
                    f"a source is #ID, #ID+K, #ID*S+K, image@WORD or unchecked, got '{ref}'", number, col
                )
        row = (
            entries.index(entry),
            int(chip_no),
            queues[queue_name].index,
            int(cycle),
            spec.code,
            n,
            fields,
            src,
            off,
            number,
            stp,
        )
        return int(ident), row

    def parse_value(self, key: str, text: str, streams: int, number: int, col: int) -> int:
        kind = FIELDS[key].kind
        if kind == "stream":
            m = re.fullmatch(r"([EW])(\d+)", text)
            if not m or int(m.group(2)) >= streams:
                raise self.fail(
                    f"{key} must be a stream E0..E{streams - 1} or W0..W{streams - 1}, got '{text}'",
                    number,
                    col,
                )
            return int(m.group(2)) + (streams if m.group(1) == "W" else 0)
        if kind == "dtype":
            if text not in DTYPES:
                raise self.fail(f"{key} must be a dtype ({', '.join(DTYPES)}), got '{text}'", number, col)
            return DTYPES.index(text)
        if kind.startswith("enum:"):
            values = ENUMS[kind[5:]]
            if text not in values:
                raise self.fail(f"{key} must be one of {', '.join(values)}, got '{text}'", number, col)
            return values.index(text)
        if kind == "imm":
            try:
                return encode_imm(float(text))
            except ValueError:
                raise self.fail(f"{key} must be a number, got '{text}'", number, col) from None
        if not re.fullmatch(r"-?\d+", text):
            raise self.fail(f"{key} must be an integer, got '{text}'", number, col)
        return int(text)

    def build(self, entries, placements, maps, images, rows) -> Program:
        system = self.system
        lanes = system.chip.lanes
        count = len(rows)
        if sorted(rows) != list(range(count)):
            missing = sorted(set(range(count)) - set(rows))
            raise self.fail(f"instruction ids must be 0..{count - 1}; missing {missing[:5]}", 1)
        ordered = [rows[i] for i in range(count)]
        col = lambda k, dt: np.array([r[k] for r in ordered], dtype=dt).reshape(-1)  # noqa: E731
        if sorted(maps) != list(range(len(maps))):
            raise self.fail(f"maps must be numbered 0..{len(maps) - 1}", 1)
        p = Program(
            system,
            tuple(entries),
            col(0, np.int32),
            col(1, np.int32),
            col(2, np.int32),
            col(3, np.int64),
            col(4, np.int32),
            col(5, np.int32),
            np.array([r[6] for r in ordered], np.int64).reshape(count, MAX_FIELDS),
            np.array([r[7] for r in ordered], np.int64).reshape(count, MAX_SOURCES),
            np.array([r[8] for r in ordered], np.int64).reshape(count, MAX_SOURCES),
            np.array([r[10] for r in ordered], np.int64).reshape(count, MAX_SOURCES),
            np.array([im[0] for im in images], np.int32),
            np.array([im[1] for im in images], np.int32),
            np.array([im[2] for im in images], np.int64),
            np.array([im[3] for im in images], np.float64).reshape(len(images), lanes),
            tuple(placements),
            np.array([maps[k] for k in range(len(maps))], np.int32).reshape(len(maps), lanes if maps else 0),
        )
        try:
            check(p)
            check_image(p)
        except ProgramError as e:
            line = ordered[e.index][9] if e.index >= 0 else 1
            raise self.fail(e.message, line) from None
        return p


def spec_of(mnemonic: str) -> OpSpec:
    return BY_MNEMONIC[mnemonic]
