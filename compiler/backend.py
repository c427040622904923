"""Compiles a verified module for the chips of a system: the pass pipeline, in order.

    PIPELINE = decompose -> partition (chips) -> lower (jobs) -> schedule (cycles, streams, links)
               -> allocate (SRAM) -> emit

The result is an isa.program.Program: every instruction on an exact cycle of a
queue of a chip, with the intended source of every vector it reads. One chip is
the case tp = pp = 1 of the same path; on many chips, transfers become SEND/RECV
pairs whose receive is issued the cycle its vector arrives.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import time
from dataclasses import dataclass, field

import numpy as np

from compiler.decompose import decompose
from compiler.emit import Allocator, Emitter, lifetimes
from compiler.ir import Global, Module, TensorType
from compiler.jobs import Job, Node
from compiler.lower import Lowering, Tensor
from compiler.partition import Local, LocalCommit, Place, Transfer, check_split, partition, vectors_of
from compiler.printer import print_module
from compiler.repeats import Run, block_of, find_runs, op_names, value_map
from compiler.schedule import Scheduler, critical_path_order
from compiler.stages import StageMemo, release_of
from isa.diagnostics import LpuError, error
from isa.numerics import to_storage
from isa.program import Placement, Program, ProgramError, Repeats, check
from isa.spec import BY_MNEMONIC, DTYPE_BYTES
from isa.system import SystemConfig

PIPELINE = ("verify", "decompose", "partition", "lower", "schedule", "allocate", "emit")


def compile_module(
    module: Module,
    system: SystemConfig,
    weights: dict[str, np.ndarray] | None = None,
    tp: int = 1,
    pp: int = 1,
    timing_only: bool = False,
    timings: dict[str, float] | None = None,
) -> Program:
    """Compile for `tp * pp` chips of `system` (tensor parallelism `tp` inside each of `pp` stages).

    `timing_only`: no weights; pipeline stages whose blocks of jobs are alike (compiler/stages.py)
    are searched once and the others placed at the same relative cycles, and the inner stages of a
    run of alike stages are stored once, with the shifts of their copies (compiler/repeats.py,
    isa.program.Repeats): the same program as a full compile once expanded, found faster. Its meta
    records how many stage blocks were searched, reused and copied.

    `timings`, when given, receives the seconds spent in each pass (for benchmarks; a program does
    not record them, so that it stays the same byte for byte).
    """
    refused = []
    clock = _Clock(timings)
    with _no_cycle_collection():
        if timing_only:
            for warm in WARM_UP:
                try:
                    program = _compile(module, system, weights, tp, pp, True, True, warm, clock)
                except _NotPeriodic as e:  # a run's blocks did not repeat in time
                    refused.append(str(e))
                    if e.periodic:
                        continue
                    break
                if refused:  # say why the first try was not kept
                    program.meta["timing_only"]["runs_warmed_up"] = refused[0]
                return program
        program = _compile(module, system, weights, tp, pp, timing_only, False, 1, clock)
    if refused:  # say why nothing was stored once
        program.meta["timing_only"]["runs_not_repeating"] = refused[-1]
    return program


@contextlib.contextmanager
def _no_cycle_collection():
    """Python's cycle collector off while compiling: a deep pipeline holds millions of long-lived
    objects (statements, jobs, nodes), which every full collection walks again (it was a third of a
    70B partition's time); the compiler's garbage is freed by reference counting, so memory does
    not grow (benchmarks/timing_only.py prints the peak)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


_NONE: tuple = ()
# where runs of alike stages start, tried in turn (compiler/repeats.py): a stage into the alike
# stages, else a period in (None; the only choice before stop 24, which benchmarks/timing_only.py
# compares with)
WARM_UP: tuple = (1, None)


class _NotPeriodic(Exception):
    """A run of alike stages whose placements do not repeat: its stages cannot be copies."""

    def __init__(self, message: str, runs: list[Run]):
        super().__init__(message)
        self.periodic = any(run.period > 1 for run in runs)  # a run starting a period in differs


class _Clock:
    """Seconds per pass, added into a dict (nothing is kept when there is none)."""

    def __init__(self, into: dict[str, float] | None):
        self.into = into
        self.last = time.perf_counter()

    def lap(self, phase: str) -> None:
        """The time since the last lap goes to `phase`."""
        now = time.perf_counter()
        if self.into is not None:
            self.into[phase] = self.into.get(phase, 0.0) + now - self.last
        self.last = now


def _compile(
    module, system, weights, tp, pp, timing_only, use_runs, warm: int | None = 1, clock=None
) -> Program:
    clock = clock or _Clock(None)
    check_split(system, tp, pp)
    chip = system.chip
    L = chip.lanes
    if timing_only and weights is not None:
        raise error("a timing-only compile takes no weights")
    if weights is not None:
        missing = [g.name for g in module.params if g.name not in weights]
        if missing:
            raise error(f"no weights given for {', '.join('@' + n for n in missing[:8])}")
    m = decompose(module)
    _check_params(m, chip, tp * pp)
    plan = partition(m, system, tp, pp)
    clock.lap("partition")
    stage_of_chip = {c: s for s, group in enumerate(plan.groups) for c in group}
    memo = StageMemo()
    _check_slices(plan, chip)
    chips = sorted({c for e in plan.entries for s in e.stmts for c in _chips_of(s)} | set(range(tp * pp)))
    tensors: list[Tensor] = []
    symbols: dict[int, dict[str, Tensor]] = {c: {} for c in chips}
    maps: dict[tuple[int, ...], int] = {}
    first = {c: Lowering(chip, tensors, symbols[c], c) for c in chips}
    for low in first.values():
        low.maps, low.pack = maps, plan.tight
    placements: list[Placement] = []
    pinned_symbols: list[tuple[Tensor, Placement]] = []
    for c, g, name, part in plan.params:
        data = None
        if weights is not None:
            whole = np.asarray(weights[name])
            value = whole
            for k in range(0, len(part or ()), 3):  # (axis, start, stop) for each cut axis
                value = np.take(value, np.arange(part[k + 1], part[k + 2]), axis=part[k])
            data = first[c].vectors_of(to_storage(value, g.type.dtype), g.type.dtype)
        t = first[c].new_tensor(g.name, g.type, "param", data=data)
        symbols[c][g.name] = t
        pinned_symbols.append((t, Placement("param", "", name, t.dtype, t.shape, c, t.slice, 0, part)))
    for c, g, name, part in plan.states:  # pinned for good; the emulator places their values before each run
        t = first[c].new_tensor(g.name, g.type, "state")
        symbols[c][g.name] = t
        pinned_symbols.append((t, Placement("state", "", name, t.dtype, t.shape, c, t.slice, 0, part)))

    runs: list[Run] = []
    if use_runs:
        link_numbers = _LinkLowering(system, {})

        def link_of(a: int, b: int) -> tuple[int, int]:
            return link_numbers.link(a, b)[1:]

        runs = find_runs(plan, lambda c, name: symbols[c][name].slice, link_of, warm)
        clock.lap("find runs")
    per_run_values = [value_map(plan, run, stage_of_chip) for run in runs]
    entries = tuple(e.name for e in plan.entries)
    per_entry = []
    for e_index, ep in enumerate(plan.entries):
        jobs: list = []
        lows = {}
        for c in chips:
            low = Lowering(chip, tensors, symbols[c], c)
            # every entry starts from the state after the params were placed, with constants of its
            # own: a chip's lowering depends on its own statements only (so alike stages lower alike)
            low.maps, low._rr, low.jobs, low.pinned = maps, dict(first[c]._rr), jobs, first[c].pinned
            lows[c] = low
        in_place = in_place_updates(ep)
        for low in lows.values():
            low.in_place = in_place
        inputs = []
        for c, name, v, part in ep.inputs:
            t = lows[c].new_tensor(name, v.type, "input")
            lows[c].values[id(v)] = t
            inputs.append((t, Placement("input", ep.name, name, t.dtype, t.shape, c, t.slice, 0, part)))
        early: dict[int, Tensor] = {}

        def before_commits() -> None:  # a returned state means its value before the commit
            for k, (c, v) in enumerate(ep.outputs):
                if not isinstance(v, Global) and id(v) not in lows[c].values:
                    continue  # not computed yet: not the state's old value
                src = lows[c].tensor(v)
                if src.kind == "state":
                    early[k] = lows[c].copy_states_returned([src], [TensorType(src.dtype, src.shape)])[0]

        stmts = ep.stmts
        if runs:
            stmts = _run_statements(ep.stmts, runs, [v[e_index] for v in per_run_values], stage_of_chip, tp)
        clock.lap("prepare")
        _lower_statements(ep, lows, system, before_commits, stmts)
        results = []
        seen: set[int] = set()
        for k, (c, v) in enumerate(ep.outputs):
            low = lows[c]
            src = early.get(k) or low.tensor(v)
            if src.kind != "temp" or src.id in seen:
                low.op_name = "copy for return"
                dst = low.new_tensor("out", TensorType(src.dtype, src.shape), avoid={src.slice})
                low.copy(src, dst)
                src = dst
            seen.add(src.id)
            results.append(src)
        for job in jobs:  # relative cycles are fixed: the lowering's constraints are no longer needed
            for nd in job.nodes:
                nd.after = _NONE
        for t in tensors:  # every entry starts at cycle 0 with its inputs and the state in place
            if t.kind in ("temp", "input", "state"):
                t.landing = None
                t.last_read = None
        clock.lap("lower")
        sched = Scheduler(chip, tensors)
        order, stage, deps = critical_path_order(jobs, tensors, stage_of_chip)
        clock.lap("order")
        placed: dict[int, object] = {}
        done: set[int] = set()
        releases: dict[int, int] = {}
        keys: dict[int, bytes | None] = {}
        for block in _blocks(order, stage):  # stage by stage, each from its release
            release = release_of(sched, jobs, block, deps, done)
            placed.update(memo.place(sched, jobs, block, release, use=timing_only))
            releases[stage[block[0]]], keys[stage[block[0]]] = release, memo.last_key
            done.update(block)
        shifts = []  # per run: cycles from one copy to the next
        for job in jobs:  # placed: what they hold is no longer needed, only what they emit
            for nd in job.nodes:
                nd.holds = _NONE
        for run in runs:  # placed alike, shifted alike: the stage after the copies (standing in for the
            # first copy) as the template's first, the template's last stage as the block before it
            t = run.template
            shift = releases[run.last] - releases[t]
            for u, v in ((run.last, t), (run.template_last, run.first)):
                alike = keys.get(u) and keys.get(u) == keys.get(v)
                if not alike or releases[u] - releases[v] != shift:
                    raise _NotPeriodic(f"stages {run.first}..{run.last} of {ep.name}", runs)
            shifts.append(shift)
        per_entry.append((ep, jobs, inputs, results, order, placed, stage, shifts))
        clock.lap("schedule")
    memo.known.clear()  # every block is placed: the searched ones' placements and change logs can go

    # SRAM: params and constants for the whole program; each entry's tensors by lifetime
    alloc = Allocator(chip)
    base: dict[int, int] = {}
    forever = (0, 1 << 62)
    for t in tensors:
        if t.kind in ("param", "const", "state"):
            base[t.id] = alloc.place(t.slice, t.vectors * t.width, *forever, chip=t.chip)
    for t, pl in pinned_symbols:
        placements.append(dataclasses.replace(pl, word=base[t.id]))
    emitter = Emitter(chip, tensors, base)
    groups = []  # per run and entry: where its template's rows are and how its copies shift
    repeat_ops = []  # per group, per copy: [template op index, the copy's op index]
    for e, (ep, jobs, inputs, results, order, placed, stage, shifts) in enumerate(per_entry):
        emitter.new_entry()
        entry_alloc = Allocator(chip)
        entry_alloc.used = {k: list(v) for k, v in alloc.used.items()}
        entry_alloc.high = dict(alloc.high)
        jobs_in_order = [jobs[j] for j in order]
        places = [placed[j] for j in order]
        life = lifetimes(jobs_in_order, places, tensors)
        pinned = {t.id for t, _ in inputs} | {t.id for t in results}
        for t in tensors:
            if t.id in base or (t.id not in life and t.id not in pinned):
                continue
            span = forever if t.id in pinned else life[t.id]
            base[t.id] = entry_alloc.place(t.slice, t.vectors * t.width, *span, chip=t.chip)
        entry_alloc.check()
        alloc.high = {k: max(alloc.high.get(k, 0), v) for k, v in entry_alloc.high.items()}
        for t, pl in inputs:
            placements.append(dataclasses.replace(pl, word=base[t.id]))
        for k, t in enumerate(results):
            placements.append(
                Placement("output", ep.name, f"out{k}", t.dtype, t.shape, t.chip, t.slice, base[t.id])
            )
        first_row: dict[int, int] = {}  # stage -> its block's first row
        for j, job, pl in zip(order, jobs_in_order, places):
            first_row.setdefault(stage[j], emitter.n_rows)
            emitter.emit(job, pl, e)
        del jobs_in_order, places
        jobs.clear()  # emitted: the entry's jobs are no longer needed
        placed.clear()
        for run, shift in zip(runs, shifts):
            t, before = run.template, run.first
            rows = first_row[run.last] - first_row[t]
            if first_row[t] - first_row[before] != first_row[run.last] - first_row[run.template_last]:
                msg = f"stages {before} and {run.template_last} of {ep.name} emit different rows"
                raise _NotPeriodic(msg, runs)
            groups.append((e, run, first_row[before], first_row[t], rows, shift, emitter.n_rows))
            # the copies' instructions come from their own stages' ops: map the template's op names
            fix, per_copy = op_names(ep, run, stage_of_chip)
            keys = list(emitter.ops)
            block = range(first_row[t], first_row[t] + rows)
            for i in block:  # the first hops out of the template: named after its own successor
                key = keys[emitter.row_op[i]]
                if key in fix:
                    emitter.row_op[i] = emitter.ops.setdefault(fix[key], len(emitter.ops))
            keys = list(emitter.ops)
            used = sorted({emitter.row_op[i] for i in block})
            repeat_ops.append(
                [
                    [[i, emitter.ops.setdefault(names.get(keys[i], keys[i]), len(emitter.ops))] for i in used]
                    for names in per_copy
                ]
            )
    alloc.check()

    clock.lap("allocate and emit")
    # the SRAM image: constants, and params when weights were given
    mem_index = {name: k for k, name in enumerate(chip.mem_slice_names())}
    img_chip, img_slice, img_word, img_data = [], [], [], []
    for t in tensors:
        if t.kind in ("param", "const") and t.data is not None:
            for v in range(t.vectors):
                img_chip.append(t.chip)
                img_slice.append(mem_index[t.slice])
                img_word.append(base[t.id] + v * t.width)
                img_data.append(t.data[v])
    entry, chip_col, queue, cycle, opcode, count, fields, src, off, stp = emitter.tables()
    sram = alloc.bytes_per_chip()
    repeats = Repeats.none()
    if groups:
        repeats = _stored_runs(groups, tp, chip_col, cycle, src)
        placements = _copy_chips(runs, tp, placements, sram, (img_chip, img_slice, img_word, img_data))
    maps_arr = (
        np.array(sorted(maps, key=maps.get), np.int32).reshape(len(maps), L)
        if maps
        else np.zeros((0, L), np.int32)
    )
    clock.lap("tables and copies")
    meta = {
        "module": print_module(module),
        "weights": weights is not None,
        "pipeline": list(PIPELINE),
        "tp": tp,
        "pp": pp,
        "stages": [list(g) for g in plan.groups],
        # where each instruction comes from: an op of the module (text and IR location) per instruction
        "ops": [f"{name} @ {loc}" if loc else name for name, loc in emitter.ops],
        "op_of": emitter.row_op.tolist(),
        "sram_bytes_per_chip": [sram.get(c, 0) for c in range(system.chips)],
        "sram_bytes_max_per_chip": max(sram.values(), default=0),
    }
    if repeat_ops:
        meta["repeat_ops"] = repeat_ops
    if plan.warnings:  # what the compile chose that costs time (lpu compile prints them)
        meta["warnings"] = [w.render() for w in plan.warnings]
    if timing_only:
        meta["timing_only"] = {
            "stage_blocks_searched": memo.misses,
            "stage_blocks_reused": memo.hits,
            "stage_blocks_copied": int((repeats.count * repeats.chip_step).sum()) // tp,
            "runs": [[run.first, run.last, run.period] for run in runs],
        }
    program = Program(
        system,
        entries,
        entry,
        chip_col,
        queue,
        cycle,
        opcode,
        count,
        fields,
        src,
        off,
        stp,
        np.array(img_chip, np.int32),
        np.array(img_slice, np.int32),
        np.array(img_word, np.int64),
        np.array(img_data, np.float64).reshape(len(img_word), L),
        tuple(placements),
        maps_arr,
        meta,
        repeats,
    )
    try:  # what the emulator would refuse on load must not leave the compiler
        check(program)
    except ProgramError as e:
        raise AssertionError(f"the compiler emitted an invalid instruction {e.index}: {e.message}") from None
    clock.lap("check")
    return program


def _run_statements(stmts: list, runs: list[Run], values: list[dict], stage_of_chip: dict, tp: int) -> list:
    """The statements a compile with runs lowers: none of the copies' blocks, and the block after
    each run's copies with the template's chips standing in for the last copy's (and the template's
    values for what it sends), its links still the real ones."""
    skip = {s for run in runs for s in run.copies}
    last = {run.last: (run, v) for run, v in zip(runs, values)}
    out = []
    for st in stmts:
        b = block_of(st, stage_of_chip)
        if b in skip:
            continue
        if b in last and isinstance(st, Transfer):
            run, vmap = last[b]
            prev = run.last - 1
            away = (prev - run.template_last) * tp
            route = tuple(c - away if stage_of_chip.get(c) == prev else c for c in st.route)
            if route != st.route:
                src = vmap.get(id(st.src), st.src)
                st = dataclasses.replace(st, route=route, src=src, real_route=st.route)
        out.append(st)
    return out


def _stored_runs(groups: list, tp: int, chip_col, cycle, src) -> Repeats:
    """Turn the rows emitted with stand-ins into the stored rows of the program (in place) and the
    table of copies: the block after each run's copies back on the last copy's chips and cycles,
    and every source numbered as in the expanded program, where the copies follow the template."""
    sizes = [run.count * rows for _, run, _, _, rows, _, _ in groups]
    at = np.array([start_t + rows for _, _, _, start_t, rows, _, _ in groups], np.int64)
    for _, run, _, start_t, rows, shift, end in groups:
        start_last = start_t + rows
        seg = slice(start_last, end)
        t_last = run.template_last
        t_chips = (chip_col[seg] >= t_last * tp) & (chip_col[seg] < (t_last + 1) * tp)
        chip_col[seg][t_chips] += (run.last - 1 - t_last) * tp
        cycle[seg] += run.count * shift
    # sources, expanded numbering: each group's copies sit between its template and what follows
    inserted = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    real = src.copy()
    ok = src >= 0
    real[ok] += inserted[np.searchsorted(at, src[ok], side="right")]
    lo = []
    for (_, _, start_prev, start_t, _, _, end), k_rows, where in zip(groups, sizes, at):
        block = src[start_t:where]
        if ((block >= 0) & (block < start_prev)).any():
            raise _NotPeriodic(
                "a template row reads from before the block it follows", [g[1] for g in groups]
            )
        mine = src[where:end]  # the block after the copies reads the last copy, not the template
        real[where:end][(mine >= start_t) & (mine < where)] += k_rows
        lo.append(int(start_prev + inserted[np.searchsorted(at, start_prev, side="right")]))
    src[:] = real
    return Repeats(
        first=np.array([g[3] for g in groups], np.int64),
        rows=np.array([g[4] for g in groups], np.int64),
        count=np.array([g[1].count for g in groups], np.int64),
        cycles=np.array([g[5] for g in groups], np.int64),
        src_lo=np.array(lo, np.int64),
        chip_step=np.array([g[1].period * tp for g in groups], np.int64),
    )


def _copy_chips(runs: list[Run], tp: int, placements: list, sram: dict, image: tuple) -> list:
    """What the copies' chips hold, from the template's chips of the same rank: SRAM use, constants
    in the image (appended) and the slices and words of the inputs placed on them (params and states
    are placed alike already: they come first on every chip; a copy's own inputs were placed without
    the constants of the entries before, which its stages did not lower)."""
    img_chip, img_slice, img_word, img_data = image
    where = {(pl.chip, pl.graph, pl.name): (pl.slice, pl.word) for pl in placements if pl.role == "input"}
    moved = {}
    for run in runs:
        for s in run.copies:
            like = run.like(s)
            away = (s - like) * tp
            for r in range(tp):
                c, ct = s * tp + r, like * tp + r
                sram[c] = sram.get(ct, 0)
                moved[c] = ct
            n = len(img_chip)
            for k in range(n):
                if like * tp <= img_chip[k] < (like + 1) * tp:
                    img_chip.append(img_chip[k] + away)
                    img_slice.append(img_slice[k])
                    img_word.append(img_word[k])
                    img_data.append(img_data[k])
    out = []
    for pl in placements:
        if pl.role == "input" and pl.chip in moved:
            sl, word = where[(moved[pl.chip], pl.graph, pl.name)]
            pl = dataclasses.replace(pl, slice=sl, word=word)
        out.append(pl)
    return out


def _blocks(order: list[int], stage: list[int]) -> list[list[int]]:
    """The scheduling order cut into runs of one stage (each stage's jobs come as one run)."""
    out: list[list[int]] = []
    for j in order:
        if not out or stage[out[-1][-1]] != stage[j]:
            out.append([])
        out[-1].append(j)
    return out


def _chips_of(stmt) -> tuple[int, ...]:
    if isinstance(stmt, Transfer):
        return stmt.route
    return (stmt.chip,)


def _lower_statements(ep, lows: dict, system: SystemConfig, before_commits=None, stmts=None) -> None:
    """Lower one entry's per-chip statements (`stmts`, else all of them), in order, each on its
    chip's Lowering; `before_commits` runs once, before the first commit (if there is one)."""
    links = _LinkLowering(system, lows)
    for stmt in ep.stmts:  # matmuls of one activation (a weight's blocks): Lowering.one_plane
        if isinstance(stmt, Local):
            lows[stmt.chip].count_matmul(stmt.op)
    for stmt in ep.stmts if stmts is None else stmts:
        if isinstance(stmt, LocalCommit) and before_commits is not None:
            before_commits()
            before_commits = None
        if isinstance(stmt, Local):
            low = lows[stmt.chip]
            low.op_index, low.op_name = stmt.index, stmt.what
            low.op_loc = str(stmt.op.loc) if stmt.op.loc is not None and stmt.index >= 0 else ""
            low.lower_op(stmt.op)
            low.op_loc = ""
        elif isinstance(stmt, Transfer):
            links.transfer(stmt)
        elif isinstance(stmt, Place):
            links.place(stmt)
        else:  # LocalCommit: copy the new value into the state's words after every read of the old one
            low = lows[stmt.chip]
            low.op_index, low.op_name = -1, stmt.what
            value, state = low.tensor(stmt.value), low.symbols[stmt.state.name]
            if value is not state:  # else updated in place (Lowering.update_slice)
                low.copy(value, state)


def in_place_updates(ep) -> set[int]:
    """The update_slice ops (by id) that may scatter into their state's own words: the result is
    committed to that state on the same chip, nothing else on the chip reads the state's old value
    (reads of a state see its value at the start of the run), the entry does not return it, and
    the update is along an axis other than the last (which is not a scatter)."""
    readers: dict[tuple[int, str], list] = {}
    made_by: dict[int, Local] = {}
    for st in ep.stmts:
        if isinstance(st, Local):
            made_by[id(st.op.result)] = st
            for o in st.op.operands:
                if isinstance(o, Global) and o.kind == "state":
                    readers.setdefault((st.chip, o.name), []).append(st)
        elif isinstance(st, Transfer | Place):
            if isinstance(st.src, Global) and st.src.kind == "state":
                chip = st.route[0] if isinstance(st, Transfer) else st.chip
                readers.setdefault((chip, st.src.name), []).append(st)
        elif isinstance(st, LocalCommit) and isinstance(st.value, Global):
            readers.setdefault((st.chip, st.value.name), []).append(st)
    returned = {(c, v.name) for c, v in ep.outputs if isinstance(v, Global)}
    out = set()
    for st in ep.stmts:
        if not isinstance(st, LocalCommit):
            continue
        upd = made_by.get(id(st.value))
        if upd is None or upd.chip != st.chip or upd.op.name != "update_slice":
            continue
        target = upd.op.operands[0]
        key = (st.chip, st.state.name)
        if not (isinstance(target, Global) and target.kind == "state" and target.name == st.state.name):
            continue
        rank = len(target.type.shape)
        if upd.op.attr("axis") % rank == rank - 1 or key in returned or readers.get(key) != [upd]:
            continue
        out.add(id(upd.op))
    return out


class _LinkLowering:
    """Transfers become jobs spanning two chips: per vector a MEM read and a `send` on the sender, a
    `recv` and a MEM write on the receiver. A receive is issued exactly when its vector arrives
    (hand-over + serialisation + latency), sends on a link are one serialisation time apart, and each
    send holds its link direction for that time, so the scheduler never overlaps two vectors on a link."""

    CHUNK = 32  # vectors per job: long transfers leave room between them for others on the same link

    def __init__(self, system: SystemConfig, lows: dict):
        self.system = system
        self.lows = lows
        self.chip = system.chip
        self.ser = system.link_cycles_per_vector
        self.latency = system.link_latency_cycles
        self.own = {}

    def link(self, a: int, b: int) -> tuple[int, int, int]:
        """(system link, its number on chip a, its number on chip b) for a direct link a -> b."""
        if a not in self.own:
            self.own[a] = self.system.chip_links(a)
        for k, (sys_link, other) in enumerate(self.own[a]):
            if other == b:
                if b not in self.own:
                    self.own[b] = self.system.chip_links(b)
                kb = next(j for j, (sl, _) in enumerate(self.own[b]) if sl == sys_link)
                return sys_link, k, kb
        raise AssertionError(f"chips {a} and {b} are not neighbours")

    def queue(self, low: Lowering, k: int) -> int:
        half = self.chip.c2c_links // 2
        name = f"c2c.w.q{k}" if k < half else f"c2c.e.q{k - half}"
        return low.queue_index[name]

    def tensor_of(self, low: Lowering, v, avoid: set[str]) -> Tensor:
        if id(v) not in low.values:
            low.values[id(v)] = low.new_tensor(v.name or "recv", v.type, avoid=avoid)
        return low.tensor(v)

    def transfer(self, st: Transfer) -> None:
        route = st.route
        # a hop between two stand-ins is their own link (wired alike); one into a real chip is the real one
        real = st.real_route or route
        stand_in = {c for c, r in zip(route, real) if c != r}
        src_low = self.lows[route[0]]
        src = src_low.tensor(st.src)
        sv = list(st.src_vectors)
        for h, (a, b) in enumerate(zip(route[:-1], route[1:])):
            last = h == len(route) - 2
            low_b = self.lows[b]
            if last:
                dst = self.tensor_of(low_b, st.dst, set())
                dv = list(st.dst_vectors)
            else:  # forwarded through chip b's SRAM
                dst = low_b.new_tensor(
                    "fwd",
                    TensorType(src.dtype, (len(sv), src.cols)) if src.chunks == 1 else _rows(src, len(sv)),
                )
                dv = list(range(len(sv)))
            self.hop(a, b, src, sv, dst, dv, st.what, (a, b) if {a, b} <= stand_in else real[h : h + 2])
            src, sv = dst, dv

    def hop(
        self, a: int, b: int, src: Tensor, sv: list[int], dst: Tensor, dv: list[int], what: str, real=None
    ) -> None:
        """One link from chip a to chip b (`real`: the chips whose link it is, when a or b stands in)."""
        sys_link, ka, kb = self.link(*(real or (a, b)))
        low_a, low_b = self.lows[a], self.lows[b]
        qa, qb = self.queue(low_a, ka), self.queue(low_b, kb)
        send, recv = BY_MNEMONIC["send"], BY_MNEMONIC["recv"]
        gap = send.dskew + self.ser + self.latency - recv.dskew
        for c0 in range(0, len(sv), self.CHUNK):
            job = Job(what)
            sends = []
            for s in sv[c0 : c0 + self.CHUNK]:
                rd = low_a.read(job, src, s, 1, 1)
                job.nodes[rd].chip = a
                nd = Node("send", qa, low_a.queue_x[qa], 1, {"link": ka}, inputs=[("a", rd)], chip=a)
                nd.holds.append((("link", sys_link, a), send.dskew, self.ser))
                if sends:
                    nd.after.append((sends[-1], self.ser))
                sends.append(job.add(nd))
            recvs = []
            for i, d in enumerate(dv[c0 : c0 + self.CHUNK]):
                nd = Node("recv", qb, low_b.queue_x[qb], 1, {"link": kb}, chip=b, sources={"link": sends[i]})
                nd.after.append((sends[i], gap))
                rv = job.add(nd)
                recvs.append(rv)
                wr = low_b.write(job, dst, d, 1, 1, rv)
                job.nodes[wr].chip = b
            low_a.op_name = what
            low_a.finish(job)
            for s_node, r_node in zip(sends, recvs):  # a receive takes its vector the cycle it arrives
                assert job.nodes[r_node].rel == job.nodes[s_node].rel + gap, what

    def place(self, st: Place) -> None:
        low = self.lows[st.chip]
        src = low.tensor(st.src)
        dst = self.tensor_of(low, st.dst, {src.slice})
        low.op_index, low.op_name = -1, st.what
        if dst.slice == src.slice:  # one port cannot read and write a stream of vectors: go around
            via = low.new_tensor(f"{src.name}.via", TensorType(src.dtype, src.shape), avoid={src.slice})
            low.copy(src, via)
            src = via
        # one pipeline; its read and write are cut into runs of evenly spaced vectors
        job = low.new_job()
        r = low.read_index(job, src, np.asarray(st.src_vectors, np.int64))
        low.write_index(job, dst, np.asarray(st.dst_vectors, np.int64), r)
        low.finish(job)


def _rows(t: Tensor, n: int) -> TensorType:
    """A tensor type of `n` of `t`'s vectors (a forwarding buffer)."""
    return TensorType(t.dtype, (n, t.lanes)) if t.cols >= t.lanes else TensorType(t.dtype, (n, t.cols))


def _check_params(m: Module, chip, chips: int) -> None:
    """Refuse early what cannot fit: params beyond the SRAM of the chips."""
    need = sum(_size(g.type, chip) for g in m.params)
    if need > chip.sram_bytes * chips:
        need_chips = -(-need // chip.sram_bytes)
        have = (
            f"a {chip.name} chip's {chip.sram_bytes}"
            if chips == 1
            else f"{chips} {chip.name} chips hold ({chip.sram_bytes} bytes each)"
        )
        raise error(
            f"the model does not fit in SRAM: its params need {need} bytes, {need - chip.sram_bytes * chips} "
            f"more than {have}; about {need_chips} chips would hold them"
        )


def _check_slices(plan, chip) -> None:
    """Each tensor lives in one MEM slice in this layout: refuse a local value larger than a slice."""
    seen = set()
    for _, g, _, _ in plan.params:
        if _size(g.type, chip) > chip.mem_slice_bytes:
            _too_big(f"@{g.name.split('|')[0]}", g.type, chip, g.loc)
    for e in plan.entries:
        for st in e.stmts:
            if isinstance(st, Local) and id(st.op) not in seen:
                seen.add(id(st.op))
                t = st.op.result.type
                if _size(t, chip) > chip.mem_slice_bytes:
                    name = f"%{st.op.result.name}" if st.op.result.name else f"the result of {st.op.name}"
                    _too_big(name, t, chip, st.op.loc)
        for _, name, v, _ in e.inputs:
            if _size(v.type, chip) > chip.mem_slice_bytes:
                _too_big(f"%{name}", v.type, chip, v.loc)


def _too_big(name: str, t, chip, loc) -> None:
    raise error(
        f"{name} : {t} needs {_size(t, chip)} bytes but one MEM slice holds {chip.mem_slice_bytes}; "
        "tensors are not split across slices yet",
        loc,
    )


def _size(t, chip) -> int:
    return vectors_of(t.shape, chip.lanes) * chip.lanes * DTYPE_BYTES[t.dtype]


@dataclass
class Candidate:
    """One (tp, pp) split tried by `search`: its scheduled cycles and SRAM, or why it failed."""

    tp: int
    pp: int
    cycles: int | None = None
    sram_bytes_max: int | None = None
    problem: str = ""
    program: Program | None = field(default=None, repr=False)

    @property
    def chips(self) -> int:
        return self.tp * self.pp


def candidates(chips: int) -> list[tuple[int, int]]:
    """(tp, pp) pairs to try on `chips` chips: powers of two and the exact factorisations of `chips`."""
    out = set()
    for tp in range(1, chips + 1):
        for pp in range(1, chips // tp + 1):
            pow2 = (tp & (tp - 1)) == 0 and (pp & (pp - 1)) == 0
            if pow2 or tp * pp == chips:
                out.add((tp, pp))
    return sorted(out, key=lambda c: (c[0] * c[1], c[0]))


def search(
    module: Module,
    system: SystemConfig,
    weights: dict[str, np.ndarray] | None,
    chips: int,
    timing_only: bool = False,
) -> tuple[Candidate, list[Candidate], str]:
    """Compile every candidate split on at most `chips` chips; the winner has the fewest cycles of its
    schedule (exact, not estimated), then the fewest chips. Returns (winner, all candidates, why)."""
    if not 1 <= chips <= system.chips:
        raise error(f"--chips {chips}: system {system.name} has {system.chips} chips")
    tried = []
    for tp, pp in candidates(chips):
        c = Candidate(tp, pp)
        try:
            p = compile_module(module, system, weights, tp=tp, pp=pp, timing_only=timing_only)
        except LpuError as e:
            c.problem = e.diagnostics[0].message
        else:
            c.cycles = p.length()
            per_chip = p.meta.get("sram_bytes_per_chip") or [p.meta.get("sram_bytes_max_per_chip", 0)]
            c.sram_bytes_max = max(per_chip)
            c.program = p
        tried.append(c)
    ok = sorted((c for c in tried if c.cycles is not None), key=lambda c: (c.cycles, c.chips, c.tp))
    if not ok:
        need = sum(_size(g.type, system.chip) for g in module.params)
        raise error(
            f"the model fits no split of {chips} chip{'s' if chips != 1 else ''} of system {system.name}: "
            f"{tried[-1].problem}; its params alone need {need} bytes, about "
            f"{max(1, -(-need // system.chip.sram_bytes))} chips of {system.chip.sram_bytes} bytes"
        )
    best = ok[0]
    if len(ok) == 1:
        why = "the only split that compiles"
    else:
        second = ok[1]
        if second.cycles == best.cycles:
            why = f"as fast as tp={second.tp} pp={second.pp} ({best.cycles} cycles) on fewer chips"
        else:
            more = 100.0 * (second.cycles - best.cycles) / best.cycles
            why = (
                f"fewest cycles: {best.cycles}, the next best (tp={second.tp} pp={second.pp}) takes "
                f"{second.cycles} ({more:.1f}% more)"
            )
    return best, tried, why
