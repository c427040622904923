"""Runs a program: places inputs and state in SRAM, resolves timing, computes values, reads outputs.

    emu = Emulator(load("mlp.lpuprog"))
    result = emu.run("main", {"x": x})
    result.outputs, result.violations, result.cycles, result.busy

State placements persist between runs of the same Emulator (a decode loop).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from emulator.kernel import ACTIONS, execute
from emulator.timing import Violation, resolve
from isa.diagnostics import error
from isa.numerics import STORAGE, to_storage
from isa.program import Placement, Program, from_vectors, to_vectors
from isa.spec import BY_CODE, DTYPE_BYTES, OPS

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
        self.program = program
        self.weights = dict(weights or {})
        lanes = program.system.chip.lanes
        self.state = {
            pl.name: np.zeros(pl.shape, STORAGE[pl.dtype]) for pl in program.placements if pl.role == "state"
        }
        self._lanes = lanes

    def placements(self, role: str, entry: str = "") -> list[Placement]:
        out = [pl for pl in self.program.placements if pl.role == role and pl.graph == entry]
        if role == "output":
            out.sort(key=lambda pl: int(pl.name[3:]) if pl.name[3:].isdigit() else 1 << 30)
        return out

    def run(self, entry: str, inputs: dict[str, np.ndarray]) -> RunResult:
        p = self.program
        if entry not in p.entries:
            raise error(f"the program has no entry '{entry}' (it has {', '.join(p.entries)})")
        chip = p.system.chip
        lanes = chip.lanes
        mem_index = {name: k for k, name in enumerate(chip.mem_slice_names())}
        rows = [p.image_data]
        where: dict[tuple[int, int, int], int] = {}
        for j in range(len(p.image_word)):
            where[(int(p.image_chip[j]), int(p.image_slice[j]), int(p.image_word[j]))] = j
        count = len(p.image_word)

        def place(pl: Placement, value: np.ndarray) -> None:
            nonlocal count
            vectors = to_vectors(to_storage(value, pl.dtype), pl, lanes)
            width = DTYPE_BYTES[pl.dtype]
            sl = mem_index[pl.slice]
            for v in range(len(vectors)):
                where[(pl.chip, sl, pl.word + v * width)] = count + v
            rows.append(vectors)
            count += len(vectors)

        for pl in self.placements("input", entry):
            if pl.name not in inputs:
                raise error(f"entry '{entry}' needs the input '{pl.name}' ({pl.dtype}{list(pl.shape)})")
            value = np.asarray(inputs[pl.name])
            if value.shape != pl.shape:
                raise error(
                    f"input '{pl.name}' has shape {list(value.shape)} but the program expects "
                    f"{pl.dtype}{list(pl.shape)}"
                )
            place(pl, value)
        for pl in self.placements("state"):
            place(pl, self.state[pl.name])
        for pl in self.placements("param"):
            if pl.name in self.weights:
                value = np.asarray(self.weights[pl.name])
                if value.shape != pl.shape:
                    raise error(f"weights '{pl.name}' have shape {list(value.shape)} but the program "
                                f"expects {pl.dtype}{list(pl.shape)}")
                place(pl, value)
        image = np.concatenate(rows) if count else np.zeros((0, lanes))

        e = p.entries.index(entry)
        r = resolve(p, e, where)
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
        maps = p.maps if p.maps.size else np.zeros((1, lanes), np.int32)
        out, _ = execute(
            _ACTION[op],
            col("dt"),
            col("to"),
            imm,
            col("k"),
            col("lane"),
            col("map"),
            col("red"),
            col("kof"),
            col("mode"),
            r.stream_src,
            r.mem_src,
            r.weights,
            r.iw_index,
            r.iw_rows,
            r.acc_src,
            trans_block,
            block_out,
            block_src,
            image,
            maps.astype(np.int64),
            lanes,
            chip.mxm_k_i8,
            chip.mxm_k_f16,
        )

        # the final content of every written word: the write that landed last
        writes = np.nonzero(_ACTION[op] == ACTIONS["write"])[0]
        final: dict[tuple[int, int, int], int] = {}
        if len(writes):
            queues = chip.queue_table()
            for s in writes[np.argsort(r.emit[writes], kind="stable")]:
                j = int(r.ins[s])
                spec = BY_CODE[int(p.opcode[j])]
                stride = int(p.fields[j, spec.operands.index("step")])
                word = int(p.fields[j, spec.operands.index("addr")]) + int(r.i[s]) * stride
                sl = mem_index[queues[int(p.queue[j])].slice]
                final[(int(p.chip[j]), sl, word)] = int(s)

        def read_back(pl: Placement) -> np.ndarray:
            n = pl.vectors(lanes)
            width = DTYPE_BYTES[pl.dtype]
            sl = mem_index[pl.slice]
            vectors = np.zeros((n, lanes))
            for v in range(n):
                key = (pl.chip, sl, pl.word + v * width)
                if key in final:
                    vectors[v] = out[final[key]]
                elif key in where:
                    vectors[v] = image[where[key]]
            return to_storage(from_vectors(vectors, pl, lanes), pl.dtype)

        outputs = [read_back(pl) for pl in self.placements("output", entry)]
        for pl in self.placements("state"):
            self.state[pl.name] = read_back(pl)
        return RunResult(outputs, r.violations, r.cycles, r.busy, steps=len(op))
