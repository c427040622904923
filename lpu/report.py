"""What a compiled program does, from the program file alone: cycles, busy units, SRAM, links, the
lower bound on cycles and the critical path, and for decoders the cost per token.

Nothing here runs the emulator: every number comes from the instruction tables (the schedule is
static), and tests hold the busy and total cycles equal to what the emulator measures.

The lower bound is the largest of four bounds that hold for *any* schedule of the same
instructions, not only this one:

- critical path: the longest chain through the intended sources (a consumer samples vector i no
  earlier than the producer's vector arrives: its functional delay, the hops between the two
  queues' positions, the link's serialisation and latency), ending with the last instruction's
  own time; a matrix plane's weights count too (`_plane_floors`): the read of an accumulator
  waits for all but three of the tiles its passes multiply to be loaded and installed after
  the first of those passes, one after another;
- MEM ports: a slice's one port serves one access per cycle, so cycles >= its busy cycles;
- matrix units: likewise for each matrix-unit queue;
- links: a link direction carries one vector per serialisation time.

The ratio of the schedule to the bound says how much room a better scheduler could find at
most (1.0: none).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
from numba import njit

from isa.program import Program, source_slots
from isa.spec import BY_CODE, DTYPE_BYTES, ENUMS, OPS, Unit

BOUND_NAMES = ("critical_path", "mem_ports", "matrix_units", "links")


@dataclass
class PathStep:
    """One op on the critical path: its text and IR location, the cycle its first instruction on the
    path can start at the earliest, and how many of the path's instructions it has."""

    op: str
    earliest_cycle: int
    instructions: int


@dataclass
class Report:
    entry: str
    entries: dict[str, int]  # cycles of every entry
    cycles: int
    seconds: float
    clock_mhz: float
    chips: int
    busy: dict[str, int]  # busy cycles per unit kind (the emulator's `busy`)
    busy_fraction: dict[str, float]  # per unit kind: busy cycles / (cycles x queues of that kind)
    busy_fraction_per_chip: dict[int, dict[str, float]]
    sram_bytes_max_per_chip: int
    sram_per_chip: dict[int, dict[str, int]]  # weights, state, activations (chips <= 64 systems)
    link_bytes: dict[str, int]  # "a->b" (chips of a system link, the direction) -> bytes this entry
    bounds: dict[str, int]
    lower_bound_cycles: int
    binding_bound: str
    bound_ratio: float
    critical_path: list[PathStep] = field(default_factory=list)
    latency_per_token_s: float | None = None
    tokens_per_s: float | None = None
    energy_per_token_j: float | None = None  # an estimate: chips x chip power x latency
    gpu: dict | None = None  # a roofline estimate of the same decode step on the system's GPU
    timing_only: dict | None = None  # for a --timing-only program: stage blocks searched and reused

    def to_json(self) -> dict:
        out = asdict(self)
        out["busy_fraction_per_chip"] = {str(k): v for k, v in self.busy_fraction_per_chip.items()}
        out["sram_per_chip"] = {str(k): v for k, v in self.sram_per_chip.items()}
        return out


def _tables():
    top = max(BY_CODE) + 1
    dskew, dfunc, fixed, per = (np.zeros(top, np.int64) for _ in range(4))
    for s in OPS:
        dskew[s.code], dfunc[s.code], fixed[s.code], per[s.code] = (
            s.dskew,
            s.dfunc,
            s.busy_fixed,
            s.busy_per_vector,
        )
    return dskew, dfunc, fixed, per


def default_entry(p: Program) -> str:
    for name in ("decode", "main"):
        if name in p.entries:
            return name
    return p.entries[0]


def report(p: Program, entry: str | None = None) -> Report:
    """The report of one entry (default: `decode`, else `main`, else the first)."""
    entry = entry or default_entry(p)
    if entry not in p.entries:
        from isa.diagnostics import error

        raise error(f"the program has no entry '{entry}' (it has {', '.join(p.entries)})")
    e = p.entries.index(entry)
    sel = np.nonzero(p.entry == e)[0]
    chip_cfg = p.system.chip
    clock = chip_cfg.clock_mhz
    cycles = p.length(entry)
    queues = chip_cfg.queue_table()
    unit_of_queue = np.array([list(Unit).index(q.unit) for q in queues], np.int64)
    dskew, dfunc, fixed, per = _tables()
    # busy cycles per (chip, queue), the copies of repeated blocks included (on their own chips)
    busy_cq, rows_per_chip = _busy(p, sel, fixed, per, len(queues))
    chips_here = np.nonzero(rows_per_chip)[0].tolist() or [0]
    used = int(p.meta.get("tp", 1)) * int(p.meta.get("pp", 1)) if "tp" in p.meta else len(chips_here)

    busy_by_unit = {u.value: int(busy_cq[:, unit_of_queue == k].sum()) for k, u in enumerate(Unit)}
    per_kind = {u.value: sum(1 for q in queues if q.unit is u) for u in Unit}
    denom = max(cycles, 1)
    fraction = {
        u: busy_by_unit[u] / (denom * per_kind[u] * len(chips_here)) if per_kind[u] else 0.0
        for u in busy_by_unit
        if busy_by_unit[u]
    }
    per_chip: dict[int, dict[str, float]] = {}
    for c in chips_here:
        per_chip[c] = {
            u.value: float(busy_cq[c, unit_of_queue == k].sum()) / (denom * per_kind[u.value])
            for k, u in enumerate(Unit)
            if per_kind[u.value] and busy_cq[c, unit_of_queue == k].sum()
        }

    sram_list = p.meta.get("sram_bytes_per_chip")
    sram_max = max(sram_list) if sram_list else int(p.meta.get("sram_bytes_max_per_chip", 0))
    sram_per_chip: dict[int, dict[str, int]] = {}
    if sram_list:
        held = {"param": {}, "state": {}}
        for pl in p.placements:
            if pl.role in held:
                held[pl.role][pl.chip] = (
                    held[pl.role].get(pl.chip, 0) + pl.words(chip_cfg.lanes) * chip_cfg.lanes
                )
        for c, total in enumerate(sram_list):
            if total:
                w, s = held["param"].get(c, 0), held["state"].get(c, 0)
                sram_per_chip[c] = {
                    "weights": w,
                    "state": s,
                    "activations": max(0, total - w - s),
                    "total": total,
                }

    link_bytes, link_bound = _links(p, e)

    def queue_bound(unit: Unit) -> int:  # the busiest queue of a kind: its instructions alone take that long
        mine = busy_cq[:, unit_of_queue == list(Unit).index(unit)]
        return int(mine.max()) if mine.size else 0

    bounds = {
        "critical_path": 0,
        "mem_ports": queue_bound(Unit.MEM),
        "matrix_units": queue_bound(Unit.MXM),
        "links": link_bound,
    }
    path_cycles, path = _critical_path(p, e, dskew, dfunc, fixed, per)
    bounds["critical_path"] = path_cycles
    binding = max(BOUND_NAMES, key=lambda k: (bounds[k], -BOUND_NAMES.index(k)))
    lower = bounds[binding]
    r = Report(
        entry=entry,
        entries={name: p.length(name) for name in p.entries},
        cycles=cycles,
        seconds=cycles / (clock * 1e6),
        clock_mhz=clock,
        chips=used,
        busy=busy_by_unit,
        busy_fraction=fraction,
        busy_fraction_per_chip=per_chip,
        sram_bytes_max_per_chip=int(sram_max),
        sram_per_chip=sram_per_chip,
        link_bytes=link_bytes,
        bounds=bounds,
        lower_bound_cycles=lower,
        binding_bound=binding,
        bound_ratio=cycles / lower if lower else 1.0,
        critical_path=path,
        timing_only=p.meta.get("timing_only"),
    )
    if "decode" in p.entries and entry == "decode":
        r.latency_per_token_s = r.seconds
        r.tokens_per_s = 1.0 / r.seconds if r.seconds else None
        r.energy_per_token_j = used * chip_cfg.power_watts * r.seconds
        r.gpu = gpu_roofline(p)
    return r


def _groups_of(p: Program, e: int) -> list[int]:
    """The repeated blocks of entry e."""
    r = p.repeats
    return [g for g in range(len(r)) if p.entry[r.first[g]] == e]


def _busy(p: Program, sel, fixed, per, n_queues: int) -> tuple[np.ndarray, np.ndarray]:
    """Busy cycles per (chip, queue) and instructions per chip of the rows `sel`, with the copies of
    their repeated blocks."""
    chips = p.system.chips
    busy_cq = np.zeros((chips, n_queues), np.int64)
    rows = np.zeros(chips, np.int64)

    def add(idx, to_cq, to_rows):
        code = p.opcode[idx].astype(np.int64)
        busy = fixed[code] + per[code] * p.n[idx].astype(np.int64)
        np.add.at(to_cq, (p.chip[idx], p.queue[idx]), busy)
        np.add.at(to_rows, p.chip[idx], 1)

    add(sel, busy_cq, rows)
    r = p.repeats
    for g in _groups_of(p, int(p.entry[sel[0]]) if len(sel) else -1):
        block_cq, block_rows = np.zeros_like(busy_cq), np.zeros_like(rows)
        add(np.arange(r.first[g], r.first[g] + r.rows[g]), block_cq, block_rows)
        step = int(r.chip_step[g])
        for k in range(1, int(r.count[g]) + 1):  # copy k: the block's chips moved by k steps
            d = k * step
            busy_cq[d:] += block_cq[: chips - d]
            rows[d:] += block_rows[: chips - d]
    return busy_cq, rows


def _links(p: Program, e: int) -> tuple[dict[str, int], int]:
    """Bytes per link direction (chips a->b) in entry e, and the busiest direction's cycles: from the
    receives (each takes n vectors over link `link` of its chip), copies of repeated blocks included."""
    from isa.spec import BY_MNEMONIC

    recv, send = BY_MNEMONIC["recv"], BY_MNEMONIC["send"]
    slot = source_slots(recv).index("link")
    link_col = recv.operands.index("link")
    rows = np.nonzero((p.entry == e) & (p.opcode == recv.code))[0]
    src = p.src[rows, slot]
    ok = src >= 0
    ok[ok] = p.opcode[p.stored_index(src[ok])] == send.code  # a receive names the send it takes
    rows = rows[ok]
    r = p.repeats
    shifts = [(rows, 0)]
    for g in _groups_of(p, e):
        mine = rows[(rows >= r.first[g]) & (rows < r.first[g] + r.rows[g])]
        shifts += [(mine, k * int(r.chip_step[g])) for k in range(1, int(r.count[g]) + 1)]
    own: dict[int, tuple] = {}
    per: dict[tuple[int, int], int] = {}
    for idx, d in shifts:
        for c, k, n in zip((p.chip[idx] + d).tolist(), p.fields[idx, link_col].tolist(), p.n[idx].tolist()):
            if c not in own:
                own[c] = p.system.chip_links(c)
            if k < len(own[c]):
                key = (own[c][k][1], c)
                per[key] = per.get(key, 0) + n
    wire = p.system.vector_wire_bytes
    ser = p.system.link_cycles_per_vector
    return {f"{a}->{b}": k * wire for (a, b), k in sorted(per.items())}, max(
        (k * ser for k in per.values()), default=0
    )


def _critical_path(p: Program, e: int, dskew, dfunc, fixed, per) -> tuple[int, list[PathStep]]:
    """The longest chain of intended sources in entry e, as (cycles, the ops along it). On a program
    with repeated blocks the chain runs through the copies too, without writing them out: a copy's
    rows are its block's, their sources past the block's `src_lo` moved with the copy."""
    sel = np.nonzero(p.entry == e)[0]
    if not len(sel):
        return 0, []
    r = p.repeats
    real = p.real_index(sel)
    lo = int(real[0])
    code = p.opcode[sel].astype(np.int64)
    n = p.n[sel].astype(np.int64)
    dur = np.maximum(fixed[code] + per[code] * n, dfunc[code] + n)
    xs = np.array([q.x for q in p.system.chip.queue_table()], np.int64)
    ser, latency = p.system.link_cycles_per_vector, p.system.link_latency_cycles
    src = p.src[sel].astype(np.int64)  # expanded numbering
    valid = src >= lo
    prod = p.stored_index(np.where(valid, src, lo))
    pc = p.opcode[prod].astype(np.int64)
    off, step = p.src_off[sel], p.src_step[sel]
    lag = off + np.maximum(0, (n[:, None] - 1) * (step - 1))
    is_link, is_stream, has_slot = _slot_kinds(code, p.src.shape[1])
    hops = np.abs(xs[p.queue[sel]][:, None] - xs[p.queue[prod]])
    gap = np.where(
        is_link,
        dskew[pc] + ser + latency - dskew[code][:, None] + lag,
        dfunc[pc] + np.where(is_stream, hops, 0) - dskew[code][:, None] + lag,
    )
    src_local = np.where(valid & has_slot, src - lo, -1)
    # segments of the expanded entry, in order: (first expanded row, rows, first row in `sel`, copy k,
    # the block's src_lo); stored rows have k = 0
    position = {int(i): k for k, i in enumerate(sel)}
    segs, seg_group = [], []
    at = 0
    for g in _groups_of(p, e):
        first, rows = int(r.first[g]), int(r.rows[g])
        end = position[first + rows - 1] + 1
        segs.append((int(real[at]) - lo, end - at, at, 0, 0))
        seg_group.append(-1)
        t0 = int(real[position[first]]) - lo
        for k in range(1, int(r.count[g]) + 1):
            segs.append((t0 + k * rows, rows, position[first], k, int(r.src_lo[g]) - lo))
            seg_group.append(g)
        at = end
    if at < len(sel):
        segs.append((int(real[at]) - lo, len(sel) - at, at, 0, 0))
        seg_group.append(-1)
    segs_arr = np.array(segs, np.int64).reshape(-1, 5)
    n_all = int(segs_arr[-1, 0] + segs_arr[-1, 1])
    if len(r):  # expanded order is the program order: producers must come first in it
        if (src_local >= (real - lo)[:, None]).any():
            raise ValueError("a source follows its consumer in a program with repeated blocks")
        order = np.zeros(0, np.int64)
    else:
        order = np.lexsort((np.arange(len(sel)), p.cycle[sel]))  # producers first in any valid schedule
    fptr, fflat, fconst = _plane_floors(p, sel, code, n, dskew, dfunc, fixed, per)
    earliest, via, last, end_cycles = _longest(
        segs_arr, order, src_local, gap, dur, n_all, fptr, fflat, fconst
    )

    def stored_of(k: int) -> tuple[int, int]:  # expanded row of the entry -> its row in `sel`, segment
        s = int(np.searchsorted(segs_arr[:, 0], k, side="right")) - 1
        return int(segs_arr[s, 2] + k - segs_arr[s, 0]), s

    chain = []
    k = last
    while k >= 0 and len(chain) <= n_all:
        chain.append(k)
        k = int(via[k])
    chain.reverse()
    ops = p.meta.get("ops")
    op_of = p.meta.get("op_of")
    steps: list[PathStep] = []
    names: dict[int, dict[int, int]] = {}
    for k in chain:
        row, s = stored_of(k)
        i = int(sel[row])
        if ops and op_of and i < len(op_of):
            op = op_of[i]
            if seg_group[s] >= 0:  # a copy: the op of its own stage
                if s not in names:
                    names[s] = p.copy_ops(seg_group[s], int(segs_arr[s, 3]))
                op = names[s].get(op, op)
            text = ops[op]
        else:
            text = BY_CODE[int(p.opcode[i])].mnemonic
        if steps and steps[-1].op == text:
            steps[-1].instructions += 1
        else:
            steps.append(PathStep(text, int(earliest[k]), 1))
    return int(end_cycles), steps


@njit(cache=True)
def _longest(segs, order, src, gap, dur, n_all, fptr, fflat, fconst):
    """Earliest start of each row along its longest chain of sources and the source it came by, the
    row that ends last and when. `order`: the rows (of the one stored segment) in an order that puts
    producers first; empty: expanded order, segment by segment. A row with a floor (`_plane_floors`:
    rows fptr[r] .. fptr[r + 1] of `fflat`) starts no earlier than the earliest of those rows (all in
    its own segment) plus fconst[r]."""
    width = src.shape[1]
    earliest = np.zeros(n_all, np.int64)
    via = np.full(n_all, -1, np.int64)
    last, best = 0, -1
    for q in range(segs.shape[0]):
        start, rows, base, k, src_lo = segs[q]
        for r in range(rows):
            i = order[r] if len(order) else r
            row = start + i
            t_row = base + i
            for s in range(width):
                j = src[t_row, s]
                if j < 0:
                    continue
                if k > 0 and j >= src_lo:
                    j += k * rows
                t = earliest[j] + gap[t_row, s]
                if t > earliest[row]:
                    earliest[row] = t
                    via[row] = j
            if fptr[t_row + 1] > fptr[t_row]:
                low, at = -1, -1
                for x in range(fptr[t_row], fptr[t_row + 1]):
                    u = fflat[x]
                    if u < base or u >= base + rows:  # a row the segment does not hold: no floor
                        at = -1
                        break
                    if at < 0 or earliest[start + u - base] < low:
                        low, at = earliest[start + u - base], start + u - base
                if at >= 0 and low + fconst[t_row] > earliest[row]:
                    earliest[row] = low + fconst[t_row]
                    via[row] = at
        for r in range(rows):  # the first row (in expanded order) that ends last
            row = start + r
            end = earliest[row] + dur[base + r]
            if end > best:
                best, last = end, row
    return earliest, via, last, best


def _plane_floors(p: Program, sel, code, n, dskew, dfunc, fixed, per):
    """Floors from the weights a matrix plane holds, which the chain of sources leaves out (an install
    has no source: its weights are in SRAM from cycle 0). A plane holds one tile in its array and
    loads at most one more into its shadow buffer, so of the tiles a chain of accumulating passes
    (acc_set, then acc_add on the same queue and slot) multiplies, all but two are loaded after its
    first pass has sampled, one after another on their load queue, and installed one after another
    on theirs, before the read of the accumulator (`acc`) can see the last product. Any schedule of
    these instructions giving each pass its intended install and the `acc` the whole sum obeys:

        acc start >= (earliest start of the chain's passes)
                     + the larger of the tiles' `lw` busy cycles and their `iw`s' busy cycles,
                       less the three largest tiles' (two loaded early, and the last one itself)
                     + min(0, the fixed delays between them, from the ISA table)

    Returns, per row of `sel`, the passes it waits for (CSR: fptr, fflat, positions in `sel`) and the
    constant; only `acc` rows whose passes' tiles were loaded on one queue and installed on one get a
    floor."""
    m = len(sel)
    empty = (np.zeros(m + 1, np.int64), np.zeros(0, np.int64), np.zeros(m, np.int64))
    LW, IW, MM, ACC = (next(s.code for s in OPS if s.mnemonic == k) for k in ("lw", "iw", "mm", "acc"))
    acc_rows = np.nonzero(code == ACC)[0]
    if not len(acc_rows):
        return empty
    queues = p.system.chip.queue_table()
    plane_of_queue = np.full(len(queues), -1, np.int64)  # one number per (MXM slice, plane)
    planes: dict[tuple, int] = {}
    for q in queues:
        if q.unit is Unit.MXM:
            plane_of_queue[q.index] = planes.setdefault((q.slice, q.plane), len(planes))
    chip = p.chip[sel].astype(np.int64)
    queue = p.queue[sel].astype(np.int64)
    cycle = p.cycle[sel].astype(np.int64)
    unit = chip * max(len(planes), 1) + np.maximum(plane_of_queue[queue], 0)  # (chip, plane)
    span = int(cycle.max()) + 2

    def position(rows, slot_name: str, mnemonic: str) -> np.ndarray:
        """The row in `sel` (or -1) that source slot `slot_name` of these `mnemonic` rows names."""
        slot = source_slots(BY_CODE[next(s.code for s in OPS if s.mnemonic == mnemonic)]).index(slot_name)
        src = p.src[sel[rows], slot].astype(np.int64)
        out = np.full(len(rows), -1, np.int64)
        ok = src >= 0
        if ok.any():
            stored = p.stored_index(src[ok])
            at = np.minimum(np.searchsorted(sel, stored), m - 1)
            out[ok] = np.where(sel[at] == stored, at, -1)
        return out

    # each load's tile: the first install on its plane after it; per install, its loads' busy cycles
    # and their queue (-2: more than one)
    iw = np.nonzero(code == IW)[0]
    lw = np.nonzero(code == LW)[0]
    tile_busy = np.zeros(m, np.int64)
    tile_queue = np.full(m, -1, np.int64)
    if len(iw) and len(lw):
        key_iw = unit[iw] * span + cycle[iw]
        by = np.argsort(key_iw, kind="stable")
        k = np.searchsorted(key_iw[by], unit[lw] * span + cycle[lw], side="right")
        ok = k < len(iw)
        tile = iw[by[np.minimum(k, len(iw) - 1)]]
        ok &= unit[tile] == unit[lw]
        busy = fixed[code[lw]] + per[code[lw]] * n[lw]
        np.add.at(tile_busy, tile[ok], busy[ok])
        qmin = np.full(m, 1 << 40, np.int64)
        qmax = np.full(m, -1, np.int64)
        np.minimum.at(qmin, tile[ok], queue[lw][ok])
        np.maximum.at(qmax, tile[ok], queue[lw][ok])
        loaded = qmax >= 0
        tile_queue[loaded] = np.where(qmin[loaded] == qmax[loaded], qmax[loaded], -2)
    # the chains of passes: on one queue and slot, in cycle order, each from an acc_set
    mm = np.nonzero(code == MM)[0]
    if not len(mm):
        return empty
    spec_mm = BY_CODE[MM]
    mode = p.fields[sel[mm], spec_mm.operands.index("mode")].astype(np.int64)
    slot = p.fields[sel[mm], spec_mm.operands.index("slot")].astype(np.int64)
    by = np.lexsort((cycle[mm], slot, queue[mm], chip[mm]))
    mm, mode, slot = mm[by], mode[by], slot[by]
    new = np.ones(len(mm), bool)
    new[1:] = (chip[mm][1:] != chip[mm][:-1]) | (queue[mm][1:] != queue[mm][:-1]) | (slot[1:] != slot[:-1])
    new |= mode != ENUMS["mm_mode"].index("acc_add")
    chain_first = np.maximum.accumulate(np.where(new, np.arange(len(mm)), 0))
    rank = np.full(m, -1, np.int64)
    rank[mm] = np.arange(len(mm))
    w_of = np.full(m, -1, np.int64)
    w_of[mm] = position(mm, "w", "mm")
    last = position(acc_rows, "acc", "acc")
    # what the three fixed delays give or take (see the docstring): loads of the third tile start at
    # most this many cycles before the first pass, the acc this many after the last load starts
    margin = (dskew[MM] - dfunc[IW] + 1 + dskew[IW] - dfunc[LW] + 1) + (
        dfunc[LW] - dskew[IW] + dfunc[IW] - dskew[MM] + dfunc[MM] - dskew[ACC]
    )
    busy_all = fixed[code] + per[code] * n
    assert ENUMS["mm_mode"].index("acc_set") == 1  # _floors_of's test for a chain's start
    return _floors_of(
        m,
        acc_rows,
        last,
        rank,
        chain_first,
        mm,
        mode,
        w_of,
        tile_busy,
        tile_queue,
        queue,
        busy_all,
        min(0, int(margin)),
    )


@njit(cache=True)
def _floors_of(
    m, acc_rows, last, rank, chain_first, mm, mode, w_of, tile_busy, tile_queue, queue, iw_busy, margin
):
    """`_plane_floors`' CSR table: per `acc` row, its chain of passes (positions in `sel`) and floor."""
    lo_of = np.full(len(acc_rows), -1, np.int64)
    hi_of = np.full(len(acc_rows), -1, np.int64)
    fconst = np.zeros(m, np.int64)
    for a in range(len(acc_rows)):
        src = last[a]
        if src < 0 or rank[src] < 0:
            continue
        hi = rank[src]
        lo = chain_first[hi]
        if mode[lo] != 1:  # a chain starts with acc_set
            continue
        tiles = np.empty(hi - lo + 1, np.int64)
        for x in range(lo, hi + 1):
            tiles[x - lo] = w_of[mm[x]]
        tiles = np.unique(tiles)
        if tiles[0] < 0 or len(tiles) <= 3:
            continue
        q = tile_queue[tiles[0]]
        ok = q >= 0
        q_iw = queue[tiles[0]]
        busy = np.empty(len(tiles), np.int64)
        installs = np.empty(len(tiles), np.int64)
        for x in range(len(tiles)):
            ok = ok and tile_queue[tiles[x]] == q and queue[tiles[x]] == q_iw
            busy[x] = tile_busy[tiles[x]]
            installs[x] = iw_busy[tiles[x]]
        if not ok:
            continue
        busy.sort()
        installs.sort()
        c = max(busy[:-3].sum(), installs[:-3].sum()) + margin
        if c > 0:
            fconst[acc_rows[a]] = c
            lo_of[a], hi_of[a] = lo, hi
    fptr = np.zeros(m + 1, np.int64)
    for a in range(len(acc_rows)):
        if lo_of[a] >= 0:
            fptr[acc_rows[a] + 1] = hi_of[a] - lo_of[a] + 1
    for r in range(m):
        fptr[r + 1] += fptr[r]
    flat = np.empty(fptr[m], np.int64)
    for a in range(len(acc_rows)):
        if lo_of[a] >= 0:
            at = fptr[acc_rows[a]]
            for x in range(lo_of[a], hi_of[a] + 1):
                flat[at + x - lo_of[a]] = mm[x]
    return fptr, flat, fconst


_SLOT_KINDS: dict[int, tuple] = {}


def _slot_kinds(code: np.ndarray, width: int):
    """Per row and source slot: a link input, a stream input, any input at all."""
    if width not in _SLOT_KINDS:
        top = max(BY_CODE) + 1
        link, stream, has = (np.zeros((top, width), bool) for _ in range(3))
        for c, spec in BY_CODE.items():
            for s, slot in enumerate(source_slots(spec)):
                link[c, s] = slot == "link"
                stream[c, s] = slot in spec.operands
                has[c, s] = True
        _SLOT_KINDS[width] = (link, stream, has)
    link, stream, has = _SLOT_KINDS[width]
    return link[code], stream[code], has[code]


def gpu_roofline(p: Program) -> dict | None:
    """One decode step of the program's module on the system's GPU, as a roofline: every weight and
    the state read once from memory, every matmul at peak; the slower of the two. An estimate."""
    text = p.meta.get("module")
    if not text:
        return None
    from compiler import parse

    m = parse(text, "<program>")
    g = m.graph("decode")
    weight_bytes = sum(math.prod(x.type.shape) * DTYPE_BYTES[x.type.dtype] for x in m.params)
    state_bytes = sum(math.prod(x.type.shape) * DTYPE_BYTES[x.type.dtype] for x in m.states)
    flops = 0
    for op in g.ops:
        if op.name == "matmul":
            a = op.operands[0].type.shape
            flops += 2 * math.prod(op.result.type.shape) * a[-1]
    s = p.system
    memory_s = (weight_bytes + state_bytes) / (s.gpu_memory_gbps * 1e9)
    compute_s = flops / (s.gpu_tflops * 1e12)
    latency = max(memory_s, compute_s)
    return {
        "memory_gbps": s.gpu_memory_gbps,
        "tflops": s.gpu_tflops,
        "bytes_per_token": weight_bytes + state_bytes,
        "flops_per_token": flops,
        "latency_per_token_s": latency,
        "tokens_per_s": 1.0 / latency if latency else None,
        "bound": "memory" if memory_s >= compute_s else "compute",
    }


def render(r: Report) -> str:
    """The report as text."""
    lines = []
    others = ", ".join(f"{k} {v}" for k, v in r.entries.items() if k != r.entry)
    lines.append(
        f"entry {r.entry}: {r.cycles} cycles = {r.seconds * 1e6:.3f} us at {r.clock_mhz:g} MHz on {r.chips} "
        f"chip{'s' if r.chips != 1 else ''}" + (f" (other entries: {others} cycles)" if others else "")
    )
    lines.append(
        f"lower bound: {r.lower_bound_cycles} cycles ({r.binding_bound} binds); the schedule is "
        f"{r.bound_ratio:.2f}x the bound"
    )
    lines.append("  bounds: " + ", ".join(f"{k} {v}" for k, v in r.bounds.items()))
    lines.append(
        "busy: "
        + ", ".join(
            f"{u} {b} cycles ({100 * r.busy_fraction.get(u, 0):.1f}% of its queues)"
            for u, b in r.busy.items()
            if b
        )
    )
    if len(r.busy_fraction_per_chip) > 1:
        lines.append("busy per chip (fraction of each kind's queues):")
        for c, f in list(r.busy_fraction_per_chip.items())[:16]:
            lines.append(f"  chip {c}: " + ", ".join(f"{u} {100 * v:.1f}%" for u, v in f.items()))
        if len(r.busy_fraction_per_chip) > 16:
            lines.append(f"  ... {len(r.busy_fraction_per_chip) - 16} more chips (--json has them all)")
    lines.append(f"SRAM: at most {r.sram_bytes_max_per_chip} bytes on a chip")
    for c, s in list(r.sram_per_chip.items())[:8]:
        lines.append(
            f"  chip {c}: weights {s['weights']}, state {s['state']}, activations {s['activations']} bytes"
        )
    if len(r.sram_per_chip) > 8:
        lines.append(f"  ... {len(r.sram_per_chip) - 8} more chips (--json has them all)")
    if r.link_bytes:
        total = sum(r.link_bytes.values())
        lines.append(f"links: {total} bytes over {len(r.link_bytes)} link directions")
        for k, v in list(r.link_bytes.items())[:16]:
            lines.append(f"  {k}: {v} bytes")
    if r.critical_path:
        lines.append(f"critical path ({len(r.critical_path)} ops):")
        for s in r.critical_path[:16]:
            plural = "s" if s.instructions != 1 else ""
            lines.append(f"  {s.earliest_cycle:8d}  {s.op}  ({s.instructions} instruction{plural})")
        if len(r.critical_path) > 16:
            lines.append(f"  ... {len(r.critical_path) - 16} more ops (--json lists them all)")
    if r.latency_per_token_s is not None:
        lines.append(
            f"per token: {r.latency_per_token_s * 1e6:.3f} us latency, {r.tokens_per_s:,.0f} tokens/s "
            f"(one sequence); energy about {r.energy_per_token_j * 1e3:.3f} mJ per token (estimate: "
            f"{r.chips} chips at the system's chip power for the latency)"
        )
    if r.timing_only:
        t = r.timing_only
        copied = t.get("stage_blocks_copied", 0)
        lines.append(
            f"timing-only compile: {t['stage_blocks_searched']} stage blocks searched, "
            f"{t['stage_blocks_reused']} placed like an alike stage"
            + (f", {copied} stored once as copies" if copied else "")
            + " (the program is the full schedule)"
        )
    if r.gpu:
        g = r.gpu
        lines.append(
            f"GPU roofline estimate ({g['memory_gbps']:g} GB/s, {g['tflops']:g} TFLOPS): "
            f"{g['latency_per_token_s'] * 1e6:.3f} us per token, {g['tokens_per_s']:,.0f} tokens/s "
            f"({g['bound']} bound: {g['bytes_per_token']} bytes, {g['flops_per_token']} flops per token)"
        )
    return "\n".join(lines) + "\n"
