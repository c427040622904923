"""A program as Chrome / Perfetto trace-event JSON, from the program file alone.

One process per chip, one thread (track) per queue, a complete event ("ph": "X") per
instruction (its mnemonic; operands, source op and IR location in args), a flow arrow from
each `send` to the `recv` that takes its vectors, and counter tracks for the SRAM in use on a
chip (its pinned tensors, and each temporary from the write that fills it to its last read) and
for the vectors in flight on its links. Time is in microseconds at the chip clock; every entry
is laid after the previous one (`entry_offset_us` in the metadata). Opens in ui.perfetto.dev and
chrome://tracing.
"""

from __future__ import annotations

import numpy as np

from isa.assembly import instruction_text
from isa.program import Program
from isa.spec import BY_CODE


def trace_events(p: Program) -> dict:
    p = p.expanded()  # repeated blocks written out (a timing-only program)
    chip_cfg = p.system.chip
    clock = chip_cfg.clock_mhz
    queues = chip_cfg.queue_table()
    ops = p.meta.get("ops") or []
    op_of = p.meta.get("op_of") or []
    gap = 100  # cycles between entries on the timeline
    offset = {}
    at = 0
    for name in p.entries:
        offset[name] = at
        at += p.length(name) + gap
    events: list[dict] = []
    chips = sorted(set(p.chip.tolist())) or [0]
    for c in chips:
        events.append({"ph": "M", "name": "process_name", "pid": c, "tid": 0, "args": {"name": f"chip {c}"}})
        events.append(
            {"ph": "M", "name": "process_sort_index", "pid": c, "tid": 0, "args": {"sort_index": c}}
        )
        used = sorted(set(p.queue[p.chip == c].tolist()))
        for q in used:
            events.append(
                {"ph": "M", "name": "thread_name", "pid": c, "tid": q, "args": {"name": queues[q].name}}
            )
            events.append(
                {"ph": "M", "name": "thread_sort_index", "pid": c, "tid": q, "args": {"sort_index": q}}
            )
    for i in range(len(p)):
        spec = BY_CODE[int(p.opcode[i])]
        entry = p.entries[int(p.entry[i])]
        start = int(p.cycle[i]) + offset[entry]
        n = int(p.n[i])
        dur = max(spec.busy_cycles(n), 1)
        args = {"id": i, "entry": entry, "cycle": int(p.cycle[i]), "n": n, "text": instruction_text(p, i)}
        if i < len(op_of):
            text, _, loc = ops[op_of[i]].partition(" @ ")
            args["op"] = text
            if loc:
                args["loc"] = loc
        events.append(
            {
                "ph": "X",
                "name": spec.mnemonic,
                "cat": spec.unit.value,
                "pid": int(p.chip[i]),
                "tid": int(p.queue[i]),
                "ts": start / clock,
                "dur": dur / clock,
                "args": args,
            }
        )
    # flows: each send to the receive that takes it (one arrow per pair of instructions)
    from lpu.api import link_vectors

    pairs = {}
    in_flight: dict[int, list[tuple[int, int]]] = {}
    for v in link_vectors(p):
        pairs.setdefault((v.send, v.recv), None)
        e = p.entries[int(p.entry[v.recv])]
        in_flight.setdefault(v.src_chip, []).append((v.handoff + offset[e], 1))
        in_flight[v.src_chip].append((v.arrival + offset[e], -1))
    for k, (s, r) in enumerate(sorted(pairs)):
        e = p.entries[int(p.entry[r])]
        common = {"name": "link", "cat": "C2C", "id": k}
        events.append(
            {
                **common,
                "ph": "s",
                "pid": int(p.chip[s]),
                "tid": int(p.queue[s]),
                "ts": (int(p.cycle[s]) + offset[e]) / clock,
            }
        )
        events.append(
            {
                **common,
                "ph": "f",
                "bp": "e",
                "pid": int(p.chip[r]),
                "tid": int(p.queue[r]),
                "ts": (int(p.cycle[r]) + offset[e]) / clock,
            }
        )
    for c, changes in sorted(in_flight.items()):
        level = 0
        for t, d in sorted(changes):
            level += d
            events.append(
                {"ph": "C", "name": "vectors on links", "pid": c, "ts": t / clock, "args": {"vectors": level}}
            )
    # SRAM in use: what an entry pins (params, states, its inputs and outputs) for the whole run,
    # and every other write from its cycle until the last read of what it wrote
    for name in p.entries:
        for c, changes in sram_in_use(p, name).items():
            for t, value in changes:
                events.append(
                    {
                        "ph": "C",
                        "name": "SRAM in use",
                        "pid": c,
                        "ts": (t + offset[name]) / clock,
                        "args": {"bytes": value},
                    }
                )
    return {
        "traceEvents": events,
        "displayTimeUnit": "ns",
        "metadata": {
            "program": "lpu",
            "clock_mhz": clock,
            "entry_offset_us": {k: v / clock for k, v in offset.items()},
            "instructions": len(p),
        },
    }


def sram_in_use(p: Program, entry: str) -> dict[int, list[tuple[int, int]]]:
    """Per chip, (cycle, bytes in use) at every change during one entry: pinned tensors from cycle 0
    to the end, a temporary from the write that fills it to the last read of what it wrote
    (constants in the SRAM image are not counted). Never more than the allocation's footprint."""
    p = p.expanded()  # repeated blocks written out (a timing-only program)
    import bisect

    from isa.program import source_slots
    from isa.spec import BY_MNEMONIC, DTYPE_BYTES, DTYPES

    chip_cfg = p.system.chip
    lanes = chip_cfg.lanes
    queues = chip_cfg.queue_table()
    e = p.entries.index(entry)
    end = p.length(entry)
    pinned: dict[tuple[int, str], list[tuple[int, int]]] = {}
    base: dict[int, int] = {}
    for pl in p.placements:
        if pl.role in ("param", "state") or pl.graph == entry:
            words = pl.words(lanes)
            pinned.setdefault((pl.chip, pl.slice), []).append((pl.word, pl.word + words))
            base[pl.chip] = base.get(pl.chip, 0) + words * lanes
    for spans in pinned.values():
        spans.sort()
    write, read = BY_MNEMONIC["write"], BY_MNEMONIC["read"]
    sel = np.nonzero(p.entry == e)[0]
    last = {}
    mem_slot = source_slots(read).index("mem")
    for r in sel[p.opcode[sel] == read.code]:
        w = int(p.src[r, mem_slot])
        if w >= 0:
            last[w] = max(last.get(w, 0), int(p.cycle[r]) + int(p.n[r]))
    addr_k, dt_k = write.operands.index("addr"), write.operands.index("dt")
    deltas: dict[int, list[tuple[int, int]]] = {c: [(0, b)] for c, b in base.items()}
    for w in sel[p.opcode[sel] == write.code]:
        c, sl = int(p.chip[w]), queues[int(p.queue[w])].slice
        addr = int(p.fields[w, addr_k])
        spans = pinned.get((c, sl), ())
        k = bisect.bisect_right(spans, (addr, 1 << 62)) - 1
        if k >= 0 and spans[k][0] <= addr < spans[k][1]:
            continue  # into a pinned tensor: counted from the start
        size = int(p.n[w]) * DTYPE_BYTES[DTYPES[int(p.fields[w, dt_k])]] * lanes
        t0 = int(p.cycle[w])
        deltas.setdefault(c, []).append((t0, size))
        deltas[c].append((max(last.get(int(w), t0 + int(p.n[w])), t0 + 1), -size))
    out = {}
    for c, changes in sorted(deltas.items()):
        level, series = 0, []
        for t, d in sorted(changes):
            level += d
            if series and series[-1][0] == t:
                series[-1] = (t, level)
            else:
                series.append((t, level))
        series.append((end, 0))
        out[c] = series
    return out


def instruction_events(trace: dict) -> np.ndarray:
    """The instruction ids of a trace's complete events (each instruction should appear once)."""
    return np.array([e["args"]["id"] for e in trace["traceEvents"] if e.get("ph") == "X"], np.int64)
