"""What a compiled program does, from the program file alone: cycles, busy units, SRAM, links, the
lower bound on cycles and the critical path, and for decoders the cost per token.

Nothing here runs the emulator: every number comes from the instruction tables (the schedule is
static), and tests hold the busy and total cycles equal to what the emulator measures.

The lower bound is the largest of four bounds that hold for *any* schedule of the same
instructions, not only this one:

- critical path: the longest chain through the intended sources (a consumer samples vector i no
  earlier than the producer's vector arrives: its functional delay, the hops between the two
  queues' positions, the link's serialisation and latency), ending with the last instruction's
  own time. A source read past the end of its row (a cut read) counts its later pieces too. And
  a matrix plane's weights count (`_plane_floors`): a plane holds one tile and loads one more,
  so of the tiles a set of chains of passes on one plane multiplies, all but three are loaded
  and installed one after another after the first of those passes; the read of each chain's
  accumulator waits for that, and so does a stage's hand-over for every chain it needs on each
  plane of the stage (which is what chains the planes' work from stage to stage);
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
    del pc, lag, hops, is_link, is_stream  # (a deep pipeline's entry has millions of rows)
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
    # program order when producers come first in it (a compiled program: in the order it was
    # emitted, a cut read's pieces before what reads them), else by cycle (producers first in any
    # valid schedule, though a consumer may start before a later piece of a read it takes)
    backwards = (src_local >= (real - lo)[:, None]).any()
    if len(r) and backwards:  # expanded order is the program order: producers must come first in it
        raise ValueError("a source follows its consumer in a program with repeated blocks")
    order = np.zeros(0, np.int64)
    if backwards:
        order = np.lexsort((np.arange(len(sel)), p.cycle[sel]))
    # sources as rows of `sel` (a copy's: its block's rows), for the planes' floors
    src_pos = np.full(src.shape, -1, np.int64)
    ok = valid & has_slot
    at = np.minimum(np.searchsorted(sel, prod), len(sel) - 1)
    src_pos[ok] = np.where(sel[at[ok]] == prod[ok], at[ok], -1)
    del at, prod, src
    topo = order if len(order) else np.arange(len(sel))
    gaps_ok = bool((gap[ok] >= 0).all())
    # pieces of one instruction (a cut read): the next row, same queue and opcode, issued right after
    cyc, chips_sel, queues_sel = p.cycle[sel].astype(np.int64), p.chip[sel], p.queue[sel]
    piece_next = np.zeros(len(sel), bool)
    piece_next[:-1] = (
        (sel[1:] == sel[:-1] + 1)
        & (chips_sel[1:] == chips_sel[:-1])
        & (queues_sel[1:] == queues_sel[:-1])
        & (code[1:] == code[:-1])
        & (cyc[1:] == cyc[:-1] + n[:-1])
    )
    pieces = (n, piece_next, off.astype(np.int64, copy=False), step.astype(np.int64, copy=False))
    floors = _plane_floors(p, sel, code, n, dskew, dfunc, fixed, per, src_pos, topo, gaps_ok, pieces)
    del src_pos, ok, valid
    earliest, via, last, end_cycles = _longest(segs_arr, order, src_local, gap, dur, n_all, floors, pieces)

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
def _longest(segs, order, src, gap, dur, n_all, fl, pieces):
    """Earliest start of each row along its longest chain of sources and the source it came by, the
    row that ends last and when. `order`: the rows (of the one stored segment) in an order that puts
    producers first; empty: expanded order, segment by segment. `fl`: the planes' floors
    (`_plane_floors`): a row with groups of chains starts no earlier than, for each group, the
    earliest pass of its chains plus the group's constant. `pieces`: per row, its vectors and
    whether the next row is a further piece of its instruction, and per source slot the first
    vector read and the step (a source past the end of its row reads the next pieces, isa/program.py:
    vector v of the next piece comes v + (the pieces before it) vectors on)."""
    chain_of, chain_acc, chain_lo, chain_hi, gptr, ranges, chains, const, slack = fl
    n_of, piece_next, s_off, s_step = pieces
    width = src.shape[1]
    earliest = np.zeros(n_all, np.int64)
    via = np.full(n_all, -1, np.int64)
    never = np.int64(1) << 62
    first_pass = np.full(len(chain_acc), never, np.int64)  # per chain: its earliest pass in this segment
    first_row = np.full(len(chain_acc), -1, np.int64)
    # per start of a group's chains: the segment it was last met in, its end, the earliest pass found
    seen_in = np.full(len(chains) + 1, -1, np.int64)
    seen_end = np.zeros(len(chains) + 1, np.int64)
    seen_low = np.zeros(len(chains) + 1, np.int64)
    seen_at = np.zeros(len(chains) + 1, np.int64)
    last, best = 0, -1
    for q in range(segs.shape[0]):
        start, rows, base, k, src_lo = segs[q]
        # chains of this segment start afresh (a copy's passes are its own)
        for c in range(np.searchsorted(chain_acc, base), np.searchsorted(chain_acc, base + rows)):
            first_pass[c], first_row[c] = never, -1
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
                if s_step[t_row, s] != 1 or j < start or j >= start + rows:
                    continue
                # the pieces after the source's row that this row reads vectors of
                t_j = base + j - start
                before = 0
                while (
                    piece_next[t_j]
                    and t_j + 1 < base + rows
                    and s_off[t_row, s] + n_of[t_row] - 1 >= before + n_of[t_j]
                ):
                    before += n_of[t_j]
                    t_j += 1
                    j += 1
                    t = earliest[j] + gap[t_row, s] - before
                    if t > earliest[row]:
                        earliest[row] = t
                        via[row] = j
            for g in range(gptr[t_row], gptr[t_row + 1]):
                key = ranges[g, 0]
                if seen_in[key] == q and seen_end[key] == ranges[g, 1]:
                    # the same chains as a group met before in this segment: their passes are all
                    # behind both rows (they need the chains), so the earliest is the same
                    low, at = seen_low[key], seen_at[key]
                else:
                    low, at = never, -1
                    for x in range(ranges[g, 0], ranges[g, 1]):
                        c = chains[x]
                        # every pass of the chain in this segment, and seen: else no floor from the group
                        if chain_lo[c] < base or chain_hi[c] >= base + rows or first_row[c] < 0:
                            at = -1
                            break
                        if first_pass[c] < low:
                            low, at = first_pass[c], first_row[c]
                    seen_in[key], seen_end[key], seen_low[key], seen_at[key] = q, ranges[g, 1], low, at
                if at >= 0 and low + const[g] - slack[g] > earliest[row]:
                    earliest[row] = low + const[g] - slack[g]
                    via[row] = at
            c = chain_of[t_row]
            if c >= 0 and earliest[row] < first_pass[c]:
                first_pass[c], first_row[c] = earliest[row], row
        for r in range(rows):  # the first row (in expanded order) that ends last
            row = start + r
            end = earliest[row] + dur[base + r]
            if end > best:
                best, last = end, row
    return earliest, via, last, best


def _plane_floors(p: Program, sel, code, n, dskew, dfunc, fixed, per, src_pos, topo, gaps_ok: bool, pieces):
    """Floors from the weights the matrix planes hold, which the chain of sources leaves out (an
    install has no source: its weights are in SRAM from cycle 0).

    A chain of passes is an `acc_set` and the `acc_add`s after it on one queue and accumulator slot,
    read by one `acc`. A plane holds one tile in its array and loads at most one more into its
    shadow buffer, so of the tiles a set S of chains on one plane multiplies, all but two are loaded
    after the first of their passes has sampled, one after another on their load queue, and
    installed one after another on theirs. A row that needs every chain of S (the `acc` of its one
    chain; a row whose sources, followed back, reach each chain's `acc`) starts no earlier than

        (the earliest pass of S) + the larger of the tiles' `lw` busy cycles and their `iw`s' busy
        cycles, less the three largest tiles' (two loaded early, and the last one itself)
        + min(0, the fixed delays from a load to the `acc` after it, from the ISA table)
        - its slack: how many vectors into its own run the row may sample a later piece of a
          cut read it needs them through (it may start that much before the piece)

    in any schedule of these instructions that gives each pass its intended install and each `acc`
    its whole sum. Groups: each `acc` its own chain; and per plane, the chains of its pipeline
    stage (`meta["stages"]`, else its chip) that a `send` to another stage needs (through sources in
    the stage; a bit set per chain), and that the first row needing the most of them needs: what a
    stage has computed when it hands over, whichever plane was last. Only when every source's
    delay is >= 0 (so that needing a row means starting after it), for chains no other chain
    shares a tile or pass with, and the tiles of a group loaded on one queue and installed on one.

    Returns (per row: its chain or -1 (passes); per chain: the row of its `acc`, its first and last
    pass; per row: its groups (CSR); per group: its range of the chains' array, that array, its
    constant and its slack). All rows are positions in `sel`."""
    m = len(sel)
    codes = {k: next(s.code for s in OPS if s.mnemonic == k) for k in ("lw", "iw", "mm", "acc", "send")}
    LW, IW, MM, ACC = codes["lw"], codes["iw"], codes["mm"], codes["acc"]
    acc_rows = np.nonzero(code == ACC)[0]
    mm = np.nonzero(code == MM)[0]
    none = np.zeros(0, np.int64)
    empty = (
        np.full(m, -1, np.int64),
        none,
        none,
        none,
        np.zeros(m + 1, np.int64),
        np.zeros((0, 2), np.int64),
        none,
        none,
        none,
    )
    if not len(acc_rows) or not len(mm):
        return empty
    queues = p.system.chip.queue_table()
    plane_of_queue = np.full(len(queues), -1, np.int64)  # one number per (MXM slice, plane) of a chip
    planes: dict[tuple, int] = {}
    for q in queues:
        if q.unit is Unit.MXM:
            plane_of_queue[q.index] = planes.setdefault((q.slice, q.plane), len(planes))
    chip = p.chip[sel].astype(np.int64)
    queue = p.queue[sel].astype(np.int64)
    cycle = p.cycle[sel].astype(np.int64)
    plane = plane_of_queue[queue]
    unit = chip * max(len(planes), 1) + np.maximum(plane, 0)  # (chip, plane)
    span = int(cycle.max()) + 2
    busy = fixed[code] + per[code] * n
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
        np.add.at(tile_busy, tile[ok], busy[lw][ok])
        qmin = np.full(m, 1 << 40, np.int64)
        qmax = np.full(m, -1, np.int64)
        np.minimum.at(qmin, tile[ok], queue[lw][ok])
        np.maximum.at(qmax, tile[ok], queue[lw][ok])
        loaded = qmax >= 0
        tile_queue[loaded] = np.where(qmin[loaded] == qmax[loaded], qmax[loaded], -2)
    # the passes in chain order: by chip, queue, slot and cycle, a chain from each acc_set
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
    w_slot = source_slots(spec_mm).index("w")
    acc_slot = source_slots(BY_CODE[ACC]).index("acc")
    # what the fixed delays give or take: the third tile's loads start at most this many cycles before
    # the first pass (its install waits for that pass's sample), a row needing a chain at least this
    # many after the last load of it starts (load -> install -> pass -> acc)
    margin = (dskew[MM] - dfunc[IW] + 1 + dskew[IW] - dfunc[LW] + 1) + (
        dfunc[LW] - dskew[IW] + dfunc[IW] - dskew[MM] + dfunc[MM] - dskew[ACC]
    )
    # scopes: the chips of each pipeline stage (else each chip); exits: sends to another scope
    scope_of_chip = np.arange(int(chip.max()) + 1, dtype=np.int64)
    for k, group in enumerate(p.meta.get("stages") or ()):
        for c in group:
            if c < len(scope_of_chip):
                scope_of_chip[c] = len(scope_of_chip) + k
    _, scope = np.unique(scope_of_chip[chip], return_inverse=True)
    scope = scope.astype(np.int64)
    exits = np.zeros(m, bool)
    sends = np.nonzero(code == codes["send"])[0]
    if len(sends):
        link_col = BY_CODE[codes["send"]].operands.index("link")
        link = p.fields[sel[sends], link_col].astype(np.int64)
        # the chip at the other end of link k of each chip (chip_links' numbering), -1 for none
        ends = p.system.links_of_chips()
        other = np.full((p.system.chips, max(1, max(len(e) for e in ends))), -1, np.int64)
        for c, e in enumerate(ends):
            other[c, : len(e)] = [b for _, b in e]
        ok = (link >= 0) & (link < other.shape[1])
        to = np.where(ok, other[chip[sends], np.clip(link, 0, other.shape[1] - 1)], -1)
        ok &= to >= 0
        far = np.ones(len(sends), bool)  # a chip of no stage is a scope of its own
        inside = ok & (to < len(scope_of_chip))
        far[inside] = scope_of_chip[to[inside]] != scope_of_chip[chip[sends][inside]]
        exits[sends[ok]] = far[ok]
    assert ENUMS["mm_mode"].index("acc_set") == 1  # _chain_groups' test for a chain's start
    return _chain_groups(
        m,
        topo,
        chip,
        src_pos,
        acc_rows,
        src_pos[acc_rows, acc_slot],
        rank,
        chain_first,
        mm,
        mode,
        src_pos[:, w_slot],
        tile_busy,
        tile_queue,
        queue,
        busy,
        min(0, int(margin)),
        gaps_ok,
        scope,
        unit,
        exits,
        *pieces,
    )


@njit(cache=True)
def _by_key(items, keys, n_keys):
    """`items` ordered by `keys` (0 <= key < n_keys), in their order among equal keys."""
    count = np.zeros(n_keys + 1, np.int64)
    for k in keys:
        count[k + 1] += 1
    for k in range(n_keys):
        count[k + 1] += count[k]
    out = np.empty(len(items), np.int64)
    for y in range(len(items)):
        out[count[keys[y]]] = items[y]
        count[keys[y]] += 1
    return out


@njit(cache=True)
def _popcount(v):
    """Set bits of a uint64 (the bit-parallel sum)."""
    v = v - ((v >> np.uint64(1)) & np.uint64(0x5555555555555555))
    v = (v & np.uint64(0x3333333333333333)) + ((v >> np.uint64(2)) & np.uint64(0x3333333333333333))
    v = (v + (v >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return np.int64((v * np.uint64(0x0101010101010101)) >> np.uint64(56))


@njit(cache=True)
def _sum_planes(
    members, n_set, unit_ix, lwq, iwq, sum_lw, sum_iw, top_lw, top_iw, p_sum, p_top, p_q, p_count, p_ok
):
    """Per plane (`unit_ix`) of the chains `members[:n_set]`: how many, their loads' and installs'
    busy cycles and the three largest tiles' of each, and whether they share one load queue and
    one install queue."""
    for u in range(len(p_count)):
        p_sum[u, 0], p_sum[u, 1], p_count[u], p_ok[u] = 0, 0, 0, True
        p_q[u, 0], p_q[u, 1] = -3, -3
        for t in range(6):
            p_top[u, t] = 0
    for y in range(n_set):
        a2 = members[y]
        u = unit_ix[a2]
        if p_q[u, 0] == -3:
            p_q[u, 0], p_q[u, 1] = lwq[a2], iwq[a2]
        if lwq[a2] != p_q[u, 0] or iwq[a2] != p_q[u, 1]:
            p_ok[u] = False
        p_count[u] += 1
        p_sum[u, 0] += sum_lw[a2]
        p_sum[u, 1] += sum_iw[a2]
        for t in range(3):
            p_top[u, 0], p_top[u, 1], p_top[u, 2] = _top3(
                p_top[u, 0], p_top[u, 1], p_top[u, 2], top_lw[a2, t]
            )
            p_top[u, 3], p_top[u, 4], p_top[u, 5] = _top3(
                p_top[u, 3], p_top[u, 4], p_top[u, 5], top_iw[a2, t]
            )


@njit(cache=True)
def _top3(a, b, c, x):
    """The three largest of a >= b >= c and x, largest first."""
    if x > a:
        return x, a, b
    if x > b:
        return a, x, b
    if x > c:
        return a, b, x
    return a, b, c


@njit(cache=True)
def _chain_groups(
    m,
    topo,
    chip,
    src_pos,
    acc_rows,
    acc_src,
    rank,
    chain_first,
    mm,
    mode,
    w_of,
    tile_busy,
    tile_queue,
    queue,
    busy,
    margin,
    gaps_ok,
    scope,
    unit,
    exits,
    n_of,
    piece_next,
    s_off,
    s_step,
):
    """`_plane_floors`' tables (see there)."""
    n_acc = len(acc_rows)
    # the chains: one per acc whose source is a pass of a chain starting with acc_set
    chain_lo_mm = np.full(n_acc, -1, np.int64)  # range in the sorted passes
    chain_hi_mm = np.full(n_acc, -1, np.int64)
    sum_lw = np.zeros(n_acc, np.int64)
    sum_iw = np.zeros(n_acc, np.int64)
    top_lw = np.zeros((n_acc, 3), np.int64)
    top_iw = np.zeros((n_acc, 3), np.int64)
    lwq = np.full(n_acc, -1, np.int64)
    iwq = np.full(n_acc, -1, np.int64)
    shared = np.zeros(n_acc, np.bool_)
    owner = np.full(m, -1, np.int64)  # install (or pass) -> the chain it is counted in
    for a in range(n_acc):
        src = acc_src[a]
        if src < 0 or rank[src] < 0:
            continue
        hi = rank[src]
        lo = chain_first[hi]
        if mode[lo] != 1:  # a chain starts with acc_set
            continue
        ok = True
        q, q_iw = np.int64(-3), np.int64(-3)
        t1, t2, t3, u1, u2, u3 = 0, 0, 0, 0, 0, 0
        s_lw, s_iw = 0, 0
        for x in range(lo, hi + 1):
            w = w_of[mm[x]]
            if w < 0 or tile_queue[w] < 0:
                ok = False
                break
            if q == -3:
                q, q_iw = tile_queue[w], queue[w]
            if tile_queue[w] != q or queue[w] != q_iw:
                ok = False
                break
        if not ok:
            continue
        for x in range(lo, hi + 1):
            w = w_of[mm[x]]
            if owner[w] == a:  # several passes of one tile (a block of rows): the tile once
                continue
            if owner[w] >= 0:
                shared[owner[w]] = True
                shared[a] = True
            owner[w] = a
            s_lw += tile_busy[w]
            s_iw += busy[w]
            t1, t2, t3 = _top3(t1, t2, t3, tile_busy[w])
            u1, u2, u3 = _top3(u1, u2, u3, busy[w])
        chain_lo_mm[a], chain_hi_mm[a] = lo, hi
        sum_lw[a], sum_iw[a] = s_lw, s_iw
        top_lw[a, 0], top_lw[a, 1], top_lw[a, 2] = t1, t2, t3
        top_iw[a, 0], top_iw[a, 1], top_iw[a, 2] = u1, u2, u3
        lwq[a], iwq[a] = q, q_iw
    # chain numbers (by acc row), per row its chain (passes), per chain its acc and passes' range
    chain_id = np.full(n_acc, -1, np.int64)
    n_chains = 0
    for a in range(n_acc):
        if chain_lo_mm[a] >= 0:
            chain_id[a] = n_chains
            n_chains += 1
    chain_of = np.full(m, -1, np.int64)
    chain_acc = np.zeros(n_chains, np.int64)
    chain_lo = np.zeros(n_chains, np.int64)
    chain_hi = np.zeros(n_chains, np.int64)
    acc_chain = np.full(m, -1, np.int64)  # acc row -> index into acc_rows
    for a in range(n_acc):
        c = chain_id[a]
        if c < 0:
            continue
        acc_chain[acc_rows[a]] = a
        chain_acc[c] = acc_rows[a]
        lo_pos, hi_pos = m, -1
        for x in range(chain_lo_mm[a], chain_hi_mm[a] + 1):
            r = mm[x]
            if chain_of[r] >= 0:  # a pass in two chains: neither gets a floor of others
                shared[a] = True
            chain_of[r] = c
            lo_pos, hi_pos = min(lo_pos, r), max(hi_pos, r)
        chain_lo[c], chain_hi[c] = lo_pos, hi_pos
    # per scope (the chips of a pipeline stage), rows in `topo` order: the chains of the scope each
    # row needs (a bit per chain, through sources in the scope); groups at each acc (its own chain)
    # and, per plane, at each send out of the scope and at the first row needing the most chains
    n_scopes = scope.max() + 1
    bit_of = np.full(n_acc, -1, np.int64)
    per_scope = np.zeros(n_scopes, np.int64)
    for a in range(n_acc):
        if chain_id[a] >= 0 and not shared[a]:
            sc = scope[acc_rows[a]]
            bit_of[a] = per_scope[sc]
            per_scope[sc] += 1
    unit_ix = np.zeros(n_acc, np.int64)  # a chain's plane, numbered within its scope
    record = np.zeros(chip.max() + 1, np.int64)  # per chip: the most chains a send of it evaluated needs
    by_scope = _by_key(topo, scope[topo], n_scopes)
    accs_by_scope = _by_key(np.arange(n_acc), scope[acc_rows], n_scopes)  # indices into acc_rows
    local = np.full(m, -1, np.int64)
    width = src_pos.shape[1]
    g_row = []
    g_start = []
    g_end = []
    g_const = []
    g_slack = []
    flat = np.zeros(1024, np.int64)
    used = 0
    s0, a0 = 0, 0
    while s0 < m:
        sc = scope[by_scope[s0]]
        s1 = s0
        while s1 < m and scope[by_scope[s1]] == sc:
            s1 += 1
        rows = by_scope[s0:s1]
        # the scope's chains by bit, and the planes (chip, plane) they are on, numbered locally
        a1 = a0
        while a1 < n_acc and scope[acc_rows[accs_by_scope[a1]]] == sc:
            a1 += 1
        n_bits = per_scope[sc]
        words = max(1, (n_bits + 63) // 64)
        by_bit = np.full(words * 64, -1, np.int64)
        units = np.full(max(n_bits, 1), -1, np.int64)
        for y in range(a0, a1):
            a = accs_by_scope[y]
            if bit_of[a] >= 0:
                by_bit[bit_of[a]] = a
                units[bit_of[a]] = unit[mm[chain_lo_mm[a]]]
        units = np.sort(units)
        k = 0
        for y in range(len(units)):  # distinct
            if y == 0 or units[y] != units[k - 1]:
                units[k] = units[y]
                k += 1
        units = units[:k]
        n_units = len(units)
        for y in range(a0, a1):
            a = accs_by_scope[y]
            if bit_of[a] >= 0:
                unit_ix[a] = np.searchsorted(units, unit[mm[chain_lo_mm[a]]])
        members = np.zeros(max(n_bits, 1), np.int64)
        p_keep = np.zeros(n_units, np.int64)
        for x in range(len(rows)):
            local[rows[x]] = x
        bits = np.zeros((len(rows), words), np.uint64)
        # the words of a row's bits that may be set: [wlo, whi) (chains are numbered in program order,
        # so what a row needs is mostly a few words)
        wlo = np.full(len(rows), words, np.int64)
        whi = np.zeros(len(rows), np.int64)
        # how much earlier than a chain it needs the row may start (a source read past its row's end:
        # the row samples a later piece's first vector that many vectors into its own run)
        slack = np.zeros(len(rows), np.int64)
        best_pop, best_row = 0, -1
        pops = np.zeros(len(rows), np.int64)
        for x in range(len(rows)):
            r = rows[x]
            for s in range(width):
                j = src_pos[r, s]
                if j < 0 or scope[j] != sc:
                    continue
                before = 0  # vectors of the pieces before this one
                while True:  # the source's row, then the further pieces the row reads vectors of
                    lj = local[j]
                    for w_ in range(wlo[lj], whi[lj]):
                        bits[x, w_] |= bits[lj, w_]
                    wlo[x], whi[x] = min(wlo[x], wlo[lj]), max(whi[x], whi[lj])
                    slack[x] = max(slack[x], slack[lj] + max(0, before - s_off[r, s]))
                    if not (
                        s_step[r, s] == 1
                        and piece_next[j]
                        and j + 1 < m
                        and s_off[r, s] + n_of[r] - 1 >= before + n_of[j]
                    ):
                        break
                    before += n_of[j]
                    j += 1
            a = acc_chain[r]
            if a >= 0:
                for y in range(chain_lo_mm[a], chain_hi_mm[a] + 1):  # the acc needs every pass of its chain
                    lj = local[mm[y]]
                    for w_ in range(wlo[lj], whi[lj]):
                        bits[x, w_] |= bits[lj, w_]
                    wlo[x], whi[x] = min(wlo[x], wlo[lj]), max(whi[x], whi[lj])
                    slack[x] = max(slack[x], slack[lj])
                if bit_of[a] >= 0:
                    w_ = bit_of[a] // 64
                    bits[x, w_] |= np.uint64(1) << np.uint64(bit_of[a] % 64)
                    wlo[x], whi[x] = min(wlo[x], w_), max(whi[x], w_ + 1)
            pop = 0
            for w_ in range(wlo[x], whi[x]):
                pop += _popcount(bits[x, w_])
            pops[x] = pop
            if pop > best_pop:
                best_pop, best_row = pop, r
        p_sum = np.zeros((n_units, 2), np.int64)
        p_top = np.zeros((n_units, 6), np.int64)
        p_q = np.zeros((n_units, 2), np.int64)
        p_count = np.zeros(n_units, np.int64)
        p_ok = np.zeros(n_units, np.bool_)
        prev_x, prev_first, prev_count = -1, 0, 0  # the last row given plane groups, and its groups
        for x in range(len(rows)):
            r = rows[x]
            own = acc_chain[r]
            if own >= 0:  # the acc's own chain
                const = max(
                    sum_lw[own] - top_lw[own, 0] - top_lw[own, 1] - top_lw[own, 2],
                    sum_iw[own] - top_iw[own, 0] - top_iw[own, 1] - top_iw[own, 2],
                )
                if const + margin > 0:
                    if used + 1 > len(flat):
                        flat = np.concatenate((flat, np.zeros(len(flat), np.int64)))
                    flat[used] = chain_id[own]
                    g_row.append(r)
                    g_start.append(used)
                    g_end.append(used + 1)
                    g_const.append(const + margin)
                    g_slack.append(0)
                    used += 1
            if not gaps_ok or not (exits[r] or r == best_row):
                continue
            if prev_x >= 0:  # needing what the last one needed: its groups again (the pieces of a hand-over)
                same = True
                for w_ in range(min(wlo[x], wlo[prev_x]), max(whi[x], whi[prev_x])):
                    if bits[x, w_] != bits[prev_x, w_]:
                        same = False
                        break
                if same:
                    for g in range(prev_first, prev_first + prev_count):
                        g_row.append(r)
                        g_start.append(g_start[g])
                        g_end.append(g_end[g])
                        g_const.append(g_const[g])
                        g_slack.append(slack[x])
                    continue
            # of a chip's sends out of the stage, those needing more chains than any before it (a deep
            # pipeline's hand-overs are 10^5 sends, each needing thousands of chains)
            if r != best_row and pops[x] <= record[chip[r]]:
                continue
            record[chip[r]] = pops[x]
            # the chains the row needs, bucketed by plane
            n_set = 0
            for w_ in range(wlo[x], whi[x]):
                v = bits[x, w_]
                while v:
                    low = v & (~v + np.uint64(1))
                    members[n_set] = by_bit[w_ * 64 + _popcount(low - np.uint64(1))]
                    n_set += 1
                    v ^= low
            _sum_planes(
                members,
                n_set,
                unit_ix,
                lwq,
                iwq,
                sum_lw,
                sum_iw,
                top_lw,
                top_iw,
                p_sum,
                p_top,
                p_q,
                p_count,
                p_ok,
            )
            prev_x, prev_first, prev_count = x, len(g_row), 0
            kept = 0
            for u in range(n_units):
                p_keep[u] = -1
                if p_count[u] < 2 or not p_ok[u]:
                    continue
                const = max(
                    p_sum[u, 0] - p_top[u, 0] - p_top[u, 1] - p_top[u, 2],
                    p_sum[u, 1] - p_top[u, 3] - p_top[u, 4] - p_top[u, 5],
                )
                if const + margin <= 0:
                    continue
                p_keep[u] = used + kept  # where its chains go in `flat`
                g_row.append(r)
                g_start.append(used + kept)
                g_end.append(used + kept + p_count[u])
                g_const.append(const + margin)
                g_slack.append(slack[x])
                kept += p_count[u]
                prev_count += 1
            if kept:
                while used + kept > len(flat):
                    flat = np.concatenate((flat, np.zeros(len(flat), np.int64)))
                for y in range(n_set):
                    u = unit_ix[members[y]]
                    if p_keep[u] >= 0:
                        flat[p_keep[u]] = chain_id[members[y]]
                        p_keep[u] += 1
                used += kept
        s0, a0 = s1, a1
    # the groups by row (CSR), each a range of `flat`
    n_groups = len(g_row)
    rows_of = np.zeros(n_groups, np.int64)
    for g in range(n_groups):
        rows_of[g] = g_row[g]
    by = _by_key(np.arange(n_groups), rows_of, m)
    gptr = np.zeros(m + 1, np.int64)
    for g in range(n_groups):
        gptr[rows_of[g] + 1] += 1
    for r in range(m):
        gptr[r + 1] += gptr[r]
    ranges = np.zeros((n_groups, 2), np.int64)
    out_const = np.zeros(n_groups, np.int64)
    out_slack = np.zeros(n_groups, np.int64)
    for k in range(n_groups):
        g = by[k]
        ranges[k, 0], ranges[k, 1] = g_start[g], g_end[g]
        out_const[k] = g_const[g]
        out_slack[k] = g_slack[g]
    return chain_of, chain_acc, chain_lo, chain_hi, gptr, ranges, flat[:used].copy(), out_const, out_slack


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
