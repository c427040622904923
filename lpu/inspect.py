"""Listing views of a program: where one tensor lives and every instruction that touches it, and a
per-cycle line trace (one column per queue, like a waveform in text)."""

from __future__ import annotations

import numpy as np

from isa.diagnostics import error
from isa.program import Program, source_slots
from isa.spec import BY_CODE, BY_MNEMONIC, Unit


def tensor_instructions(p: Program, name: str) -> tuple[list[str], np.ndarray]:
    """(lines saying where `name` lives, the instructions that touch it in time order).

    `name` is a param, state, input or output (as the listing's placements name them), or a value
    of the module (`q`, `%q`): the instructions of the op that computes it. Touching = a MEM access
    of its words; then whatever reads those vectors off the streams, and the sends and receives that
    carry them to other chips."""
    p = p.expanded()  # repeated blocks written out (a timing-only program)
    name = name.lstrip("%@")
    chip = p.system.chip
    lanes = chip.lanes
    queues = chip.queue_table()
    queue_of_slice = {q.name: q.index for q in queues if q.unit is Unit.MEM}
    where: list[str] = []
    hit = np.zeros(len(p), bool)
    addr_col = np.full(len(p), -1, np.int64)
    for code in set(p.opcode.tolist()):
        spec = BY_CODE[int(code)]
        if "addr" in spec.operands:
            rows = p.opcode == code
            addr_col[rows] = p.fields[rows, spec.operands.index("addr")]
    for pl in p.placements:
        if pl.name != name:
            continue
        words = pl.words(lanes)
        part = f" part {','.join(f'{a}:{b}:{c}' for a, b, c in pl.cuts())}" if pl.part else ""
        graph = f" of {pl.graph}" if pl.graph else ""
        where.append(
            f"{pl.role}{graph} {pl.name} {pl.dtype}{list(pl.shape)}{part}: chip {pl.chip} {pl.slice} "
            f"words {pl.word}..{pl.word + words - 1}"
        )
        mine = (p.chip == pl.chip) & (p.queue == queue_of_slice[pl.slice])
        mine &= (addr_col >= pl.word) & (addr_col < pl.word + words)
        hit |= mine
    ops = p.meta.get("ops") or []
    op_of = np.asarray(p.meta.get("op_of") or [], np.int64)
    if len(op_of) == len(p):
        computing = [k for k, text in enumerate(ops) if text.startswith(f"%{name} = ")]
        if computing:
            where.append(f"%{name}: computed by {', '.join(ops[k] for k in computing)}")
            hit |= np.isin(op_of, computing)
    if not where:
        raise error(f"no tensor '{name}' in the program (a param, state, input, output or a value's name)")
    # follow the vectors: consumers of the hit reads (one step along the streams), and the links
    reads = set(
        np.nonzero(hit & np.isin(p.opcode, [BY_MNEMONIC["read"].code, BY_MNEMONIC["gather"].code]))[0]
    )
    if reads:
        for i in range(len(p)):
            spec = BY_CODE[int(p.opcode[i])]
            for k, slot in enumerate(source_slots(spec)):
                if slot in spec.operands and int(p.src[i, k]) in reads:
                    hit[i] = True
    sends = set(np.nonzero(hit & (p.opcode == BY_MNEMONIC["send"].code))[0])
    if sends:
        from lpu.api import link_vectors

        for v in link_vectors(p):
            if v.send in sends:
                hit[v.recv] = True
    order = np.lexsort((np.arange(len(p)), p.queue, p.chip, p.cycle, p.entry))
    return where, order[hit[order]]


def line_trace(p: Program, entry: str, lo: int, hi: int, chip: int | None = None, width: int = 7) -> str:
    """Cycles lo..hi-1 of one entry: a row per cycle, a column per queue busy in that range; a cell
    holds the mnemonic on the issue cycle, '=' while the instruction still occupies its queue, '.'
    when the queue is idle."""
    p = p.expanded()  # repeated blocks written out (a timing-only program)
    if hi <= lo:
        raise error(f"--waves {lo}:{hi}: the range is empty")
    if hi - lo > 2000:
        raise error(f"--waves {lo}:{hi}: at most 2000 cycles at a time")
    e = p.entries.index(entry)
    queues = p.system.chip.queue_table()
    sel = np.nonzero(p.entry == e)[0]
    if chip is not None:
        sel = sel[p.chip[sel] == chip]
    busy = np.array([BY_CODE[int(p.opcode[i])].busy_cycles(int(p.n[i])) for i in sel], np.int64)
    start = p.cycle[sel]
    live = (start < hi) & (start + np.maximum(busy, 1) > lo)
    sel, busy, start = sel[live], busy[live], start[live]
    columns = sorted({(int(p.chip[i]), int(p.queue[i])) for i in sel})
    if not columns:
        return f"no instruction of {entry} is busy in cycles {lo}..{hi - 1}\n"
    col = {k: n for n, k in enumerate(columns)}
    grid = [["." for _ in columns] for _ in range(hi - lo)]
    for i, b, s in zip(sel, busy, start):
        c = col[(int(p.chip[i]), int(p.queue[i]))]
        for t in range(max(int(s), lo), min(int(s) + max(int(b), 1), hi)):
            grid[t - lo][c] = "="
        if lo <= s < hi:
            grid[int(s) - lo][c] = BY_CODE[int(p.opcode[i])].mnemonic[:width]
    many = len({c for c, _ in columns}) > 1
    heads = [(f"{c}:" if many else "") + queues[q].name for c, q in columns]
    w = max(width, *(len(h) for h in heads))
    lines = ["cycle  " + " ".join(h.rjust(w) for h in heads)]
    for t, row in enumerate(grid):
        lines.append(f"{lo + t:5d}  " + " ".join(cell.rjust(w) for cell in row))
    return "\n".join(lines) + "\n"
