"""Runs a program: places inputs and state in SRAM, resolves timing, computes values, reads outputs.

    emu = Emulator(load("mlp.lpuprog"))
    result = emu.run("main", {"x": x})
    result.outputs, result.violations, result.cycles, result.busy

State placements persist between runs of the same Emulator (a decode loop).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from emulator.kernel import ACTIONS, execute, suspect_reads
from emulator.timing import Violation, resolve
from isa.diagnostics import error
from isa.numerics import STORAGE, to_storage
from isa.program import (
    ADDRESS,
    IMAGE,
    NONE,
    UNCHECKED,
    Placement,
    Program,
    ProgramError,
    check,
    from_vectors,
    to_vectors,
)
from isa.spec import DTYPE_BYTES, OPS

_ACTION = np.zeros(256, np.int64)
_COLS = {
    name: np.full(256, -1, np.int64) for name in ("dt", "to", "imm", "k", "lane", "map", "red", "kof", "mode")
}
for _s in OPS:
    _ACTION[_s.code] = ACTIONS.get(_s.mnemonic, -1)  # -1: refused by timing.resolve (not run yet)
    for _name, _table in _COLS.items():
        if _name in _s.operands:
            _table[_s.code] = _s.operands.index(_name)


@dataclass
class RunResult:
    outputs: list[np.ndarray]  # out0, out1, ... in storage dtypes
    violations: list[Violation]
    cycles: int
    busy: dict[str, int]
    steps: int = 0
    extra: dict = field(default_factory=dict)


class Emulator:
    """`weights` (by param name) place params that the program's SRAM image does not hold
    (a program assembled by hand, or compiled without weights)."""

    def __init__(self, program: Program, weights: dict[str, np.ndarray] | None = None):
        try:  # a program built in memory gets the checks a loaded one had
            check(program)
        except ProgramError as e:
            raise error(f"invalid program: instruction {e.index}: {e.message}") from None
        program = program.expanded()  # a timing-only program's repeated blocks, written out
        self.program = program
        self.weights = dict(weights or {})
        lanes = program.system.chip.lanes
        self.state = {
            pl.name: np.zeros(pl.shape, STORAGE[pl.dtype]) for pl in program.placements if pl.role == "state"
        }
        self._lanes = lanes
        self._sram: tuple[np.ndarray, ...] | None = None
        self._resolved: dict[int, object] = {}
        self._prepared: dict[int, tuple] = {}
        self._images: dict[int, np.ndarray] = {}
        self._buffers: dict[int, np.ndarray] = {}
        self._placements: dict[tuple[str, str], list[Placement]] = {}
        self._mem_index = {name: k for k, name in enumerate(program.system.chip.mem_slice_names())}
        # a state's replicas hold the same value: the first one (lowest chip) is read back
        first: dict[str, Placement] = {}
        for pl in self.placements("state"):
            if pl.name not in first or pl.chip < first[pl.name].chip:
                first[pl.name] = pl
        self._state_read = list(first.values())

    def _values(self, e: int, steps: int, lanes: int) -> tuple[np.ndarray, ...]:
        """The buffers of an entry's steps (every vector step's value, and what the kernel says of
        each step), allocated once (fresh pages cost more than the kernel's own work on small
        programs)."""
        buf = self._buffers.get(e)
        if buf is None or buf[0].shape != (steps, lanes):
            # values, alias, found, bad_address: see kernel.execute
            buf = self._buffers[e] = (
                np.zeros((steps, lanes)),
                np.zeros(steps, np.int64),
                np.zeros(steps, np.int64),
                np.zeros(steps, np.bool_),
            )
        return buf

    def placements(self, role: str, entry: str = "") -> list[Placement]:
        key = (role, entry)
        out = self._placements.get(key)
        if out is None:
            out = [pl for pl in self.program.placements if pl.role == role and pl.graph == entry]
            if role == "output":
                out.sort(key=lambda pl: int(pl.name[3:]) if pl.name[3:].isdigit() else 1 << 30)
            self._placements[key] = out
        return list(out)

    def run(self, entry: str, inputs: dict[str, np.ndarray], trace: bool = False) -> RunResult:
        """Run one entry. With `trace`, `extra` holds the resolved timing ("resolved") and what every
        read saw in SRAM ("mem_seen", per step in execution order)."""
        p = self.program
        if entry not in p.entries:
            raise error(f"the program has no entry '{entry}' (it has {', '.join(p.entries)})")
        chip = p.system.chip
        lanes = chip.lanes
        mem_index = self._mem_index
        e = p.entries.index(entry)
        rows = [p.image_data]
        placed: list[tuple[Placement, int]] = []  # what this run places, and the image row it starts at
        count = len(p.image_word)

        def place(pl: Placement, value: np.ndarray, vectors: np.ndarray | None = None) -> None:
            nonlocal count
            if vectors is None:
                vectors = to_vectors(to_storage(value, pl.dtype), pl, lanes)
            placed.append((pl, len(vectors)))
            rows.append(vectors)
            count += len(vectors)

        for pl in self.placements("input", entry):
            if pl.name not in inputs:
                raise error(f"entry '{entry}' needs the input '{pl.name}' ({pl.dtype}{list(pl.shape)})")
            value = np.asarray(inputs[pl.name])
            if not _holds(pl, value.shape) or (pl.part and value.shape != _whole_shape(p, pl)):
                raise error(
                    f"input '{pl.name}' has shape {list(value.shape)} but the program expects "
                    f"{pl.dtype}{list(_whole_shape(p, pl))}"
                )
            place(pl, pl.take(value))
        state_vectors: dict[tuple, np.ndarray] = {}  # replicas of a state: their vectors once
        for pl in self.placements("state"):
            key = (pl.name, pl.part)
            if key not in state_vectors:
                state_vectors[key] = to_vectors(to_storage(self.state[pl.name], pl.dtype), pl, lanes)
            place(pl, self.state[pl.name], state_vectors[key])
        for pl in self.placements("param"):
            if pl.name in self.weights:
                value = np.asarray(self.weights[pl.name])
                if not _holds(pl, value.shape):
                    raise error(
                        f"weights '{pl.name}' have shape {list(value.shape)} but the program "
                        f"expects {pl.dtype}{list(_whole_shape(self.program, pl))}"
                    )
                place(pl, pl.take(value))
        # everything below depends on the program and on where things are placed, not on their
        # values: worked out on an entry's first run and kept
        layout = tuple((pl.chip, pl.slice, pl.word, n) for pl, n in placed)
        if self._prepared.get(e, (None,))[0] != layout:
            self._prepared[e] = (layout, self._prepare(e, placed))
            # the image rows followed by what runs place: the program's part is copied once
            self._images[e] = np.ascontiguousarray(np.concatenate(rows)) if count else np.zeros((0, lanes))
        where, image_words, image_prov, row_word, r, (args, maps, map_run), checks = self._prepared[e][1]
        image = self._images[e]
        if len(rows) > 1:
            image[len(p.image_word) :] = np.concatenate(rows[1:])
        words = chip.words_per_slice
        if self._sram is None:  # SRAM provenance, kept across runs and reset where a run touched it
            size = p.system.chips * chip.mem_slices * words
            # a word's three entries side by side: an access touches one cache line, not three
            both = np.zeros((size, 3), np.int64)  # plus one: pages nothing touches stay unallocated
            self._sram = (both[:, 0], both[:, 1], both[:, 2])
        prov, pend_prov, pend_land = self._sram
        prov[image_words] = image_prov
        touched = np.zeros(max(1, int(np.count_nonzero(r.mem_kind))), np.int64)
        out, alias, found, bad_address, n_touched = execute(
            *args, words, prov, pend_prov, pend_land, touched, image, maps, map_run, lanes,
            chip.mxm_k_i8, chip.mxm_k_f16, *self._values(e, len(r.ins), lanes),
        )  # fmt: skip
        violations = r.violations + _sram_violations(p, r, found, bad_address, row_word, checks)
        violations.sort(key=lambda v: (v.cycle, v.chip, v.instruction, v.kind))

        def read_back(pl: Placement) -> np.ndarray:
            n = pl.vectors(lanes)
            base = (pl.chip * chip.mem_slices + mem_index[pl.slice]) * words + pl.word
            m = prov[base + np.arange(n) * DTYPE_BYTES[pl.dtype]] - 1
            vectors = np.zeros((n, lanes))
            written = np.nonzero(m >= 0)[0]  # the step whose write landed: its value is where alias says
            a = alias[m[written]]
            vectors[written[a >= 0]] = out[a[a >= 0]]
            vectors[written[a < 0]] = image[-1 - a[a < 0]]
            initial = m <= -2  # an image row (-1: nothing wrote it, zeros)
            vectors[initial] = image[-2 - m[initial]]
            return to_storage(from_vectors(vectors, pl, lanes), pl.dtype)

        outputs = [read_back(pl) for pl in self.placements("output", entry)]
        for pl in self._state_read:
            self.state[pl.name] = read_back(pl)
        prov[touched[:n_touched]] = 0  # back to never-written for the next run
        prov[image_words] = 0
        extra = {"resolved": r, "mem_seen": found.copy()} if trace else {}
        return RunResult(outputs, violations, r.cycles, r.busy, steps=len(r.ins), extra=extra)

    def _prepare(self, e: int, placed: list[tuple[Placement, int]]) -> tuple:
        """An entry's resolved timing and the kernel's arguments that do not change between runs."""
        p = self.program
        chip = p.system.chip
        mem_index = {name: k for k, name in enumerate(chip.mem_slice_names())}
        where: dict[tuple[int, int, int], int] = {}
        for j in range(len(p.image_word)):
            where[(int(p.image_chip[j]), int(p.image_slice[j]), int(p.image_word[j]))] = j
        count = len(p.image_word)
        for pl, n in placed:
            width = DTYPE_BYTES[pl.dtype]
            sl = mem_index[pl.slice]
            for v in range(n):
                where[(pl.chip, sl, pl.word + v * width)] = count + v
            count += n
        if e not in self._resolved:  # timing depends on the program alone: resolve it once per entry
            self._resolved[e] = resolve(p, e, where)
        r = self._resolved[e]
        op = p.opcode[r.ins].astype(np.int64)
        fields = p.fields[r.ins]

        def col(name: str) -> np.ndarray:
            c = _COLS[name][op]
            return np.where(c >= 0, fields[np.arange(len(op)), np.maximum(c, 0)], 0)

        imm = col("imm").astype(np.int64).view(np.float64)
        # trans blocks: 16 consecutive vectors of one instruction
        is_trans = np.nonzero(_ACTION[op] == ACTIONS["trans"])[0]
        trans_block = np.full(len(op), -1, np.int64)
        blocks: dict[tuple[int, int], list[int]] = {}
        for s in is_trans:
            blocks.setdefault((int(r.ins[s]), int(r.i[s]) // 16), [0] * 16)[int(r.i[s]) % 16] = int(s)
        block_out = np.array(list(blocks.values()), np.int64).reshape(len(blocks), 16)
        block_src = (
            np.where(block_out >= 0, r.stream_src[block_out, 0], -1)
            if len(blocks)
            else np.zeros((0, 16), np.int64)
        )
        for b, s_list in enumerate(blocks.values()):
            for s in s_list:
                trans_block[s] = b
        maps = p.maps if p.maps.size else np.zeros((1, chip.lanes), np.int32)
        words = chip.words_per_slice
        image_words = np.array(
            [(c * chip.mem_slices + sl) * words + w for (c, sl, w) in where], np.int64
        ).reshape(-1)
        image_prov = -1 - np.array(list(where.values()), np.int64).reshape(-1)  # -2 - row, plus one
        row_word = {row: key[2] for key, row in where.items()}
        args = (
            _ACTION[op], col("dt"), col("to"), imm, col("k"), col("lane"), col("map"), col("red"),
            col("kof"), col("mode"), r.stream_src, r.weights, r.iw_index, r.iw_rows, r.acc_src, r.link_src,
            trans_block, block_out, block_src, r.i, r.sample, r.emit, r.mem_kind, r.slice_base,
            r.mem_addr, r.mem_step, r.mem_width,
        )  # fmt: skip
        checks = _read_checks(p, r, row_word)
        maps = maps.astype(np.int64)
        return where, image_words, image_prov, row_word, r, (args, maps, _runs(maps)), checks


def _runs(maps: np.ndarray) -> np.ndarray:
    """Per lane map: (first lane, first source lane, lanes) where it moves one run of consecutive
    lanes and zeroes the rest (every map the compiler emits), else lanes -1 (the kernel then maps
    lane by lane)."""
    out = np.full((len(maps), 3), -1, np.int64)
    for k, m in enumerate(maps):
        to = np.nonzero(m >= 0)[0]
        if not len(to):
            out[k] = (0, 0, 0)
        elif to[-1] - to[0] == len(to) - 1 and (m[to] - m[to[0]] == to - to[0]).all():
            out[k] = (to[0], m[to[0]], len(to))
    return out


def _holds(pl: Placement, shape: tuple[int, ...]) -> bool:
    """Whether a whole tensor of `shape` has the part `pl` holds."""
    if pl.part is None:
        return tuple(shape) == tuple(pl.shape)
    cut = {axis: stop for axis, _, stop in pl.cuts()}
    return len(shape) == len(pl.shape) and all(
        cut[k] <= a if k in cut else a == b for k, (a, b) in enumerate(zip(shape, pl.shape))
    )


def _whole_shape(p: Program, pl: Placement) -> tuple[int, ...]:
    """The shape of the whole tensor a (possibly partial) placement belongs to."""
    return p.whole(pl.role, pl.graph)[pl.name][1]


def _read_checks(p: Program, r, row_word: dict) -> tuple[np.ndarray, ...]:
    """What each SRAM read (or gather) of an entry must see, from the program and the placements
    alone: worked out once, for `_sram_violations` to compare every run's reads with."""
    reads = np.nonzero((r.mem_kind == 1) | (r.mem_kind == 3))[0]
    j = r.ins[reads]
    want = np.where(r.mem_kind[reads] == 3, p.src[j, 1], p.src[j, 0])  # a gather's SRAM is slot 1
    off, stride, i = p.src_off[j, 0], p.src_step[j, 0], r.i[reads]
    at = off + i * r.mem_step[reads]
    words = np.full(max(row_word, default=-1) + 1, -1, np.int64)  # image row -> its word
    if row_word:
        words[np.fromiter(row_word.keys(), np.int64)] = np.fromiter(row_word.values(), np.int64)
    unchecked = (want == NONE) | (want == UNCHECKED)
    address_ok = (want == ADDRESS) & (r.mem_addr[reads] + i * r.mem_step[reads] == at)
    return reads, want, at, i * stride + off, words, unchecked, address_ok, want == IMAGE


def _sram_violations(
    p: Program, r, found: np.ndarray, bad_address: np.ndarray, row_word: dict, checks: tuple
) -> list[Violation]:
    """Compare what each read saw with its intended source (the checks of emulator/timing.py, for SRAM)."""
    from isa.assembly import instruction_text

    out: list[Violation] = []
    queues: list = []  # the chip's queue table, built when the first violation needs a name

    def say(s: int, kind: str, expected: str, seen: str) -> None:
        j = int(r.ins[s])
        if not queues:
            queues.extend(p.system.chip.queue_table())
        out.append(
            Violation(
                kind,
                int(p.chip[j]),
                queues[int(p.queue[j])].name,
                int(r.sample[s]),
                j,
                instruction_text(p, j),
                expected,
                seen,
                "mem",
            )
        )

    def describe(m: int) -> str:
        if m >= 0:
            return f"vector {int(r.i[m])} of #{int(r.ins[m])}"
        if m <= -2:
            return f"image word {row_word.get(-2 - m, '?')}"
        return "a word nothing wrote"

    for s in np.nonzero(bad_address)[0]:
        say(int(s), "address out of range", "a word of the slice", "an address past its end")
    # the common cases in the kernel; only reads that fail them are looked at one by one below
    for s in suspect_reads(*checks, found, bad_address, r.ins, r.i):
        j = int(r.ins[s])
        want, off, stride = int(p.src[j, 0]), int(p.src_off[j, 0]), int(p.src_step[j, 0])
        if r.mem_kind[s] == 3:
            want = int(p.src[j, 1])  # gather: its idx stream is slot 0, the SRAM slot 1
        m = int(found[s])
        if want == ADDRESS:
            expected = off + int(r.i[s]) * int(r.mem_step[s])
            word = int(r.mem_addr[s]) + int(r.i[s]) * int(r.mem_step[s])
            if word != expected:
                say(int(s), "wrong SRAM word", f"word {expected}", f"word {word}")
            elif m == -1:
                say(int(s), "read of an unwritten word", f"word {expected}", "a word nothing wrote")
            continue
        if want in (NONE, UNCHECKED):
            if m == -1:
                say(
                    int(s),
                    "read of an unwritten word",
                    "a written or initialised word",
                    "a word nothing wrote",
                )
            continue
        if want == IMAGE:
            expected = off + int(r.i[s]) * int(r.mem_step[s])
            if m >= 0:
                say(int(s), "stale SRAM word", f"the initial image word {expected}", describe(m))
            elif m == -1:
                word = int(r.mem_addr[s]) + int(r.i[s]) * int(r.mem_step[s])
                say(
                    int(s),
                    "read of an unwritten word",
                    f"the initial image word {expected}",
                    f"word {word}, which nothing wrote",
                )
            elif row_word[-2 - m] != expected:
                say(
                    int(s),
                    "wrong SRAM word",
                    f"the initial image word {expected}",
                    f"image word {row_word[-2 - m]}",
                )
            continue
        expected_vec = int(r.i[s]) * stride + off
        if m < 0 or int(r.ins[m]) != want or int(r.i[m]) != expected_vec:
            say(int(s), "stale SRAM word", f"vector {expected_vec} of #{want}", describe(m))
    return out
