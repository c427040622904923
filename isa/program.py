"""The program file (.lpuprog): what the compiler writes and the emulator runs.

A program is plain data (DESIGN.md section 6):

- the system it was compiled for;
- one instruction table (structure of arrays), each row: entry point, chip, queue,
  issue cycle, opcode, repeat count `n`, the operand fields in the order the ISA
  table lists them, and for verification the *intended sources*: for each input
  of the instruction, which instruction produced the vector it should read
  (vector `i` should be the producer's vector `i * step + offset`; step is 1
  unless the read repeats or strides over what one instruction wrote);
- the SRAM image (weights and constants) as vectors at (chip, MEM slice, word);
- where each param, state, graph input and output lives (`Placement`);
- lane permutation maps for `perm`.

Inputs of an instruction, in source-slot order: its stream fields in ISA order,
then one implicit input: the SRAM word for `read` and `gather`, the installed
weights (the `iw`) for `mm`, the accumulator slot (the last `mm` into it) for
`acc`, the `send` on the other chip for `recv`. A source is an instruction index,
`IMAGE` (the word comes from the SRAM image or a placed input; its offset is then
the word vector 0 should come from), `ADDRESS` (the word may have been written by
a `scatter`, so only the word the read uses is fixed: its offset), `UNCHECKED` (a
run-time address: `gather`) or `NONE`.

On disk: a zip archive with fixed timestamps holding `header.json` and one
`.npy` per array; the header records the format version and a SHA-256 of every
array, so a truncated, tampered or foreign file is refused with a clear error.
Same program, same bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import zipfile
import zlib
from dataclasses import dataclass, field

import numpy as np

from isa.chip import CHIP_KEYS, ChipConfig, ChipConfigError
from isa.diagnostics import LpuError, error
from isa.files import read_bytes, write_atomically
from isa.spec import BY_CODE, DTYPE_BYTES, DTYPES, ENUMS, FIELDS, OPS, OpSpec, Unit
from isa.system import SystemConfig

FORMAT = "lpuprog"
VERSION = 1
MAX_FIELDS = max(len(s.operands) for s in OPS)
MAX_SOURCES = max(len(s.inputs) for s in OPS) + 1

NONE = -1
IMAGE = -2
UNCHECKED = -3
ADDRESS = -4  # the writer is only known at run time (a scatter): the read must use word `offset`

IMPLICIT_SOURCE = {"read": "mem", "gather": "mem", "mm": "w", "acc": "acc", "recv": "link"}


def source_slots(spec: OpSpec) -> tuple[str, ...]:
    """Names of an instruction's source slots: its stream inputs, then its implicit input."""
    extra = IMPLICIT_SOURCE.get(spec.mnemonic)
    return spec.inputs + ((extra,) if extra else ())


@dataclass(frozen=True)
class Placement:
    """Where a tensor lives in SRAM and how its elements map to vectors.

    Layout: the tensor is viewed as [rows, cols] with cols its last dimension (1 for
    a scalar). Vector (r, c) holds columns [c * lanes, (c + 1) * lanes) of row r,
    zero-padded, and lives at word `word + (r * chunks + c) * bytes(dtype)` of the
    MEM slice: a vector spans as many byte-wide words as its dtype has bytes.
    When cols is 1 the value fills every lane ("splat"), so that it broadcasts
    against wider rows without moving lanes.
    """

    role: str  # "param" | "state" | "input" | "output"
    graph: str  # the entry point for inputs and outputs; "" for params and states
    name: str
    dtype: str
    shape: tuple[int, ...]
    chip: int
    slice: str  # a MEM slice name, e.g. "mem.e0"
    word: int
    # a shard: this placement holds value[..., start:stop, ...] along `axis` of the named tensor
    # (tensor parallelism), flat triples (axis, start, stop) for each cut axis (a block of a weight
    # too large for one MEM slice is cut along both); None when it holds the whole tensor (replicas
    # may sit on several chips)
    part: tuple[int, ...] | None = None

    def cuts(self) -> list[tuple[int, int, int]]:
        """The part as (axis, start, stop) triples, one per cut axis."""
        p = self.part or ()
        return [tuple(p[k : k + 3]) for k in range(0, len(p), 3)]

    def take(self, value: np.ndarray) -> np.ndarray:
        """The part of a whole tensor this placement holds."""
        for axis, start, stop in self.cuts():
            value = np.take(value, np.arange(start, stop), axis=axis)
        return value

    def index(self) -> tuple[slice, ...]:
        """Where the part sits in the whole tensor, as an index."""
        index = [slice(None)] * len(self.shape)
        for axis, start, stop in self.cuts():
            index[axis] = slice(start, stop)
        return tuple(index)

    def rows_chunks(self, lanes: int) -> tuple[int, int]:
        cols = self.shape[-1] if self.shape else 1
        rows = math.prod(self.shape[:-1]) if self.shape else 1
        return rows, -(-cols // lanes)

    def vectors(self, lanes: int) -> int:
        rows, chunks = self.rows_chunks(lanes)
        return rows * chunks

    def words(self, lanes: int) -> int:
        return self.vectors(lanes) * DTYPE_BYTES[self.dtype]


def to_vectors(x: np.ndarray, p: Placement, lanes: int) -> np.ndarray:
    """A tensor as its vectors (float64 [vectors, lanes]), in placement order."""
    rows, chunks = p.rows_chunks(lanes)
    flat = np.asarray(x, dtype=np.float64).reshape(rows, -1)
    if flat.shape[1] == 1:
        return np.repeat(flat, lanes, axis=1)
    padded = np.zeros((rows, chunks * lanes))
    padded[:, : flat.shape[1]] = flat
    return padded.reshape(rows * chunks, lanes)


def from_vectors(v: np.ndarray, p: Placement, lanes: int) -> np.ndarray:
    """The inverse of `to_vectors` (float64, in the tensor's shape)."""
    rows, chunks = p.rows_chunks(lanes)
    cols = p.shape[-1] if p.shape else 1
    return v.reshape(rows, chunks * lanes)[:, :cols].reshape(p.shape)


_REPEAT_COLUMNS = ("first", "rows", "count", "cycles", "src_lo", "chip_step")


@dataclass
class Repeats:
    """Blocks of rows stored once and repeated (a timing-only compile of a deep pipeline: the inner
    stages of a run of alike stages, compiler/repeats.py). Group g: the stored rows
    [first, first + rows) are followed, in the expanded program, by `count` copies; copy k
    (1..count) is the block with its chips moved by k * chip_step, its cycles by k * cycles, and
    its sources at or past `src_lo` (expanded numbering) by k * rows. Sources of stored rows are
    numbered as in the expanded program. Fields are the block's own: the copies' chips hold the
    same things at the same words."""

    first: np.ndarray
    rows: np.ndarray
    count: np.ndarray
    cycles: np.ndarray
    src_lo: np.ndarray
    chip_step: np.ndarray

    @staticmethod
    def none() -> Repeats:
        return Repeats(*(np.zeros(0, np.int64) for _ in _REPEAT_COLUMNS))

    def __len__(self) -> int:
        return len(self.first)

    def copied_rows(self) -> int:
        return int((self.rows * self.count).sum())


@dataclass
class Program:
    system: SystemConfig
    entries: tuple[str, ...]
    # the instruction table, one row per instruction
    entry: np.ndarray  # int32 [N]: index into `entries`
    chip: np.ndarray  # int32 [N]
    queue: np.ndarray  # int32 [N]: index into chip.queue_table()
    cycle: np.ndarray  # int64 [N]
    opcode: np.ndarray  # int32 [N]
    n: np.ndarray  # int32 [N]
    fields: np.ndarray  # int64 [N, MAX_FIELDS]: operands in ISA order, 0 where unused
    src: np.ndarray  # int64 [N, MAX_SOURCES]
    src_off: np.ndarray  # int64 [N, MAX_SOURCES]
    src_step: np.ndarray  # int64 [N, MAX_SOURCES]: producer vector = i * step + offset
    # the SRAM image
    image_chip: np.ndarray  # int32 [W]
    image_slice: np.ndarray  # int32 [W]: MEM slice index (west to east)
    image_word: np.ndarray  # int64 [W]
    image_data: np.ndarray  # float64 [W, lanes]
    placements: tuple[Placement, ...] = ()
    maps: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int32))
    meta: dict = field(default_factory=dict)
    repeats: Repeats = field(default_factory=Repeats.none)

    def __len__(self) -> int:
        """Stored instructions (`instructions()` counts the copies too)."""
        return len(self.cycle)

    def instructions(self) -> int:
        """Instructions of the whole program, copies of repeated blocks included."""
        return len(self) + self.repeats.copied_rows()

    def copy_ops(self, g: int, k: int) -> dict[int, int]:
        """Copy k of repeated block g: the op index (meta "ops") of each of the block's ops in it."""
        table = self.meta.get("repeat_ops")
        return {a: b for a, b in table[g][k - 1]} if table else {}

    def real_index(self, stored: np.ndarray) -> np.ndarray:
        """Where stored rows sit in the expanded program (after the copies of earlier blocks)."""
        r = self.repeats
        stored = np.asarray(stored, np.int64)
        if not len(r):
            return stored
        ends = r.first + r.rows
        before = np.concatenate([[0], np.cumsum(r.count * r.rows)])
        return stored + before[np.searchsorted(ends, stored, side="right")]

    def stored_index(self, real: np.ndarray) -> np.ndarray:
        """The stored row each row of the expanded program is (a copy: its block's row)."""
        r = self.repeats
        real = np.asarray(real, np.int64)
        if not len(r):
            return real
        before = np.concatenate([[0], np.cumsum(r.count * r.rows)])
        starts = r.first + r.rows + before[:-1]  # where each group's copies begin, expanded
        g = np.searchsorted(starts, real, side="right") - 1  # the last group whose copies begin before
        gg = np.maximum(g, 0)
        inside = (g >= 0) & (real < starts[gg] + r.count[gg] * r.rows[gg])
        # before every copy: itself; past group g's copies: less all copies up to g's
        out = np.where(g >= 0, real - before[gg + 1], real)
        return np.where(inside, r.first[gg] + (real - starts[gg]) % r.rows[gg], out)

    def expanded(self) -> Program:
        """The same program with every repeated block written out (itself when nothing repeats)."""
        r = self.repeats
        if not len(r):
            return self
        parts: dict[str, list] = {k: [] for k in ("entry", "chip", "queue", "cycle", "opcode", "n")}
        parts |= {"fields": [], "src": [], "src_off": [], "src_step": []}
        op_of = self.meta.get("op_of")
        ops: list = []
        start = 0
        for g in list(range(len(r))) + [None]:
            stop = len(self) if g is None else int(r.first[g] + r.rows[g])
            for name in parts:
                parts[name].append(getattr(self, name)[start:stop])
            if op_of is not None:
                ops += op_of[start:stop]
            start = stop
            if g is None:
                break
            block = slice(int(r.first[g]), int(r.first[g] + r.rows[g]))
            for k in range(1, int(r.count[g]) + 1):
                for name in ("entry", "queue", "opcode", "n", "fields", "src_off", "src_step"):
                    parts[name].append(getattr(self, name)[block])
                parts["chip"].append(self.chip[block] + k * int(r.chip_step[g]))
                parts["cycle"].append(self.cycle[block] + k * int(r.cycles[g]))
                src = self.src[block].copy()
                src[src >= r.src_lo[g]] += k * int(r.rows[g])
                parts["src"].append(src)
                if op_of is not None:
                    names = self.copy_ops(g, k)
                    ops += [names.get(i, i) for i in op_of[block]]
        meta = dict(self.meta)
        meta.pop("repeat_ops", None)
        if op_of is not None:
            meta["op_of"] = ops
        return dataclasses.replace(
            self, **{k: np.concatenate(v) for k, v in parts.items()}, meta=meta, repeats=Repeats.none()
        )

    def spec(self, i: int) -> OpSpec:
        return BY_CODE[int(self.opcode[i])]

    def field(self, i: int, name: str) -> int:
        spec = self.spec(i)
        return int(self.fields[i, spec.operands.index(name)])

    def length(self, entry: str | None = None) -> int:
        """Cycles until the last instruction (of one entry, or of any) has finished."""
        sel = (
            np.arange(len(self)) if entry is None else np.nonzero(self.entry == self.entries.index(entry))[0]
        )
        if not len(sel):
            return 0
        fixed = np.zeros(max(BY_CODE) + 1, np.int64)
        per = np.zeros_like(fixed)
        dfunc = np.zeros_like(fixed)
        for spec in OPS:
            fixed[spec.code], per[spec.code], dfunc[spec.code] = (
                spec.busy_fixed,
                spec.busy_per_vector,
                spec.dfunc,
            )
        code, n = self.opcode[sel], self.n[sel].astype(np.int64)
        ends = self.cycle[sel] + np.maximum(fixed[code] + per[code] * n, dfunc[code] + n)
        end = int(ends.max())
        r = self.repeats
        for g in range(len(r)):  # a copy ends where its block ends, shifted
            block = (sel >= r.first[g]) & (sel < r.first[g] + r.rows[g])
            if block.any():
                end = max(end, int(ends[block].max()) + int(r.count[g] * r.cycles[g]))
        return end

    def whole(self, role: str, graph: str = "") -> dict[str, tuple[str, tuple[int, ...]]]:
        """The tensors of a role by name: (dtype, whole shape), whatever shards and replicas hold them."""
        out: dict[str, tuple[str, list[int]]] = {}
        for pl in self.placements:
            if pl.role != role or pl.graph != graph:
                continue
            dtype, shape = out.setdefault(pl.name, (pl.dtype, list(pl.shape)))
            for axis, _, stop in pl.cuts():
                shape[axis] = max(shape[axis], stop)
        return {name: (dtype, tuple(shape)) for name, (dtype, shape) in out.items()}

    def placement(self, role: str, name: str, graph: str = "") -> Placement:
        for p in self.placements:
            if p.role == role and p.name == name and p.graph == graph:
                return p
        raise KeyError((role, graph, name))


def empty_program(system: SystemConfig, entries: tuple[str, ...] = ("main",)) -> Program:
    lanes = system.chip.lanes
    return Program(
        system,
        entries,
        np.zeros(0, np.int32),
        np.zeros(0, np.int32),
        np.zeros(0, np.int32),
        np.zeros(0, np.int64),
        np.zeros(0, np.int32),
        np.zeros(0, np.int32),
        np.zeros((0, MAX_FIELDS), np.int64),
        np.full((0, MAX_SOURCES), NONE, np.int64),
        np.zeros((0, MAX_SOURCES), np.int64),
        np.zeros(0, np.int32),
        np.zeros(0, np.int32),
        np.zeros(0, np.int64),
        np.zeros((0, lanes)),
    )


# -- the system as JSON ---------------------------------------------------------------------


def system_to_dict(s: SystemConfig) -> dict:
    return {
        "name": s.name,
        "chip": {k: getattr(s.chip, k) for k in CHIP_KEYS},
        "chips": s.chips,
        "links": [list(link) for link in s.links],
        "link_latency_cycles": s.link_latency_cycles,
        "link_gbps": s.link_gbps,
        "rx_buffer_depth": s.rx_buffer_depth,
        "gpu_memory_gbps": s.gpu_memory_gbps,
        "gpu_tflops": s.gpu_tflops,
    }


def system_from_dict(d: dict) -> SystemConfig:
    chip = ChipConfig(**d["chip"])
    return SystemConfig(
        name=d["name"],
        chip=chip,
        chips=d["chips"],
        links=tuple(tuple(x) for x in d["links"]),
        link_latency_cycles=d["link_latency_cycles"],
        link_gbps=d["link_gbps"],
        rx_buffer_depth=d["rx_buffer_depth"],
        **{k: d[k] for k in ("gpu_memory_gbps", "gpu_tflops") if k in d},
    )


# -- validation ------------------------------------------------------------------------------


class ProgramError(Exception):
    """One problem with one instruction; turned into a located diagnostic by the caller."""

    def __init__(self, index: int, message: str):
        super().__init__(message)
        self.index = index
        self.message = message


def field_limit(name: str, chip: ChipConfig) -> int | None:
    """Values of a field must lie in 0 .. limit - 1 (None: any value; other rules check it)."""
    kind = FIELDS[name].kind
    if kind.startswith("enum:"):
        return len(ENUMS[kind[5:]])
    return {
        "stream": 2 * chip.streams_per_direction,
        "dtype": len(DTYPES),
        "link": chip.c2c_links,
        "addr": chip.words_per_slice,
    }.get(kind)


def check(p: Program) -> None:
    """Every instruction must make sense on its chip; raises ProgramError naming the first that does not."""
    chip = p.system.chip
    queues = chip.queue_table()
    lanes = chip.lanes
    n_ins = len(p)
    columns = [p.entry, p.chip, p.queue, p.cycle, p.opcode, p.n]
    if (
        any(len(c) != n_ins for c in columns)
        or p.fields.shape != (n_ins, MAX_FIELDS)
        or p.src.shape != (n_ins, MAX_SOURCES)
        or p.src_off.shape != (n_ins, MAX_SOURCES)
    ):
        raise ProgramError(-1, "the instruction table's columns have different lengths")
    _check_repeats(p)
    if _all_valid(p):  # the common case, in numpy; anything doubtful goes through the loop below
        return
    n_all = p.instructions()
    for i in range(n_ins):
        code = int(p.opcode[i])
        if code not in BY_CODE:
            raise ProgramError(i, f"unknown opcode {code:#x}")
        spec = BY_CODE[code]
        if not 0 <= p.entry[i] < len(p.entries):
            raise ProgramError(i, f"entry {int(p.entry[i])} does not exist")
        if not 0 <= p.chip[i] < p.system.chips:
            raise ProgramError(i, f"chip {int(p.chip[i])} is not in this {p.system.chips}-chip system")
        if not 0 <= p.queue[i] < len(queues):
            raise ProgramError(i, f"queue {int(p.queue[i])} does not exist on a {chip.name} chip")
        q = queues[int(p.queue[i])]
        if spec.unit is not Unit.ICU and q.unit is not spec.unit:
            raise ProgramError(
                i,
                f"{spec.mnemonic} is a {spec.unit.value} instruction but queue {q.name} "
                f"belongs to a {q.unit.value} slice",
            )
        if p.cycle[i] < 0:
            raise ProgramError(i, f"issue cycle {int(p.cycle[i])} is negative")
        n = int(p.n[i])
        if not 1 <= n <= 1 << 24:
            raise ProgramError(i, f"repeat count n = {n} must be between 1 and {1 << 24}")
        values = {}
        for k, name in enumerate(spec.operands):
            v = int(p.fields[i, k])
            values[name] = v
            limit = field_limit(name, chip)
            if limit is not None and not 0 <= v < limit:
                raise ProgramError(i, f"{spec.mnemonic} field {name} = {v} is out of range 0..{limit - 1}")
        for k in range(len(spec.operands), MAX_FIELDS):
            if p.fields[i, k] != 0:
                raise ProgramError(i, f"{spec.mnemonic} has {len(spec.operands)} fields but field {k} is set")
        _check_ranges(i, spec, values, n, chip, len(p.maps), lanes)
        slots = source_slots(spec)
        for k in range(MAX_SOURCES):
            s = int(p.src[i, k])
            if k >= len(slots):
                if s != NONE or p.src_off[i, k] != 0 or p.src_step[i, k] != 1:
                    raise ProgramError(
                        i, f"{spec.mnemonic} has {len(slots)} source slots but slot {k} is set"
                    )
                continue
            if not (s in (NONE, IMAGE, UNCHECKED, ADDRESS) or 0 <= s < n_all):
                raise ProgramError(i, f"source {slots[k]} names instruction {s}, which does not exist")


def _all_valid(p: Program) -> bool:
    """Whether every instruction passes the checks of `check`, decided per opcode over whole columns.
    True only when the loop would raise nothing (it is never less strict); False sends the program
    through the loop, which names the first bad instruction."""
    chip = p.system.chip
    queues = chip.queue_table()
    n_ins = len(p)
    if not n_ins:
        return True
    lanes = chip.lanes
    code = p.opcode.astype(np.int64)
    if code.min() < 0 or code.max() > max(BY_CODE) or not np.isin(code, list(BY_CODE)).all():
        return False
    if (
        p.entry.min() < 0
        or p.entry.max() >= len(p.entries)
        or p.chip.min() < 0
        or p.chip.max() >= p.system.chips
    ):
        return False
    if p.queue.min() < 0 or p.queue.max() >= len(queues) or p.cycle.min() < 0:
        return False
    if p.n.min() < 1 or p.n.max() > 1 << 24:
        return False
    units = list(Unit)
    queue_unit = np.array([units.index(q.unit) for q in queues], np.int64)[p.queue]
    n = p.n.astype(np.int64)
    for c in np.unique(code).tolist():
        spec = BY_CODE[c]
        rows = code == c
        if spec.unit is not Unit.ICU and (queue_unit[rows] != units.index(spec.unit)).any():
            return False
        f = p.fields[rows]
        v = {}
        for k, name in enumerate(spec.operands):
            col = f[:, k]
            v[name] = col
            limit = field_limit(name, chip)
            if limit is not None and (col.min() < 0 or col.max() >= limit):
                return False
        if (f[:, len(spec.operands) :] != 0).any():
            return False
        nn = n[rows]
        m = spec.mnemonic
        if "addr" in v and m in ("read", "write"):
            width = np.array([DTYPE_BYTES[d] for d in DTYPES], np.int64)[v["dt"]]
            if (v["addr"] + nn * width - 1 >= chip.words_per_slice).any():
                return False
        if m == "lw" and ((v["row"] < 0) | (v["row"] + nn > chip.mxm_k_i8)).any():
            return False
        if "slot" in v and ((v["slot"] < 0) | (v["slot"] + nn > chip.mxm_acc_slots)).any():
            return False
        if m == "mm":
            ok_dt = np.isin(v["dt"], [DTYPES.index(d) for d in ("i8", "f16", "bf16")])
            if not ok_dt.all() or (v["kof"] < 0).any() or (v["kof"] >= lanes).any():
                return False
        if "k" in v and ((v["k"] <= -lanes) | (v["k"] >= lanes)).any():
            return False
        if "lane" in v and ((v["lane"] < 0) | (v["lane"] >= lanes)).any():
            return False
        if "map" in v and ((v["map"] < 0) | (v["map"] >= len(p.maps))).any():
            return False
        if m == "trans" and (nn % 16).any():
            return False
        slots = len(source_slots(spec))
        src = p.src[rows]
        if (src[:, slots:] != NONE).any() or (p.src_off[rows][:, slots:] != 0).any():
            return False
        if (p.src_step[rows][:, slots:] != 1).any():
            return False
        used = src[:, :slots]
        special = np.isin(used, [NONE, IMAGE, UNCHECKED, ADDRESS])
        if not (special | ((used >= 0) & (used < p.instructions()))).all():
            return False
    return True


def _check_repeats(p: Program) -> None:
    """The table of repeated blocks must name stored rows, in order, and copies on existing chips."""
    r = p.repeats
    cols = [getattr(r, c) for c in _REPEAT_COLUMNS]
    if any(c.ndim != 1 or len(c) != len(r.first) for c in cols):
        raise ProgramError(-1, "the repeats table's columns have different lengths")
    for g in range(len(r)):
        first, rows, count = (int(x) for x in (r.first[g], r.rows[g], r.count[g]))
        if not (0 <= first and rows >= 1 and first + rows <= len(p) and count >= 1):
            raise ProgramError(-1, f"repeated block {g} (rows {first}..{first + rows - 1}) is malformed")
        if g and first < r.first[g - 1] + r.rows[g - 1]:
            raise ProgramError(-1, f"repeated block {g} overlaps or precedes block {g - 1}")
        chips = p.chip[first : first + rows].astype(np.int64) + count * int(r.chip_step[g])
        if len(chips) and (chips.max() >= p.system.chips or chips.min() + int(r.chip_step[g]) < 0):
            raise ProgramError(-1, f"copies of repeated block {g} fall outside the {p.system.chips} chips")


def _check_ranges(i: int, spec: OpSpec, v: dict, n: int, chip: ChipConfig, n_maps: int, lanes: int):
    m = spec.mnemonic
    if "addr" in v and m in ("read", "write"):
        last = v["addr"] + n * DTYPE_BYTES[DTYPES[v["dt"]]] - 1
        if last >= chip.words_per_slice:
            raise ProgramError(
                i,
                f"{m} of {n} vectors from word {v['addr']} runs past the "
                f"{chip.words_per_slice} words of the slice",
            )
    if m == "lw" and not (0 <= v["row"] and v["row"] + n <= chip.mxm_k_i8):
        raise ProgramError(
            i, f"lw rows {v['row']}..{v['row'] + n - 1} are outside the {chip.mxm_k_i8}-row weight buffer"
        )
    if "slot" in v and not (0 <= v["slot"] and v["slot"] + n <= chip.mxm_acc_slots):
        raise ProgramError(
            i,
            f"{m} slots {v['slot']}..{v['slot'] + n - 1} are outside the "
            f"{chip.mxm_acc_slots} accumulator slots",
        )
    if m == "mm":
        dt = DTYPES[v["dt"]]
        if dt not in ("i8", "f16", "bf16"):
            raise ProgramError(i, f"mm multiplies i8, f16 or bf16, not {dt}")
        if not 0 <= v["kof"] < lanes:
            raise ProgramError(i, f"mm kof = {v['kof']} is not a lane (0..{lanes - 1})")
    if "k" in v and not -lanes < v["k"] < lanes:
        raise ProgramError(i, f"{m} k = {v['k']} must be within ({-lanes}, {lanes})")
    if "lane" in v and not 0 <= v["lane"] < lanes:
        raise ProgramError(i, f"{m} lane = {v['lane']} is not a lane (0..{lanes - 1})")
    if "map" in v and not 0 <= v["map"] < n_maps:
        raise ProgramError(i, f"{m} map = {v['map']} but the program has {n_maps} maps")
    if m == "trans" and n % 16:
        raise ProgramError(i, f"trans takes a multiple of 16 vectors, got n = {n}")


def check_image(p: Program) -> None:
    chip = p.system.chip
    words = chip.words_per_slice
    k = len(p.image_word)
    if not (len(p.image_chip) == len(p.image_slice) == k and p.image_data.shape == (k, chip.lanes)):
        raise ProgramError(-1, "the SRAM image's columns have different lengths")
    bad = (
        (p.image_chip < 0)
        | (p.image_chip >= p.system.chips)
        | (p.image_slice < 0)
        | (p.image_slice >= chip.mem_slices)
        | (p.image_word < 0)
        | (p.image_word >= words)
    )
    if bad.any():
        j = int(np.argmax(bad))
        raise ProgramError(
            -1,
            f"SRAM image entry {j} (chip {int(p.image_chip[j])}, slice "
            f"{int(p.image_slice[j])}, word {int(p.image_word[j])}) is outside the chip",
        )
    if p.maps.size and (p.maps.shape[1] != chip.lanes or p.maps.min() < -1 or p.maps.max() >= chip.lanes):
        raise ProgramError(-1, f"lane maps must have {chip.lanes} entries, each a lane or -1")
    names = chip.mem_slice_names()
    for pl in p.placements:
        if (
            pl.slice not in names
            or not 0 <= pl.chip < p.system.chips
            or pl.word < 0
            or pl.word + pl.words(chip.lanes) > words
            or pl.dtype not in DTYPES
        ):
            raise ProgramError(
                -1,
                f"placement of {pl.role} '{pl.name}' ({pl.dtype}{list(pl.shape)} at "
                f"chip {pl.chip} {pl.slice} word {pl.word}) does not fit the chip",
            )


# -- files --------------------------------------------------------------------------------------

_ARRAYS = (
    "entry",
    "chip",
    "queue",
    "cycle",
    "opcode",
    "n",
    "fields",
    "src",
    "src_off",
    "src_step",
    "image_chip",
    "image_slice",
    "image_word",
    "image_data",
    "maps",
)
_DTYPES = {
    "entry": np.int32,
    "chip": np.int32,
    "queue": np.int32,
    "cycle": np.int64,
    "opcode": np.int32,
    "n": np.int32,
    "fields": np.int64,
    "src": np.int64,
    "src_off": np.int64,
    "src_step": np.int64,
    "image_chip": np.int32,
    "image_slice": np.int32,
    "image_word": np.int64,
    "image_data": np.float64,
    "maps": np.int32,
}
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def _npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()


def _npy_array(blob: bytes) -> np.ndarray:
    """An .npy file's array, read from its bytes with one copy (read_array goes through a stream)."""
    f = io.BytesIO(blob)
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise ValueError(f"npy version {version}")
    if dtype.hasobject:
        raise ValueError("object arrays are not tables")
    count = int(np.prod(shape, dtype=np.int64))
    a = np.frombuffer(blob, dtype=dtype, count=count, offset=f.tell())
    return a.reshape(shape, order="F" if fortran else "C").copy()


def to_bytes(p: Program) -> bytes:
    """The file's bytes; the same program always gives the same bytes."""
    blobs = {name: _npy_bytes(np.asarray(getattr(p, name), dtype=_DTYPES[name])) for name in _ARRAYS}
    for c in _REPEAT_COLUMNS:
        blobs[f"repeat_{c}"] = _npy_bytes(np.asarray(getattr(p.repeats, c), dtype=np.int64))
    meta = dict(p.meta)
    if "op_of" in meta:  # one int per instruction: an array, not a JSON list (millions in a big program)
        blobs["op_of"] = _npy_bytes(np.asarray(meta.pop("op_of"), dtype=np.int64))
    header = {
        "format": FORMAT,
        "version": VERSION,
        "system": system_to_dict(p.system),
        "entries": list(p.entries),
        "placements": [
            dataclasses.asdict(pl) | {"shape": list(pl.shape), "part": list(pl.part) if pl.part else None}
            for pl in p.placements
        ],
        "meta": meta,
        "arrays": {name: hashlib.sha256(blob).hexdigest() for name, blob in blobs.items()},
    }
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in [("header.json", json.dumps(header, sort_keys=True).encode())] + [
            (f"{k}.npy", blobs[k]) for k in blobs
        ]:
            info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            z.writestr(info, data, compresslevel=1)  # fast: a deep pipeline's tables are gigabytes
    return out.getvalue()


def save(p: Program, path: str) -> None:
    """Write atomically: the file is complete or absent, never half-written."""
    data = to_bytes(p)
    write_atomically(path, lambda f: f.write(data), suffix=".lpuprog")


def load(path: str) -> Program:
    return from_bytes(read_bytes(path, "program"), path)


# what reading a damaged zip can raise: a bad header, a broken deflate stream, an unknown
# compression method or an "encrypted" flag bit flipped on, a truncated member
_DAMAGED = (zipfile.BadZipFile, zlib.error, OSError, ValueError, EOFError, NotImplementedError, RuntimeError)


def from_bytes(data: bytes, filename: str = "<program>") -> Program:
    def bad(message: str) -> LpuError:
        return error(message, filename=filename)

    try:
        z = zipfile.ZipFile(io.BytesIO(data))
        names = set(z.namelist())
    except _DAMAGED:
        raise bad(
            "not a program file (.lpuprog): it is not a complete zip archive; is it truncated?"
        ) from None
    with z:
        try:
            header = json.loads(z.read("header.json"))
        except KeyError:
            raise bad("not a program file: it has no header.json") from None
        except _DAMAGED:
            raise bad("the program's header is damaged") from None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise bad("not a program file: its header does not say format 'lpuprog'")
        if header.get("version") != VERSION:
            raise bad(
                f"the program was written in format version {header.get('version')!r}; this lpu "
                f"reads version {VERSION}: compile it again"
            )
        arrays = {}
        digests = header.get("arrays", {})
        repeat_names = [f"repeat_{c}" for c in _REPEAT_COLUMNS]
        optional = [n for n in repeat_names + ["op_of"] if n in digests]  # older files have none
        for name in _ARRAYS + tuple(optional):
            if f"{name}.npy" not in names or name not in digests:
                raise bad(f"the program lacks its '{name}' table")
            try:
                blob = z.read(f"{name}.npy")
            except _DAMAGED:
                raise bad(f"the program's '{name}' table is damaged (checksum or length)") from None
            if hashlib.sha256(blob).hexdigest() != digests[name]:
                raise bad(f"the program's '{name}' table does not match its checksum: the file was modified")
            try:
                a = _npy_array(blob)
            except (ValueError, OSError, EOFError):
                raise bad(f"the program's '{name}' table is not a plain array") from None
            want = np.dtype(_DTYPES.get(name, np.int64))
            if a.dtype != want:
                raise bad(f"the program's '{name}' table has dtype {a.dtype}, expected {want}")
            arrays[name] = a
    try:
        system = system_from_dict(header["system"])
        placements = tuple(
            Placement(
                **(d | {"shape": tuple(d["shape"]), "part": tuple(d["part"]) if d.get("part") else None})
            )
            for d in header["placements"]
        )
        entries = tuple(str(e) for e in header["entries"])
        meta = dict(header.get("meta", {}))
        if "op_of" in arrays:
            meta["op_of"] = arrays.pop("op_of").tolist()
    except (KeyError, TypeError, ValueError, ChipConfigError) as e:
        raise bad(f"the program's header is malformed ({type(e).__name__}: {e})") from None
    p = Program(
        system,
        entries,
        **{k: arrays[k] for k in _ARRAYS if k != "maps"},
        placements=placements,
        maps=arrays["maps"],
        meta=meta,
        repeats=Repeats(*(arrays.get(f"repeat_{c}", np.zeros(0, np.int64)) for c in _REPEAT_COLUMNS)),
    )
    try:
        check(p)
        check_image(p)
    except ProgramError as e:
        where = f"instruction {e.index}: " if e.index >= 0 else ""
        raise bad(f"invalid program: {where}{e.message}") from None
    return p
