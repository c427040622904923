"""Runs a program: places inputs and state in SRAM, resolves timing, computes values, reads outputs.

    emu = Emulator(load("mlp.lpuprog"))
    result = emu.run("main", {"x": x})
    result.outputs, result.violations, result.cycles, result.busy

State placements persist between runs of the same Emulator (a decode loop).
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass, field

import numpy as np

from emulator.kernel import ACTIONS, as_placed, execute, row_widths, suspect_reads, value_slots
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
from isa.spec import DTYPE_BYTES, DTYPES, OPS

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


class States(MutableMapping):
    """The values of a program's states by name, kept between runs. After a run a state is held as
    the vectors SRAM holds, a part at a time (a state split over chips: a KV cache by heads); its
    value is made from them when asked for, so a decode loop places the next run's state without
    converting it back and forth."""

    def __init__(self, lanes: int, whole: dict[str, tuple[str, tuple[int, ...]]]):
        self._lanes = lanes
        self._whole = whole  # name -> (dtype, shape of the whole state)
        self._values: dict[str, np.ndarray | None] = {}
        self._parts: dict[str, dict] = {}  # name -> part -> (placement, its vectors after the last run)

    def __getitem__(self, name: str) -> np.ndarray:
        value = self._values[name]
        if value is None:
            dtype, shape = self._whole[name]
            value = np.zeros(shape, STORAGE[dtype])
            for pl, v in self._parts[name].values():
                value[pl.index()] = to_storage(from_vectors(v, pl, self._lanes), pl.dtype)
            self._values[name] = value
        return value

    def __setitem__(self, name: str, value) -> None:
        self._values[name] = value
        self._parts.pop(name, None)

    def __delitem__(self, name: str) -> None:
        del self._values[name]
        self._parts.pop(name, None)

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def vectors(self, pl: Placement) -> np.ndarray:
        """The vectors a placement of the state holds."""
        held = self._parts.get(pl.name, {}).get(pl.part)
        if held is not None and held[0].shape == pl.shape:
            return held[1]
        return to_vectors(to_storage(pl.take(self[pl.name]), pl.dtype), pl, self._lanes)

    def read_back(self, pl: Placement, v: np.ndarray) -> None:
        """A part of the state's new value, as SRAM holds it at `pl` after a run: kept as its
        vectors, put in the form placing it makes (padding lanes zero, or a one-column value in
        every lane) and rounded to its dtype, as a round trip through its value would."""
        _, chunks = pl.rows_chunks(self._lanes)
        as_placed(v, chunks, pl.shape[-1] if pl.shape else 1, DTYPES.index(pl.dtype))
        if self._values.get(pl.name) is not None:  # the first part of this run: the others follow
            self._parts[pl.name] = {}
        self._values[pl.name] = None
        self._parts.setdefault(pl.name, {})[pl.part] = (pl, v)


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
        wholes = program.whole("state")
        self.state = States(lanes, wholes)
        for name, (dtype, shape) in wholes.items():
            self.state[name] = np.zeros(shape, STORAGE[dtype])
        self._lanes = lanes
        self._sram: dict[int, tuple[np.ndarray, ...]] = {}
        self._resolved: dict[int, object] = {}
        self._prepared: dict[int, tuple] = {}
        self._images: dict[int, np.ndarray] = {}
        self._fresh: dict[int, bool] = {}  # the entry's image was just built with this run's values
        self._touched: dict[int, np.ndarray] = {}
        self._param_vectors: dict[tuple, np.ndarray] = {}  # params given as weights, as vectors
        self._wholes: dict[tuple, dict] = {}
        self._widths: dict[int, np.ndarray] = {}  # per image row: lanes up to its last nonzero one
        self._buffers: dict[int, np.ndarray] = {}
        self._placements: dict[tuple[str, str], list[Placement]] = {}
        self._mem_index = {name: k for k, name in enumerate(program.system.chip.mem_slice_names())}
        # a state's replicas hold the same value: of each part, the first one (lowest chip) is read back
        first: dict[tuple, Placement] = {}
        for pl in self.placements("state"):
            key = (pl.name, pl.part)
            if key not in first or pl.chip < first[key].chip:
                first[key] = pl
        self._state_read = list(first.values())

    def _values(self, e: int, steps: int, slots: int, lanes: int) -> tuple[np.ndarray, ...]:
        """The buffers of an entry's steps (the values' slots, and what the kernel says of each
        step), allocated once (fresh pages cost more than the kernel's own work on small
        programs)."""
        buf = self._buffers.get(e)
        if buf is None or buf[0].shape != (slots, lanes) or buf[1].shape != (steps,):
            # values, alias, found, bad_address: see kernel.execute
            buf = self._buffers[e] = (
                np.zeros((slots, lanes)),
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
        e = p.entries.index(entry)
        # what this run places, as vectors: inputs (replicas converted once), states (the vectors
        # the last run left, unless the value was set since) and params given as weights (converted
        # on the first run)
        placed: list[tuple[Placement, np.ndarray]] = []
        converted: dict[tuple, np.ndarray] = {}
        for pl in self.placements("input", entry):
            if pl.name not in inputs:
                raise error(f"entry '{entry}' needs the input '{pl.name}' ({pl.dtype}{list(pl.shape)})")
            value = np.asarray(inputs[pl.name])
            whole = self._whole_shape(pl)
            if not _holds(pl, value.shape) or (pl.part and value.shape != whole):
                raise error(
                    f"input '{pl.name}' has shape {list(value.shape)} but the program expects "
                    f"{pl.dtype}{list(whole)}"
                )
            key = (pl.name, pl.part)
            if key not in converted:
                converted[key] = to_vectors(to_storage(pl.take(value), pl.dtype), pl, lanes)
            placed.append((pl, converted[key]))
        for pl in self.placements("state"):
            placed.append((pl, self.state.vectors(pl)))
        for pl in self.placements("param"):
            if pl.name in self.weights:
                key = (pl.name, pl.part)
                if key not in self._param_vectors:
                    value = np.asarray(self.weights[pl.name])
                    if not _holds(pl, value.shape):
                        raise error(
                            f"weights '{pl.name}' have shape {list(value.shape)} but the program "
                            f"expects {pl.dtype}{list(self._whole_shape(pl))}"
                        )
                    self._param_vectors[key] = to_vectors(to_storage(pl.take(value), pl.dtype), pl, lanes)
                placed.append((pl, self._param_vectors[key]))
        # everything below depends on the program and on where things are placed, not on their
        # values: worked out on an entry's first run and kept
        layout = tuple((pl.chip, pl.slice, pl.word, len(v)) for pl, v in placed)
        if self._prepared.get(e, (None,))[0] != layout:
            sizes = [(pl, len(v)) for pl, v in placed]
            self._prepared[e] = (layout, self._prepare(e, sizes))
            # the image rows followed by what runs place: the program's part is copied once
            rows = [p.image_data] + [v for _, v in placed]
            self._images[e] = np.ascontiguousarray(np.concatenate(rows))
            # what runs place has zero padding past each row's columns (a one-column value fills
            # every lane): its widths follow from the shapes; the program's image is looked at
            self._widths[e] = np.concatenate(
                [np.zeros(len(p.image_word), np.int64)] + [_placed_widths(pl, lanes) for pl, _ in placed]
            )
            row_widths(self._images[e], self._widths[e], 0, len(p.image_word))
            self._fresh[e] = True
        prepared = self._prepared[e][1]
        where, image_words, image_prov, row_word, r, kernel, checks, back, compact, slots = prepared
        args, maps, map_run = kernel
        image, widths = self._images[e], self._widths[e]
        if not self._fresh.pop(e, False):  # inputs and states change between runs (params do not)
            at = len(p.image_word)
            for pl, v in placed:
                if pl.role != "param":  # in place since the image was built
                    image[at : at + len(v)] = v
                at += len(v)
        words = chip.words_per_slice
        sram = self._sram.get(e)
        if sram is None:  # SRAM provenance, kept across runs and reset where a run touched it
            # a word's three entries side by side: an access touches one cache line, not three
            both = np.zeros((compact.size, 3), np.int64)
            sram = self._sram[e] = (both[:, 0], both[:, 1], both[:, 2])
        prov, pend_prov, pend_land = sram
        prov[image_words] = image_prov
        touched = self._touched.get(e)
        if touched is None:
            touched = self._touched[e] = np.zeros(max(1, int(np.count_nonzero(r.mem_kind))), np.int64)
        slot, n_slots = slots
        out, alias, found, bad_address, n_touched = execute(
            *args, words, prov, pend_prov, pend_land, touched, image, widths, maps, map_run, lanes,
            chip.mxm_k_i8, chip.mxm_k_f16, slot, *self._values(e, len(r.ins), n_slots, lanes),
        )  # fmt: skip
        violations = r.violations + _sram_violations(p, r, found, bad_address, row_word, checks)
        violations.sort(key=lambda v: (v.cycle, v.chip, v.instruction, v.kind))

        # what SRAM holds at the end where the outputs and the states lie, all at once
        flat, spans, placements = back
        m = prov[flat] - 1
        vectors = np.zeros((len(flat), lanes))
        written = np.nonzero(m >= 0)[0]  # the step whose write landed: its value is where alias says
        a = alias[m[written]]
        vectors[written[a >= 0]] = out[a[a >= 0]]
        vectors[written[a < 0]] = image[-1 - a[a < 0]]
        initial = m <= -2  # an image row (-1: nothing wrote it, zeros)
        vectors[initial] = image[-2 - m[initial]]
        outputs = []
        for pl, (lo, hi) in zip(placements, spans):
            if pl.role == "output":
                outputs.append(to_storage(from_vectors(vectors[lo:hi], pl, lanes), pl.dtype))
            else:
                self.state.read_back(pl, vectors[lo:hi])
        prov[touched[:n_touched]] = 0  # back to never-written for the next run
        prov[image_words] = 0
        extra = {"resolved": r, "mem_seen": found.copy()} if trace else {}
        return RunResult(outputs, violations, r.cycles, r.busy, steps=len(r.ins), extra=extra)

    def _whole_shape(self, pl: Placement) -> tuple[int, ...]:
        key = (pl.role, pl.graph)
        if key not in self._wholes:
            self._wholes[key] = self.program.whole(pl.role, pl.graph)
        return self._wholes[key][pl.name][1]

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
        back = [pl for pl in self.placements("output", p.entries[e])] + list(self._state_read)
        compact = _Compact(p, r, where, placed + [(pl, pl.vectors(chip.lanes)) for pl in back], mem_index)
        image_words = np.array(
            [compact.flat(c * chip.mem_slices + sl, w) for (c, sl, w) in where], np.int64
        ).reshape(-1)
        image_prov = -1 - np.array(list(where.values()), np.int64).reshape(-1)  # -2 - row, plus one
        row_word = {row: key[2] for key, row in where.items()}
        args = (
            _ACTION[op], col("dt"), col("to"), imm, col("k"), col("lane"), col("map"), col("red"),
            col("kof"), col("mode"), r.stream_src, r.weights, r.iw_index, r.iw_rows, r.acc_src, r.link_src,
            trans_block, block_out, block_src, r.i, r.sample, r.emit, r.mem_kind, compact.slice_base,
            r.mem_addr, r.mem_step, r.mem_width,
        )  # fmt: skip
        checks = _read_checks(p, r, row_word)
        maps = maps.astype(np.int64)
        # where the outputs and the states read back after a run lie in the provenance arrays
        flat, spans, at = [], [], 0
        for pl in back:
            n = pl.vectors(chip.lanes)
            base = compact.flat(pl.chip * chip.mem_slices + mem_index[pl.slice], pl.word)
            flat.append(base + np.arange(n, dtype=np.int64) * DTYPE_BYTES[pl.dtype])
            spans.append((at, at + n))
            at += n
        flat_arr = np.concatenate(flat) if flat else np.zeros(0, np.int64)
        kernel = (args, maps, _runs(maps))
        slots = _value_slots(p, r, args, checks, back, mem_index)
        back_at = (flat_arr, spans, back)
        return where, image_words, image_prov, row_word, r, kernel, checks, back_at, compact, slots


class _Compact:
    """Where each MEM slice's words sit in the SRAM provenance arrays of one entry: only the words
    the entry can touch (its static accesses, the image, what it places and what it reads back),
    slice after slice; a slice the entry addresses at run time (a gather or scatter) whole. Dense:
    the kernel's accesses stay near each other instead of a page apart in a system-sized array
    (3 % of a toy Llama's decode step on 8 chips; a dragonfly:8 array would be 10 GB of address
    space)."""

    def __init__(self, p, r, where, placed: list[tuple[Placement, int]], mem_index):
        chip = p.system.chip
        words = chip.words_per_slice
        kinds = r.mem_kind
        steps = np.nonzero(kinds)[0]
        pair = r.slice_base[steps] // words
        lo_w = np.where(kinds[steps] <= 2, r.mem_addr[steps] + r.i[steps] * r.mem_step[steps], 0)
        hi_w = np.where(kinds[steps] <= 2, lo_w + r.mem_width[steps], words)
        keys = [pair]
        los = [lo_w]
        his = [hi_w]
        if where:
            ks = np.array(list(where.keys()), np.int64).reshape(-1, 3)
            keys.append(ks[:, 0] * chip.mem_slices + ks[:, 1])
            los.append(ks[:, 2])
            his.append(ks[:, 2] + 2)
        for pl, n in placed:
            keys.append(np.array([pl.chip * chip.mem_slices + mem_index[pl.slice]], np.int64))
            los.append(np.array([pl.word], np.int64))
            his.append(np.array([pl.word + n * DTYPE_BYTES[pl.dtype] + 1], np.int64))
        k = np.concatenate(keys)
        lo = np.clip(np.concatenate(los), 0, words)
        hi = np.clip(np.concatenate(his), 0, words)
        uniq, inv = np.unique(k, return_inverse=True)
        first = np.full(len(uniq), words, np.int64)
        last = np.zeros(len(uniq), np.int64)
        np.minimum.at(first, inv, lo)
        np.maximum.at(last, inv, hi)
        span = np.maximum(last - first, 0)
        base = np.concatenate(([0], np.cumsum(span)[:-1])).astype(np.int64)
        self.pairs, self.first, self.base = uniq, first, base
        self.size = int(span.sum()) + 1
        self.slice_base = np.zeros(len(kinds), np.int64)
        at = np.searchsorted(uniq, pair)
        self.slice_base[steps] = base[at] - first[at]

    def flat(self, pair: int, word: int) -> int:
        k = int(np.searchsorted(self.pairs, pair))
        assert k < len(self.pairs) and self.pairs[k] == pair and self.first[k] <= word
        return int(self.base[k] - self.first[k] + word)


def _placed_widths(pl: Placement, lanes: int) -> np.ndarray:
    """Per vector of a placed tensor: one past the last lane that can be nonzero."""
    rows, chunks = pl.rows_chunks(lanes)
    cols = pl.shape[-1] if pl.shape else 1
    if cols == 1:
        return np.full(rows * chunks, lanes, np.int64)
    per_row = np.minimum(lanes, cols - np.arange(chunks) * lanes)
    return np.tile(per_row, rows).astype(np.int64)


def _value_slots(p: Program, r, args, checks, back: list[Placement], mem_index) -> tuple[np.ndarray, int]:
    """kernel.value_slots for an entry: the write each SRAM read is meant to see (from the program's
    intended sources), and the writes whose values must live to the end of the run (a scatter's;
    a write to a slice that a gather or a read of a run-time address may see; a write to a slice
    holding an output or a state, read back after the run)."""
    chip = p.system.chip
    words = chip.words_per_slice
    n = len(r.ins)
    reads, want, _, vector = checks[0], checks[1], checks[2], checks[3]
    read_from = np.full(n, -1, np.int64)
    exact = want >= 0  # an instruction: find the step of its vector
    if exact.any():
        width = int(r.i.max()) + 2 if n else 1
        keys = r.ins.astype(np.int64) * width + r.i
        order = np.argsort(keys, kind="stable")
        wanted = want[exact].astype(np.int64) * width + vector[exact]
        at = np.minimum(np.searchsorted(keys[order], wanted), max(n - 1, 0))
        hit = keys[order][at] == wanted
        read_from[reads[exact][hit]] = order[at][hit]
    pair = r.slice_base // words
    kind = r.mem_kind
    loose = set(pair[reads[~exact]].tolist()) | set(pair[(kind == 3) | (kind == 4)].tolist())
    loose |= {pl.chip * chip.mem_slices + mem_index[pl.slice] for pl in back}
    read_back = [pl for pl in p.placements if pl.role in ("output", "state")]
    loose |= {pl.chip * chip.mem_slices + mem_index[pl.slice] for pl in read_back}
    kept = (kind == 4) | ((kind == 2) & np.isin(pair, np.array(sorted(loose), np.int64)))
    (action, *_rest) = args
    stream_src, weights, iw_index, iw_rows, acc_src, link_src = args[10:16]
    trans_block, block_out, block_src = args[16:19]
    slot, used = value_slots(
        action, kind, stream_src, link_src, acc_src, weights, iw_index, iw_rows,
        trans_block, block_out, block_src, read_from, kept,
    )  # fmt: skip
    return slot, int(used)


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
