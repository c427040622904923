"""Compiles a verified module for one chip: the pass pipeline, in order.

    PIPELINE = decompose -> lower (jobs) -> schedule (cycles, streams) -> allocate (SRAM) -> emit

The result is an isa.program.Program: every instruction on an exact cycle of a
queue, with the intended source of every vector it reads.
"""

from __future__ import annotations

import numpy as np

from compiler.decompose import decompose
from compiler.emit import Allocator, Emitter, lifetimes
from compiler.ir import Module
from compiler.lower import Lowering, Tensor
from compiler.printer import print_module
from compiler.schedule import Scheduler, critical_path_order
from isa.diagnostics import error
from isa.numerics import to_storage
from isa.program import Placement, Program
from isa.system import SystemConfig

PIPELINE = ("verify", "decompose", "lower", "schedule", "allocate", "emit")


def compile_module(
    module: Module, system: SystemConfig, weights: dict[str, np.ndarray] | None = None
) -> Program:
    if system.chips != 1:
        raise error(
            f"system {system.name} has {system.chips} chips; compiling for many chips (tensor and "
            "pipeline parallelism) is not implemented yet: use a one-chip system such as tiny or tsp"
        )
    chip = system.chip
    L = chip.lanes
    m = decompose(module)
    tensors: list[Tensor] = []
    symbols: dict[str, Tensor] = {}
    maps: dict[tuple[int, ...], int] = {}
    _check_capacity(m, chip)
    first = Lowering(chip, tensors, symbols)
    for g in m.params:
        data = None
        if weights is not None:
            data = first.vectors_of(to_storage(np.asarray(weights[g.name]), g.type.dtype), g.type.dtype)
        symbols[g.name] = first.new_tensor(g.name, g.type, "param", data=data)
    for g in m.states:  # pinned for good; the emulator places their values before each run
        symbols[g.name] = first.new_tensor(g.name, g.type, "state")

    entries = tuple(g.name for g in m.graphs)
    per_entry = []
    for g in m.graphs:
        low = Lowering(chip, tensors, symbols)
        low.maps = maps
        low._consts = first._consts
        low._rr = dict(first._rr)
        inputs = {a.name: low.new_tensor(a.name, a.type, "input") for a in g.args}
        results = low.lower_graph(g, inputs)
        first._rr = dict(low._rr)
        for t in tensors:  # every entry starts at cycle 0 with its inputs and the state in place
            if t.kind in ("temp", "input", "state"):
                t.landing = None
                t.last_read = None
        sched = Scheduler(chip, tensors)
        order = critical_path_order(low.jobs, tensors)
        placed: dict[int, object] = {}
        for j in order:
            placed[j] = sched.place(low.jobs[j])
        per_entry.append((g, low, inputs, results, order, placed))

    # SRAM: params and constants for the whole program; each entry's tensors by lifetime
    alloc = Allocator(chip)
    base: dict[int, int] = {}
    forever = (0, 1 << 62)
    for t in tensors:
        if t.kind in ("param", "const", "state"):
            base[t.id] = alloc.place(t.slice, t.vectors * t.width, *forever)
    placements: list[Placement] = [
        Placement(t.kind, "", name, t.dtype, t.shape, 0, t.slice, base[t.id]) for name, t in symbols.items()
    ]
    emitter = Emitter(chip, tensors, base)
    for e, (g, low, inputs, results, order, placed) in enumerate(per_entry):
        entry_alloc = Allocator(chip)
        entry_alloc.used = {k: list(v) for k, v in alloc.used.items()}
        entry_alloc.high = dict(alloc.high)
        jobs = [low.jobs[j] for j in order]
        places = [placed[j] for j in order]
        life = lifetimes(jobs, places, tensors)
        pinned = set(inputs_ids := {t.id for t in inputs.values()}) | {t.id for t in results}
        for t in tensors:
            if t.id in base or (t.id not in life and t.id not in pinned):
                continue
            if t.id in pinned:
                base[t.id] = entry_alloc.place(t.slice, t.vectors * t.width, *forever)
            else:
                base[t.id] = entry_alloc.place(t.slice, t.vectors * t.width, *life[t.id])
        entry_alloc.check()
        alloc.high = {k: max(alloc.high.get(k, 0), v) for k, v in entry_alloc.high.items()}
        for a in g.args:
            t = inputs[a.name]
            placements.append(Placement("input", g.name, a.name, t.dtype, t.shape, 0, t.slice, base[t.id]))
        for k, t in enumerate(results):
            placements.append(
                Placement("output", g.name, f"out{k}", t.dtype, t.shape, 0, t.slice, base[t.id])
            )
        for job, pl in zip(jobs, places):
            emitter.emit(job, pl, e)
        del inputs_ids
    alloc.check()

    # the SRAM image: constants, and params when weights were given
    mem_index = {name: k for k, name in enumerate(chip.mem_slice_names())}
    img_slice, img_word, img_data = [], [], []
    for t in tensors:
        if t.kind in ("param", "const") and t.data is not None:
            for v in range(t.vectors):
                img_slice.append(mem_index[t.slice])
                img_word.append(base[t.id] + v * t.width)
                img_data.append(t.data[v])
    entry, queue, cycle, opcode, count, fields, src, off, stp = emitter.tables()
    maps_arr = (
        np.array(sorted(maps, key=maps.get), np.int32).reshape(len(maps), L)
        if maps
        else np.zeros((0, L), np.int32)
    )
    return Program(
        system,
        entries,
        entry,
        np.zeros(len(entry), np.int32),
        queue,
        cycle,
        opcode,
        count,
        fields,
        src,
        off,
        stp,
        np.zeros(len(img_word), np.int32),
        np.array(img_slice, np.int32),
        np.array(img_word, np.int64),
        np.array(img_data, np.float64).reshape(len(img_word), L),
        tuple(placements),
        maps_arr,
        {"module": print_module(module), "weights": weights is not None, "pipeline": list(PIPELINE)},
    )


def _check_capacity(m: Module, chip) -> None:
    """Refuse early what cannot fit: params beyond the chip's SRAM, or a tensor beyond one MEM slice
    (each tensor lives in one slice in this layout)."""
    from compiler.lower import Tensor as T

    def size(t) -> int:
        return T(0, "", t.dtype, t.shape, "", "temp", chip.lanes).vectors * chip.lanes * _bytes(t.dtype)

    need = sum(size(g.type) for g in m.params)
    if need > chip.sram_bytes:
        chips = -(-need // chip.sram_bytes)
        raise error(
            f"the model does not fit in SRAM: its params need {need} bytes, {need - chip.sram_bytes} "
            f"more than a {chip.name} chip's {chip.sram_bytes}; about {chips} chips would hold them"
        )
    values = [(f"@{g.name}", g.type, g.loc) for g in m.globals]
    values += [(f"%{v.name}", v.type, v.loc) for g in m.graphs for v in g.args]
    values += [
        (f"%{op.result.name}" if op.result.name else f"the result of {op.name}", op.result.type, op.loc)
        for g in m.graphs
        for op in g.ops
    ]
    for name, t, loc in values:
        if size(t) > chip.mem_slice_bytes:
            raise error(
                f"{name} : {t} needs {size(t)} bytes but one MEM slice holds {chip.mem_slice_bytes}; "
                "tensors are not split across slices yet",
                loc,
            )


def _bytes(dtype: str) -> int:
    from isa.spec import DTYPE_BYTES

    return DTYPE_BYTES[dtype]
